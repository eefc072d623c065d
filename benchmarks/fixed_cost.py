"""The whole command's cost on a folder of many short recordings, and its fixed cost when everything is done.

    .venv/bin/python benchmarks/fixed_cost.py [--n 12] [--repeat 3] [--json OUT]

Builds ``benchmarks/_inputs/fixed-cost/`` (git-ignored): ``--n`` copies of the shared ``single_face.mp4`` (2.4 s,
640x360) under different names, so each is its own video. Then, with a fresh output folder each time, times
``fer-pipeline analyze FOLDER --out OUT`` as a user runs it (a new process: Python start-up, imports, Prefect's
temporary server, the flow, the reports):

* ``first``: nothing analysed yet; the figure is the wall time against the sum of the recordings' durations
  (x real time of the whole command, start-up included);
* ``done``: the same command again once everything is done (the fixed cost a scheduled or repeated run pays:
  checking what is done, the summary, the index when it is stale).

Each figure is the median of ``--repeat`` runs (min and max printed too). Measure on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "videos"
CLI = [sys.executable, "-m", "fer_pipeline"]


def _folder(n: int) -> Path:
    d = REPO / "benchmarks" / "_inputs" / "fixed-cost" / f"n{n}"
    if len(list(d.glob("*.mp4"))) != n:
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        for i in range(n):
            shutil.copyfile(SHARED / "single_face.mp4", d / f"respondent-{i:03d}.mp4")
    return d


def _duration(path: Path) -> float:
    import av

    with av.open(str(path)) as c:
        return float(c.duration / 1e6)


def _time(cmd: list[str]) -> float:
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {r.returncode}: {r.stderr[-2000:]}")
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=12, help="recordings in the folder")
    ap.add_argument("--repeat", type=int, default=3, help="runs per figure (median reported)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    folder = _folder(args.n)
    total_s = sum(_duration(p) for p in sorted(folder.glob("*.mp4")))
    first, done = [], []
    for k in range(args.repeat):
        out = REPO / "benchmarks" / "_results" / f"fixed-cost-out-{k}"
        shutil.rmtree(out, ignore_errors=True)
        first.append(_time([*CLI, "analyze", str(folder), "--out", str(out)]))
        done.append(_time([*CLI, "analyze", str(folder), "--out", str(out)]))
        shutil.rmtree(out, ignore_errors=True)
    res = {"recordings": args.n, "video_s": round(total_s, 2),
           "first_s": {"median": statistics.median(first), "min": min(first), "max": max(first)},
           "done_s": {"median": statistics.median(done), "min": min(done), "max": max(done)}}
    res["first_x_real_time"] = total_s / res["first_s"]["median"]
    print(f"{args.n} recordings, {total_s:.1f} s of video")
    print(f"first run (all to analyse): {res['first_s']['median']:.1f} s median "
          f"(min {min(first):.1f}, max {max(first):.1f}) = {res['first_x_real_time']:.2f}x real time, whole command")
    print(f"again (all done):           {res['done_s']['median']:.2f} s median "
          f"(min {min(done):.2f}, max {max(done):.2f})")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
