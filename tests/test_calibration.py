"""Calibration of the emotion model's probabilities (fer_pipeline/calibration.py, training/calibrate.py): ECE and NLL
behave as defined, temperature scaling recovers a known distortion, and the shipped model, calibrated in its graph,
is calibrated on FER2013 faces it was not fitted on."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import MODEL, SHARED
from fer_pipeline.calibration import (apply_temperature, expected_calibration_error, fit_temperature,
                                      negative_log_likelihood, reliability_bins)


def _calibrated_sample(n: int = 20000, k: int = 7, seed: int = 0):
    """Probabilities and labels drawn from them: calibrated by construction."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2.0, (n, k))
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = np.array([rng.choice(k, p=row) for row in p])
    return p, y


def test_ece_is_small_for_calibrated_probabilities_and_large_for_overconfident_ones():
    p, y = _calibrated_sample()
    assert expected_calibration_error(p, y) < 0.02
    sharp = apply_temperature(p, 0.4)  # the same ranking, over-confident
    assert expected_calibration_error(sharp, y) > 0.1
    assert negative_log_likelihood(sharp, y) > negative_log_likelihood(p, y)


def test_reliability_bins_count_every_face_once():
    p, y = _calibrated_sample(3000)
    bins = reliability_bins(p, y)
    assert len(bins) == 15 and sum(b["n"] for b in bins) == 3000
    for b in bins:
        if b["n"]:
            assert b["lo"] <= b["confidence"] <= b["hi"] and 0 <= b["accuracy"] <= 1


def test_temperature_scaling_undoes_a_known_distortion_and_keeps_the_class():
    p, y = _calibrated_sample()
    distorted = apply_temperature(p, 0.5)
    t = fit_temperature(distorted, y)
    assert t == pytest.approx(2.0, rel=0.1)
    fixed = apply_temperature(distorted, t)
    np.testing.assert_array_equal(fixed.argmax(1), distorted.argmax(1))
    np.testing.assert_allclose(fixed.sum(1), 1.0, atol=1e-9)
    assert expected_calibration_error(fixed, y) < 0.02


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError):
        expected_calibration_error(np.ones((3, 2)) / 2, np.array([0, 1]))
    with pytest.raises(ValueError):
        apply_temperature(np.ones((1, 2)) / 2, 0.0)
    with pytest.raises(ValueError):
        negative_log_likelihood(np.ones((2, 2)) / 2, np.array([0, 5]))


def test_shipped_model_is_calibrated_in_its_graph_on_privatetest():
    """The temperature was fitted on PublicTest; PrivateTest is held out."""
    from fer_pipeline.evaluate import evaluate_path

    card = json.loads(MODEL.with_suffix(".json").read_text())
    assert card["calibration"]["fitted_on"] == "fer2013 public-test"
    res = evaluate_path(SHARED / "fer2013.zip", MODEL, "private-test")
    assert res["ece"] <= 0.03
    assert res["nll"] == pytest.approx(card["onnx_metrics"]["test"]["nll"], rel=1e-4)
    assert res["accuracy"] == pytest.approx(card["onnx_metrics"]["test"]["accuracy"])


def test_temperature_in_the_graph_equals_the_formula_and_is_refused_twice(tmp_path):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from fer_pipeline.training.calibrate import append_temperature

    with pytest.raises(ValueError, match="calibrated already"):
        append_temperature(onnx.load(str(MODEL)), 1.0)  # the shipped graph has its temperature
    # a graph whose output is probabilities (softmax of its input), calibrated with T = 1.7
    g = helper.make_graph([helper.make_node("Softmax", ["x"], ["probs"], axis=-1)], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 7])],
                          [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["n", 7])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    path = tmp_path / "m.onnx"
    onnx.save(append_temperature(m, 1.7), str(path))
    onnx.checker.check_model(str(path))
    x = np.random.default_rng(0).normal(0, 3, (64, 7)).astype(np.float32)
    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    p = np.exp(x - x.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    np.testing.assert_allclose(out, apply_temperature(p, 1.7), atol=1e-5)
    np.testing.assert_array_equal(out.argmax(1), p.argmax(1))
