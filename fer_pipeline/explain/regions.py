"""Where a map's importance lies: shares of positive importance in the upper, middle and lower thirds of the crop.

The thirds are rows ``[0, H/3)``, ``[H/3, 2H/3)`` and ``[2H/3, H)`` of the aligned crop (for 48 px: rows 0-15,
16-31, 32-47). With the shipped models' alignment template (FER2013's measured framing,
:data:`fer_pipeline.align.FER2013_TEMPLATE`, 48x48: eyes at y = 19.5 px, nose tip at 28.6 px, mouth corners at
36.1 px, chin at the bottom edge), the thirds hold:

* ``upper`` (rows 0-15): forehead, eyebrows and the top of the eye sockets (brows sit about 4-6 px above the eye
  centres);
* ``middle`` (rows 16-31): the eyes themselves, the nose and the cheeks;
* ``lower`` (rows 32-47): the mouth, the lips' corners and the chin.

So in this framing the eyes fall in the middle third, with the nose, not in the upper one: "eyes and brows" are
split between the upper (brows) and middle (eyes) thirds. :func:`template_thirds` says which third each template
landmark falls in, for any model's template.
"""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["REGIONS", "region_bounds", "region_shares", "template_thirds"]

#: Region names, top to bottom of the aligned crop.
REGIONS: tuple[str, str, str] = ("upper", "middle", "lower")


def region_bounds(height: int) -> list[tuple[int, int]]:
    """Row ranges ``[(start, stop), ...]`` (pixels, stop exclusive) of the three thirds of a crop ``height`` rows
    high: ``[0, round(H/3))``, ``[round(H/3), round(2H/3))``, ``[round(2H/3), H)``.

    Raises:
        ValueError: ``height`` < 3.
    """
    if height < 3:
        raise ValueError(f"a crop needs at least 3 rows to have thirds, got {height}")
    a, b = round(height / 3), round(2 * height / 3)
    return [(0, a), (a, b), (b, height)]


def region_shares(maps: np.ndarray) -> np.ndarray:
    """Share of positive importance in each third of each map.

    Only positive importance counts (the parts that support the class); negative values (occluding them raised the
    class probability) are set to 0 first.

    Args:
        maps: ``(H, W)`` or ``(N, H, W)`` float importance maps in the crop's pixels (any unit, e.g. a drop of
            probability for occlusion, a Grad-CAM activation).

    Returns:
        ``(3,)`` or ``(N, 3)`` float64 shares in [0, 1] for (upper, middle, lower), summing to 1 per map; all NaN
        for a map without positive importance (nothing it looked at).

    Raises:
        ValueError: ``maps`` is not 2-D or 3-D, or has fewer than 3 rows.
    """
    m = np.asarray(maps, np.float64)
    single = m.ndim == 2
    if single:
        m = m[None]
    if m.ndim != 3:
        raise ValueError(f"maps must be (H,W) or (N,H,W), got shape {m.shape}")
    pos = np.maximum(np.nan_to_num(m, nan=0.0), 0.0)
    rows = pos.sum(2)  # (N, H)
    sums = np.stack([rows[:, a:b].sum(1) for a, b in region_bounds(m.shape[1])], 1)  # (N, 3)
    total = sums.sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = np.where(total > 0, sums / np.where(total > 0, total, 1.0), np.nan)
    return shares[0] if single else shares


def template_thirds(template: np.ndarray, height: int) -> dict[str, str]:
    """Which third each landmark of an alignment template falls in.

    Args:
        template: ``(5, 2)`` landmark ``(x, y)`` pixels of the crop: left eye, right eye, nose, left mouth corner,
            right mouth corner (:attr:`fer_pipeline.classify.ModelSpec.template`).
        height: crop height in pixels.

    Returns:
        ``{"left_eye": "middle", ...}`` for the shipped template.

    Raises:
        ValueError: ``template`` is not ``(5, 2)``.
    """
    t = np.asarray(template, np.float64)
    if t.shape != (5, 2):
        raise ValueError(f"template must be (5,2), got {t.shape}")
    names = ("left_eye", "right_eye", "nose", "left_mouth", "right_mouth")
    bounds = region_bounds(height)
    out = {}
    for name, (_, y) in zip(names, t):
        row = int(np.clip(np.floor(y), 0, height - 1))
        out[name] = next(r for r, (a, b) in zip(REGIONS, bounds) if a <= row < b)
    return out
