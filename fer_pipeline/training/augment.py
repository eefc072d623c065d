"""Batched data augmentation on tensors, so a 2-core CPU spends its time in the network, not in per-image Python.

All functions take and return ``(B, 1, H, W) float32`` image batches and draw their randomness from ``generator``.
"""

from __future__ import annotations

import math

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
