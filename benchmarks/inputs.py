"""Benchmark inputs, generated from the real clips in shared/data with PyAV (libx264, yuv420p; no ffmpeg binary).

Each input is built once and cached as ``benchmarks/_inputs/<name>-<key>.mp4``, where ``key`` combines
``INPUTS_VERSION`` with a hash of the input's recipe and of its source file, so changing either builds a new file.
A JSON sidecar beside each file records the recipe, the source's sha256 and the build time.

Inputs (see ``SPECS``):

``720p-1min`` / ``720p-10min``
    a single-viewer webcam-like recording: ``videos/WolfgangLanger_Pexels.mp4`` (19.7 s, 640x360, 23.976 fps, one
    face) scaled to 1280x720 (bicubic) and resampled to 30 fps, played forward then backward ("ping-pong") so the
    recording stays one continuous shot (no jump cut at the loop point, so the viewer stays one track), to 60 s and
    600 s. The 10-minute file is the 1-minute content repeated, which is what the peak-RSS check needs.
``1080p-group``
    a 1920x1080 30 fps, 45 s recording of several viewers: ``images/t1.jpg`` (1280x886, 6 faces) scaled to fill the
    frame height and padded (black) to 16:9, under a slow Ken Burns move (zoom 1.00 -> 1.25 -> 1.00 and a horizontal
    pan, one cycle per 15 s) so every frame differs and faces move slowly, as a camera operator would.

Encoding: libx264, yuv420p, CRF 20, preset veryfast, GOP 60 frames (2 s, the usual streaming/OBS setting), no audio,
with light luma grain (Gaussian, std 2.5 levels, from a pool of 13 noise planes) so the bitrate is that of a camera
recording (~4.5 Mbit/s at 720p, ~7.4 at 1080p) rather than of a clean upscale (~1 Mbit/s): decode cost grows
with the bitrate.
The GOP length matters for decoders that seek (decord's ``get_batch``, OpenCV's ``CAP_PROP_POS_FRAMES``).

    .venv/bin/python benchmarks/inputs.py              # build all (prints paths)
    .venv/bin/python benchmarks/inputs.py 720p-1min    # build one
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from fer_pipeline.fileutil import sha256_file

#: bump when the generator changes in a way the recipe below does not capture
INPUTS_VERSION = "v1"

HERE = Path(__file__).resolve().parent
INPUTS_DIR = HERE / "_inputs"
DEFAULT_DATA = HERE.parent.parent / "shared" / "data"


@dataclass(frozen=True)
class InputSpec:
    """Recipe of one generated benchmark input."""

    name: str
    kind: str            # "clip-pingpong" | "photo-kenburns"
    source: str          # relative to the shared data folder
    width: int
    height: int
    fps: int
    duration_s: float
    viewers: int         # faces a viewer would count in the picture
    crf: int = 20
    preset: str = "veryfast"
    gop: int = 60
    grain: float = 2.5   # std of Gaussian luma noise added per frame (sensor grain), in 8-bit levels


SPECS: dict[str, InputSpec] = {
    "720p-1min": InputSpec("720p-1min", "clip-pingpong", "videos/WolfgangLanger_Pexels.mp4", 1280, 720, 30, 60.0, 1),
    "720p-10min": InputSpec("720p-10min", "clip-pingpong", "videos/WolfgangLanger_Pexels.mp4", 1280, 720, 30, 600.0,
                            1),
    "1080p-group": InputSpec("1080p-group", "photo-kenburns", "images/t1.jpg", 1920, 1080, 30, 45.0, 6),
}


def cache_key(spec: InputSpec, source_sha: str) -> str:
    """``INPUTS_VERSION`` plus a short hash of the recipe and the source file's content."""
    blob = json.dumps({"recipe": asdict(spec), "source_sha256": source_sha}, sort_keys=True).encode()
    return f"{INPUTS_VERSION}-{hashlib.sha256(blob).hexdigest()[:10]}"


def input_path(name: str, data_dir: Path = DEFAULT_DATA, inputs_dir: Path = INPUTS_DIR) -> Path:
    """Where input ``name`` lives (built or not)."""
    spec = SPECS[name]
    src = data_dir / spec.source
    if not src.is_file():
        raise FileNotFoundError(f"benchmark source not found: {src} (pass --data to point at shared/data)")
    return inputs_dir / f"{name}-{cache_key(spec, sha256_file(src))}.mp4"


def ensure_input(name: str, data_dir: Path = DEFAULT_DATA, inputs_dir: Path = INPUTS_DIR,
                 log=print) -> Path:
    """Return the cached input ``name``, building it first when it is missing (atomically: temp file + rename)."""
    path = input_path(name, data_dir, inputs_dir)
    if path.is_file() and path.with_suffix(".json").is_file():
        return path
    spec = SPECS[name]
    inputs_dir.mkdir(parents=True, exist_ok=True)
    for stale in inputs_dir.glob(f"{name}-*.tmp.mp4"):  # left by an interrupted build
        stale.unlink(missing_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp.mp4")
    log(f"building {name} -> {path.name} ({spec.width}x{spec.height} {spec.fps} fps, {spec.duration_s:g} s) ...")
    t0 = time.perf_counter()
    src = data_dir / spec.source
    try:
        frames = _clip_pingpong(spec, src) if spec.kind == "clip-pingpong" else _photo_kenburns(spec, src)
        n = _encode(frames, tmp, spec)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    side = {"name": name, "version": INPUTS_VERSION, "recipe": asdict(spec), "source_sha256": sha256_file(src),
            "frames": n, "bytes": path.stat().st_size, "build_s": round(time.perf_counter() - t0, 1),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    path.with_suffix(".json").write_text(json.dumps(side, indent=2) + "\n")
    log(f"built {name}: {n} frames, {side['bytes'] / 1e6:.1f} MB in {side['build_s']} s")
    return path


# ---------------------------------------------------------------------------------------------------------------------
# generators: yield yuv420p frames as PyAV's (H * 3 / 2, W) uint8 arrays (Y plane rows first)
# ---------------------------------------------------------------------------------------------------------------------

def _n_frames(spec: InputSpec) -> int:
    return round(spec.duration_s * spec.fps)


def _clip_pingpong(spec: InputSpec, src: Path):
    """Source clip scaled to the target size, resampled to ``spec.fps`` by nearest timestamp, played forward then
    backward until ``spec.duration_s``. Scaled frames are kept once as yuv420p arrays (~1.4 MB each at 720p)."""
    import av

    scaled: list[np.ndarray] = []
    stamps: list[float] = []
    with av.open(str(src)) as c:
        st = c.streams.video[0]
        st.thread_type = "AUTO"
        start = float(st.start_time * st.time_base) if st.start_time is not None else 0.0
        for fr in c.decode(st):
            stamps.append(float(fr.pts * st.time_base) - start)
            out = fr.reformat(width=spec.width, height=spec.height, format="yuv420p", interpolation="BICUBIC")
            scaled.append(out.to_ndarray())
    ts = np.asarray(stamps)
    order = np.argsort(ts)
    ts, scaled = ts[order], [scaled[i] for i in order]
    d = float(ts[-1])  # forward run length in seconds (first to last frame)
    period = 2.0 * d
    for k in range(_n_frames(spec)):
        u = math.fmod(k / spec.fps, period)
        s = u if u <= d else period - u
        i = int(np.clip(np.searchsorted(ts, s), 0, len(ts) - 1))
        if i > 0 and abs(ts[i - 1] - s) <= abs(ts[i] - s):
            i -= 1
        yield scaled[i]


def _photo_kenburns(spec: InputSpec, src: Path):
    """Photo scaled to the frame height, padded to the frame width, then zoomed/panned slowly (period 15 s)."""
    import av
    import cv2
    from PIL import Image

    img = np.asarray(Image.open(src).convert("RGB"))
    h0, w0 = img.shape[:2]
    W, H = spec.width, spec.height
    base = H / h0                                # fit height: 1280x886 -> 1560x1080, 180 px black each side
    period = 15.0
    for k in range(_n_frames(spec)):
        t = k / spec.fps
        phase = 0.5 - 0.5 * math.cos(2 * math.pi * t / period)        # 0 -> 1 -> 0, smooth
        zoom = 1.0 + 0.25 * phase
        pan_x = 0.08 * W * math.sin(2 * math.pi * t / period)         # pixels, left/right
        pan_y = 0.03 * H * math.sin(4 * math.pi * t / period)
        s = base * zoom
        # source (x, y) -> destination: centre of image to centre of frame, plus pan
        tx = W / 2 - s * w0 / 2 + pan_x * zoom
        ty = H / 2 - s * h0 / 2 + pan_y * zoom
        m = np.array([[s, 0, tx], [0, s, ty]], dtype=np.float64)
        frame = cv2.warpAffine(img, m, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                               borderValue=(0, 0, 0))
        yield av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format="yuv420p").to_ndarray()


def _encode(frames, path: Path, spec: InputSpec) -> int:
    import av

    n = 0
    rng = np.random.default_rng(0)
    grain = [np.rint(rng.normal(0.0, spec.grain, (spec.height, spec.width))).astype(np.int16) for _ in range(13)]
    with av.open(str(path), mode="w", format="mp4") as out:
        st = out.add_stream("libx264", rate=spec.fps)
        st.width, st.height, st.pix_fmt = spec.width, spec.height, "yuv420p"
        st.codec_context.gop_size = spec.gop
        st.options = {"crf": str(spec.crf), "preset": spec.preset}
        tb = Fraction(1, spec.fps)
        for arr in frames:
            if spec.grain > 0:
                arr = arr.copy()
                y = arr[:spec.height].astype(np.int16) + grain[n % len(grain)]
                arr[:spec.height] = np.clip(y, 0, 255).astype(np.uint8)
            vf = av.VideoFrame.from_ndarray(arr, format="yuv420p")
            vf.pts, vf.time_base = n, tb
            for pkt in st.encode(vf):
                out.mux(pkt)
            n += 1
        for pkt in st.encode():
            out.mux(pkt)
    return n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", metavar="NAME", help=f"inputs to build (default: all): {', '.join(SPECS)}")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="shared data folder (default: %(default)s)")
    args = ap.parse_args(argv)
    unknown = [n for n in args.names if n not in SPECS]
    if unknown:
        ap.error(f"unknown input(s) {unknown}; choose from {list(SPECS)}")
    for name in args.names or list(SPECS):
        print(ensure_input(name, args.data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
