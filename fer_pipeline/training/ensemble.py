"""Ensembles of exported emotion models as one ONNX graph: the members side by side on the same input, their
probabilities averaged (issue #18: "if the ensemble itself is better than any distilled single network, offer it as
a selectable model with its own cost figure").

The graph is an ordinary emotion model for the pipeline (``classify.model: ensemble.onnx``; input ``input``,
output ``probs``, the members' shared labels, crop and alignment template in its metadata), so nothing downstream
changes. Its cost per face is the sum of its members' (measure it with ``benchmarks/classifier_cost.py --model``).
The card beside it lists the members with their sha256 and the weights; its ``onnx_metrics`` are measured on the
selection split only (FER2013 PublicTest / FER+ valid), with PrivateTest left to a single final evaluation
(``fer-pipeline evaluate --split private-test``).

Members must agree on labels, crop size, colour and alignment template (an averaged probability is meaningless
otherwise); each keeps its own standardisation and flip TTA inside its part of the graph. A calibrated member stays
calibrated, but the mean of calibrated models is not calibrated in general: fit a temperature on the ensemble
afterwards (``python -m fer_pipeline.training.calibrate``).

    .venv/bin/python -m fer_pipeline.training.ensemble A.onnx B.onnx C.onnx --out runs/ens/emotion-ens.onnx \\
        --data ../shared/data/fer2013.zip
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["build_ensemble"]

def _member_graph(model, prefix: str, input_name: str):
    """The member's graph with every name prefixed except its input, which becomes ``input_name``."""
    from onnx import compose

    old_input = model.graph.input[0].name
    m = compose.add_prefix(model, prefix, rename_inputs=True, rename_outputs=True, rename_initializers=True,
                           rename_value_infos=True, rename_nodes=True, rename_edges=True, rename_functions=False)
    for node in m.graph.node:
        node.input[:] = [input_name if x == prefix + old_input else x for x in node.input]
    return m


def build_ensemble(members: list[str | Path], out: str | Path, weights: list[float] | None = None,
                   name: str | None = None, data: str | Path | None = None) -> dict:
    """Write the ensemble of ``members`` to ``out`` (and its card ``out.json``).

    Args:
        members: two or more ``.onnx`` emotion models, each with its card (checked as the pipeline loads them).
        out: the ``.onnx`` to write.
        weights: one non-negative weight per member (normalised to sum 1); equal weights when None.
        name: the model name (default ``ensemble-of-<n>``).
        data: a FER2013 or FER+ dataset: the card then gets ``onnx_metrics.val`` (accuracy, macro-F1, ECE, NLL on the
            selection split, and each member's accuracy there).

    Returns:
        The card written.

    Raises:
        ValueError: fewer than two members, bad weights, or members that disagree on labels, crop size, colour or
            template; fer_pipeline.classify.ModelError: a member or its card is missing or altered.
    """
    import onnx
    from onnx import TensorProto, helper, version_converter

    from fer_pipeline.classify import INPUT_NAME, OUTPUT_NAME, ModelSpec
    from fer_pipeline.fileutil import sha256_file

    paths = [Path(p) for p in members]
    if len(paths) < 2:
        raise ValueError("an ensemble needs at least two members")
    w = np.ones(len(paths)) if weights is None else np.asarray(weights, np.float64)
    if w.shape != (len(paths),) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"need {len(paths)} non-negative weights with a positive sum, got {weights}")
    w = w / w.sum()
    specs = [ModelSpec.load(p) for p in paths]
    first = specs[0]
    for p, s in zip(paths[1:], specs[1:]):
        for what, a, b in (("labels", s.labels, first.labels), ("input_hw", s.input_hw, first.input_hw),
                           ("color", s.color, first.color)):
            if a != b:
                raise ValueError(f"{p}: {what} {a} differ from {paths[0]}'s {b}")
        if not np.allclose(s.template, first.template, atol=1e-4):
            raise ValueError(f"{p}: its alignment template differs from {paths[0]}'s (the crops would differ)")

    protos = [onnx.load(str(p)) for p in paths]
    opsets = [next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) for m in protos]
    protos = [m if v == max(opsets) else version_converter.convert_version(m, max(opsets))
              for m, v in zip(protos, opsets)]
    parts = [_member_graph(m, f"m{i}_", INPUT_NAME) for i, m in enumerate(protos)]
    nodes, inits, value_info = [], [], []
    scaled = []
    for i, (m, wi) in enumerate(zip(parts, w)):
        nodes.extend(m.graph.node)
        inits.extend(m.graph.initializer)
        value_info.extend(m.graph.value_info)
        inits.append(helper.make_tensor(f"ensemble_w{i}", TensorProto.FLOAT, [], [float(wi)]))
        nodes.append(helper.make_node("Mul", [m.graph.output[0].name, f"ensemble_w{i}"], [f"ensemble_p{i}"]))
        scaled.append(f"ensemble_p{i}")
    nodes.append(helper.make_node("Sum", scaled, [OUTPUT_NAME], name="ensemble_mean"))
    graph = helper.make_graph(nodes, "ensemble", [protos[0].graph.input[0]],
                              [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT,
                                                             ["batch", len(first.labels)])],
                              initializer=inits, value_info=value_info)
    domains = {}
    for m in protos:
        for o in m.opset_import:
            domains[o.domain] = max(domains.get(o.domain, 0), o.version)
    functions = {}
    for m in protos:  # local functions (none in our exports today) are kept once each
        for f in m.functions:
            functions.setdefault((f.domain, f.name), f)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in domains.items()],
                              functions=list(functions.values()))
    model.ir_version = max(m.ir_version for m in protos)
    spec = ModelSpec(name=name or f"ensemble-of-{len(paths)}", labels=first.labels, input_hw=first.input_hw,
                     color=first.color, template=first.template, align_size=first.align_size, mean_std=None,
                     tta_flip=all(s.tta_flip for s in specs))
    spec.write_metadata(model)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))
    onnx.checker.check_model(str(out))
    card = {"name": spec.name, "file": out.name, "sha256": sha256_file(out), **spec.card_fields(),
            "ensemble": {"how": "weighted mean of the members' probabilities, one graph "
                                "(fer_pipeline.training.ensemble)",
                         "members": [{"file": str(p), "name": s.name, "sha256": s.sha256, "weight": round(float(x), 6),
                                      "tta_flip_in_graph": s.tta_flip} for p, s, x in zip(paths, specs, w)]}}
    out.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    if data is not None:
        card["onnx_metrics"] = _val_metrics(out, [*paths], Path(data), first.labels)
        out.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    logger.info("ensemble of %d written to %s", len(paths), out)
    return card


def _val_metrics(model: Path, members: list[Path], data: Path, labels: tuple[str, ...]) -> dict:
    """``{"val": metrics}`` of the ensemble on the dataset's selection split, with each member's accuracy."""
    from fer_pipeline.calibration import calibration_metrics
    from fer_pipeline.classify import EmotionModel
    from fer_pipeline.training.data import CARD_SPLITS, detect_layout, load_split_for_model
    from fer_pipeline.training.evaluate import classification_metrics

    layout = detect_layout(data)
    if layout not in CARD_SPLITS:
        raise ValueError(f"{data}: not a FER2013 or FER+ dataset")
    split = CARD_SPLITS[layout]["val"]
    d = load_split_for_model(data, split, labels)
    p = EmotionModel(model, batch_size=256).predict(d.images)
    m = classification_metrics(d.labels, p.argmax(1), labels)
    c = calibration_metrics(p, d.labels)
    m.update(ece=c["ece"], nll=c["nll"], split=f"{layout} {split}")
    m["members_accuracy"] = {str(x): float((EmotionModel(x, batch_size=256).predict(d.images).argmax(1)
                                            == d.labels).mean()) for x in members}
    return {"val": m}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="average exported emotion models in one ONNX graph")
    ap.add_argument("members", type=Path, nargs="+", help="two or more .onnx models (their .json cards beside them)")
    ap.add_argument("--out", type=Path, required=True, help="the ensemble .onnx to write (its card beside it)")
    ap.add_argument("--weights", type=float, nargs="+", default=None, help="one weight per member [equal]")
    ap.add_argument("--name", default=None, help="model name [ensemble-of-N]")
    ap.add_argument("--data", type=Path, default=None, help="FER2013/FER+ dataset: score the selection split")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    card = build_ensemble(args.members, args.out, args.weights, args.name, args.data)
    print(json.dumps({"out": str(args.out), "members": len(args.members),
                      "val": (card.get("onnx_metrics") or {}).get("val", {}).get("accuracy")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
