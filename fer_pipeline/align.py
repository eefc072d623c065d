"""Face alignment: warp each detected face onto the framing the emotion model was trained on.

FER2013's 48x48 images are loosely centred face crops. Their mean 5-point landmark positions were measured with the
pipeline's own detector (``scripts/measure_fer2013_template.py``: 1,355 of 2,000 random training images with one
confident face; median positions, interquartile range about 2.5-3 px) and mirrored to be left-right symmetric, since
training flips images. A similarity transform (rotation, uniform scale, translation; Umeyama 1991, least squares)
maps the detector's 5 landmarks onto that template, so pipeline crops have the same scale, centring and roll as the
training images.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

logger = logging.getLogger(__name__)

TEMPLATE_SIZE: tuple[int, int] = (48, 48)  # (height, width) in pixels
# (x, y) pixels in the 48x48 frame: left eye, right eye, nose, left mouth corner, right mouth corner (image-left first).
# Measured medians: [[14.83,19.95],[31.99,19.02],[23.36,28.63],[17.51,36.55],[31.68,35.70]]; symmetrised about x=23.5.
FER2013_TEMPLATE: np.ndarray = np.array(
    [[14.92, 19.49], [32.08, 19.49], [23.50, 28.63], [16.41, 36.13], [30.59, 36.13]], dtype=np.float32)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (Umeyama 1991) mapping ``src`` points onto ``dst``.

    Args:
        src, dst: ``(K, 2) float`` point sets (K >= 2), pixels.

    Returns:
        ``(2, 3) float64`` affine matrix ``M`` with ``dst ~= M[:, :2] @ src + M[:, 2]`` (no reflection).

    Raises:
        ValueError: shapes differ, fewer than 2 points, or the source points are degenerate (all equal).
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"need two (K,2) point sets with K>=2, got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    var_s = (s ** 2).sum() / len(src)
    if var_s <= 1e-12:
        raise ValueError("degenerate source points (all equal)")
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    e = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        e[1, 1] = -1
    r = u @ e @ vt
    scale = np.trace(np.diag(sig) @ e) / var_s
    m = np.zeros((2, 3))
    m[:, :2] = scale * r
    m[:, 2] = mu_d - scale * r @ mu_s
    return m


def align_faces(frame: np.ndarray, landmarks: np.ndarray, template: np.ndarray = FER2013_TEMPLATE,
                size: tuple[int, int] = TEMPLATE_SIZE, gray: bool = True) -> np.ndarray:
    """Crop and align every face of one frame.

    Args:
        frame: ``(H, W, 3) uint8`` RGB image.
        landmarks: ``(N, 5, 2) float32`` detector landmarks in ``frame`` pixels.
        template: ``(5, 2)`` target landmark positions in the output crop, pixels.
        size: output ``(height, width)`` in pixels.
        gray: return luminance (ITU-R BT.601, as PIL's ``convert("L")`` used for FER2013) instead of RGB.

    Returns:
        ``(N, h, w) uint8`` grayscale crops, or ``(N, h, w, 3) uint8`` RGB when ``gray`` is False. Pixels outside
        the frame are filled by edge replication.

    Raises:
        ValueError: ``frame`` is not ``(H, W, 3) uint8`` or ``landmarks`` not ``(N, 5, 2)``.
    """
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"frame must be (H,W,3) uint8 RGB, got {frame.shape} {frame.dtype}")
    landmarks = np.asarray(landmarks, np.float32)
    if landmarks.ndim != 3 or landmarks.shape[1:] != (5, 2):
        raise ValueError(f"landmarks must be (N,5,2), got {landmarks.shape}")
    h, w = size
    fh, fw = frame.shape[:2]
    out = np.empty((len(landmarks), h, w) + (() if gray else (3,)), np.uint8)
    corners = np.array([[0, 0], [w, 0], [0, h], [w, h]], np.float64)
    for i, lm in enumerate(landmarks):
        m = similarity_transform(lm, template)
        # Only the frame region the output samples is converted and resized: its bounding box, 2 px of margin for
        # the interpolation (the result is the same as warping the whole frame; outside the frame, edges repeat).
        inv = cv2.invertAffineTransform(m)
        pts = corners @ inv[:, :2].T + inv[:, 2]
        x0, y0 = np.floor(pts.min(0)).astype(int) - 2
        x1, y1 = np.ceil(pts.max(0)).astype(int) + 2
        x0, y0 = min(max(x0, 0), fw - 1), min(max(y0, 0), fh - 1)
        x1, y1 = max(min(x1, fw), x0 + 1), max(min(y1, fh), y0 + 1)
        roi = frame[y0:y1, x0:x1]
        if gray:
            roi = cv2.cvtColor(roi, cv2.COLOR_RGB2GRAY)
        m2 = m.copy()
        m2[:, 2] = m[:, :2] @ np.array([x0, y0], np.float64) + m[:, 2]  # the same map, from roi pixels
        scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
        if scale < 0.8 and x1 - x0 >= 2 and y1 - y0 >= 2:
            # Downscale the face's region with area averaging first (warpAffine alone would alias), then warp.
            rw, rh = max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale))
            roi = cv2.resize(roi, (rw, rh), interpolation=cv2.INTER_AREA)
            fx, fy = rw / (x1 - x0), rh / (y1 - y0)
            m2[:, 0], m2[:, 1] = m[:, 0] / fx, m[:, 1] / fy
        out[i] = cv2.warpAffine(roi, m2, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out
