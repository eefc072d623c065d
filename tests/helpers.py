"""Clip makers and decode settings shared by the decode tests (imported as ``helpers``; tests import nothing from
other test modules)."""
from __future__ import annotations

import fractions
from pathlib import Path

import av
import numpy as np

from conftest import VIDEOS, write_audio_only
from fer_pipeline.config import DecodeConfig

SINGLE = VIDEOS / "single_face.mp4"


def write_video(path: Path, pts_ms: list[int], size: tuple[int, int] = (64, 48), rotation_ccw: int | None = None,
                image_fn=None, options: dict | None = None, fps: int = 25, codec_options: dict | None = None) -> Path:
    """Write an H.264 mp4 whose frames have the given pts (time base 1/1000 s); ``size`` is (width, height); ``fps``
    is the nominal rate the stream declares; ``codec_options`` go to libx264 (e.g. ``{"g": "12"}``)."""
    w, h = size
    tb = fractions.Fraction(1, 1000)
    with av.open(str(path), "w", options=options or {}) as c:
        s = c.add_stream("libx264", rate=fps, options=codec_options or {})
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.codec_context.time_base = tb
        if rotation_ccw is not None:
            s.set_display_rotation(rotation_ccw)  # PyAV: counter-clockwise degrees, as VideoFrame.rotation reads
        for i, p in enumerate(pts_ms):
            img = image_fn(i) if image_fn else np.full((h, w, 3), (i * 20) % 256, np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = p, tb
            for pk in s.encode(frame):
                c.mux(pk)
        for pk in s.encode(None):
            c.mux(pk)
    return path


def settings(**kw) -> DecodeConfig:
    """Decode settings for a test: ``DecodeConfig`` with ``kw`` set, and exact sampling (``snap_to_anchors=False``)
    unless ``kw`` says otherwise. ``sample_fps=None`` or ``<= 0`` (every frame: the decoder does it, the pipeline's
    validated configuration does not offer it) is set without validation."""
    kw = {"snap_to_anchors": False, **kw}
    fps = kw.get("sample_fps", 5.0)
    if fps is None or fps <= 0:
        return DecodeConfig(**{**kw, "sample_fps": 5.0}).model_copy(update={"sample_fps": fps})
    return DecodeConfig(**kw)


def marker_image(i: int) -> np.ndarray:
    """64x48 (W x H) grey frame with a red 32x24 block in the stored top-left quadrant."""
    img = np.full((48, 64, 3), 60, np.uint8)
    img[:24, :32] = (230, 20, 20)
    return img


def red_quadrant(frame: np.ndarray) -> str:
    h, w = frame.shape[:2]
    q = {"tl": frame[: h // 2, : w // 2], "tr": frame[: h // 2, w // 2:],
         "bl": frame[h // 2:, : w // 2], "br": frame[h // 2:, w // 2:]}
    return max(q, key=lambda k: q[k][..., 0].astype(float).mean() - q[k][..., 1].astype(float).mean())


def bad_input(kind: str, d: Path) -> Path:
    if kind == "missing":
        return d / "does_not_exist.mp4"
    if kind == "empty":
        (d / "empty.mp4").write_bytes(b"")
        return d / "empty.mp4"
    if kind == "text":
        (d / "notes.mp4").write_text("this is not a video\n" * 50)
        return d / "notes.mp4"
    if kind == "truncated":
        data = SINGLE.read_bytes()
        (d / "trunc.mp4").write_bytes(data[: int(len(data) * 0.3)])
        return d / "trunc.mp4"
    if kind == "truncated_faststart":
        # index at the front, so the file opens and the stream ends early: must not pass as a short video
        src = write_video(d / "fs.mp4", [40 * i for i in range(75)], size=(160, 120), options={"movflags": "faststart"},
                          image_fn=lambda i: np.random.default_rng(i).integers(0, 255, (120, 160, 3), dtype=np.uint8))
        data = src.read_bytes()
        (d / "fs_trunc.mp4").write_bytes(data[: len(data) // 2])
        return d / "fs_trunc.mp4"
    if kind == "audio":
        return write_audio_only(d / "sine.m4a")
    if kind == "directory":
        (d / "adir.mp4").mkdir()
        return d / "adir.mp4"
    if kind == "text_txt":
        (d / "readme.txt").write_text("hello\n" * 100)  # FFmpeg's 'tty' demuxer would render this as ANSI "video"
        return d / "readme.txt"
    raise AssertionError(kind)


def write_gray_ramp(path: Path, pts_ms: list[int], fps: int = 30) -> Path:
    """H.264 (libx264 defaults: B-frames, some non-reference) 64x48 frames; frame i is uniform gray ``4 * i``, so a
    decoded picture tells its own index. Frames have the given pts (time base 1/1000 s)."""
    return write_video(path, pts_ms, image_fn=lambda i: np.full((48, 64, 3), 4 * i, np.uint8), fps=fps)


def picture_index(frames: np.ndarray) -> np.ndarray:
    """Index encoded in each gray-ramp picture."""
    return np.round(frames.reshape(len(frames), -1).mean(1) / 4).astype(int)
