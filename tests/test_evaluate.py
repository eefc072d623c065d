"""`fer-pipeline evaluate` and the shipped model: accuracy on PrivateTest, JSON output, ImageFolder, --detect."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import IMAGES, MODEL, REPO, SHARED
from fer_pipeline.classify import EmotionModel, ModelError, ModelSpec
from fer_pipeline.evaluate import evaluate_path
from fer_pipeline.training.data import load_fer2013


def test_shipped_model_card_matches_file_and_private_test_accuracy():
    spec = ModelSpec.load(MODEL)
    assert spec.labels == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    res = evaluate_path(SHARED / "fer2013.zip", MODEL, "private-test")
    assert res["n"] == 3589
    # the card records what this very file scored (onnx_metrics, written at export); evaluation must reproduce it,
    # and the default model must hold the training issue's target of 70% (the fer package measures 65.9% here)
    assert res["accuracy"] == pytest.approx(spec.card["onnx_metrics"]["test"]["accuracy"], abs=1e-9)
    assert res["macro_f1"] == pytest.approx(spec.card["onnx_metrics"]["test"]["macro_f1"], abs=1e-9)
    assert res["accuracy"] >= 0.70
    assert sum(map(sum, res["confusion"])) == 3589
    assert 0 < res["macro_f1"] < res["accuracy"]


def test_altered_model_is_refused(tmp_path):
    bad = tmp_path / "m.onnx"
    data = bytearray(MODEL.read_bytes())
    data[-10] ^= 0xFF
    bad.write_bytes(bytes(data))
    shutil.copy(MODEL.with_suffix(".json"), tmp_path / "m.json")
    with pytest.raises(ModelError, match="sha256"):
        ModelSpec.load(bad)
    with pytest.raises(ModelError, match="not found"):
        ModelSpec.load(tmp_path / "none.onnx")


def test_imagefolder_matches_dataset_and_skips_other_folders(tmp_path):
    ds = load_fer2013(SHARED / "fer2013.zip", "private-test")
    idx = np.random.default_rng(0).choice(len(ds), 70, replace=False)
    for i in idx:
        d = tmp_path / ds.label_names[ds.labels[i]]
        d.mkdir(exist_ok=True)
        Image.fromarray(ds.images[i]).save(d / f"{i}.png")
    (tmp_path / "contempt").mkdir()
    Image.fromarray(ds.images[0]).save(tmp_path / "contempt" / "x.png")
    with pytest.warns(UserWarning, match="contempt"):
        res = evaluate_path(tmp_path, MODEL)
    em = EmotionModel(MODEL)
    expected = float((em.predict(ds.images[idx]).argmax(1) == ds.labels[idx]).mean())
    assert res["n"] == 70 and res["accuracy"] == pytest.approx(expected)


def test_detect_finds_and_aligns_faces_in_photos(tmp_path):
    (tmp_path / "happy").mkdir()
    shutil.copy(IMAGES / "single_face.jpg", tmp_path / "happy" / "a.jpg")
    res = evaluate_path(tmp_path, MODEL, detect=True)
    assert res["n"] == 1 and res["n_no_face"] == 0


def test_cli_json(tmp_path):
    r = subprocess.run([sys.executable, "-m", "fer_pipeline.cli", "evaluate", str(SHARED / "fer2013.zip"), "--split",
                        "public-test", "--json", "--out", str(tmp_path)], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout)
    assert set(res) == {"accuracy", "macro_f1", "ece", "nll", "n", "labels", "per_class", "confusion"}
    assert res["n"] == 3589 and 0 < res["ece"] < 1 and res["nll"] > 0
    assert (tmp_path / "confusion.png").stat().st_size > 1000
    assert (tmp_path / "reliability.png").stat().st_size > 1000
    bad = subprocess.run([sys.executable, "-m", "fer_pipeline.cli", "evaluate", str(tmp_path / "nope")],
                         capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 2 and "not found" in bad.stderr
