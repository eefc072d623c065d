"""Shared fixtures: the real data in ../shared/data, the shipped model, and clips made on the fly."""
from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

# Prefect (ephemeral mode in the flow tests): no telemetry on this offline machine, and no INFO logs, whose
# handler writes to pytest's already-closed stdout when the temporary server stops at exit.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
# the CLI's other Prefect defaults (no telemetry; the pipeline's log records in the runs' logs), before any import
from fer_pipeline.cli import prefect_defaults  # noqa: E402

prefect_defaults()

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FER_SHARED_DATA", REPO.parent / "shared" / "data"))
VIDEOS = SHARED / "videos"
IMAGES = SHARED / "images"
MODEL = REPO / "models" / "emotion-fer2013-vgg.onnx"


def pytest_collection_modifyitems(config, items):
    if not SHARED.is_dir():
        raise pytest.UsageError(f"../shared/data not found at {SHARED}: the tests use the real recordings there")


@pytest.fixture(scope="session")
def shared() -> Path:
    return SHARED


def write_video(path: Path, frames: np.ndarray, fps: int = 10, pts_ms: list[int] | None = None,
                display_cw: int = 0, options: dict | None = None) -> Path:
    """Encode (N,H,W,3) uint8 RGB frames to H.264 with PyAV; optional per-frame pts in milliseconds (VFR).

    ``display_cw`` (0/90/180/270): record as a phone turned that way does: the frames are stored turned
    counter-clockwise and the display matrix says to turn them back clockwise, so an upright decode gives
    ``frames``. ``options``: x264 options (e.g. ``{"crf": "12"}``).
    """
    import av

    k = display_cw // 90
    if k:
        frames = np.ascontiguousarray(np.rot90(np.asarray(frames), k=k, axes=(1, 2)))
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        if options:
            s.codec_context.options = dict(options)
        if display_cw:
            s.set_display_rotation(-display_cw)  # PyAV: counter-clockwise degrees
        if pts_ms is not None:
            s.codec_context.time_base = Fraction(1, 1000)
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            if pts_ms is not None:
                vf.pts, vf.time_base = pts_ms[i], Fraction(1, 1000)
            for pkt in s.encode(vf):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


def write_audio_only(path: Path, seconds: float = 1.0) -> Path:
    """An AAC-in-MP4 file with a sine tone and no video stream."""
    import av

    rate = 44100
    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=rate)
        t = np.arange(int(rate * seconds)) / rate
        samples = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        for i in range(0, len(samples), 1024):
            fr = av.AudioFrame.from_ndarray(samples[None, i:i + 1024], format="fltp", layout="mono")
            fr.sample_rate = rate
            for pkt in s.encode(fr):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


@pytest.fixture(scope="session")
def bad_inputs(tmp_path_factory) -> dict[str, Path]:
    """One file per kind of bad input, each made from real data where that makes sense."""
    d = tmp_path_factory.mktemp("bad")
    out = {}
    (d / "notes.mp4").write_text("this is not a video\n")
    out["not_a_video"] = d / "notes.mp4"
    (d / "empty.mp4").write_bytes(b"")
    out["zero_length"] = d / "empty.mp4"
    data = (VIDEOS / "WolfgangLanger_Pexels.mp4").read_bytes()
    (d / "truncated.mp4").write_bytes(data[: len(data) // 3])
    out["truncated"] = d / "truncated.mp4"
    out["audio_only"] = write_audio_only(d / "tone.m4a")
    out["missing"] = d / "does-not-exist.mp4"
    return out


@pytest.fixture(scope="session")
def no_face_video(tmp_path_factory) -> Path:
    """3 s of moving gradients: a valid video with no face in it."""
    d = tmp_path_factory.mktemp("noface")
    x = np.linspace(0, 255, 320, dtype=np.float32)
    frames = np.stack([np.stack([np.tile((x + 8 * i) % 256, (240, 1))] * 3, -1) for i in range(30)]).astype(np.uint8)
    return write_video(d / "no_face.mp4", frames, fps=10)


def timeline_from_probs(rows, labels, viewers=None):
    """The ``timeline`` table that :func:`fer_pipeline.aggregate.timeline` makes from one face sample per row.

    ``rows``: ``(track_id, second, probs)`` with ``probs`` the sample's probabilities in ``labels`` order; the sample
    is put at ``second + 0.5`` s, so the timeline row has exactly these probabilities (``n_samples`` 1).
    ``viewers``: ``{track_id: viewer_id}`` (re-identification); when given, a ``viewer_id`` column (int64) is put
    right after ``track_id``, as the pipeline writes it (tracks missing from the mapping are their own viewer).
    Without it the table is as written before re-identification (no ``viewer_id``).
    """
    import pandas as pd

    from fer_pipeline.aggregate import prob_columns, timeline

    pcols = prob_columns(labels)
    faces = pd.DataFrame([{"track_id": int(t), "timestamp_s": s + 0.5, **dict(zip(pcols, map(float, p)))}
                          for t, s, p in rows], columns=["track_id", "timestamp_s", *pcols])
    tl = timeline(faces, labels)
    if viewers is not None:
        vid = [int(viewers.get(int(t), t)) for t in tl["track_id"]]
        tl.insert(tl.columns.get_loc("track_id") + 1, "viewer_id", pd.Series(vid, index=tl.index, dtype="int64"))
    return tl
