"""Soft training targets for FER2013 images: FER+ vote distributions, or a teacher model's probabilities.

Two sources of a label distribution per training image, each mixed with the image's FER2013 label as
``(1 - weight) * onehot(label) + weight * distribution`` (the training loss is then the cross-entropy against this
target, with the recipe's label smoothing on top):

- ``ferplus``: FER+ (Barsoum et al. 2016, arXiv 1608.01041) re-annotated the 35,887 FER2013 images with ten
  crowd votes each. FER2013's Kaggle image-folder layout stores them as JPEG under unrelated file names, so an image
  is matched to its FER+ row by its pixels: nearest neighbour of 12x12 block means, accepted when the full 48x48
  images differ by at most :data:`MAX_MEAN_ABS_DIFF` grey levels on average (JPEG re-encoding leaves 1.3-1.6;
  distinct images differ by tens). Only the FER+ split of the same FER2013 split is searched (FER+ train for
  FER2013 train), so no PublicTest or PrivateTest label reaches training. Images FER+ dropped (mostly "unknown" or
  "not a face" votes) keep their one-hot target.
- ``teacher``: the probabilities of an exported model (e.g. an ensemble built by
  :mod:`fer_pipeline.training.ensemble`) on the un-augmented training images: offline knowledge distillation (Hinton
  et al. 2015, arXiv 1503.02531) at temperature 1, the teacher's own (calibrated) probabilities.

Both are computed once per run, before training (FER+ matching about 20 s, a teacher about 1 ms per image).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from fer_pipeline.training.data import ImageSet

logger = logging.getLogger(__name__)

MAX_MEAN_ABS_DIFF = 4.0
"""Largest mean absolute pixel difference (grey levels, 0-255) between a FER2013 image and the FER+ image it is
matched to (measured: JPEG re-encoding of the same image leaves 1.3-1.6)."""

#: The FER+ split that re-annotates each FER2013 split.
FERPLUS_SPLIT_OF = {"train": "train", "public-test": "valid", "private-test": "test"}


def _block_means(images: np.ndarray) -> np.ndarray:
    n, h, w = images.shape
    return images.reshape(n, 12, h // 12, 12, w // 12).mean((2, 4)).reshape(n, -1).astype(np.float32)


def match_ferplus(images: np.ndarray, ferplus: ImageSet) -> np.ndarray:
    """Index of each image's FER+ counterpart, matched by pixels.

    Args:
        images: ``(N, 48, 48) uint8`` FER2013 images.
        ferplus: the FER+ split that re-annotates them (:data:`FERPLUS_SPLIT_OF`).

    Returns:
        ``(N,) int64`` row of ``ferplus`` for each image, ``-1`` where no FER+ image is within
        :data:`MAX_MEAN_ABS_DIFF` (the image was dropped from FER+).

    Raises:
        ValueError: images that are not ``(N, 48, 48) uint8``.
    """
    from sklearn.neighbors import NearestNeighbors

    if images.dtype != np.uint8 or images.shape[1:] != (48, 48) or ferplus.images.shape[1:] != (48, 48):
        raise ValueError(f"images must be (N,48,48) uint8, got {images.shape} {images.dtype}")
    nn = NearestNeighbors(n_neighbors=1).fit(_block_means(ferplus.images))
    idx = nn.kneighbors(_block_means(images), return_distance=False)[:, 0]
    diff = np.abs(ferplus.images[idx].astype(np.float32) - images.astype(np.float32)).mean((1, 2))
    return np.where(diff <= MAX_MEAN_ABS_DIFF, idx, -1).astype(np.int64)


def ferplus_distributions(data: ImageSet, ferplus_path: str | Path, split: str = "train") -> np.ndarray:
    """FER+ vote distribution of each FER2013 image of ``data``.

    Args:
        data: a FER2013 split (7 labels, FER2013 order).
        ferplus_path: ``ferplus.zip`` or its folder.
        split: the FER2013 split ``data`` is (picks the FER+ split searched, :data:`FERPLUS_SPLIT_OF`).

    Returns:
        ``(N, 7) float32``: the FER+ votes over the FER2013 labels (contempt, unknown and not-a-face votes dropped),
        rows summing to 1; ``NaN`` rows for images without a FER+ counterpart.

    Raises:
        ValueError: ``data`` has other labels, or ``split`` is unknown.
    """
    from fer_pipeline.training.data import FER2013_LABELS, load_ferplus

    if tuple(data.label_names) != tuple(FER2013_LABELS):
        raise ValueError(f"FER+ targets need the 7 FER2013 labels, got {list(data.label_names)}")
    if split not in FERPLUS_SPLIT_OF:
        raise ValueError(f"unknown FER2013 split {split!r}; expected one of {sorted(FERPLUS_SPLIT_OF)}")
    fp = load_ferplus(ferplus_path, FERPLUS_SPLIT_OF[split], classes=7)
    idx = match_ferplus(data.images, fp)
    out = np.full((len(data), 7), np.nan, np.float32)
    out[idx >= 0] = fp.soft[idx[idx >= 0]]
    logger.info("FER+ targets: %d of %d images matched; FER+ majority agrees with the FER2013 label on %.1f%%",
                (idx >= 0).sum(), len(data), 100 * (out[idx >= 0].argmax(1) == data.labels[idx >= 0]).mean())
    return out


def teacher_distributions(data: ImageSet, teacher: str | Path, threads: int = 0) -> np.ndarray:
    """A teacher model's probabilities on the (un-augmented) images of ``data``.

    Args:
        data: the training split.
        teacher: an ``.onnx`` emotion model of this project (card beside it) with the labels of ``data``.
        threads: onnxruntime threads (0 = its default).

    Returns:
        ``(N, C) float32`` probabilities, rows summing to 1.

    Raises:
        fer_pipeline.classify.ModelError: the teacher cannot be loaded.
        ValueError: the teacher's labels differ from the dataset's.
    """
    from fer_pipeline.classify import EmotionModel

    model = EmotionModel(teacher, batch_size=256, device="cpu", threads=threads)
    if tuple(model.labels) != tuple(data.label_names):
        raise ValueError(f"teacher labels {list(model.labels)} differ from the dataset's {list(data.label_names)}")
    probs = model.predict(data.images)
    logger.info("teacher %s: agrees with the training labels on %.1f%%", Path(teacher).name,
                100 * (probs.argmax(1) == data.labels).mean())
    return probs


def mix_targets(data: ImageSet, distributions: np.ndarray, weight: float) -> ImageSet:
    """``data`` with ``soft = (1 - weight) * onehot(labels) + weight * distributions`` (one-hot where a row of
    ``distributions`` is NaN); ``labels`` are unchanged.

    Args:
        data: a split with hard labels.
        distributions: ``(N, C)`` rows summing to 1, or NaN.
        weight: in [0, 1]; 1 = the distributions alone.

    Raises:
        ValueError: shape mismatch or ``weight`` outside [0, 1].
    """
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"soft target weight must be in [0, 1], got {weight}")
    if distributions.shape != (len(data), len(data.label_names)):
        raise ValueError(f"distributions must be {(len(data), len(data.label_names))}, got {distributions.shape}")
    onehot = np.eye(len(data.label_names), dtype=np.float32)[data.labels]
    missing = np.isnan(distributions).any(1)
    dist = np.where(missing[:, None], onehot, distributions).astype(np.float32)
    soft = (1.0 - weight) * onehot + weight * dist
    return ImageSet(data.images, data.labels, data.label_names, soft=soft / soft.sum(1, keepdims=True),
                    names=data.names)
