"""Kept frames -> batches: turned upright as they are stacked (:func:`make_batch`), into reused arrays
(:class:`BatchBuffers`) or, in the decode process, straight into shared memory (anything with ``stack``)."""

from __future__ import annotations

import logging
import sys
from typing import Protocol

import numpy as np

from fer_pipeline.types import FrameBatch

logger = logging.getLogger(__name__)

__all__ = ["BatchBuffers", "Stacker", "apply_rotation", "make_batch", "quarter_turns"]


def quarter_turns(rotation: int) -> int:
    """Clockwise quarter turns (0-3) of ``rotation`` degrees; ValueError when it is not a multiple of 90."""
    if rotation % 90 != 0:
        raise ValueError(f"rotation must be a multiple of 90 degrees, got {rotation}")
    return (rotation // 90) % 4


def apply_rotation(frames: np.ndarray, rotation: int) -> np.ndarray:
    """Rotate frames clockwise by ``rotation`` degrees so they come out upright.

    Args:
        frames: ``(H, W, C)`` or ``(B, H, W, C)`` array (any dtype).
        rotation: clockwise degrees, one of 0, 90, 180, 270 (as in ``VideoMeta.rotation``).

    Returns:
        the rotated array, C-contiguous; ``(W, H, C)`` / ``(B, W, H, C)`` for 90 and 270. The input is returned
        unchanged for 0.

    Raises:
        ValueError: ``rotation`` is not a multiple of 90, or ``frames`` has fewer than 3 dimensions.
    """
    if frames.ndim < 3:
        raise ValueError(f"frames must be (H,W,C) or (B,H,W,C), got shape {frames.shape}")
    k = quarter_turns(rotation)
    if k == 0:
        return frames
    # np.rot90 with positive k turns counter-clockwise (first axis towards second); clockwise is -k.
    return np.ascontiguousarray(np.rot90(frames, k=-k, axes=(frames.ndim - 3, frames.ndim - 2)))


class Stacker(Protocol):
    """Where batches are stacked: :class:`BatchBuffers`, or the decode process's shared slots."""

    def stack(self, frames: list[np.ndarray]) -> np.ndarray:
        """``np.stack(frames)``: a ``(B, H, W, 3)`` array of the ``B`` frames."""


class BatchBuffers:
    """Reuses the ``(B, H, W, 3)`` arrays of earlier batches that nothing references any more.

    A fresh array per batch (44 MB for 16 frames of 720p) is paid again in page faults on its first touch: stacking
    the batches took 0.55-0.65 CPU s per minute of 720p video in the pipeline against 0.21-0.36 s with reused arrays
    (``benchmarks/README.md``, "Issue #4, fifth round"). An array is reused only while this pool holds its one
    reference (CPython's reference count), so a batch that a consumer keeps, or a view of it, is never overwritten;
    such a batch just costs a new array. At most ``keep`` arrays are pooled; they are freed with the pool.

    Args:
        keep: most arrays held (a pipeline with one batch prefetched has 4-5 alive at once).
    """

    def __init__(self, keep: int = 6) -> None:
        self.keep = int(keep)
        self._arrays: list[np.ndarray] = []

    def stack(self, frames: list[np.ndarray]) -> np.ndarray:
        """``np.stack(frames)``, into a pooled array of that shape and dtype when one is free."""
        shape, dtype = (len(frames),) + frames[0].shape, frames[0].dtype
        for arr in self._arrays:
            # three references when free: the pool's list, this loop's variable and getrefcount's argument
            if arr.shape == shape and arr.dtype == dtype and sys.getrefcount(arr) <= 3:
                return np.stack(frames, out=arr)
        arr = np.stack(frames, out=np.empty(shape, dtype))  # C order also for rotated views (np.stack keeps theirs)
        if len(self._arrays) < self.keep:
            self._arrays.append(arr)
        return arr


def make_batch(frames: list[np.ndarray], idx: list[int], stamps: list[float], rotation: int,
               buffers: Stacker) -> FrameBatch:
    """Stack kept frames, turned upright, into a ``FrameBatch`` (into a pooled array of ``buffers`` when one is
    free).

    Args:
        frames: ``B >= 1`` decoded ``(h, w, 3) uint8`` RGB frames as stored (before rotation).
        idx: their frame indices; stamps: their timestamps in seconds.
        rotation: clockwise degrees (``VideoMeta.rotation``).
        buffers: where the batch is stacked.

    A rotated file's frames are stacked through rotated views, so the batch is written once, straight into its
    buffer: the decode process's shared slots (``buffers`` there) then hold one slot per batch whatever the rotation.
    Turning the stacked batch afterwards needed a second buffer while the first was still full, and with the
    pipeline holding the others the decode process waited for a slot that never came (rotated phone recordings
    hung the run).
    """
    k = quarter_turns(rotation)
    if k:
        # np.rot90 with positive k turns counter-clockwise (first axis towards second); clockwise is -k.
        frames = [np.rot90(f, k=-k, axes=(0, 1)) for f in frames]
    arr = buffers.stack(frames)
    return FrameBatch(frames=arr, frame_index=np.asarray(idx, dtype=np.int64),
                      timestamp_s=np.asarray(stamps, dtype=np.float64))
