"""PyAV skipping of non-reference frames (``iter_batches(..., skip_nonref=True)``, the default) on the sequential
decoder (``threads=1``; the chunked decoder of ``threads=0`` is tested in test_decode_chunks.py): the same samples as
a full decode on constant-rate files, pts-derived frame indices, and a late-but-true sample on variable rate."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import picture_index, settings, write_gray_ramp

from fer_pipeline.decode import iter_batches, pyav, sampling

VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"
CLIPS = sorted(VIDEOS.glob("*.mp4")) + sorted(VIDEOS.glob("*.mov"))

pytestmark = pytest.mark.skipif(not CLIPS, reason=f"shared videos not found at {VIDEOS}")


def collect(path, **kw):
    batches = list(iter_batches(path, settings(batch_size=16, backend="pyav", threads=kw.pop("threads", 1), **kw)))
    return (np.concatenate([b.frame_index for b in batches]), np.concatenate([b.timestamp_s for b in batches]),
            np.concatenate([b.frames for b in batches]))


@pytest.fixture
def decoded_count(monkeypatch):
    """Counts the frames the decoder actually produced (the output of fer_pipeline.decode.pyav._decode)."""
    count = {"n": 0}
    orig = pyav._decode

    def counting(*a, **k):
        for f in orig(*a, **k):
            count["n"] += 1
            yield f

    monkeypatch.setattr(pyav, "_decode", counting)
    return count


@pytest.mark.parametrize("path", CLIPS, ids=lambda p: p.name)
def test_real_clips_same_samples_as_full_decode(path):
    idx_full, ts_full, fr_full = collect(path, sample_fps=5.0, skip_nonref=False)
    idx, ts, fr = collect(path, sample_fps=5.0)
    assert idx.tolist() == idx_full.tolist()
    assert ts.tolist() == ts_full.tolist()  # the same pts, exactly
    assert np.array_equal(fr, fr_full)  # the same pictures (non-reference frames are never used by others)
    assert np.all(np.diff(idx) > 0) and np.all(np.diff(ts) > 0)
    assert np.mean(np.diff(ts)) == pytest.approx(0.2, abs=0.01)


def test_real_clip_with_b_frames_decodes_fewer_frames(decoded_count):
    wolf = VIDEOS / "WolfgangLanger_Pexels.mp4"  # x264 with B-frames, 23.976 fps, 472 frames
    collect(wolf, sample_fps=5.0, skip_nonref=False)
    assert decoded_count["n"] == 472
    decoded_count["n"] = 0
    collect(wolf, sample_fps=5.0)
    assert 99 <= decoded_count["n"] < 472 * 0.8


def test_cfr_indices_from_pts_match_the_pictures(tmp_path, decoded_count):
    path = write_gray_ramp(tmp_path / "cfr.mp4", [round(1000 * i / 30) for i in range(60)])
    idx, ts, frames = collect(path, sample_fps=5.0)
    assert decoded_count["n"] < 60  # something was skipped
    assert idx.tolist() == list(range(0, 60, 6))  # first frame at or after every 0.2 s tick
    assert picture_index(frames).tolist() == idx.tolist()
    np.testing.assert_allclose(ts, np.round(1000 * idx / 30) / 1000, atol=1e-9)


def test_vfr_gap_takes_next_decoded_frame_with_its_own_pts(tmp_path):
    # 30 fps, but frames 13..15 are missing: the 0.4 s tick falls in a 133 ms gap, longer than the skip window (one
    # nominal frame interval). The full decode keeps frame 16 (at 0.533 s); with skipping, the kept frame is the first
    # *decoded* one at or after the tick, which may come a few frames later, with its own true timestamp and index.
    pts = [round(1000 * i / 30) for i in range(60) if i not in (12, 13, 14, 15)]
    path = write_gray_ramp(tmp_path / "vfr.mp4", pts)
    idx_full, ts_full, _ = collect(path, sample_fps=5.0, skip_nonref=False)
    idx, ts, frames = collect(path, sample_fps=5.0)
    assert picture_index(frames).tolist() == idx.tolist()  # index = rank among all frames in presentation order
    np.testing.assert_allclose(ts, np.array(pts)[idx] / 1000, atol=1e-9)  # exact pts of the delivered frames
    assert np.all(np.diff(idx) > 0) and np.all(np.diff(ts) > 0)
    assert len(idx) == len(idx_full)
    assert np.all(idx >= idx_full) and np.all(idx - idx_full <= 3)  # never earlier, at most a few frames later
    same = np.abs(ts_full - np.round(ts_full * 5) / 5) < 1e-3  # ticks whose first frame lies on the tick
    assert idx[same].tolist() == idx_full[same].tolist()


def test_every_frame_and_fast_sampling_decode_everything(tmp_path, decoded_count):
    path = write_gray_ramp(tmp_path / "cfr.mp4", [round(1000 * i / 30) for i in range(30)])
    idx, _, frames = collect(path, sample_fps=None)
    assert idx.tolist() == list(range(30)) and decoded_count["n"] == 30
    decoded_count["n"] = 0
    idx, _, frames = collect(path, sample_fps=40.0)  # not below the stream rate: no skipping
    assert idx.tolist() == list(range(30)) and decoded_count["n"] == 30
    assert picture_index(frames).tolist() == list(range(30))


def test_pts_index_ranks_packets():
    ix = sampling.PtsIndex()
    for p in (0, 3, 1, 2, 6, 4, 5):  # decode order of I P B B P B B
        ix.add(p)
    assert [ix.index_of(p) for p in (0, 3, 6)] == [0, 3, 6]  # only reference frames decoded
    assert ix.index_of(None) == 7  # a frame without pts follows the previous one
