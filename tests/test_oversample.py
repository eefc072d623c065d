"""Class balancing before training (imbalance.oversample): random copies and SMOTE's synthetic images, on real
FER2013 and FER+ training images."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import SHARED
from fer_pipeline.training.data import ImageSet, load_fer2013, load_ferplus
from fer_pipeline.training.oversample import oversample


@pytest.fixture(scope="module")
def train_subset():
    tr = load_fer2013(SHARED / "fer2013.zip", "train")
    idx = np.random.default_rng(0).permutation(len(tr))[:3000]  # files are class-sorted: a random subset
    return ImageSet(tr.images[idx], tr.labels[idx], tr.label_names, None, tr.names[idx])


def test_none_is_the_data_itself(train_subset):
    assert oversample(train_subset, "none") is train_subset


def test_random_copies_minority_images_up_to_the_largest_class(train_subset):
    out = oversample(train_subset, "random", seed=1)
    top = train_subset.class_counts().max()
    assert (out.class_counts() == top).all()
    n = len(train_subset)
    np.testing.assert_array_equal(out.images[:n], train_subset.images)
    by_name = {name: (img, lab) for name, img, lab in zip(train_subset.names, train_subset.images,
                                                          train_subset.labels)}
    for name, img, lab in zip(out.names[n:], out.images[n:], out.labels[n:]):  # each copy is an original
        orig, orig_lab = by_name[name]
        assert lab == orig_lab and np.array_equal(img, orig)


def test_smote_adds_new_images_between_same_class_neighbours(train_subset):
    out = oversample(train_subset, "smote", seed=0)
    n, top = len(train_subset), train_subset.class_counts().max()
    assert (out.class_counts() == top).all() and out.images.dtype == np.uint8
    np.testing.assert_array_equal(out.images[:n], train_subset.images)
    new, new_labels = out.images[n:].astype(np.int16), out.labels[n:]
    assert all(name.startswith("smote-") for name in out.names[n:])
    for c in np.unique(new_labels):  # a synthetic image lies inside its class's per-pixel range, and is new
        own = train_subset.images[train_subset.labels == c].astype(np.int16)
        mine = new[new_labels == c]
        assert (mine >= own.min(0) - 1).all() and (mine <= own.max(0) + 1).all()
        flat_own = {img.tobytes() for img in own.astype(np.uint8)}
        copies = sum(img.astype(np.uint8).tobytes() in flat_own for img in mine)
        assert copies < 0.05 * len(mine)


def test_smote_refuses_soft_labels_and_random_keeps_them():
    fp = load_ferplus(SHARED / "ferplus.zip", "valid", 8)
    with pytest.raises(ValueError, match="SMOTE needs hard labels"):
        oversample(fp, "smote")
    out = oversample(fp, "random")
    assert (out.class_counts() == fp.class_counts().max()).all()
    np.testing.assert_allclose(out.soft.sum(1), 1.0, atol=1e-5)
    soft_of = dict(zip(fp.names, fp.soft))
    n = len(fp)
    assert len(out) > n
    for name, soft in zip(out.names[n:], out.soft[n:]):  # each copy carries its image's vote distribution
        np.testing.assert_array_equal(soft, soft_of[name])
    with pytest.raises(ValueError, match="unknown oversampling"):
        oversample(fp, "adasyn")
