"""Datasets for training and evaluating the emotion model: FER2013 (Kaggle layout) and FER+ (Microsoft layout).

Both are read straight from their zip archive or from an extracted folder, decoded once into arrays and cached as
``.npz`` beside a hash of the source, so later runs start in about a second.

Label order everywhere is FER2013's: angry, disgust, fear, happy, sad, surprise, neutral (+ contempt for 8-class FER+).

Sources:
    FER2013: Goodfellow et al., "Challenges in Representation Learning", ICONIP 2013 (Kaggle layout
    ``train/<emotion>/Training_*.jpg``, ``test/<emotion>/{PublicTest,PrivateTest}_*.jpg``).
    FER+: Barsoum et al., "Training Deep Networks for Facial Expression Recognition with Crowd-Sourced Label
    Distribution", ICMI 2016 (``FER2013Train|Valid|Test/label.csv`` with 10 annotator votes per image).
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from fer_pipeline.fileutil import cache_dir

logger = logging.getLogger(__name__)

FER2013_LABELS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
FERPLUS_LABELS_8: tuple[str, ...] = FER2013_LABELS + ("contempt",)

FER2013_SPLITS = {"train": "Training", "public-test": "PublicTest", "private-test": "PrivateTest"}
FERPLUS_SPLITS = {"train": "FER2013Train", "valid": "FER2013Valid", "test": "FER2013Test"}
# label.csv vote columns (after name, box): neutral, happiness, surprise, sadness, anger, disgust, fear, contempt,
# unknown, NF.  Index of each of our labels in that vote vector:
_FERPLUS_VOTE_INDEX = {"angry": 4, "disgust": 5, "fear": 6, "happy": 1, "sad": 3, "surprise": 2, "neutral": 0,
                       "contempt": 7}


@dataclass(frozen=True)
class ImageSet:
    """A split of 48x48 grayscale face images with labels.

    Attributes:
        images: ``(N, 48, 48) uint8`` grayscale pixels.
        labels: ``(N,) int64`` index into ``label_names`` (hard label; for FER+ the vote majority).
        label_names: class names in model order.
        soft: ``(N, C) float32`` label distribution summing to 1 per row (FER+ votes), or ``None`` for hard-only data.
        names: ``(N,)`` source file names, for tracing errors back to images.
    """

    images: np.ndarray
    labels: np.ndarray
    label_names: tuple[str, ...]
    soft: np.ndarray | None = None
    names: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.images.ndim != 3 or self.images.dtype != np.uint8:
            raise ValueError(f"images must be (N,H,W) uint8, got {self.images.shape} {self.images.dtype}")
        if self.labels.shape != (len(self.images),):
            raise ValueError(f"labels must be ({len(self.images)},), got {self.labels.shape}")
        if self.soft is not None and self.soft.shape != (len(self.images), len(self.label_names)):
            raise ValueError(f"soft labels must be ({len(self.images)},{len(self.label_names)}), got {self.soft.shape}")

    def __len__(self) -> int:
        return len(self.images)

    def class_counts(self) -> np.ndarray:
        """``(C,) int64`` number of images per class."""
        return np.bincount(self.labels, minlength=len(self.label_names))


class _Source:
    """Uniform read access to a zip archive or a folder, by relative POSIX path."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"dataset not found: {self.path}")
        self._zip = zipfile.ZipFile(self.path) if self.path.is_file() else None

    def names(self) -> list[str]:
        if self._zip is not None:
            return [n for n in self._zip.namelist() if not n.endswith("/")]
        return [p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file()]

    def read(self, name: str) -> bytes:
        if self._zip is not None:
            return self._zip.read(name)
        return (self.path / name).read_bytes()

    def fingerprint(self) -> str:
        """Cheap identity of the source for the cache key: size + mtime + path."""
        st = self.path.stat()
        return hashlib.sha256(f"{self.path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]


def _decode_gray(data: bytes) -> np.ndarray:
    img = Image.open(io.BytesIO(data)).convert("L")
    if img.size != (48, 48):
        img = img.resize((48, 48), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def _cached(key: str, build) -> dict:
    path = cache_dir() / f"{key}.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    arrays = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)
    return arrays


def detect_layout(path: Path) -> str:
    """Tell which dataset layout ``path`` (zip or folder) holds.

    Returns:
        ``"fer2013"`` (Kaggle ``train/`` + ``test/`` emotion folders), ``"ferplus"`` (``FER2013Train/label.csv``) or
        ``"imagefolder"`` (class sub-folders of images).

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    names = _Source(path).names()
    if any(n.split("/")[-2:] == ["FER2013Train", "label.csv"] or n.endswith("FER2013Train/label.csv") for n in names):
        return "ferplus"
    if any("/Training_" in n for n in names) or any("/PrivateTest_" in n for n in names):
        return "fer2013"
    return "imagefolder"


def load_fer2013(path: str | Path, split: str) -> ImageSet:
    """Load one FER2013 split from the Kaggle layout (zip or extracted folder).

    Args:
        path: ``fer2013.zip`` or its extracted folder.
        split: ``"train"`` (28,709), ``"public-test"`` (3,589) or ``"private-test"`` (3,589).

    Returns:
        An :class:`ImageSet` with 7 FER2013 labels.

    Raises:
        ValueError: unknown split, or no images of that split found.
        FileNotFoundError: ``path`` does not exist.
    """
    if split not in FER2013_SPLITS:
        raise ValueError(f"unknown FER2013 split {split!r}; expected one of {sorted(FER2013_SPLITS)}")
    src = _Source(Path(path))
    prefix = FER2013_SPLITS[split]

    def build() -> dict:
        imgs, labels, names = [], [], []
        for name in sorted(src.names()):
            parts = name.split("/")
            if len(parts) < 2 or not parts[-1].startswith(prefix + "_"):
                continue
            emotion = parts[-2]
            if emotion not in FER2013_LABELS:
                continue
            imgs.append(_decode_gray(src.read(name)))
            labels.append(FER2013_LABELS.index(emotion))
            names.append(parts[-1])
        if not imgs:
            raise ValueError(f"no {prefix}_*.jpg images under {path}: is it the FER2013 Kaggle layout?")
        return {"images": np.stack(imgs), "labels": np.asarray(labels, np.int64), "names": np.asarray(names)}

    arrays = _cached(f"fer2013-{split}-{src.fingerprint()}", build)
    return ImageSet(arrays["images"], arrays["labels"], FER2013_LABELS, names=arrays["names"])


def load_ferplus(path: str | Path, split: str, classes: int = 7) -> ImageSet:
    """Load one FER+ split (Microsoft layout) with majority and soft (vote-distribution) labels.

    Images whose votes go mostly to ``unknown`` / ``NF`` (not a face), or that have no vote for any kept class, are
    dropped, as in Barsoum et al. 2016. With ``classes=7`` contempt votes are ignored.

    Args:
        path: ``ferplus.zip`` or its extracted folder.
        split: ``"train"``, ``"valid"`` or ``"test"``.
        classes: 7 (FER2013 labels) or 8 (+ contempt).

    Returns:
        An :class:`ImageSet`; ``soft`` holds the vote distribution over the kept classes (rows sum to 1) and
        ``labels`` its argmax.

    Raises:
        ValueError: unknown split or class count, or no labelled images found.
    """
    if split not in FERPLUS_SPLITS:
        raise ValueError(f"unknown FER+ split {split!r}; expected one of {sorted(FERPLUS_SPLITS)}")
    if classes not in (7, 8):
        raise ValueError(f"classes must be 7 or 8, got {classes}")
    label_names = FER2013_LABELS if classes == 7 else FERPLUS_LABELS_8
    src = _Source(Path(path))
    folder = FERPLUS_SPLITS[split]

    def build() -> dict:
        csv_name = next((n for n in src.names() if n.endswith(f"{folder}/label.csv")), None)
        if csv_name is None:
            raise ValueError(f"{folder}/label.csv not found under {path}: is it the FER+ layout?")
        base = csv_name[: -len("label.csv")]
        imgs, votes, names = [], [], []
        for row in csv.reader(io.StringIO(src.read(csv_name).decode())):
            if len(row) < 12:
                continue
            v = np.asarray([int(x) for x in row[2:12]], np.float32)
            kept = v[[_FERPLUS_VOTE_INDEX[c] for c in label_names]]
            if kept.sum() == 0 or v[8:].max() > kept.max():
                continue
            imgs.append(_decode_gray(src.read(base + row[0])))
            votes.append(kept)
            names.append(row[0])
        if not imgs:
            raise ValueError(f"no labelled images in {csv_name}")
        votes_a = np.stack(votes)
        return {"images": np.stack(imgs), "votes": votes_a, "names": np.asarray(names)}

    arrays = _cached(f"ferplus{classes}-{split}-{src.fingerprint()}", build)
    votes = arrays["votes"].astype(np.float32)
    soft = votes / votes.sum(axis=1, keepdims=True)
    return ImageSet(arrays["images"], soft.argmax(1).astype(np.int64), label_names, soft=soft, names=arrays["names"])


def load_split(path: str | Path, split: str, ferplus_classes: int = 7) -> ImageSet:
    """Load ``split`` from a FER2013 or FER+ dataset, whichever layout ``path`` holds.

    Raises:
        ValueError: the layout is neither FER2013 nor FER+, or the split is unknown for it.
    """
    layout = detect_layout(Path(path))
    if layout == "fer2013":
        return load_fer2013(path, split)
    if layout == "ferplus":
        return load_ferplus(path, split, ferplus_classes)
    raise ValueError(f"{path} is neither a FER2013 (Kaggle) nor a FER+ dataset")


#: The selection (``val``) and final (``test``) split of each dataset layout, as model cards name them.
CARD_SPLITS = {"fer2013": {"val": "public-test", "test": "private-test"}, "ferplus": {"val": "valid", "test": "test"}}


def load_split_for_model(path: str | Path, split: str, labels) -> ImageSet:
    """:func:`load_split` for a model with these ``labels``: FER+ with 8 classes when the model has 8 (contempt),
    else 7; the dataset's class names must be the model's, in its order.

    Raises:
        ValueError: the layout or split is unknown, or the dataset's labels differ from ``labels``.
    """
    labels = tuple(labels)
    data = load_split(path, split, ferplus_classes=len(labels) if len(labels) in (7, 8) else 7)
    if tuple(data.label_names) != labels:
        raise ValueError(f"dataset labels {list(data.label_names)} differ from the model's {list(labels)}")
    return data
