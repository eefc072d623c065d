"""Ensembles of exported emotion models in one ONNX graph (fer_pipeline.training.ensemble): the graph outputs the
weighted mean of its members' probabilities on real faces, loads like any emotion model, and refuses members that
disagree."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import MODEL, REPO, SHARED
from fer_pipeline.classify import EmotionModel, ModelSpec
from fer_pipeline.fileutil import sha256_file
from fer_pipeline.training.data import load_fer2013

pytest.importorskip("onnx")
from fer_pipeline.training.ensemble import build_ensemble  # noqa: E402

FERPLUS = REPO / "models" / "emotion-ferplus-vgg.onnx"


@pytest.fixture(scope="module")
def faces():
    return load_fer2013(SHARED / "fer2013.zip", "public-test").images[:300]


@pytest.mark.parametrize("weights", [None, [3.0, 1.0]])
def test_ensemble_outputs_the_weighted_mean_of_its_members(tmp_path, faces, weights):
    out = tmp_path / "ens.onnx"
    card = build_ensemble([MODEL, FERPLUS], out, weights=weights)
    w = np.array([0.5, 0.5] if weights is None else [0.75, 0.25])
    pa, pb = EmotionModel(MODEL).predict(faces), EmotionModel(FERPLUS).predict(faces)
    ens = EmotionModel(out)  # as classify.model loads it: card, sha256, metadata checked
    p = ens.predict(faces)
    np.testing.assert_allclose(p, w[0] * pa + w[1] * pb, atol=1e-5)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
    assert ens.labels == EmotionModel(MODEL).labels
    assert [m["sha256"] for m in card["ensemble"]["members"]] == [sha256_file(MODEL), sha256_file(FERPLUS)]
    assert card["sha256"] == sha256_file(out)
    assert json.loads(out.with_suffix(".json").read_text())["ensemble"]["members"][0]["weight"] == w[0]


def test_ensemble_scores_the_selection_split_only(tmp_path):
    card = build_ensemble([MODEL, FERPLUS], tmp_path / "ens.onnx", data=SHARED / "fer2013.zip")
    val = card["onnx_metrics"]["val"]
    assert set(card["onnx_metrics"]) == {"val"} and val["split"] == "fer2013 public-test" and val["n"] == 3589
    assert 0 < val["accuracy"] < 1 and 0 <= val["ece"] < 1 and len(val["members_accuracy"]) == 2


def test_members_that_disagree_are_refused(tmp_path):
    import onnx

    m = onnx.load(str(MODEL))
    spec = ModelSpec.from_onnx(MODEL)
    other = ModelSpec(name="reversed", labels=tuple(reversed(spec.labels)), input_hw=spec.input_hw, color=spec.color,
                      template=spec.template, align_size=spec.align_size, mean_std=spec.mean_std,
                      tta_flip=spec.tta_flip)
    other.write_metadata(m)
    path = tmp_path / "reversed.onnx"
    onnx.save(m, str(path))
    path.with_suffix(".json").write_text(json.dumps({"name": "reversed", "sha256": sha256_file(path),
                                                     **other.card_fields()}))
    with pytest.raises(ValueError, match="labels"):
        build_ensemble([MODEL, path], tmp_path / "e.onnx")
    with pytest.raises(ValueError, match="at least two"):
        build_ensemble([MODEL], tmp_path / "e.onnx")
    with pytest.raises(ValueError, match="weights"):
        build_ensemble([MODEL, FERPLUS], tmp_path / "e.onnx", weights=[1.0, -1.0])
    assert not (tmp_path / "e.onnx").exists()


def test_shipped_ensemble_is_its_calibrated_members(faces):
    """models/emotion-fer2013-ensemble.onnx: built from the files in the repo (the members' sha256 in its card are
    theirs) and outputs their mean probability with the card's temperature applied inside the graph; calibration
    never changes the predicted class."""
    path = REPO / "models" / "emotion-fer2013-ensemble.onnx"
    card = ModelSpec.load(path).card
    members = card["ensemble"]["members"]
    assert len(members) >= 2
    for m in members:
        assert sha256_file(REPO / m["file"]) == m["sha256"]
    mean = sum(m["weight"] * EmotionModel(REPO / m["file"]).predict(faces) for m in members)
    t = card["calibration"]["temperature"]
    z = np.log(np.maximum(mean, 1e-12)) / t
    expected = np.exp(z - z.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    p = EmotionModel(path).predict(faces)
    np.testing.assert_allclose(p, expected, atol=1e-4)
    assert (p.argmax(1) == mean.argmax(1)).all()
