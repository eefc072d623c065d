"""Tests for fer_pipeline.decode on the real clips in ../shared/data and on tiny videos written with PyAV."""

from __future__ import annotations

import logging
from pathlib import Path

import av
import numpy as np
import pytest

from helpers import bad_input, marker_image, red_quadrant, settings, write_video

from fer_pipeline import decode
from fer_pipeline.config import DecodeConfig
from fer_pipeline.decode import (
    VideoError,
    apply_rotation,
    iter_batches,
    iterate,
    probe,
    select_sample_indices,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
VIDEOS = SHARED / "videos"
WOLF = VIDEOS / "WolfgangLanger_Pexels.mp4"
SINGLE = VIDEOS / "single_face.mp4"
MOVS = [VIDEOS / "face_noface.mov", VIDEOS / "noface_face.mov"]
BACKENDS = ["decord", "pyav"]

pytestmark = pytest.mark.skipif(not WOLF.exists(), reason=f"shared data not found at {SHARED}")


# ---------------------------------------------------------------------------------------------------------------------
# writers for synthetic inputs
# ---------------------------------------------------------------------------------------------------------------------


def collect(path, **kw):
    """Run iter_batches to the end with ``settings(**kw)``; returns (batches, frame_index, timestamp_s)."""
    batches = list(iter_batches(path, settings(**kw)))
    idx = np.concatenate([b.frame_index for b in batches]) if batches else np.zeros(0, np.int64)
    ts = np.concatenate([b.timestamp_s for b in batches]) if batches else np.zeros(0)
    return batches, idx, ts


# ---------------------------------------------------------------------------------------------------------------------
# real clips
# ---------------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_probe_wolfgang(backend):
    meta = probe(WOLF, backend=backend)
    assert (meta.width, meta.height) == (640, 360)
    assert meta.fps == pytest.approx(24000 / 1001, abs=1e-3)
    assert meta.duration_s == pytest.approx(19.69, abs=0.05)
    assert meta.rotation == 0
    assert meta.n_frames == 472
    assert meta.path == WOLF


@pytest.mark.parametrize("backend", BACKENDS)
def test_wolfgang_sampling_timestamps_and_batches(backend):
    batches, idx, ts = collect(WOLF, sample_fps=5.0, batch_size=7, backend=backend)
    frame_dt = 1001 / 24000
    # batch shapes bounded by batch_size; all but the last are full
    assert all(1 <= len(b) <= 7 for b in batches)
    assert all(len(b) == 7 for b in batches[:-1])
    for b in batches:
        assert b.frames.dtype == np.uint8 and b.frames.shape[1:] == (360, 640, 3)
        assert b.frame_index.dtype == np.int64 and b.timestamp_s.dtype == np.float64
    # ~5 samples per second over 19.7 s
    assert 97 <= len(ts) <= 100
    assert ts[0] == 0.0 and idx[0] == 0
    assert np.all(np.diff(idx) > 0)
    assert np.all(np.diff(ts) > 0)
    # spacing ~1/5 s: never closer than a tick minus one frame, never further than a tick plus one frame
    d = np.diff(ts)
    assert d.min() >= 0.2 - frame_dt - 1e-6 and d.max() <= 0.2 + frame_dt + 1e-6
    assert np.mean(d) == pytest.approx(0.2, abs=0.005)
    # the clip is constant rate: timestamp == index * frame duration (true pts, not a guess from the sample rate)
    np.testing.assert_allclose(ts, idx * frame_dt, atol=1e-5)
    # every kept frame is the first one at or after its tick (the decoder allows 0.1 ms of float slack), one per tick
    ticks = np.floor((ts + 1e-4) * 5)
    assert np.all(np.diff(ticks) > 0)
    assert np.all(ts - frame_dt < ticks / 5 - 1e-4)
    # frames are real pictures, not blank buffers
    assert batches[0].frames.mean() > 20


def test_backends_agree_on_single_face():
    _, idx_d, ts_d = collect(SINGLE, sample_fps=5.0, batch_size=16, backend="decord")
    _, idx_p, ts_p = collect(SINGLE, sample_fps=5.0, batch_size=16, backend="pyav")
    assert idx_d.tolist() == idx_p.tolist() == list(range(0, 72, 6))
    np.testing.assert_allclose(ts_d, ts_p, atol=1e-5)
    # same index -> same picture
    fd = next(iter(iter_batches(SINGLE, settings(sample_fps=5.0, batch_size=4, backend="decord")))).frames
    fp = next(iter(iter_batches(SINGLE, settings(sample_fps=5.0, batch_size=4, backend="pyav")))).frames
    assert np.abs(fd.astype(int) - fp.astype(int)).mean() < 1.0


def test_every_frame_when_sample_fps_is_none_or_zero():
    for sf in (None, 0, -1):
        _, idx, ts = collect(SINGLE, sample_fps=sf, batch_size=32, backend="pyav")
        assert idx.tolist() == list(range(72))
        np.testing.assert_allclose(np.diff(ts), 1 / 30, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("path", MOVS, ids=lambda p: p.name)
def test_mov_hevc_files_decode(path, backend):
    meta = probe(path)
    assert (meta.width, meta.height) == (960, 540)
    assert meta.fps == pytest.approx(26.4, abs=0.2)
    batches, idx, ts = collect(path, sample_fps=5.0, batch_size=16, backend=backend)
    assert all(b.frames.shape[1:] == (540, 960, 3) for b in batches)
    assert np.all(np.diff(ts) > 0) and np.all(np.diff(idx) > 0)
    assert ts[-1] > 6.0
    assert 30 <= len(ts) <= 33
    assert max(b.frames.mean() for b in batches) > 20


def test_backends_agree_on_vfr_mov():
    # noface_face.mov has irregular frame times (13.7 ms to 41.7 ms apart)
    _, idx_d, ts_d = collect(MOVS[1], sample_fps=5.0, batch_size=16, backend="decord")
    _, idx_p, ts_p = collect(MOVS[1], sample_fps=5.0, batch_size=16, backend="pyav")
    assert idx_d.tolist() == idx_p.tolist()
    np.testing.assert_allclose(ts_d, ts_p, atol=1e-5)


def test_early_stop_releases_cleanly():
    gen = iter_batches(WOLF, settings(sample_fps=5.0, batch_size=4, backend="pyav"))
    first = next(gen)
    gen.close()
    assert len(first) == 4 and first.frame_index.tolist() == [0, 5, 10, 15]


# ---------------------------------------------------------------------------------------------------------------------
# synthetic videos: rotation, variable frame rate, start offset
# ---------------------------------------------------------------------------------------------------------------------

def test_apply_rotation_directions():
    a = np.array([[1, 2], [3, 4]])[:, :, None]
    assert apply_rotation(a, 0) is a
    assert apply_rotation(a, 90)[..., 0].tolist() == [[3, 1], [4, 2]]  # clockwise
    assert apply_rotation(a, 180)[..., 0].tolist() == [[4, 3], [2, 1]]
    assert apply_rotation(a, 270)[..., 0].tolist() == [[2, 4], [1, 3]]
    batch = np.stack([a, a + 10])
    assert apply_rotation(batch, 90)[1, ..., 0].tolist() == [[13, 11], [14, 12]]
    with pytest.raises(ValueError):
        apply_rotation(a, 45)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("ccw,cw,quadrant", [(-90, 90, "tr"), (90, 270, "bl"), (180, 180, "br"), (0, 0, "tl")])
def test_rotation_is_applied(tmp_path, caplog, backend, ccw, cw, quadrant):
    path = write_video(tmp_path / "rot.mp4", [0, 40, 80], size=(64, 48), rotation_ccw=ccw, image_fn=marker_image)
    meta = probe(path)
    assert meta.rotation == cw
    expected_hw = (64, 48) if cw in (90, 270) else (48, 64)
    assert (meta.height, meta.width) == expected_hw
    with caplog.at_level(logging.WARNING, logger="fer_pipeline.decode"):
        batches, idx, _ = collect(path, sample_fps=None, batch_size=8, backend=backend)
    # decord 0.6 mishandles rotated files, so the decord backend hands them to PyAV (and says so)
    warned = any("decord mishandles" in r.getMessage() for r in caplog.records)
    assert warned == (backend == "decord" and cw != 0)
    assert idx.tolist() == [0, 1, 2]
    frames = batches[0].frames
    assert frames.shape == (3, *expected_hw, 3)
    assert frames.flags["C_CONTIGUOUS"]
    assert red_quadrant(frames[0]) == quadrant


PTS_MS = [0, 40, 90, 100, 250, 260, 400, 433, 600, 1000]


@pytest.mark.parametrize("backend", BACKENDS)
def test_vfr_timestamps_are_the_written_pts(tmp_path, backend):
    path = write_video(tmp_path / "vfr.mp4", PTS_MS)
    _, idx, ts = collect(path, sample_fps=None, batch_size=4, backend=backend)
    assert idx.tolist() == list(range(len(PTS_MS)))
    np.testing.assert_allclose(ts, np.array(PTS_MS) / 1000, atol=1e-6)
    # 5 Hz ticks 0, .2, .4, .6, .8, 1.0 -> first frame at or after each tick, one frame per tick at most
    _, idx5, ts5 = collect(path, sample_fps=5.0, batch_size=4, backend=backend)
    assert idx5.tolist() == [0, 4, 6, 8, 9]
    np.testing.assert_allclose(ts5, [0.0, 0.25, 0.4, 0.6, 1.0], atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_timestamps_are_relative_to_stream_start(tmp_path, backend):
    path = write_video(tmp_path / "offset.mp4", [500 + 40 * i for i in range(10)])
    _, idx, ts = collect(path, sample_fps=None, batch_size=16, backend=backend)
    np.testing.assert_allclose(ts, np.arange(10) * 0.04, atol=1e-6)


def test_select_sample_indices_matches_rule():
    ts = np.array(PTS_MS) / 1000
    assert select_sample_indices(ts, 5.0).tolist() == [0, 4, 6, 8, 9]
    assert select_sample_indices(ts, None).tolist() == list(range(10))
    assert select_sample_indices(ts, 1.0).tolist() == [0, 9]
    # unsorted / duplicated input takes the sequential path and never repeats a time
    assert select_sample_indices(np.array([0.0, 0.0, 0.3, 0.2, 0.5]), 0).tolist() == [0, 2, 4]
    # a float32-rounded tick (0.7 -> 0.69999999) still counts as reaching the tick
    ts32 = np.arange(0, 1.01, 0.1).astype(np.float32).astype(np.float64)
    assert select_sample_indices(ts32, 10.0).tolist() == list(range(11))


@pytest.mark.parametrize("kw", [dict(batch_size=0), dict(batch_size=2.5), dict(backend="opencv"),
                                dict(sample_fps=float("nan"))])
def test_bad_arguments(kw):
    with pytest.raises(ValueError) as ei:  # DecodeConfig refuses them
        next(iter_batches(SINGLE, settings(**kw)))
    assert not isinstance(ei.value, VideoError)
    with pytest.raises(ValueError) as ei:  # and so does the decoder, for settings that were not validated
        next(iter_batches(SINGLE, DecodeConfig().model_copy(update=kw)))
    assert not isinstance(ei.value, VideoError)


def test_decord_failure_falls_back_to_pyav(monkeypatch, caplog):
    def no_decord(p):
        return None
    monkeypatch.setattr(iterate, "open_decord", no_decord)
    with caplog.at_level(logging.WARNING, logger="fer_pipeline.decode"):
        _, idx, _ = collect(SINGLE, sample_fps=5.0, batch_size=16, backend="decord")
    assert idx.tolist() == list(range(0, 72, 6))
    assert any("decord cannot open" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------------------------------------------------------------
# bad inputs
# ---------------------------------------------------------------------------------------------------------------------


BAD = [("missing", "file not found"), ("empty", "empty file (0 bytes)"), ("text", "not a video file"),
       ("truncated", "cannot decode (corrupt or truncated)"),
       ("truncated_faststart", "cannot decode (corrupt or truncated)"),
       ("audio", "no video stream (audio-only)"), ("directory", "not a regular file"),
       ("text_txt", "not a video file")]


@pytest.mark.parametrize("kind,phrase", BAD, ids=[k for k, _ in BAD])
@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_inputs_raise_video_error(tmp_path, kind, phrase, backend):
    path = bad_input(kind, tmp_path)
    with pytest.raises(VideoError) as ei:
        for _ in iter_batches(path, settings(sample_fps=5.0, batch_size=8, backend=backend)):
            pass
    msg = str(ei.value)
    assert msg.startswith(phrase), msg
    assert path.name in msg and "\n" not in msg
    assert isinstance(ei.value, ValueError)
    assert ei.value.path == path
    if kind in ("text", "truncated"):
        assert isinstance(ei.value.__cause__, av.error.FFmpegError)  # chained


@pytest.mark.parametrize("kind,phrase", [b for b in BAD if b[0] != "truncated_faststart"],
                         ids=[k for k, _ in BAD if k != "truncated_faststart"])
def test_bad_inputs_fail_at_probe(tmp_path, kind, phrase):
    path = bad_input(kind, tmp_path)
    with pytest.raises(VideoError, match=r"^" + phrase.replace("(", r"\(").replace(")", r"\)")):
        probe(path)


def test_batch_buffers_reuse_only_arrays_nothing_references():
    pool = decode.BatchBuffers(keep=2)
    frames = [np.full((4, 6, 3), i, np.uint8) for i in range(3)]
    held = pool.stack(frames)
    other = pool.stack(frames[::-1])  # ``held`` is still referenced: a new array, ``held`` untouched
    assert other is not held and held[:, 0, 0, 0].tolist() == [0, 1, 2] and other[:, 0, 0, 0].tolist() == [2, 1, 0]
    view = held[1:]  # a view keeps its base referenced too
    first = id(held)
    del held
    third = pool.stack(frames)
    assert id(third) != first and view[:, 0, 0, 0].tolist() == [1, 2]
    del view, third
    assert id(pool.stack(frames[::-1])) == first  # released: reused, with the new content
    assert pool.stack(frames[:2]).shape == (2, 4, 6, 3)  # another shape: a new array


@pytest.mark.parametrize("path", [WOLF, SINGLE], ids=["chunked", "sequential"])
def test_kept_batches_are_never_overwritten(path):
    """A consumer that keeps every batch gets distinct arrays (the decoders pool only released batches)."""
    kept = list(iter_batches(path, settings(sample_fps=5.0, batch_size=1, backend="pyav")))
    assert len(kept) > 6 and len({id(b.frames) for b in kept}) == len(kept)
    again = [b.frames.copy() for b in iter_batches(path, settings(sample_fps=5.0, batch_size=1, backend="pyav"))]
    assert all(np.array_equal(a.frames, b) for a, b in zip(kept, again))
