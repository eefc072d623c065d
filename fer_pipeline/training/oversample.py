"""Class balancing by adding training images, before training (``imbalance.oversample`` of a recipe).

The brief's "CNN with oversampling" and "CNN with SMOTE" variants, as full trainings: the training split is
resampled once, before the first epoch, so every class has as many images as the largest one (FER2013: 7 x 7,215 =
50,505 images instead of 28,709); the augmentation then applies to every image, copied or synthetic.

* ``random``: copies of minority-class images drawn at random (imbalanced-learn's ``RandomOverSampler``).
* ``smote``: synthetic images (imbalanced-learn's ``SMOTE``; Chawla et al., "SMOTE: Synthetic Minority Over-sampling
  Technique", JAIR 2002): each new image is a random point on the segment between a minority image and one of its
  ``k`` nearest neighbours of the same class, in pixel space (48 x 48 = 2,304 dimensions), rounded to uint8. This is
  SMOTE as image-classification papers apply it to FER2013 pixels; the interpolated faces are blends, not faces a
  camera would see.

Oversampling differs from ``imbalance.sampler: weighted`` (which redraws from the same images every epoch) in that
the set is fixed and, for SMOTE, holds new pixels.
"""

from __future__ import annotations

import logging

import numpy as np

from fer_pipeline.training.data import ImageSet

logger = logging.getLogger(__name__)

__all__ = ["METHODS", "oversample"]

METHODS = ("none", "random", "smote")


def oversample(data: ImageSet, how: str, seed: int = 0, k_neighbors: int = 5) -> ImageSet:
    """``data`` with every class brought up to the size of the largest.

    Args:
        data: the training split (``images`` ``(N, 48, 48) uint8``).
        how: ``"none"`` (``data`` itself), ``"random"`` or ``"smote"`` (module docstring).
        seed: random state of the resampler.
        k_neighbors: SMOTE's neighbours per image (fewer for a class with fewer images: at most its size - 1).

    Returns:
        An :class:`ImageSet` with the original images first, then the added ones (``names``: the copied file's name
        for ``random``, ``smote-<i>`` for synthetic images; soft labels copied with their image for ``random``).

    Raises:
        ValueError: unknown ``how``; ``smote`` on soft labels (a synthetic image has no vote distribution) or on a
            class with a single image.
    """
    if how not in METHODS:
        raise ValueError(f"unknown oversampling {how!r}; expected one of {list(METHODS)}")
    if how == "none":
        return data
    counts = data.class_counts()
    present = counts[counts > 0]
    n, h, w = data.images.shape
    x = data.images.reshape(n, h * w)
    if how == "random":
        from imblearn.over_sampling import RandomOverSampler

        ros = RandomOverSampler(random_state=seed)
        ros.fit_resample(x, data.labels)
        idx = np.asarray(ros.sample_indices_, np.int64)
        out = ImageSet(data.images[idx], data.labels[idx], data.label_names,
                       None if data.soft is None else data.soft[idx], None if data.names is None else data.names[idx])
    else:
        if data.soft is not None:
            raise ValueError("SMOTE needs hard labels: a synthetic image has no vote distribution (use "
                             "oversample: random, or data.soft_labels: false)")
        if present.min() < 2:
            raise ValueError("SMOTE needs at least 2 images in every class present")
        from imblearn.over_sampling import SMOTE

        k = int(min(k_neighbors, present.min() - 1))
        xs, ys = SMOTE(k_neighbors=k, random_state=seed).fit_resample(x.astype(np.float32), data.labels)
        extra = np.clip(np.round(xs[n:]), 0, 255).astype(np.uint8).reshape(-1, h, w)
        names = None if data.names is None else np.concatenate(
            [data.names, np.asarray([f"smote-{i}" for i in range(len(extra))])])
        out = ImageSet(np.concatenate([data.images, extra]), np.asarray(ys, np.int64), data.label_names, None, names)
    logger.info("oversampling (%s): %d -> %d training images, %s per class", how, n, len(out),
                int(out.class_counts().max()))
    return out
