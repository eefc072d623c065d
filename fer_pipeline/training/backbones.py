"""Backbones for 48x48 grayscale facial-expression classification, registered by name for the YAML recipes."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

BACKBONES: dict[str, Callable[..., nn.Module]] = {}


def register(name: str):
    def deco(fn):
        BACKBONES[name] = fn
        return fn

    return deco


def _conv_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


@register("vgg")
def vgg(num_classes: int = 7, widths: tuple[int, ...] = (32, 64, 128, 256),
        convs_per_stage: int | tuple[int, ...] = 2, dropout: float = 0.3, in_channels: int = 1) -> nn.Module:
    """VGG-style CNN: stages of ``convs_per_stage`` conv3x3+BN+ReLU, max-pool between stages, global average pool,
    dropout, linear head.

    ``convs_per_stage`` is one count for every stage or one count per stage (e.g. ``[2, 2, 3, 3]``: the deeper,
    low-resolution stages are cheap per layer on a 48x48 input).

    A compact version of the VGG variant of Khaireddin & Chen 2021 ("Facial Emotion Recognition: State of the Art
    Performance on FER2013", arXiv 2105.03588), sized for CPU training.

    Input ``(B, in_channels, 48, 48) float32`` (standardised), output ``(B, num_classes)`` logits.
    """
    counts = [convs_per_stage] * len(widths) if isinstance(convs_per_stage, int) else list(convs_per_stage)
    if len(counts) != len(widths):
        raise ValueError(f"convs_per_stage has {len(counts)} entries for {len(widths)} stages")
    layers: list[nn.Module] = []
    cin = in_channels
    for i, (w, n) in enumerate(zip(widths, counts)):
        for _ in range(n):
            layers.append(_conv_bn(cin, w))
            cin = w
        if i < len(widths) - 1:
            layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                         nn.Linear(cin, num_classes))


@register("mlp")
def mlp(num_classes: int = 7, hidden: tuple[int, ...] = (1024, 512), dropout: float = 0.3,
        in_channels: int = 1, input_hw: tuple[int, int] = (48, 48)) -> nn.Module:
    """Fully connected net over the raw pixels (the "fully connected" baseline of the project brief)."""
    layers: list[nn.Module] = [nn.Flatten()]
    cin = in_channels * input_hw[0] * input_hw[1]
    for h in hidden:
        layers += [nn.Linear(cin, h), nn.BatchNorm1d(h), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        cin = h
    layers.append(nn.Linear(cin, num_classes))
    return nn.Sequential(*layers)


def build_backbone(name: str, **kwargs) -> nn.Module:
    """Build a registered backbone.

    Raises:
        ValueError: ``name`` is not registered.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; known: {sorted(BACKBONES)}")
    return BACKBONES[name](**kwargs)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = ["BACKBONES", "build_backbone", "count_parameters", "register", "torch"]
