"""Temperature scaling inside an exported emotion model: the calibrated probabilities are what the ONNX graph outputs.

:func:`calibrate_onnx` runs the model on a held-out split (FER2013 PublicTest by default: the selection split, never
PrivateTest), fits one temperature by NLL (:func:`fer_pipeline.calibration.fit_temperature`), appends
``Softmax(Log(Max(probs, 1e-12)) / T)`` after the graph's output (same output name and shape, so the pipeline needs
no change; the predicted class never changes), and rewrites the model card beside it: new ``sha256``, a
``calibration`` entry (method, temperature, split fitted on, ECE and NLL before and after on that split) and the
``onnx_metrics`` of the calibrated graph on every split it had, with ``ece`` and ``nll`` added. PrivateTest figures
are measured once, after the temperature is fixed.

    .venv/bin/python -m fer_pipeline.training.calibrate models/emotion-fer2013-vgg.onnx ../shared/data/fer2013.zip
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

__all__ = ["append_temperature", "calibrate_onnx"]



def append_temperature(model, temperature: float):
    """Append temperature scaling to an ``onnx.ModelProto`` whose one output is probabilities ``(N, K)``: the old
    output becomes ``<name>_uncalibrated`` and the output ``<name>`` is ``softmax(ln(max(p, 1e-12)) / T)`` over the
    last axis. Returns the model (changed in place).

    Raises:
        ValueError: the graph has not exactly one output, or ``temperature <= 0``.
    """
    from onnx import TensorProto, helper

    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    g = model.graph
    if len(g.output) != 1:
        raise ValueError(f"expected one output, found {len(g.output)}")
    name = g.output[0].name
    if any(n.name == "temperature_scaling" for n in g.node):
        raise ValueError("the model is calibrated already")
    raw = f"{name}_uncalibrated"
    for node in g.node:
        node.output[:] = [raw if o == name else o for o in node.output]
    g.initializer.extend([helper.make_tensor("calibration_eps", TensorProto.FLOAT, [], [1e-12]),
                          helper.make_tensor("calibration_inv_t", TensorProto.FLOAT, [], [1.0 / float(temperature)])])
    g.node.extend([
        helper.make_node("Max", [raw, "calibration_eps"], ["calibration_clipped"]),
        helper.make_node("Log", ["calibration_clipped"], ["calibration_logp"]),
        helper.make_node("Mul", ["calibration_logp", "calibration_inv_t"], ["calibration_scaled"]),
        helper.make_node("Softmax", ["calibration_scaled"], [name], axis=-1, name="temperature_scaling"),
    ])
    return model


def calibrate_onnx(model_path: str | Path, data_path: str | Path, fit_split: str | None = None,
                   out: str | Path | None = None) -> dict:
    """Fit and embed a temperature (see the module docstring).

    Args:
        model_path: the ``.onnx`` with its ``.json`` card beside it.
        data_path: the FER2013 (or FER+) zip/folder the model was trained on.
        fit_split: split to fit on (default: FER2013 ``public-test``, FER+ ``valid``).
        out: where to write the calibrated model (its card beside it); default: replace ``model_path`` and its card.

    Returns:
        The new card's ``calibration`` entry.

    Raises:
        ValueError: the model is calibrated already, or the dataset's labels differ from the model's.
    """
    import onnx

    from fer_pipeline.calibration import apply_temperature, calibration_metrics, fit_temperature
    from fer_pipeline.classify import EmotionModel
    from fer_pipeline.fileutil import sha256_file
    from fer_pipeline.training.data import CARD_SPLITS, detect_layout, load_split_for_model
    from fer_pipeline.training.evaluate import classification_metrics

    model_path = Path(model_path)
    out = Path(out) if out is not None else model_path
    card_path = model_path.with_suffix(".json")
    card = json.loads(card_path.read_text())
    if card.get("calibration"):
        raise ValueError(f"{model_path} is calibrated already (temperature {card['calibration']['temperature']})")
    layout = detect_layout(Path(data_path))
    if layout not in CARD_SPLITS:
        raise ValueError(f"{data_path}: not a FER2013 or FER+ dataset")
    fit_split = fit_split or CARD_SPLITS[layout]["val"]
    model = EmotionModel(model_path, batch_size=256)
    labels = model.labels

    def split_data(split: str):
        return load_split_for_model(Path(data_path), split, labels)

    fit = split_data(fit_split)
    p_fit = model.predict(fit.images)
    t = fit_temperature(p_fit, fit.labels)
    before, after = calibration_metrics(p_fit, fit.labels), calibration_metrics(apply_temperature(p_fit, t),
                                                                                fit.labels)
    proto = append_temperature(onnx.load(str(model_path)), t)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(out))
    calibration = {"method": "temperature scaling (Guo et al. 2017) on log-probabilities, inside the graph",
                   "temperature": round(t, 6), "fitted_on": f"{layout} {fit_split}",
                   "fit_split_before": {"ece": before["ece"], "nll": before["nll"]},
                   "fit_split_after": {"ece": after["ece"], "nll": after["nll"]}}
    new = dict(card)
    new.update(file=out.name, sha256=sha256_file(out), calibration=calibration)
    out.with_suffix(".json").write_text(json.dumps(new, indent=2) + "\n")  # names the new sha256: load it
    calibrated = EmotionModel(out, batch_size=256)
    metrics = {}
    for key, split in CARD_SPLITS[layout].items():
        d = fit if split == fit_split else split_data(split)
        p = calibrated.predict(d.images)
        m = classification_metrics(d.labels, p.argmax(1), labels)
        c = calibration_metrics(p, d.labels)
        m.update(ece=c["ece"], nll=c["nll"], reliability=c["reliability"])
        metrics[key] = m
    new["onnx_metrics"] = {**(card.get("onnx_metrics") or {}), **metrics}
    out.with_suffix(".json").write_text(json.dumps(new, indent=2) + "\n")
    logger.info("calibrated %s: T = %.4f; %s ECE %.4f -> %.4f", out, t, fit_split, before["ece"], after["ece"])
    return calibration


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="fit and embed temperature scaling in an exported emotion model")
    ap.add_argument("model", type=Path, help="the .onnx (its .json card beside it)")
    ap.add_argument("data", type=Path, help="FER2013 or FER+ zip/folder")
    ap.add_argument("--split", default=None, help="split to fit on [default: public-test / valid]")
    ap.add_argument("--out", type=Path, default=None, help="write here instead of replacing the model")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    print(json.dumps(calibrate_onnx(args.model, args.data, args.split, args.out), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
