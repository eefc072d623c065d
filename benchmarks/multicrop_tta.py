"""Multi-crop test-time augmentation of the emotion model: its accuracy gain on PublicTest against its cost (issue #18).

The shipped graph already averages each face with its mirror image (flip TTA, 2 passes). Multi-crop TTA averages
the probabilities of shifted copies of the 48x48 crop as well (edge pixels repeated where the shift uncovers them),
as in the 10-crop evaluation of Krizhevsky et al. 2012 and the FER2013 papers that use it (e.g. Pramerdorfer &
Kampel 2016). Each extra crop costs one more call of the whole graph, so the cost per face grows linearly: k crops
cost k times the shipped model's ms per face (benchmarks/classifier_cost.py).

Selection split only: FER2013 PublicTest (3,589 faces). PrivateTest is not touched: it is scored only if a variant
is adopted into the shipped model.

Run: .venv/bin/python benchmarks/multicrop_tta.py [--model models/emotion-fer2013-vgg.onnx] [--json]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from fer_pipeline.classify import EmotionModel
from fer_pipeline.config import DEFAULT_MODEL
from fer_pipeline.training.data import load_fer2013
from fer_pipeline.training.evaluate import classification_metrics

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "fer2013.zip"

#: The variants: name -> (dy, dx) pixel shifts averaged, (0, 0) being the crop itself.
VARIANTS = {
    "1 crop (shipped)": [(0, 0)],
    "5 crops, shift 2 px": [(0, 0), (-2, 0), (2, 0), (0, -2), (0, 2)],
    "5 crops, shift 3 px": [(0, 0), (-3, 0), (3, 0), (0, -3), (0, 3)],
    "9 crops, shift 2 px": [(dy, dx) for dy in (-2, 0, 2) for dx in (-2, 0, 2)],
}


def shifted(images: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``(N, H, W) uint8`` images moved by ``dy``, ``dx`` pixels (content moves down/right for positive values),
    edge pixels repeated into the uncovered border."""
    n, h, w = images.shape
    p = max(abs(dy), abs(dx))
    if p == 0:
        return images
    padded = np.pad(images, ((0, 0), (p, p), (p, p)), mode="edge")
    return np.ascontiguousarray(padded[:, p - dy:p - dy + h, p - dx:p - dx + w])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = ap.parse_args()
    val = load_fer2013(DATA, "public-test")
    em = EmotionModel(args.model, batch_size=256)
    cache: dict[tuple[int, int], np.ndarray] = {}
    rows = []
    for name, shifts in VARIANTS.items():
        for s in shifts:
            if s not in cache:
                cache[s] = em.predict(shifted(val.images, *s))
        probs = np.mean([cache[s] for s in shifts], axis=0)
        pred = probs.argmax(1)
        rows.append({"variant": name, "crops": len(shifts), "passes_per_face": 2 * len(shifts),
                     "publictest_accuracy": round(float((pred == val.labels).mean()), 4),
                     "publictest_macro_f1": round(classification_metrics(val.labels, pred, val.label_names)["macro_f1"],
                                                     4)})
    base = rows[0]["publictest_accuracy"]
    for r in rows:
        r["gain_points"] = round(100 * (r["publictest_accuracy"] - base), 2)
    if args.json:
        print(json.dumps({"model": args.model, "split": "public-test", "n": len(val), "rows": rows}))
        return
    print(f"{Path(args.model).name}, FER2013 PublicTest ({len(val)} faces); cost = crops x the model's ms/face")
    for r in rows:
        print(f"  {r['variant']:<22} {r['crops']} crop(s): accuracy {100 * r['publictest_accuracy']:.2f}% "
              f"({r['gain_points']:+.2f} points), macro-F1 {r['publictest_macro_f1']:.4f}")


if __name__ == "__main__":
    main()
