"""Grad-CAM (Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization",
ICCV 2017) of a torch checkpoint of this repo's training code.

The map of class ``c`` is ``ReLU(sum_k a_k A^k)``: the activations ``A^k`` of the backbone's last convolution
(:func:`target_layer`; for the VGG, its last conv3x3 + BatchNorm + ReLU block: 6x6 cells for a 48 px input and 4
stages) weighted by the spatial mean ``a_k`` of the gradient of the class score (the logit, before softmax) with
respect to them, then upsampled bilinearly to the crop's pixels. Computed with Captum's ``LayerGradCam`` (the ``captum`` package, in the ``train``
extra); torch and captum are imported only when a :class:`GradCamExplainer` is built.

Needs a Lightning checkpoint (``.ckpt``, e.g. ``runs/<name>/best.ckpt``) written by
:mod:`fer_pipeline.training.train`: an ONNX file has no gradients here. The backbone is rebuilt as the run's
``config.yaml`` beside the checkpoint names it, else as the VGG the shapes of its weights describe (stages, widths,
classes); the EMA weights are used when the run kept an average (``optim.ema_decay``); it runs in eval mode on a
single pass (no flip test-time augmentation).
"""

from __future__ import annotations

import itertools
import logging
import re
from pathlib import Path
from typing import ClassVar

import numpy as np

from fer_pipeline.align import FER2013_TEMPLATE, TEMPLATE_SIZE

logger = logging.getLogger(__name__)

__all__ = ["GRADCAM_NEEDS", "GradCamExplainer", "GradCamUnavailable", "target_layer", "vgg_layout"]

GRADCAM_NEEDS = "Grad-CAM needs a torch checkpoint (.ckpt) and the train extra"


class GradCamUnavailable(ValueError):
    """Grad-CAM cannot run: the model is not a torch checkpoint, or torch / captum are not installed."""


def vgg_layout(state: dict, prefix: str) -> dict:
    """The :func:`fer_pipeline.training.backbones.vgg` arguments that built the weights ``state[prefix + ...]``.

    Args:
        state: a backbone's state dict (keys ``<prefix><i>.0.weight`` for the conv of block ``i``,
            ``<prefix><j>.weight`` for the linear head).
        prefix: ``"backbone."`` or ``"ema.module."``.

    Returns:
        ``{"num_classes", "widths", "convs_per_stage", "in_channels"}``.

    Raises:
        ValueError: the weights are not those of the repo's VGG backbone (e.g. the ``mlp`` baseline: no convolution).
    """
    convs: dict[int, tuple] = {}
    head = None
    pat = re.compile(re.escape(prefix) + r"(\d+)\.(0\.)?weight$")
    for key, value in state.items():
        m = pat.match(key)
        if not m:
            continue
        idx, shape = int(m.group(1)), tuple(value.shape)
        if m.group(2) and len(shape) == 4:
            convs[idx] = shape
        elif not m.group(2) and len(shape) == 2:
            head = (idx, shape)
    if not convs or head is None:
        raise ValueError("the checkpoint's backbone has no convolution layer (Grad-CAM needs the convolutional vgg "
                         "backbone)")
    order = sorted(convs)
    stages: list[list[int]] = [[order[0]]]
    for prev, idx in itertools.pairwise(order):
        if idx == prev + 1:
            stages[-1].append(idx)
        elif idx == prev + 2:  # a max-pool between stages
            stages.append([idx])
        else:
            raise ValueError(f"unexpected layer layout in the checkpoint (conv blocks at {order})")
    return {"num_classes": int(head[1][0]), "widths": tuple(int(convs[s[-1]][0]) for s in stages),
            "convs_per_stage": tuple(len(s) for s in stages), "in_channels": int(convs[order[0]][1])}


def _recipe_backbone(path: Path) -> tuple[str, dict] | None:
    """``(backbone name, kwargs)`` from the ``config.yaml`` that :func:`fer_pipeline.training.train.train` writes
    beside its checkpoints, or None when there is none (or it names no backbone)."""
    cfg = path.parent / "config.yaml"
    if not cfg.is_file():
        return None
    import yaml

    try:
        model = (yaml.safe_load(cfg.read_text()) or {}).get("model") or {}
    except (OSError, yaml.YAMLError, AttributeError):
        return None
    if not isinstance(model, dict) or not isinstance(model.get("backbone"), str):
        return None
    return model["backbone"], dict(model.get("kwargs") or {})


def _load_checkpoint(path: Path):
    """``(backbone (eval, CPU), labels, mean, std)`` of a training checkpoint.

    The backbone is the one the run's ``config.yaml`` beside the checkpoint names (any registered backbone), else the
    VGG that the weights' shapes describe (:func:`vgg_layout`).

    Raises:
        GradCamUnavailable: not a ``.ckpt`` file, or torch missing.
        ValueError: unreadable, not written by this repo's training code, or weights that fit neither backbone.
    """
    if path.suffix.lower() != ".ckpt":
        what = "an ONNX model" if path.suffix.lower() == ".onnx" else f"{path.suffix or 'a file without suffix'}"
        raise GradCamUnavailable(f"{GRADCAM_NEEDS}; got {what}: {path} (use --method occlusion for ONNX models)")
    try:
        import torch
    except ImportError as e:
        raise GradCamUnavailable(f"{GRADCAM_NEEDS} (pip install -e '.[train]'): {e}") from e
    from fer_pipeline.training.backbones import build_backbone

    if not path.is_file():
        raise ValueError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any unpickling failure means "not a readable checkpoint"
        raise ValueError(f"{path}: not a readable torch checkpoint: {e}") from e
    hp = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    state = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    if not isinstance(hp, dict) or not isinstance(state, dict) or not {"labels", "mean", "std"} <= set(hp):
        raise ValueError(f"{path}: not a checkpoint of fer_pipeline.training (no labels/mean/std hyper-parameters "
                         "or state_dict)")
    prefix = "ema.module." if any(k.startswith("ema.module.") for k in state) else "backbone."
    sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix) and k != prefix + "n_averaged"}
    labels = tuple(str(v) for v in hp["labels"])
    errors = []
    recipe = _recipe_backbone(path)
    if recipe is not None:
        name, kwargs = recipe
        try:
            net = build_backbone(name, **{**kwargs, "num_classes": len(labels)})
            net.load_state_dict(sub, strict=True)
            return net.eval(), labels, float(hp["mean"]), float(hp["std"])
        except (ValueError, TypeError, RuntimeError) as e:
            errors.append(f"{name} of config.yaml: {str(e).splitlines()[0]}")
    try:
        layout = vgg_layout(state, prefix)
        if layout["num_classes"] != len(labels):
            raise ValueError(f"the head has {layout['num_classes']} outputs for {len(labels)} labels")
        net = build_backbone("vgg", dropout=0.0, **layout)
        net.load_state_dict(sub, strict=True)
    except (ValueError, RuntimeError) as e:
        errors.append(f"vgg: {str(e).splitlines()[0]}")
        raise ValueError(f"{path}: the weights fit no backbone ({'; '.join(errors)})") from e
    return net.eval(), labels, float(hp["mean"]), float(hp["std"])


def target_layer(net):
    """The layer Grad-CAM reads: the backbone's last ``Conv2d``, or, when it opens a conv + BatchNorm + ReLU block
    (the VGG's), that block's output (the rectified activations, as in Selvaraju et al.).

    Raises:
        ValueError: the backbone has no convolution (e.g. the ``mlp`` baseline).
    """
    from torch import nn

    last, parent = None, None
    for module in net.modules():
        for child in module.children():
            if isinstance(child, nn.Conv2d):
                last, parent = child, module
    if last is None:
        raise ValueError("the checkpoint's backbone has no convolution layer (Grad-CAM needs a convolutional one)")
    if isinstance(parent, nn.Sequential) and len(parent) == 3 and parent[0] is last and \
            isinstance(parent[1], nn.BatchNorm2d) and isinstance(parent[2], nn.ReLU):
        return parent
    return last


class GradCamExplainer:
    """Grad-CAM maps of a training checkpoint's backbone.

    The crops are the pipeline's (48x48 grayscale, FER2013 alignment template, as every model this repo trains).

    Args:
        checkpoint: a ``.ckpt`` of :mod:`fer_pipeline.training.train`.
        batch_size: crops per forward/backward pass.

    Raises:
        GradCamUnavailable: not a ``.ckpt`` (e.g. an ONNX model), or torch / captum not installed; the message
            starts with :data:`GRADCAM_NEEDS`.
        ValueError: the checkpoint is unreadable or not this repo's VGG (see :func:`vgg_layout`).
    """

    name: ClassVar[str] = "gradcam"

    def __init__(self, checkpoint: str | Path, batch_size: int = 256) -> None:
        path = Path(checkpoint)
        self.net, self.labels, self.mean, self.std = _load_checkpoint(path)
        try:
            from captum.attr import LayerAttribution, LayerGradCam
        except ImportError as e:
            raise GradCamUnavailable(f"{GRADCAM_NEEDS} (pip install -e '.[train]' installs captum): {e}") from e
        self.layer = target_layer(self.net)
        self._cam = LayerGradCam(self.net, self.layer)
        self._interpolate = LayerAttribution.interpolate
        self.batch_size = int(batch_size)
        self.input_hw: tuple[int, int] = TEMPLATE_SIZE
        self.color = "gray"
        self.template: np.ndarray = FER2013_TEMPLATE
        self.source = str(path)

    def settings(self) -> dict:
        """The method's settings, for the JSON summary."""
        return {"layer": type(self.layer).__name__ + (" (conv + BN + ReLU block)" if type(self.layer).__name__ ==
                                                       "Sequential" else ""), "tta": False}

    def explain(self, crops: np.ndarray, targets: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Grad-CAM maps of aligned crops.

        Args:
            crops: ``(N, 48, 48) uint8`` grayscale aligned crops.
            targets: ``(N,) int`` class per crop; ``None`` or -1: the predicted class.

        Returns:
            ``(maps, probs)``: ``(N, 48, 48) float32`` Grad-CAM in the crop's pixels, >= 0 (ReLU of the weighted
            activations; its unit is the logit's per activation unit, comparable within a map, not across models);
            ``(N, C) float32`` softmax probabilities of the single pass.

        Raises:
            ValueError: crops not ``(N, 48, 48) uint8``, or a target out of range.
        """
        import torch

        crops = np.asarray(crops)
        h, w = self.input_hw
        if crops.dtype != np.uint8 or crops.shape[1:] != (h, w):
            raise ValueError(f"crops must be (N,{h},{w}) uint8, got {crops.shape} {crops.dtype}")
        n = len(crops)
        t_all = np.full(n, -1, np.int64) if targets is None else np.asarray(targets, np.int64)
        if t_all.shape != (n,):
            raise ValueError(f"targets must be ({n},), got {t_all.shape}")
        if (t_all >= len(self.labels)).any():
            raise ValueError(f"target class index out of range (the model has {len(self.labels)} classes)")
        maps = np.zeros((n, h, w), np.float32)
        probs = np.zeros((n, len(self.labels)), np.float32)
        for i in range(0, n, self.batch_size):
            x = torch.from_numpy(crops[i:i + self.batch_size].astype(np.float32) / 255.0)[:, None]
            x = (x - self.mean) / self.std
            with torch.no_grad():
                p = torch.softmax(self.net(x), 1)
            t = t_all[i:i + len(x)].copy()
            t[t < 0] = p.argmax(1).numpy()[t < 0]
            x.requires_grad_(True)
            cam = self._cam.attribute(x, target=torch.from_numpy(t), relu_attributions=True)
            up = self._interpolate(cam.detach(), (h, w), interpolate_mode="bilinear")
            maps[i:i + len(x)] = up[:, 0].clamp_min(0).numpy()
            probs[i:i + len(x)] = p.numpy()
        return maps, probs
