"""Cost per face of the emotion model: onnxruntime on one CPU core, batched, on real aligned crops (PrivateTest).

Run: .venv/bin/python benchmarks/classifier_cost.py [--model models/emotion-fer2013-vgg.onnx] [--batch 128]
Prints milliseconds per face (median of 5 passes over 1,024 crops) for 1 and 2 threads.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from fer_pipeline.classify import EmotionModel
from fer_pipeline.config import DEFAULT_MODEL
from fer_pipeline.training.data import load_fer2013

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "fer2013.zip"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--batch", type=int, default=128)
    args = ap.parse_args()
    crops = load_fer2013(DATA, "private-test").images[:1024]
    for threads in (1, 2):
        em = EmotionModel(args.model, batch_size=args.batch, threads=threads)
        em.predict(crops[:256])
        times = []
        for _ in range(5):
            t = time.perf_counter()
            em.predict(crops)
            times.append(time.perf_counter() - t)
        print(f"{Path(args.model).name}: {threads} thread(s), batch {args.batch}: "
              f"{1000 * np.median(times) / len(crops):.3f} ms/face")


if __name__ == "__main__":
    main()
