"""Pictures of explanations: heatmaps overlaid on the aligned crop (PNG) and a figure of the mean map per class.

Colours: matplotlib's ``jet`` colour map over the positive importance, scaled to the map's maximum (blue = little,
red = most); the overlay's opacity follows the importance (at most ``alpha``), so the face stays visible where the
network did not look. Negative importance (hiding that part raised the class probability) is not drawn.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from fer_pipeline.explain.regions import REGIONS, region_bounds

logger = logging.getLogger(__name__)

__all__ = ["mean_maps_figure", "overlay", "write_png"]


def _lut() -> np.ndarray:
    """``(256, 3) uint8`` RGB of the ``jet`` colour map."""
    from matplotlib import colormaps

    return np.round(colormaps["jet"](np.linspace(0.0, 1.0, 256))[:, :3] * 255).astype(np.uint8)


def overlay(crop: np.ndarray, importance: np.ndarray, vmax: float | None = None, alpha: float = 0.6) -> np.ndarray:
    """A heatmap of ``importance`` over ``crop``.

    Args:
        crop: ``(H, W) uint8`` grayscale or ``(H, W, 3) uint8`` RGB aligned crop.
        importance: ``(H, W)`` float map in the crop's pixels (any unit; only positive values are drawn).
        vmax: importance drawn at full colour; the map's positive maximum when None.
        alpha: largest opacity of the colour, in [0, 1].

    Returns:
        ``(H, W, 3) uint8`` RGB image.

    Raises:
        ValueError: shapes disagree.
    """
    crop = np.asarray(crop)
    imp = np.asarray(importance, np.float64)
    if crop.shape[:2] != imp.shape or crop.ndim not in (2, 3):
        raise ValueError(f"crop {crop.shape} and importance {imp.shape} must be (H,W[,3]) and (H,W)")
    base = np.repeat(crop[..., None], 3, axis=2) if crop.ndim == 2 else crop
    pos = np.maximum(np.nan_to_num(imp, nan=0.0), 0.0)
    top = float(pos.max()) if vmax is None else float(vmax)
    heat = np.clip(pos / top, 0.0, 1.0) if top > 0 else np.zeros_like(pos)
    color = _lut()[np.round(heat * 255).astype(np.int64)].astype(np.float64)
    a = alpha * heat[..., None]
    return np.clip(np.round((1.0 - a) * base.astype(np.float64) + a * color), 0, 255).astype(np.uint8)


def write_png(path: str | Path, rgb: np.ndarray) -> Path:
    """Write an ``(H, W, 3) uint8`` RGB image as PNG (parent folders made); returns the path.

    Raises:
        OSError: the file cannot be written.
    """
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(rgb)).save(path, format="PNG", optimize=True)
    return path


def mean_maps_figure(path: str | Path, classes: list[dict], title: str = "", scale: float = 1.7) -> Path:
    """One panel per class: its mean crop with its mean map over it, the thirds' boundaries dashed, and the
    shares of positive importance per third.

    Args:
        path: the PNG to write.
        classes: ``[{"label", "n", "crop": (H, W[, 3]) uint8 mean crop, "map": (H, W) float mean map,
            "regions": {"upper", "middle", "lower"} shares or None}, ...]`` in display order.
        title: figure title.
        scale: panel width, inches (100 dpi).

    Returns:
        ``path``.

    Raises:
        ValueError: ``classes`` is empty.
        OSError: the file cannot be written.
    """
    if not classes:
        raise ValueError("no class to draw")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(classes)
    fig, axes = plt.subplots(1, k, figsize=(scale * k, scale * 1.45 + (0.35 if title else 0)), dpi=100,
                             squeeze=False)
    for ax, c in zip(axes[0], classes):
        img = overlay(c["crop"], c["map"])
        h, w = img.shape[:2]
        ax.imshow(img, interpolation="bilinear", extent=(0, w, h, 0))
        for _, b in region_bounds(h)[:2]:
            ax.axhline(b, color="white", lw=0.8, ls="--")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{c['label']} (n={c['n']})", fontsize=9)
        r = c.get("regions")
        text = "no signal" if not r else "  ".join(f"{name[0].upper()} {r[name]:.2f}" for name in REGIONS)
        ax.set_xlabel(text, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
