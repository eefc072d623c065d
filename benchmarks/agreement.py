"""How much a speed setting changes the results: one video analysed with two configurations, outputs compared.

    .venv/bin/python benchmarks/agreement.py VIDEO [VIDEO ...] --b decode.skip_loop_filter=all
    .venv/bin/python benchmarks/agreement.py VIDEO --a decode.threads=1 --b decode.threads=0 --pixels

``--a`` is the reference (default: every setting at its default), ``--b`` the configuration compared with it; both
take ``KEY=VALUE[,KEY=VALUE]`` dotted overrides of ``PipelineConfig``. Per video it prints:

* faces found by A and B, and how many of B's match one of A's in the same sampled frame (box IoU >= 0.5);
* over matched faces: emotion (argmax) agreement, mean total-variation distance of the probabilities
  (``0.5 * sum |p_a - p_b|``, in [0, 1]), mean absolute valence difference;
* over the seconds both ``audience`` tables cover: mean and max absolute difference of the audience valence and of
  the audience's dominant-emotion probability;
* with ``--pixels``: PSNR (dB) of the sampled RGB frames as decoded with B's decode settings against A's (the same
  frames must be sampled).

For scale: two face detections of the same frame at different input sizes already disagree on ~10% of the faces'
emotions with the FER2013 model (``benchmarks/README.md``, "Face crops").
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np


def _overrides(text: str | None) -> dict:
    if not text:
        return {}
    return dict(kv.split("=", 1) for kv in text.split(","))


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(N, M)`` IoU of ``(N, 4)`` and ``(M, 4)`` xyxy boxes."""
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda z: (z[:, 2] - z[:, 0]) * (z[:, 3] - z[:, 1])  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-9)


def compare_faces(fa, fb, labels) -> dict:
    """Match B's faces to A's per frame (greedy by IoU >= 0.5) and compare their emotions."""
    from fer_pipeline.aggregate import prob_columns, valence

    pcols = prob_columns(labels)
    pa_all, pb_all = [], []
    ga = dict(tuple(fa.groupby("frame_index")))
    for fi, gb in fb.groupby("frame_index"):
        if fi not in ga:
            continue
        a = ga[fi]
        iou = _iou(a[["x1", "y1", "x2", "y2"]].to_numpy(float), gb[["x1", "y1", "x2", "y2"]].to_numpy(float))
        used = set()
        for j in np.argsort(-iou.max(axis=0)):
            i = int(np.argmax(np.where([k in used for k in range(len(a))], -1, iou[:, j])))
            if iou[i, j] >= 0.5 and i not in used:
                used.add(i)
                pa_all.append(a[pcols].to_numpy(float)[i])
                pb_all.append(gb[pcols].to_numpy(float)[j])
    out = {"faces_a": len(fa), "faces_b": len(fb), "matched": len(pa_all)}
    if pa_all:
        pa, pb = np.array(pa_all), np.array(pb_all)
        out.update(agreement=float(np.mean(pa.argmax(1) == pb.argmax(1))),
                   tv=float(np.mean(0.5 * np.abs(pa - pb).sum(1))),
                   valence_abs_diff=float(np.mean(np.abs(valence(pa, labels) - valence(pb, labels)))))
    return out


def compare_audience(aa, ab, labels) -> dict:
    """Per-second audience valence and dominant-probability differences over the seconds both have viewers in."""
    from fer_pipeline.aggregate import prob_columns

    m = aa.merge(ab, on="second", suffixes=("_a", "_b"))
    m = m[(m["viewers_a"] > 0) & (m["viewers_b"] > 0)]
    if not len(m):
        return {"seconds": 0}
    pcols = prob_columns(labels)
    pa = m[[c + "_a" for c in pcols]].to_numpy(float)
    pb = m[[c + "_b" for c in pcols]].to_numpy(float)
    dom = pa.argmax(1)
    dv = np.abs(m["valence_a"].to_numpy(float) - m["valence_b"].to_numpy(float))
    dp = np.abs(pa[np.arange(len(m)), dom] - pb[np.arange(len(m)), dom])
    return {"seconds": int(len(m)), "valence_mean_abs_diff": float(dv.mean()), "valence_max_abs_diff": float(dv.max()),
            "dominant_p_mean_abs_diff": float(dp.mean()), "dominant_same": float(np.mean(dom == pb.argmax(1)))}


def pixel_psnr(video: Path, cfg_a, cfg_b) -> dict:
    """PSNR of B's sampled frames against A's (decode settings of each config)."""
    from fer_pipeline.decode import iter_batches

    def frames(cfg):
        for b in iter_batches(video, cfg.decode):
            yield from zip(b.frame_index.tolist(), b.frames)

    mse, worst, n = [], np.inf, 0
    for (ia, fa), (ib, fb) in zip(frames(cfg_a), frames(cfg_b)):
        if ia != ib:
            raise SystemExit(f"{video}: A and B sample different frames ({ia} vs {ib}); PSNR needs the same frames")
        e = float(np.mean((fa.astype(np.float32) - fb.astype(np.float32)) ** 2))
        mse.append(e)
        worst = min(worst, 10 * np.log10(255 ** 2 / max(e, 1e-10)))
        n += 1
    mean = float(np.mean(mse)) if mse else float("nan")
    return {"frames": n, "psnr_db": float(10 * np.log10(255 ** 2 / max(mean, 1e-10))), "worst_frame_psnr_db": worst}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("videos", nargs="+", type=Path)
    ap.add_argument("--a", default="", help="reference configuration overrides (default: the defaults)")
    ap.add_argument("--b", default="", help="compared configuration overrides")
    ap.add_argument("--pixels", action="store_true", help="also compare the decoded frames (PSNR)")
    ap.add_argument("--json", type=Path, help="write the figures here too")
    args = ap.parse_args(argv)

    from fer_pipeline.config import PipelineConfig
    from fer_pipeline.models import Models
    from fer_pipeline.pipeline import analyze_video
    from fer_pipeline.store import read_table

    cfgs = {k: PipelineConfig.load(overrides=_overrides(v)) for k, v in (("a", args.a), ("b", args.b))}
    models = {k: Models.load(c) for k, c in cfgs.items()}
    labels = models["a"].emotion.labels
    results = []
    for video in args.videos:
        row: dict = {"video": str(video), "a": args.a or "defaults", "b": args.b or "defaults"}
        tables = {}
        for k in ("a", "b"):
            with tempfile.TemporaryDirectory() as out:
                r = analyze_video(video, out, cfgs[k], models[k], force=True)
                if r["status"] != "ok":
                    raise SystemExit(f"{video}: {k} failed: {r['error']}")
                tables[k] = {t: read_table(out, t) for t in ("faces", "audience")}
        row["faces"] = compare_faces(tables["a"]["faces"], tables["b"]["faces"], labels)
        row["audience"] = compare_audience(tables["a"]["audience"], tables["b"]["audience"], labels)
        if args.pixels:
            row["pixels"] = pixel_psnr(video, cfgs["a"], cfgs["b"])
        results.append(row)
        f, a = row["faces"], row["audience"]
        line = (f"{video.name}: faces {f['faces_a']}/{f['faces_b']}, matched {f['matched']}; "
                f"emotion agreement {f.get('agreement', float('nan')):.3f}, TV {f.get('tv', float('nan')):.4f}, "
                f"|d valence| {f.get('valence_abs_diff', float('nan')):.4f}; audience over {a['seconds']} s: "
                f"|d valence| mean {a.get('valence_mean_abs_diff', float('nan')):.4f} "
                f"max {a.get('valence_max_abs_diff', float('nan')):.4f}, same dominant emotion "
                f"{a.get('dominant_same', float('nan')):.3f}")
        if "pixels" in row:
            p = row["pixels"]
            line += (f"; pixels PSNR {p['psnr_db']:.1f} dB (worst frame {p['worst_frame_psnr_db']:.1f}) "
                     f"over {p['frames']}")
        print(line, flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
