"""Child process for the peer: runs the `fer` package on one video inside benchmarks/.fer-venv.

Not part of fer_pipeline and not imported by it; ``benchmarks/run.py`` starts it with the peer venv's python, one
process per video, and measures the whole process (wall time from spawn to exit, peak RSS via ``wait4``). This script
adds the in-process split (imports + model load vs ``analyze``) and its own ``ru_maxrss`` on the last stdout line as
JSON.

    .fer-venv/bin/python benchmarks/_fer_peer.py VIDEO --frequency 6 --outdir /tmp/x
    .fer-venv/bin/python benchmarks/_fer_peer.py --smoke      # imports + MTCNN/emotion model on one real frame
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

T0 = time.perf_counter()
SMOKE_VIDEO = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "videos" / "WolfgangLanger_Pexels.mp4"


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def smoke(video: Path) -> int:
    import cv2
    from fer.classes import Video  # noqa: F401  (the import the benchmark uses)
    from fer.fer import FER

    cap = cv2.VideoCapture(str(video))
    cap.set(cv2.CAP_PROP_POS_FRAMES, 100)
    ok, frame = cap.read()
    cap.release()
    if not ok:
        print(f"cannot read a frame of {video}", file=sys.stderr)
        return 2
    faces = FER(mtcnn=True).detect_emotions(frame)
    print(json.dumps({"smoke": "ok" if faces else "no face", "faces": len(faces),
                      "first": faces[0] if faces else None, "cv2": cv2.__version__}, default=str))
    return 0 if faces else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("video", nargs="?", type=Path)
    ap.add_argument("--frequency", type=int, default=1, help="analyse every Nth frame (fer's `frequency`)")
    ap.add_argument("--outdir", type=Path, default=None, help="fer's output folder (annotated frames, images.zip)")
    ap.add_argument("--no-save-frames", action="store_true", help="pass save_frames=False (fer's default is True)")
    ap.add_argument("--smoke", action="store_true", help="only check imports and MTCNN on one frame")
    args = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if args.smoke:
        return smoke(args.video or SMOKE_VIDEO)
    if args.video is None:
        ap.error("VIDEO is required unless --smoke")

    from fer.classes import Video
    from fer.fer import FER

    detector = FER(mtcnn=True)
    t_ready = time.perf_counter()
    kwargs = {"frequency": args.frequency, "display": False, "save_video": False}
    if args.no_save_frames:
        kwargs["save_frames"] = False
    args.video = args.video.resolve()
    if args.outdir:  # fer writes data.csv into the working directory and frames into outdir
        args.outdir = args.outdir.resolve()
        args.outdir.mkdir(parents=True, exist_ok=True)
        os.chdir(args.outdir)
    video = Video(str(args.video), outdir=str(args.outdir)) if args.outdir else Video(str(args.video))
    result = video.analyze(detector, **kwargs)
    t_end = time.perf_counter()
    rows = result if isinstance(result, list) else []  # output="csv": one dict per frame with faces (box0, box1...)
    print(json.dumps({
        "setup_s": round(t_ready - T0, 3),            # interpreter start to FER(mtcnn=True) built (imports, TF, torch)
        "analyze_s": round(t_end - t_ready, 3),       # Video(...).analyze(...)
        "frames_analyzed": -(-int(getattr(video, "frameCount", 0)) // max(1, args.frequency)),
        "frames_with_faces": len(rows),
        "faces": sum(1 for r in rows for k in r if str(k).startswith("box")),
        "maxrss_mb": round(_maxrss_mb(), 1),
        "save_frames": not args.no_save_frames,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
