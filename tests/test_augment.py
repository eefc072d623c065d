"""Batched training augmentation on real FER2013 faces: MixUp and CutMix mix images and targets with one weight."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import SHARED

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def faces():
    from fer_pipeline.training.data import load_fer2013

    d = load_fer2013(SHARED / "fer2013.zip", "public-test")
    # 16 faces; image i and 15 - i (its partner in the reversed batch) have different labels, so a mixed target
    # shows the weight of each image
    pick = list(range(8))
    for partner in range(7, -1, -1):
        pick.append(next(i for i in range(8, len(d)) if i not in pick and d.labels[i] != d.labels[pick[partner]]))
    x = torch.from_numpy(d.images[pick]).float()[:, None] / 255
    y = torch.nn.functional.one_hot(torch.from_numpy(d.labels[pick]), 7).float()
    assert (y.argmax(1) != y.flip(0).argmax(1)).all()
    return x, y


def test_mixup_blends_images_with_the_targets_weight(faces):
    from fer_pipeline.training.augment import mix_batch

    x, y = faces
    xm, ym = mix_batch(x, y, torch.Generator().manual_seed(1), mixup_alpha=0.4)
    np.testing.assert_allclose(ym.sum(1).numpy(), 1.0, atol=1e-6)
    lam = (ym * y).sum(1)  # weight of each image's own label
    assert ((lam > 0) & (lam < 1)).all() and torch.allclose(lam, lam[0])
    expected = lam[:, None, None, None] * x + (1 - lam[:, None, None, None]) * x.flip(0)
    assert torch.allclose(xm, expected, atol=1e-6)


def test_cutmix_pastes_a_box_of_the_targets_area(faces):
    from fer_pipeline.training.augment import mix_batch

    x, y = faces
    for seed in range(5):
        xm, ym = mix_batch(x, y, torch.Generator().manual_seed(seed), cutmix_alpha=1.0)
        np.testing.assert_allclose(ym.sum(1).numpy(), 1.0, atol=1e-6)
        lam = float((ym[0] * y[0]).sum())
        changed = (xm != x).any(0)[0]  # (H, W): pixels replaced in any image
        from_other = (xm == x.flip(0)) | (xm == x)
        assert from_other.all()  # every pixel is the image's own or its partner's
        rows, cols = np.nonzero(changed.numpy())
        box = 0 if len(rows) == 0 else (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert box == pytest.approx((1 - lam) * 48 * 48, abs=1.0)


def test_mix_batch_off_and_reproducible(faces):
    from fer_pipeline.training.augment import mix_batch

    x, y = faces
    assert mix_batch(x, y, torch.Generator().manual_seed(0))[0] is x
    assert mix_batch(x, y, torch.Generator().manual_seed(0), mixup_alpha=0.4, p=0.0)[1] is y
    a = mix_batch(x, y, torch.Generator().manual_seed(3), mixup_alpha=0.4, cutmix_alpha=1.0)
    b = mix_batch(x, y, torch.Generator().manual_seed(3), mixup_alpha=0.4, cutmix_alpha=1.0)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(ValueError, match="target"):
        mix_batch(x, y.argmax(1), mixup_alpha=0.4)


def test_recipe_trains_with_mixing_and_soft_targets(tmp_path):
    """A smoke run of the default recipe with MixUp, CutMix and FER+ soft targets together."""
    from typer.testing import CliRunner

    from fer_pipeline.cli import app

    r = CliRunner().invoke(app, ["train", "--config", "configs/train/fer2013_vgg.yaml", "--smoke",
                                 "--set", f"out_dir={tmp_path / 'out'}", "--set", "export_onnx=null",
                                 "--set", "augment.mixup_alpha=0.2", "--set", "augment.cutmix_alpha=1.0",
                                 "--set", "data.soft_targets=ferplus",
                                 "--set", f"data.soft_source={SHARED / 'ferplus.zip'}"])
    assert r.exit_code == 0, r.output
    assert "recipe ok: " in r.output and not (tmp_path / "out").exists()
