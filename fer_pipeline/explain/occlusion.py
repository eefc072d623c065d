"""Occlusion sensitivity (Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks", ECCV 2014).

A grey square is slid over the aligned crop; at each position the class probability is measured again, and the
importance of a pixel is the mean drop ``p_class(original) - p_class(occluded)`` over the patch positions that
cover it. Works on any ONNX emotion model with onnxruntime alone (no torch, no gradients): all patch positions of a
chunk of images go to :meth:`fer_pipeline.classify.EmotionModel.predict` in one call, which runs them in batches.

Cost: ``1 + P`` forward passes per image, with ``P = ceil((H - patch) / stride + 1) ** 2`` positions (48 px crop,
8 px patch: stride 4 gives 121, stride 8 gives 36).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

import numpy as np

if TYPE_CHECKING:
    from fer_pipeline.classify import EmotionModel

logger = logging.getLogger(__name__)

__all__ = ["OcclusionExplainer", "occlusion_maps", "patch_starts"]

#: Occluded crops per ``predict`` call (bounds memory: 4,096 48x48 gray crops are 9 MB of uint8).
MAX_CROPS_PER_CALL = 4096


def patch_starts(size: int, patch_px: int, stride_px: int) -> np.ndarray:
    """Start offsets (pixels) of the patch along one axis: ``0, stride, 2 stride, ...`` and always ``size - patch``,
    so that every pixel is covered at least once.

    Raises:
        ValueError: ``patch_px`` not in ``[1, size]`` or ``stride_px`` < 1.
    """
    if not 1 <= patch_px <= size:
        raise ValueError(f"patch size must be 1..{size} pixels, got {patch_px}")
    if stride_px < 1:
        raise ValueError(f"stride must be >= 1 pixel, got {stride_px}")
    starts = list(range(0, size - patch_px + 1, stride_px))
    if starts[-1] != size - patch_px:
        starts.append(size - patch_px)
    return np.asarray(starts, np.int64)


def occlusion_maps(predict: Callable[[np.ndarray], np.ndarray], crops: np.ndarray, targets: np.ndarray | None = None,
                   patch_px: int = 8, stride_px: int = 4, fill: float | str = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Occlusion sensitivity maps of a batch of aligned crops.

    Args:
        predict: ``(M, H, W[, 3]) uint8 -> (M, C) float32`` probabilities (e.g. ``EmotionModel.predict``).
        crops: ``(N, H, W) uint8`` grayscale (or ``(N, H, W, 3) uint8`` RGB) aligned crops.
        targets: ``(N,) int`` class index whose probability drop is measured per crop; ``None`` (or -1 in a row):
            the class the model predicts for the unoccluded crop.
        patch_px: side of the square patch, pixels of the crop.
        stride_px: step between patch positions, pixels (the last position is always flush with the edge).
        fill: grey level of the patch, a fraction of white in [0, 1] (0.5: mid grey, 128), or ``"mean"``: each crop's
            own mean pixel value.

    Returns:
        ``(maps, probs)``: ``(N, H, W) float32`` importance in the crop's pixels, a probability drop in [-1, 1]
        (positive: hiding that part lowers the target class's probability); ``(N, C) float32`` probabilities of the
        unoccluded crops.

    Raises:
        ValueError: ``crops`` not 3-D/4-D uint8, ``targets`` of the wrong length or out of range, bad patch, stride
            or fill.
    """
    crops = np.asarray(crops)
    if crops.dtype != np.uint8 or crops.ndim not in (3, 4):
        raise ValueError(f"crops must be (N,H,W) or (N,H,W,3) uint8, got {crops.shape} {crops.dtype}")
    n, h, w = crops.shape[:3]
    if isinstance(fill, str):
        if fill != "mean":
            raise ValueError(f"fill must be a fraction in [0, 1] or 'mean', got {fill!r}")
    elif not 0.0 <= float(fill) <= 1.0:
        raise ValueError(f"fill must be a fraction in [0, 1] or 'mean', got {fill!r}")
    ys, xs = patch_starts(h, patch_px, stride_px), patch_starts(w, patch_px, stride_px)
    positions = [(int(y), int(x)) for y in ys for x in xs]
    if targets is None:
        targets = np.full(n, -1, np.int64)
    targets = np.asarray(targets, np.int64)
    if targets.shape != (n,):
        raise ValueError(f"targets must be ({n},), got {targets.shape}")
    cover = np.zeros((h, w), np.float64)
    for y, x in positions:
        cover[y:y + patch_px, x:x + patch_px] += 1.0
    maps = np.zeros((n, h, w), np.float32)
    probs = None
    per_call = max(1, MAX_CROPS_PER_CALL // (len(positions) + 1))
    for i0 in range(0, n, per_call):
        chunk = crops[i0:i0 + per_call]
        k = len(chunk)
        batch = np.repeat(chunk[:, None], len(positions) + 1, axis=1)  # (k, 1 + P, H, W[, 3]); index 0 unoccluded
        if fill == "mean":
            grey = np.round(chunk.reshape(k, -1).mean(1)).astype(np.uint8)
        else:
            grey = np.full(k, round(float(fill) * 255), np.uint8)
        for j, (y, x) in enumerate(positions, start=1):
            batch[:, j, y:y + patch_px, x:x + patch_px] = grey.reshape((k,) + (1,) * (chunk.ndim - 1))
        p = np.asarray(predict(batch.reshape((-1,) + chunk.shape[1:])), np.float32).reshape(k, len(positions) + 1, -1)
        if probs is None:
            probs = np.zeros((n, p.shape[2]), np.float32)
        probs[i0:i0 + k] = p[:, 0]
        t = targets[i0:i0 + k].copy()
        t[t < 0] = p[t < 0, 0].argmax(1)
        if (t >= p.shape[2]).any():
            raise ValueError(f"target class index out of range (the model has {p.shape[2]} classes)")
        pt = p[np.arange(k), :, t]  # (k, 1 + P): the target class's probability, unoccluded then per position
        drops = pt[:, :1] - pt[:, 1:]
        acc = np.zeros((k, h, w), np.float64)
        for j, (y, x) in enumerate(positions):
            acc[:, y:y + patch_px, x:x + patch_px] += drops[:, j, None, None]
        maps[i0:i0 + k] = acc / cover
    if probs is None:  # no crops
        probs = np.asarray(predict(crops[:0]), np.float32)
    return maps, probs


class OcclusionExplainer:
    """Occlusion maps of an ONNX emotion model (:func:`occlusion_maps` over :class:`EmotionModel.predict`).

    Args:
        model: the loaded emotion model (its spec gives the crop size, colour and alignment template).
        patch_px: patch side, pixels of the aligned crop.
        stride_px: step between patch positions, pixels.
        fill: patch grey level, fraction in [0, 1], or ``"mean"`` (each crop's mean).

    Raises:
        ValueError: bad patch, stride (see :func:`patch_starts`) or fill.
    """

    name: ClassVar[str] = "occlusion"

    def __init__(self, model: EmotionModel, patch_px: int = 8, stride_px: int = 4, fill: float | str = 0.5) -> None:
        h, w = model.spec.input_hw
        patch_starts(min(h, w), patch_px, stride_px)  # validates
        if not (fill == "mean" or (not isinstance(fill, str) and 0.0 <= float(fill) <= 1.0)):
            raise ValueError(f"fill must be a fraction in [0, 1] or 'mean', got {fill!r}")
        self.model = model
        self.patch_px, self.stride_px, self.fill = int(patch_px), int(stride_px), fill
        self.labels: tuple[str, ...] = tuple(model.labels)
        self.input_hw: tuple[int, int] = tuple(model.spec.input_hw)
        self.color: str = model.spec.color
        self.template: np.ndarray = model.spec.template
        self.source = str(model.spec.path)

    def settings(self) -> dict:
        """The method's settings, for the JSON summary."""
        return {"patch_px": self.patch_px, "stride_px": self.stride_px,
                "fill": self.fill if isinstance(self.fill, str) else float(self.fill)}

    def explain(self, crops: np.ndarray, targets: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(maps (N, H, W) float32, probs (N, C) float32)``; see :func:`occlusion_maps`."""
        return occlusion_maps(self.model.predict, crops, targets, self.patch_px, self.stride_px, self.fill)
