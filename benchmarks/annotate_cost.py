"""Cost of the annotated video (``fer_pipeline.annotate``) per minute of recording.

    .venv/bin/python benchmarks/annotate_cost.py [--inputs 720p-1min 1080p-group] [--repeat 3] [--preset veryfast]

Each input (``benchmarks/inputs.py``, built when missing) is analysed once into a temporary output folder with the
default settings (reports off), then ``annotate_video`` is timed ``--repeat`` times on it (wall and CPU seconds of
this process, x264's and the decoder's threads included), after a decode-only pass of the same frames (every frame
decoded and converted to BGR, as the annotator does: its floor). Printed per input: median seconds per minute of
video for both and how busy the machine was just before (``0%`` = idle; with 2 cores anything else running
inflates the figures).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from inputs import ensure_input
from run import machine_busy


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _decode_only(path: Path) -> None:
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        for f in c.decode(s):
            f.to_ndarray(format="bgr24")


def _timed(fn) -> tuple[float, float]:
    w, c = time.perf_counter(), _cpu_s()
    fn()
    return time.perf_counter() - w, _cpu_s() - c


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inputs", nargs="+", default=["720p-1min"])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--preset", default=None, help="x264 preset (default: the annotator's)")
    ap.add_argument("--crf", type=int, default=None)
    args = ap.parse_args(argv)

    from fer_pipeline.annotate import CRF, PRESET, annotate_video
    from fer_pipeline.config import PipelineConfig
    from fer_pipeline.decode.container import probe
    from fer_pipeline.models import Models
    from fer_pipeline.pipeline import analyze_video
    from fer_pipeline.store import read_parts

    preset, crf = args.preset or PRESET, args.crf if args.crf is not None else CRF
    cfg = PipelineConfig.load(None, {"output.reports": False})
    models = Models.load(cfg)
    print(f"annotated video: libx264 preset {preset} crf {crf}; {args.repeat} run(s) per input, median")
    print("| input | video s | faces rows | decode-only s/min | annotate wall s/min | annotate CPU s/min "
          "| x real time | busy before |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.inputs:
            path = ensure_input(name)
            meta = probe(path)
            row = analyze_video(str(path), tmp, cfg, models=models)
            if row["status"] != "ok":
                print(f"{name}: analysis failed: {row['error']}", file=sys.stderr)
                return 1
            faces = read_parts(Path(tmp) / "faces", row["video_id"])
            labels = models.emotion.labels
            target = Path(tmp) / "annotated" / f"{name}.mp4"

            def annotate(path=path, faces=faces, target=target, labels=labels):
                annotate_video(path, faces, target, labels, interval_s=1.0 / cfg.decode.sample_fps, crf=crf,
                               preset=preset)

            busy = machine_busy()
            dec = [_timed(lambda path=path: _decode_only(path))[0] for _ in range(args.repeat)]
            runs = [_timed(annotate) for _ in range(args.repeat)]
            per_min = 60.0 / meta.duration_s
            wall = statistics.median(w for w, _ in runs)
            cpu = statistics.median(c for _, c in runs)
            size = target.stat().st_size / 1e6
            print(f"| {name} ({meta.width}x{meta.height} {meta.fps:g} fps, {size:.0f} MB out) | {meta.duration_s:.1f} "
                  f"| {len(faces)} | {statistics.median(dec) * per_min:.1f} | {wall * per_min:.1f} "
                  f"| {cpu * per_min:.1f} | {meta.duration_s / wall:.2f} | {busy['busy_pct']:.0f}% |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
