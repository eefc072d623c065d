"""Show what the emotion model sees: aligned crops from real frames and photos, with the model's prediction.

Writes a PNG strip per input (the crops, 3x enlarged) and prints time / label / probability per crop, so a reader can
check that the aligner's framing matches FER2013's and the predictions are sensible on faces that are not FER2013.

Run: .venv/bin/python scripts/inspect_crops.py --out docs/crops
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from fer_pipeline.align import align_faces
from fer_pipeline.classify import EmotionModel
from fer_pipeline.config import DEFAULT_MODEL, DecodeConfig
from fer_pipeline.decode import iter_batches
from fer_pipeline.detect import build_detector

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def strip(crops: list[np.ndarray]) -> Image.Image:
    return Image.fromarray(np.hstack([np.kron(c, np.ones((3, 3), np.uint8)) for c in crops]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--out", type=Path, default=Path("docs/crops"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    det = build_detector("centerface", score_threshold=0.5)
    em = EmotionModel(args.model)
    video = DATA / "videos" / "WolfgangLanger_Pexels.mp4"
    crops = []
    for b in iter_batches(video, DecodeConfig(sample_fps=0.5, backend="decord", snap_to_anchors=False)):
        for frame, ts in zip(b.frames, b.timestamp_s):
            faces = det.detect(frame)
            if len(faces):
                c = align_faces(frame, faces.landmarks[:1], em.spec.template, em.spec.input_hw)
                p = em.predict(c)[0]
                crops.append(c[0])
                print(f"{video.name} t={ts:5.1f}s  {em.labels[p.argmax()]:8s} {p.max():.2f}")
    strip(crops).save(args.out / "video_wolfganglanger.png")
    for name in ("t1.jpg", "multi_face.jpg", "single_face.jpg"):
        img = np.asarray(Image.open(DATA / "images" / name).convert("RGB"))
        faces = det.detect(img)
        c = align_faces(img, faces.landmarks, em.spec.template, em.spec.input_hw)
        p = em.predict(c)
        print(f"{name}: " + ", ".join(f"{em.labels[i]} {q:.2f}" for i, q in zip(p.argmax(1), p.max(1))))
        strip(list(c)).save(args.out / f"photo_{Path(name).stem}.png")


if __name__ == "__main__":
    main()
