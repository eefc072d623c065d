"""Training code on the real datasets: loaders, a tiny Lightning run, resumable checkpoint, ONNX export + card."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import SHARED
from fer_pipeline.training.data import FER2013_LABELS, detect_layout, load_fer2013, load_ferplus

pytestmark = pytest.mark.slow


def test_fer2013_splits_have_official_sizes():
    tr = load_fer2013(SHARED / "fer2013.zip", "train")
    pub = load_fer2013(SHARED / "fer2013.zip", "public-test")
    priv = load_fer2013(SHARED / "fer2013.zip", "private-test")
    assert (len(tr), len(pub), len(priv)) == (28709, 3589, 3589)
    assert tr.images.shape[1:] == (48, 48) and tr.images.dtype == np.uint8
    # disgust is the rare class (436 training images), happy the common one (7,215)
    counts = dict(zip(FER2013_LABELS, tr.class_counts()))
    assert counts["disgust"] == 436 and counts["happy"] == 7215
    assert detect_layout(SHARED / "fer2013.zip") == "fer2013"
    with pytest.raises(ValueError):
        load_fer2013(SHARED / "fer2013.zip", "validation")


@pytest.mark.parametrize("classes", [7, 8])
def test_ferplus_soft_labels(classes):
    te = load_ferplus(SHARED / "ferplus.zip", "test", classes=classes)
    assert len(te.label_names) == classes and te.soft.shape == (len(te), classes)
    np.testing.assert_allclose(te.soft.sum(1), 1.0, atol=1e-6)
    assert (te.labels == te.soft.argmax(1)).all()
    assert 3000 < len(te) <= 3573  # images voted unknown / not-a-face are dropped
    assert detect_layout(SHARED / "ferplus.zip") == "ferplus"


def test_tiny_training_run_resumes_and_exports(tmp_path):
    pytest.importorskip("lightning")
    from fer_pipeline.classify import EmotionModel
    from fer_pipeline.training.train import TrainConfig, train

    over = {"data.limit": 512, "optim.epochs": 1, "optim.batch_size": 32, "out_dir": str(tmp_path / "run"),
            "export_onnx": str(tmp_path / "m.onnx"), "model.kwargs": {"widths": [8, 16], "convs_per_stage": 1},
            "export_tta": True}
    cfg = TrainConfig.from_yaml("configs/train/fer2013_vgg.yaml", over)
    m = train(cfg)
    assert (tmp_path / "run" / "last.ckpt").is_file() and (tmp_path / "run" / "metrics.json").is_file()
    cm = np.asarray(m["test"]["confusion"])
    assert m["test"]["n"] == 3589 == cm.sum()  # every PrivateTest image scored, once
    assert m["test"]["accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    # the same command again resumes from last.ckpt: the finished epoch is not trained again
    steps_before = _logged_steps(tmp_path / "run")
    train(cfg)
    assert _logged_steps(tmp_path / "run") == steps_before
    card = json.loads((tmp_path / "m.json").read_text())
    assert card["labels"] == list(FER2013_LABELS) and card["onnx_vs_torch_max_abs_diff"] < 1e-4
    em = EmotionModel(tmp_path / "m.onnx")
    faces = load_fer2013(SHARED / "fer2013.zip", "public-test").images[:100]
    p = em.predict(faces)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
    assert set(card["onnx_metrics"]) == {"val", "test"} and card["onnx_metrics"]["test"]["n"] == 3589

    # warm start from the export gives back the same function, exactly (fp32)
    calib = load_fer2013(SHARED / "fer2013.zip", "train").images[:256]
    bb, mean, std = _warm_started(tmp_path / "m.onnx", cfg.model.kwargs, 7, calib)
    mirrored = np.ascontiguousarray(faces[:, :, ::-1])
    p_torch = (_torch_probs(bb, faces, mean, std) + _torch_probs(bb, mirrored, mean, std)) / 2  # flip TTA graph
    np.testing.assert_allclose(p_torch, p, atol=1e-4)

    # int8 quantization keeps the metadata the pipeline checks and still outputs probabilities (the TTA average
    # after the softmax stays fp32: rows sum to 1, not to a multiple of 1/255)
    from fer_pipeline.training.quantize import quantize_int8

    q = tmp_path / "q.onnx"
    quantize_int8(tmp_path / "m.onnx", q, calib)
    import onnx

    meta = {m.key: m.value for m in onnx.load(str(q)).metadata_props}
    assert json.loads(meta["labels"]) == list(FER2013_LABELS)
    assert any(n.op_type == "DequantizeLinear" for n in onnx.load(str(q)).graph.node)
    np.testing.assert_allclose(_onnx_probs(q, faces).sum(1), 1.0, atol=1e-4)


def _logged_steps(run):
    import torch

    return torch.load(run / "last.ckpt", map_location="cpu", weights_only=False)["global_step"]


def test_train_config_rejects_unknown_keys(tmp_path):
    from pydantic import ValidationError

    from fer_pipeline.training.train import TrainConfig

    with pytest.raises(ValidationError):
        TrainConfig.from_yaml("configs/train/fer2013_vgg.yaml", {"optim.epochz": 3})


def _warm_started(onnx_path, kwargs, num_classes, calib):
    from fer_pipeline.training.backbones import build_backbone
    from fer_pipeline.training.warmstart import load_vgg_from_onnx, onnx_mean_std

    mean, std = onnx_mean_std(onnx_path)
    bb = build_backbone("vgg", num_classes=num_classes, **kwargs)
    load_vgg_from_onnx(bb, onnx_path, calib, mean, std)
    return bb.eval(), mean, std


def _torch_probs(bb, x, mean, std):
    import torch

    with torch.no_grad():
        return torch.softmax(bb((torch.from_numpy(x)[:, None].float() / 255 - mean) / std), 1).numpy()


def _onnx_probs(path, x):
    import onnxruntime as ort

    return ort.InferenceSession(str(path)).run(None, {"input": x[:, None].astype(np.float32) / 255})[0]


def test_warm_start_from_the_shipped_model():
    """The shipped model's weights (int8 QDQ: dequantized), put back into a torch backbone, classify real PrivateTest
    faces as the shipped graph does, and its BatchNorm layers carry the measured input statistics."""
    pytest.importorskip("torch")
    import torch

    from fer_pipeline.classify import ModelSpec
    from fer_pipeline.config import DEFAULT_MODEL
    from fer_pipeline.training.backbones import build_backbone
    from fer_pipeline.training.warmstart import load_vgg_from_onnx

    card = json.loads(DEFAULT_MODEL.with_suffix(".json").read_text())
    kwargs = {k: v for k, v in card["backbone"].items() if k in ("widths", "convs_per_stage", "dropout")}
    tr = load_fer2013(SHARED / "fer2013.zip", "train")
    te = load_fer2013(SHARED / "fer2013.zip", "private-test")
    x = te.images[np.random.default_rng(1).permutation(len(te))[:300]]
    calib = tr.images[np.random.default_rng(0).permutation(len(tr))[:1024]]
    bb, mean, std = _warm_started(DEFAULT_MODEL, kwargs, len(ModelSpec.load(DEFAULT_MODEL).labels), calib)
    p_torch, p_onnx = _torch_probs(bb, x, mean, std), _onnx_probs(DEFAULT_MODEL, x)
    if card["tta_flip_in_graph"]:  # the graph averages the face and its mirror image
        p_torch = (p_torch + _torch_probs(bb, np.ascontiguousarray(x[:, :, ::-1]), mean, std)) / 2
    if card.get("quantization"):  # int8 activations in the graph, fp32 in torch: same decisions, close values
        assert (p_torch.argmax(1) == p_onnx.argmax(1)).mean() >= 0.95
        assert np.abs(p_torch - p_onnx).mean() < 0.02
    else:
        np.testing.assert_allclose(p_torch, p_onnx, atol=1e-4)
    bn = next(m for m in bb.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert float(bn.running_var.min()) > 0 and not torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean))

    wrong = build_backbone("vgg", num_classes=7, widths=[16, 32], convs_per_stage=1)
    with pytest.raises(ValueError, match="do not match"):
        load_vgg_from_onnx(wrong, DEFAULT_MODEL, calib[:64], mean, std)


def test_precision_auto_follows_the_cpu_flags():
    from fer_pipeline.training.train import resolve_precision

    assert resolve_precision("auto", "flags : fpu avx2 avx512f avx512_vnni") == "32-true"
    assert resolve_precision("auto", "flags : fpu avx2 avx512f avx512_bf16") == "bf16-mixed"
    assert resolve_precision("32-true", "flags : amx_bf16") == "32-true"
