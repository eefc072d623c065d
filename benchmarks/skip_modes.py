"""Frame types of a video and what FFmpeg's ``skip_frame`` modes save when decoding it on one thread.

    .venv/bin/python benchmarks/skip_modes.py VIDEO [--seconds 20]

For the first ``--seconds`` of VIDEO it prints how many I-, P- and B-frames are decoded, and the single-threaded
decode time (PyAV, no RGB conversion) with every frame decoded (``DEFAULT``), non-reference frames skipped
(``NONREF``: what ``decode.skip_nonref`` does for frames that cannot be sampled) and every B-frame skipped
(``BIDIR``: what the chunk decoders do once ``decode.snap_to_anchors`` has moved the samples off B-frames and the
first chunk passed the check), each with and without deblocking (``skip_loop_filter``). Times vary by ~10-30%
between runs on a shared machine: compare rows of one run.
"""

from __future__ import annotations

import argparse
import collections
import time

import av

MODES = ("DEFAULT", "NONREF", "BIDIR")
PICT_TYPES = {1: "I", 2: "P", 3: "B"}  # FFmpeg's AVPictureType values (PyAV gives the int)


def decode(path: str, mode: str, loop_filter: str, seconds: float) -> tuple[collections.Counter, float]:
    """Frame-type counts and seconds to decode the first ``seconds`` of ``path`` with ``skip_frame=mode``."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "NONE"
        stream.codec_context.skip_frame = mode
        if loop_filter != "default":
            stream.codec_context.options = {"skip_loop_filter": loop_filter}
        tb = float(stream.time_base)
        counts: collections.Counter = collections.Counter()
        t0 = time.perf_counter()
        for frame in container.decode(stream):
            counts[PICT_TYPES.get(int(frame.pict_type), str(frame.pict_type))] += 1
            if frame.pts is not None and frame.pts * tb >= seconds:
                break
        return counts, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("video")
    ap.add_argument("--seconds", type=float, default=20.0, help="decode this much of the video (default 20)")
    args = ap.parse_args()
    print(f"{args.video}, first {args.seconds:g} s, one thread")
    for mode in MODES:
        for lf in ("default", "all"):
            counts, dt = decode(args.video, mode, lf, args.seconds)
            types = " ".join(f"{k}={v}" for k, v in sorted(counts.items()))
            print(f"  skip_frame={mode:7s} skip_loop_filter={lf:7s} frames {sum(counts.values()):5d} ({types}): "
                  f"{dt:6.2f} s = {args.seconds / dt:5.1f}x real time per core")


if __name__ == "__main__":
    main()
