"""Fast image shrinking for the per-frame hot paths (detector input, face crops, alignment, thumbnails).

OpenCV's area interpolation (``cv2.INTER_AREA``, the right filter for shrinking: it averages every source pixel)
has a fast path only for integer factors; for any other factor it falls back to a generic weighted sum that cost
1.0-3.7 ms per call on this project's 2-core Xeon where the integer path costs 0.15-0.4 ms (a 600x600 face region to
96x96, a 1280x720 frame to 640x384; ``benchmarks/README.md``, "Resizing"). :func:`shrink` therefore averages by the
largest integer factor (the same on both axes) that does not go below the requested size, then interpolates
bilinearly the remaining factor, below 2.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["shrink"]


def shrink(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``img`` resized to ``size = (width, height)`` pixels, area-averaged when shrinking.

    Args:
        img: ``(H, W)`` or ``(H, W, C) uint8`` image.
        size: output ``(width, height)`` in pixels, each >= 1. Enlarging is allowed (bilinear).

    Returns:
        ``(height, width[, C]) uint8``, a new array (``img`` itself when the size is unchanged). When shrinking by
        1.8 or more, the source is first averaged over ``k x k`` blocks, ``k = floor(min(W / width, H / height))``
        (2 for factors 1.8-2; up to ``k - 1`` pixels of the right and bottom edges are left out, less than one
        output pixel), then resized bilinearly by what is left, a factor below 2 (e.g. 1280x720 to 640x384: 2x2
        blocks to 640x360, then 360 rows stretched to 384, as the detector stretches to multiples of 32).

    Raises:
        ValueError: ``size`` has a side below 1 or ``img`` is empty.
    """
    w, h = int(size[0]), int(size[1])
    if w < 1 or h < 1:
        raise ValueError(f"size must be positive (width, height), got {size!r}")
    ih, iw = img.shape[:2]
    if ih < 1 or iw < 1:
        raise ValueError(f"empty image {img.shape}")
    if (iw, ih) == (w, h):
        return img
    f = min(iw / w, ih / h)
    k = int(f) if f >= 2 else (2 if f >= 1.8 else 1)  # 1.8-2: 2, and the bilinear step enlarges by < 11%
    if k >= 2:  # OpenCV's fast area path (the same integer factor on both axes)
        bw, bh = iw // k, ih // k
        img = cv2.resize(img[:bh * k, :bw * k], (bw, bh), interpolation=cv2.INTER_AREA)
        if (bw, bh) == (w, h):
            return img
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)  # what is left: a factor below 2.2 per axis
