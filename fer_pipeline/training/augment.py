"""Batched data augmentation on tensors, so a 2-core CPU spends its time in the network, not in per-image Python.

All functions take and return ``(B, 1, H, W) float32`` image batches and draw their randomness from ``generator``;
:func:`mix_batch` mixes the targets too.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def random_flip(x: torch.Tensor, generator: torch.Generator | None = None, p: float = 0.5) -> torch.Tensor:
    """Mirror each image horizontally with probability ``p``."""
    flip = torch.rand(x.shape[0], generator=generator) < p
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def random_affine(x: torch.Tensor, generator: torch.Generator | None = None, max_rotate_deg: float = 10.0,
                  max_shift: float = 0.1, scale: tuple[float, float] = (0.9, 1.1)) -> torch.Tensor:
    """Random rotation (degrees), shift (fraction of the side) and scale per image, bilinear, reflection padding."""
    b = x.shape[0]
    u = torch.rand(b, 4, generator=generator)
    ang = (u[:, 0] * 2 - 1) * math.radians(max_rotate_deg)
    s = scale[0] + u[:, 1] * (scale[1] - scale[0])
    tx, ty = (u[:, 2] * 2 - 1) * max_shift * 2, (u[:, 3] * 2 - 1) * max_shift * 2  # grid units span 2
    cos, sin = torch.cos(ang) / s, torch.sin(ang) / s
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def random_erasing(x: torch.Tensor, generator: torch.Generator | None = None, p: float = 0.5,
                   size: int = 12) -> torch.Tensor:
    """Zero a random ``size x size`` square in each image with probability ``p`` (Zhong et al., AAAI 2020)."""
    b, _, h, w = x.shape
    on = torch.rand(b, generator=generator) < p
    y0 = torch.randint(0, h - size + 1, (b,), generator=generator)
    x0 = torch.randint(0, w - size + 1, (b,), generator=generator)
    rows = torch.arange(h)[None, :]
    cols = torch.arange(w)[None, :]
    mr = (rows >= y0[:, None]) & (rows < (y0 + size)[:, None])
    mc = (cols >= x0[:, None]) & (cols < (x0 + size)[:, None])
    mask = (mr[:, :, None] & mc[:, None, :]) & on[:, None, None]
    return x.masked_fill(mask[:, None], 0.0)


def augment_batch(x: torch.Tensor, generator: torch.Generator | None = None, flip: bool = True,
                  max_rotate_deg: float = 10.0, max_shift: float = 0.1, scale: tuple[float, float] = (0.9, 1.1),
                  erasing_p: float = 0.5, erasing_size: int = 12) -> torch.Tensor:
    """Flip, small rotation/shift/scale and random erasing, each switchable (0 turns it off)."""
    if flip:
        x = random_flip(x, generator)
    if max_rotate_deg > 0 or max_shift > 0 or scale != (1.0, 1.0):
        x = random_affine(x, generator, max_rotate_deg, max_shift, scale)
    if erasing_p > 0:
        x = random_erasing(x, generator, erasing_p, erasing_size)
    return x


def mix_batch(x: torch.Tensor, target: torch.Tensor, generator: torch.Generator | None = None,
              mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0, p: float = 1.0
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """MixUp (Zhang et al., ICLR 2018) or CutMix (Yun et al., ICCV 2019) of a batch with the batch reversed.

    With probability ``p`` the batch is mixed: with both alphas set, MixUp or CutMix at even odds. MixUp blends
    ``lam * x + (1 - lam) * x_reversed`` with ``lam ~ Beta(mixup_alpha, mixup_alpha)``; CutMix pastes a box of
    area ``(1 - lam)`` of the image (``lam ~ Beta(cutmix_alpha, cutmix_alpha)``, box clipped at the border, ``lam``
    then set to the area actually kept) from the reversed batch. The targets are mixed with the same ``lam``.

    Written here rather than taken from torchvision (``transforms.v2.MixUp`` / ``CutMix``) because those take integer
    labels only, while this project's targets may already be distributions (FER+ votes, a teacher's probabilities:
    :mod:`fer_pipeline.training.soft_targets`), and to draw from the training run's own ``generator``.

    Args:
        x: ``(B, 1, H, W) float32`` images.
        target: ``(B, C) float32`` target distributions (rows summing to 1).
        generator: randomness source.
        mixup_alpha, cutmix_alpha: Beta parameters (0 turns the method off; typical 0.2-1.0).
        p: probability that a batch is mixed at all.

    Returns:
        ``(x, target)`` mixed (the inputs themselves when the batch is not mixed); mixed targets still sum to 1.

    Raises:
        ValueError: ``target`` is not ``(B, C)`` floating point.
    """
    if target.ndim != 2 or not target.dtype.is_floating_point or target.shape[0] != x.shape[0]:
        raise ValueError(f"target must be (B, C) float, got {tuple(target.shape)} {target.dtype}")
    if (mixup_alpha <= 0 and cutmix_alpha <= 0) or torch.rand(1, generator=generator).item() >= p:
        return x, target
    use_cutmix = cutmix_alpha > 0 and (mixup_alpha <= 0 or torch.rand(1, generator=generator).item() < 0.5)
    alpha = cutmix_alpha if use_cutmix else mixup_alpha
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator).item())
    lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    other = x.flip(0)
    if use_cutmix:
        h, w = x.shape[-2:]
        ch, cw = int(round(h * math.sqrt(1 - lam))), int(round(w * math.sqrt(1 - lam)))
        cy = int(torch.randint(0, h, (1,), generator=generator).item())
        cx = int(torch.randint(0, w, (1,), generator=generator).item())
        y0, y1 = max(cy - ch // 2, 0), min(cy + (ch - ch // 2), h)
        x0, x1 = max(cx - cw // 2, 0), min(cx + (cw - cw // 2), w)
        x = x.clone()
        x[..., y0:y1, x0:x1] = other[..., y0:y1, x0:x1]
        lam = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
    else:
        x = lam * x + (1 - lam) * other
    return x, lam * target + (1 - lam) * target.flip(0)
