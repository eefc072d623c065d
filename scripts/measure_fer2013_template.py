"""Measure where FER2013's faces sit in their 48x48 frame: the mean 5-point landmark positions.

The pipeline aligns each detected face onto these positions, so its crops match the framing the emotion model was
trained on. Each 48x48 training image is upscaled 4x and padded with edge pixels (so the detector sees some context),
CenterFace (the pipeline's default detector) finds the landmarks, and their median over the images with one confident
face is mapped back to 48x48 pixels.

Run: .venv/bin/python scripts/measure_fer2013_template.py [--n 3000]
"""
from __future__ import annotations

import argparse
import json

import numpy as np

from fer_pipeline.detect import build_detector
from fer_pipeline.training.data import load_fer2013


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/fer2013.zip")
    ap.add_argument("--n", type=int, default=3000, help="number of training images to measure")
    args = ap.parse_args()
    ds = load_fer2013(args.data, "train")
    rng = np.random.default_rng(0)
    idx = rng.choice(len(ds), size=min(args.n, len(ds)), replace=False)
    det = build_detector("centerface", score_threshold=0.5, input_max_side=1024)
    up, pad = 4, 48
    pts = []
    for i in idx:
        g = np.kron(ds.images[i], np.ones((up, up), np.uint8))
        g = np.pad(g, pad, mode="edge")
        faces = det.detect(np.repeat(g[:, :, None], 3, axis=2))
        if len(faces) != 1:
            continue
        pts.append((faces.landmarks[0] - pad) / up)
    pts = np.asarray(pts)
    med = np.median(pts, axis=0)
    print(json.dumps({"images": int(len(idx)), "with_one_face": int(len(pts)),
                      "template_48px": np.round(med, 2).tolist(),
                      "iqr_px": np.round(np.percentile(pts, 75, 0) - np.percentile(pts, 25, 0), 2).tolist()}))


if __name__ == "__main__":
    main()
