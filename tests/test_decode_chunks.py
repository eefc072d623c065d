"""Chunked parallel decoding (``threads=0``, the default; ``fer_pipeline.decode.chunk_plan`` and ``.chunks``): exactly
the frames, indices, timestamps and pixels of a sequential decode, on real clips and on generated streams with short
GOPs, constant and variable frame rate; sequential fallback where a stream cannot be split; clean early stop."""
from __future__ import annotations

import threading
from pathlib import Path

import av
import numpy as np
import pytest
from helpers import picture_index, settings, write_gray_ramp, write_video

from fer_pipeline.config import DecodeConfig
from fer_pipeline.decode import (
    chunks,
    iter_batches,
    iterate,
    sampling,
    select_sample_indices,
)

VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"
CLIPS = sorted(VIDEOS.glob("*.mp4")) + sorted(VIDEOS.glob("*.mov"))

pytestmark = pytest.mark.skipif(not CLIPS, reason=f"shared videos not found at {VIDEOS}")


def collect(path, **kw):
    batches = list(iter_batches(path, settings(batch_size=kw.pop("batch_size", 16), backend="pyav", **kw)))
    assert all(len(b) for b in batches)
    return (np.concatenate([b.frame_index for b in batches]), np.concatenate([b.timestamp_s for b in batches]),
            np.concatenate([b.frames for b in batches]))


@pytest.fixture
def chunked(monkeypatch):
    """Records the plans iter_batches used (None = it fell back to the sequential decoder); chunks of >= 0.3 s
    instead of 1 s, so the short generated clips split into several."""
    plans = []
    orig = iterate.plan_chunks

    def recording(*a, **k):
        plan = orig(*a, **{"min_chunk_s": 0.3, **k})
        plans.append(plan)
        return plan

    monkeypatch.setattr(iterate, "plan_chunks", recording)
    return plans


def short_gop(path: Path, pts_ms: list[int], gop: int = 12) -> Path:
    """Gray-ramp H.264 (B-frames) with a keyframe every ``gop`` frames: frame i is gray ``4 * i`` (at most 64)."""
    return write_video(path, pts_ms, image_fn=lambda i: np.full((48, 64, 3), 4 * i, np.uint8), fps=30,
                       codec_options={"g": str(gop)})


@pytest.mark.parametrize("path", CLIPS, ids=lambda p: p.name)
@pytest.mark.parametrize("workers", [0, 2, 3])
def test_real_clips_same_as_sequential_decode(path, workers, chunked):
    idx_s, ts_s, fr_s = collect(path, sample_fps=5.0, threads=1, skip_nonref=False)
    idx, ts, fr = collect(path, sample_fps=5.0, threads=workers)
    assert idx.tolist() == idx_s.tolist()
    assert ts.tolist() == ts_s.tolist()
    assert np.array_equal(fr, fr_s)
    if path.name == "WolfgangLanger_Pexels.mp4":  # 472 frames, 7 keyframes: split into several chunks
        assert chunked[-1] is not None and len(chunked[-1].chunks) >= 3


def test_cfr_short_gops_pictures_match_indices(tmp_path, chunked):
    path = short_gop(tmp_path / "cfr.mp4", [round(1000 * i / 30) for i in range(64)])
    idx, ts, frames = collect(path, sample_fps=5.0, threads=2, batch_size=4)
    assert chunked[-1] is not None and len(chunked[-1].chunks) >= 4
    assert idx.tolist() == list(range(0, 64, 6))
    assert picture_index(frames).tolist() == idx.tolist()
    np.testing.assert_allclose(ts, np.round(1000 * idx / 30) / 1000, atol=1e-9)


def test_vfr_exact_sampling_rule(tmp_path, chunked):
    # frames 12..15 missing: the tick at 0.4 s falls in a gap; the chunked decoder keeps exactly what the sampling
    # rule keeps on the full timestamp list (frame 16), where sequential skipping may deliver a later frame
    pts = [round(1000 * i / 30) for i in range(64) if i not in (12, 13, 14, 15)]
    path = short_gop(tmp_path / "vfr.mp4", pts, gop=10)
    idx, ts, frames = collect(path, sample_fps=5.0, threads=2)
    assert chunked[-1] is not None
    expect = select_sample_indices(np.array(pts) / 1000, 5.0)
    assert idx.tolist() == expect.tolist()
    np.testing.assert_allclose(ts, np.array(pts)[expect] / 1000, atol=1e-9)
    assert picture_index(frames).tolist() == idx.tolist()
    idx_s, ts_s, _ = collect(path, sample_fps=5.0, threads=1, skip_nonref=False)
    assert idx.tolist() == idx_s.tolist() and ts.tolist() == ts_s.tolist()


def test_every_frame(tmp_path, chunked):
    path = short_gop(tmp_path / "all.mp4", [round(1000 * i / 30) for i in range(64)], gop=8)
    idx, _, frames = collect(path, sample_fps=None, threads=2)
    assert chunked[-1] is not None
    assert idx.tolist() == list(range(64))
    assert picture_index(frames).tolist() == list(range(64))


def test_single_gop_falls_back_to_sequential(tmp_path, chunked):
    path = write_gray_ramp(tmp_path / "one_gop.mp4", [round(1000 * i / 30) for i in range(30)])  # 1 keyframe
    idx, _, frames = collect(path, sample_fps=5.0, threads=2)
    assert chunked == [None]
    assert idx.tolist() == list(range(0, 30, 6)) and picture_index(frames).tolist() == idx.tolist()


def test_open_gop_falls_back_to_sequential(tmp_path, chunked):
    # open GOPs: B-frames after a keyframe (decode order) shown before it reference the previous group
    path = write_video(tmp_path / "open.mp4", [round(1000 * i / 30) for i in range(60)], fps=30,
                       image_fn=lambda i: np.full((48, 64, 3), (4 * i) % 256, np.uint8),
                       codec_options={"x264-params": "keyint=12:open-gop=1:bframes=3"})
    idx, _, frames = collect(path, sample_fps=5.0, threads=2)
    assert chunked == [None]
    assert idx.tolist() == list(range(0, 60, 6)) and picture_index(frames).tolist() == idx.tolist()


@pytest.mark.parametrize("sample_fps,snap", [(None, False), (5.0, True)])
def test_early_stop_ends_worker_threads(tmp_path, sample_fps, snap):
    path = short_gop(tmp_path / "long.mp4", [round(1000 * i / 30) for i in range(60)], gop=6)
    before = {t.name for t in threading.enumerate()}
    gen = iter_batches(path, settings(sample_fps=sample_fps, batch_size=1, backend="pyav", threads=2,
                                      snap_to_anchors=snap))
    next(gen)
    gen.close()  # the consumer stops after one batch: the workers must not hang on their full queues
    alive = [t for t in threading.enumerate() if t.name.startswith("decode-") and t.name not in before]
    for t in alive:
        t.join(timeout=5)
    assert not any(t.is_alive() for t in alive)


def test_bad_threads_value():
    with pytest.raises(ValueError, match="threads"):  # DecodeConfig refuses it
        next(iter_batches(CLIPS[0], settings(threads=-1, backend="pyav")))
    with pytest.raises(ValueError, match="threads"):  # and so does the decoder, for settings that were not validated
        next(iter_batches(CLIPS[0], DecodeConfig(backend="pyav").model_copy(update={"threads": -1})))


# --------------------------------------------------------------------------------------------------------------------
# snap_to_anchors: samples on B-frames move to the nearest I/P-frame, verified bit-exact on the first chunk
# --------------------------------------------------------------------------------------------------------------------

@pytest.fixture
def anchor_checks(monkeypatch):
    """Records every ``_AnchorCheck`` the chunk decoder made (its ``skip`` is the verdict)."""
    made = []

    class Recording(chunks._AnchorCheck):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            made.append(self)

    monkeypatch.setattr(chunks, "_AnchorCheck", Recording)
    return made


def skipping_b_frames_changes_anchors(path: Path) -> bool:
    """Whether decoding ``path`` with its reordered frames (B-frames) skipped changes any anchor frame (I/P: a frame
    shown after every frame decoded before it) of the exact decode, i.e. whether its encoder predicts anchors from
    B-frames: what the file is, found with PyAV alone on the whole stream, independently of the chunk decoder's
    check (which compares the first anchors of the first chunk)."""
    def anchors(skip: bool) -> dict[int, bytes]:
        out: dict[int, bytes] = {}
        anchor_pts: set[int] = set()
        latest = None
        with av.open(str(path)) as c:
            stream = c.streams.video[0]
            stream.thread_type = "NONE"
            for packet in c.demux(stream):
                if packet.size and packet.pts is not None:
                    reordered = latest is not None and packet.pts < latest
                    latest = packet.pts if latest is None else max(latest, packet.pts)
                    if not reordered:
                        anchor_pts.add(packet.pts)
                    stream.codec_context.skip_frame = "BIDIR" if skip and reordered else "DEFAULT"
                for frame in packet.decode():
                    if frame.pts in anchor_pts:
                        out[frame.pts] = frame.to_ndarray(format="gray").tobytes()
        return out

    exact = anchors(skip=False)
    assert exact
    return anchors(skip=True) != exact


@pytest.mark.parametrize("path", CLIPS, ids=lambda p: p.name)
def test_snap_to_anchors_real_clips(path, chunked, anchor_checks):
    idx_all, ts_all, fr_all = collect(path, sample_fps=None, threads=1, skip_nonref=False, batch_size=64)
    idx_x, ts_x, _ = collect(path, sample_fps=5.0, threads=2)
    idx, ts, fr = collect(path, sample_fps=5.0, threads=2, snap_to_anchors=True)
    plan = chunked[-1]
    # one sample per sample of the exact rule, moved by at most half a sampling interval from its tick
    assert len(idx) == len(idx_x)
    assert np.all(np.diff(idx) > 0) and np.all(np.diff(ts) > 0)
    assert np.abs(ts - ts_x).max() <= 0.1 + 1.0 / 23.0
    # each delivered frame is exactly that frame of a full sequential decode, with its own index and timestamp
    pos = {int(i): k for k, i in enumerate(idx_all)}
    assert all(np.array_equal(fr[j], fr_all[pos[int(i)]]) for j, i in enumerate(idx))
    assert ts.tolist() == ts_all[[pos[int(i)] for i in idx]].tolist()
    if plan is None or plan.reordered is None:  # single_face.mp4: one GOP, decoded sequentially
        assert idx.tolist() == idx_x.tolist()
        return
    assert not any(set(c.snapped) & plan.reordered for c in plan.chunks)  # no snapped sample on a B-frame
    assert len(anchor_checks) == 1 and anchor_checks[0].n_compared > 0
    # A file whose anchors do not depend on B-frames (the iPhone HEVC clips) passes the check: B-frames skipped,
    # samples moved to anchors. One whose encoder predicts P-frames from B-frames (the Pexels x264 clip: B-pyramid
    # with several references) fails it, and is decoded exactly with the exact rule's samples.
    assert anchor_checks[0].skip == (not skipping_b_frames_changes_anchors(path))
    if anchor_checks[0].skip:
        assert (idx != idx_x).any()
    else:
        assert idx.tolist() == idx_x.tolist()


def test_snap_falls_back_to_exact_decoding_when_the_check_fails(monkeypatch, chunked, anchor_checks, caplog):
    clip = VIDEOS / "face_noface.mov"  # passes the check (test above) unless the digests differ
    counter = iter(range(10**6))
    monkeypatch.setattr(chunks, "_digest", lambda frame: next(counter).to_bytes(8, "little"))  # never equal
    idx_all, _, fr_all = collect(clip, sample_fps=None, threads=1, skip_nonref=False, batch_size=64)
    with caplog.at_level("INFO", logger="fer_pipeline.decode.chunks"):
        idx, _, fr = collect(clip, sample_fps=5.0, threads=2, snap_to_anchors=True)
    assert len(anchor_checks) == 1 and not anchor_checks[0].skip
    assert "decoding reordered frames too" in caplog.text
    idx_x, _, _ = collect(clip, sample_fps=5.0, threads=2)
    assert idx.tolist() == idx_x.tolist()  # the exact rule's samples
    pos = {int(i): k for k, i in enumerate(idx_all)}
    assert all(np.array_equal(fr[j], fr_all[pos[int(i)]]) for j, i in enumerate(idx))


def test_snap_generated_b_frames_pictures_match_indices(tmp_path, chunked):
    path = short_gop(tmp_path / "b.mp4", [round(1000 * i / 30) for i in range(64)], gop=16)
    idx, ts, frames = collect(path, sample_fps=5.0, threads=2, snap_to_anchors=True)
    assert chunked[-1] is not None and chunked[-1].reordered  # libx264's defaults use B-frames
    assert picture_index(frames).tolist() == idx.tolist()
    ticks = np.arange(len(idx)) / 5.0
    assert np.all(np.abs(ts - ticks) < 0.1)


def test_snap_to_anchors_rule():
    stamps = np.arange(30) / 30.0
    kept = np.array([0, 6, 12, 18, 24])
    ticks = np.array([0.0, 0.2, 0.4, 0.6, 0.8])
    anchor = np.zeros(30, bool)
    anchor[[0, 5, 9, 12, 17, 21, 24, 28]] = True
    # exact frames that are anchors stay; others take the nearest anchor within [tick - 0.1 s, tick + 0.1 s)
    assert sampling.snap_to_anchors(stamps, anchor, kept, ticks, 5.0).tolist() == [0, 5, 12, 17, 24]
    near = np.zeros(30, bool)
    near[[0, 7, 12, 19, 25]] = True
    assert sampling.snap_to_anchors(stamps, near, kept, ticks, 5.0).tolist() == [0, 7, 12, 19, 25]
    # a tick with no anchor within half a sampling interval: no snapping at all
    sparse = np.zeros(30, bool)
    sparse[[0, 29]] = True
    assert sampling.snap_to_anchors(stamps, sparse, kept, ticks, 5.0) is None
