"""An emotion model with the 8 FER+ labels (contempt included) through the whole pipeline: the tables gain
``p_contempt`` / ``share_contempt``, valence counts contempt as negative, and the report shows the label.

The model is the shipped network with an eighth output made in the graph: half of its ``neutral`` probability
becomes ``contempt`` (so the probabilities still sum to 1, and contempt follows the face). Its card is written as the
exporter writes one; nothing is faked past the classifier's last layer."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conftest import MODEL, VIDEOS
from fer_pipeline.aggregate import NEGATIVE, valence
from fer_pipeline.classify import OUTPUT_NAME, EmotionModel, ModelSpec
from fer_pipeline.config import PipelineConfig
from fer_pipeline.fileutil import sha256_file
from fer_pipeline.pipeline import analyze_video
from fer_pipeline.report import render_all

LABELS8 = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral", "contempt")


@pytest.fixture(scope="module")
def model8(tmp_path_factory):
    import onnx
    from onnx import TensorProto, helper

    m = onnx.load(str(MODEL))
    g = m.graph
    seven = "probs7"
    for node in g.node:  # the old output becomes an inner tensor
        node.output[:] = [seven if o == OUTPUT_NAME else o for o in node.output]
    half = helper.make_tensor("half8", TensorProto.FLOAT, [1, 8], [1, 1, 1, 1, 1, 1, 0.5, 0.5])
    g.initializer.append(half)
    g.node.extend([
        helper.make_node("Slice", [seven, "n_start", "n_end", "axis1"], ["neutral_col"]),
        helper.make_node("Concat", [seven, "neutral_col"], ["probs8_raw"], axis=1),
        helper.make_node("Mul", ["probs8_raw", "half8"], [OUTPUT_NAME]),
    ])
    for name, value in (("n_start", 6), ("n_end", 7), ("axis1", 1)):
        g.initializer.append(helper.make_tensor(name, TensorProto.INT64, [1], [value]))
    out = g.output[0]
    out.type.tensor_type.shape.dim[1].dim_value = 8
    spec = ModelSpec.from_onnx(MODEL)
    spec8 = ModelSpec(**{**{f: getattr(spec, f) for f in ("input_hw", "color", "input_scale", "mean_std",
                                                         "template", "align_size", "tta_flip")},
                         "labels": LABELS8, "name": "fer2013-vgg-8"})
    spec8.write_metadata(m)
    path = tmp_path_factory.mktemp("model8") / "emotion-8.onnx"
    onnx.save(m, str(path))
    onnx.checker.check_model(str(path))
    card = {"name": "fer2013-vgg-8", "file": path.name, "sha256": sha256_file(path), **spec8.card_fields()}
    path.with_suffix(".json").write_text(json.dumps(card))
    return path


def test_the_eight_class_model_loads_and_its_probabilities_sum_to_one(model8):
    em, base = EmotionModel(model8), EmotionModel(MODEL)
    assert em.labels == LABELS8
    crops = np.random.default_rng(0).integers(0, 255, (6, 48, 48), dtype=np.uint8)
    p8, p7 = em.predict(crops), base.predict(crops)
    np.testing.assert_allclose(p8.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(p8[:, 7], p7[:, 6] / 2, atol=1e-6)


def test_tables_and_report_carry_contempt_and_valence_counts_it_as_negative(model8, tmp_path):
    assert "contempt" in NEGATIVE
    cfg = PipelineConfig.load(None, {"classify.model": str(model8)})
    row = analyze_video(VIDEOS / "single_face.mp4", tmp_path, cfg)
    assert row["status"] == "ok", row["error"]
    faces = pd.read_parquet(tmp_path / "faces")
    probs = faces[[f"p_{x}" for x in LABELS8]].to_numpy()
    assert len(faces) and np.allclose(probs.sum(1), 1.0, atol=1e-4)
    assert (faces["p_contempt"] > 0).all()
    tl = pd.read_parquet(tmp_path / "timeline")
    expect = tl["p_happy"] - tl[["p_angry", "p_disgust", "p_fear", "p_sad", "p_contempt"]].sum(axis=1)
    np.testing.assert_allclose(tl["valence"], expect, atol=1e-5)
    np.testing.assert_allclose(valence(tl[[f"p_{x}" for x in LABELS8]], LABELS8), expect, atol=1e-5)
    au = pd.read_parquet(tmp_path / "audience")
    assert {"p_contempt", "share_contempt"} <= set(au.columns)
    shares = au[[f"share_{x}" for x in LABELS8]].dropna()
    assert np.allclose(shares.sum(axis=1), 1.0, atol=1e-6)
    render_all(tmp_path)
    html = (tmp_path / "reports" / f"{row['video_id']}.html").read_text()
    assert '"contempt"' in html
