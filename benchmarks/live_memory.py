"""Memory of a long live session, in-process: Python heap (tracemalloc) and RSS every 100 s of stream time.

Builds a long recording by repeating a benchmark input (default ``720p-1min`` x 10 = 10 minutes; packets copied, no
re-encoding) and runs it through ``fer_pipeline.live`` as a file read as fast as it decodes (every sample analysed,
nothing dropped; thumbnails on, as with ``--out``), so 10 minutes of stream take a few minutes. Flat memory: the
traced heap and the RSS stop growing after the first minute (the faces are held only until settled, latencies are
4 bytes a sample, thumbnails only for seconds that can still be key moments).

    .venv/bin/python benchmarks/live_memory.py [--repeat 10] [--input 720p-1min]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from inputs import ensure_input  # noqa: E402


def repeat_file(src: Path, dst: Path, n: int) -> Path:
    """``src``'s video packets ``n`` times over, timestamps shifted, into ``dst`` (no re-encoding)."""
    import av

    with av.open(str(dst), "w") as out:
        ost = None
        off = 0
        for _ in range(n):
            with av.open(str(src)) as inp:
                ist = inp.streams.video[0]
                if ost is None:
                    ost = out.add_stream_from_template(ist)
                last = 0
                for p in inp.demux(ist):
                    if p.dts is None:
                        continue
                    p.pts += off
                    p.dts += off
                    last = max(last, p.pts + (p.duration or 0))
                    p.stream = ost
                    out.mux(p)
                off = last
    return dst


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input", default="720p-1min")
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args(argv)

    import psutil

    import fer_pipeline

    with tempfile.TemporaryDirectory() as tmp:
        clip = repeat_file(ensure_input(args.input), Path(tmp) / "long.mp4", args.repeat)
        tracemalloc.start()
        run = fer_pipeline.live(str(clip), out=Path(tmp) / "out", reports=False, page=False)
        ps = psutil.Process()
        points = []
        t0 = time.perf_counter()
        for sec in run:
            if sec["second"] % 100 == 0 or sec["second"] == 60:
                points.append({"second": sec["second"], "wall_s": round(time.perf_counter() - t0, 1),
                               "rss_mb": round(ps.memory_info().rss / 2**20, 1),
                               "heap_mb": round(tracemalloc.get_traced_memory()[0] / 2**20, 2)})
        after = [p for p in points if p["second"] >= 60]
        res = {"input": args.input, "stream_s": run.result["duration_s"], "points": points,
               "rss_growth_after_1min_mb": round(after[-1]["rss_mb"] - after[0]["rss_mb"], 1) if after else None,
               "heap_growth_after_1min_mb": round(after[-1]["heap_mb"] - after[0]["heap_mb"], 2) if after else None}
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
