"""Decoding in a child process (``fer_pipeline.decode_process``, the pipeline's default on POSIX): the same batches as
in-process decoding on the real clips, rotated files, kept batches never overwritten, errors and log records of the
child re-raised / re-logged in the parent, early stop and a dying child handled, fallback when no child starts."""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from test_decode import _bad_input, _marker_image, _red_quadrant, write_video

from fer_pipeline import decode_process
from fer_pipeline.decode import VideoError, iter_batches
from fer_pipeline.decode_process import iter_batches_in_process

VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"
CLIPS = sorted(VIDEOS.glob("*.mp4")) + sorted(VIDEOS.glob("*.mov"))
WOLF = VIDEOS / "WolfgangLanger_Pexels.mp4"
SINGLE = VIDEOS / "single_face.mp4"

pytestmark = [pytest.mark.skipif(not CLIPS, reason=f"shared videos not found at {VIDEOS}"),
              pytest.mark.skipif(not decode_process.available(), reason="decode process needs POSIX")]


def _children() -> set[int]:
    """Pids of this process's live children (Linux /proc; empty elsewhere)."""
    out: set[int] = set()
    for task in Path(f"/proc/{os.getpid()}/task").glob("*"):
        try:
            out |= {int(p) for p in (task / "children").read_text().split()}
        except OSError:
            pass
    return out


def _same(a, b) -> None:
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        assert x.frames.shape == y.frames.shape and x.frames.dtype == y.frames.dtype == np.uint8
        assert np.array_equal(x.frame_index, y.frame_index)
        assert x.timestamp_s.tolist() == y.timestamp_s.tolist()
        assert np.array_equal(x.frames, y.frames)


@pytest.mark.parametrize("path", CLIPS, ids=lambda p: p.name)
@pytest.mark.parametrize("kw", [{"backend": "pyav", "snap_to_anchors": True}, {"backend": "pyav", "threads": 1},
                                {"backend": "decord"}], ids=["chunked-snap", "sequential", "decord"])
def test_same_batches_as_decoding_in_this_process(path, kw):
    here = [b for b in iter_batches(path, sample_fps=5.0, batch_size=8, **kw)]
    stats: dict = {}
    there = [b for b in iter_batches_in_process(path, sample_fps=5.0, batch_size=8, stats=stats, **kw)]
    _same(here, there)
    assert stats["decode_s"] > 0 and stats["decoder_peak_rss_mb"] > 10


@pytest.mark.parametrize("ccw,quadrant", [(-90, "tr"), (180, "br")])
def test_rotated_file(tmp_path, ccw, quadrant):
    path = write_video(tmp_path / "rot.mp4", [0, 40, 80, 120], size=(64, 48), rotation_ccw=ccw,
                       image_fn=_marker_image)
    batches = list(iter_batches_in_process(path, sample_fps=None, batch_size=3, backend="pyav"))
    assert [len(b) for b in batches] == [3, 1]
    assert _red_quadrant(batches[0].frames[0]) == quadrant
    _same(list(iter_batches(path, sample_fps=None, batch_size=3, backend="pyav")), batches)


def test_kept_batches_are_never_overwritten():
    """A consumer that keeps every batch (more than there are shared slots) still gets each batch's own pixels."""
    kept = list(iter_batches_in_process(WOLF, sample_fps=5.0, batch_size=1, backend="pyav", slots=3))
    assert len(kept) > 20
    again = list(iter_batches(WOLF, sample_fps=5.0, batch_size=1, backend="pyav"))
    _same(again, kept)


def test_slots_are_reused_when_released():
    """A consumer that drops each batch gets views of the shared slots, not copies."""
    bases = set()
    for b in iter_batches_in_process(WOLF, sample_fps=5.0, batch_size=2, backend="pyav", slots=3):
        assert not b.frames.flags["OWNDATA"]
        bases.add(b.frames.__array_interface__["data"][0])
    assert 1 < len(bases) <= 3


@pytest.mark.parametrize("kind,phrase", [("truncated", "cannot decode (corrupt or truncated)"),
                                         ("text", "not a video file"), ("missing", "file not found")])
def test_bad_inputs_raise_video_error_with_path(tmp_path, kind, phrase):
    path = _bad_input(kind, tmp_path)
    with pytest.raises(VideoError) as ei:
        for _ in iter_batches_in_process(path, sample_fps=5.0, batch_size=8, backend="pyav"):
            pass
    assert str(ei.value).startswith(phrase) and path.name in str(ei.value)
    assert ei.value.path == path
    assert not _children()


def test_child_log_records_reach_the_parent(caplog):
    # the Pexels clip fails the anchor check (B-pyramid): the child logs that it decodes B-frames too
    with caplog.at_level(logging.INFO, logger="fer_pipeline"):
        n = sum(len(b) for b in iter_batches_in_process(WOLF, batch_size=16, backend="pyav", snap_to_anchors=True))
    assert n > 0
    assert any(r.name == "fer_pipeline.decode_chunks" and "decoding reordered frames too" in r.getMessage()
               for r in caplog.records)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="child pids from /proc")
def test_early_stop_ends_the_child():
    before = _children()
    it = iter_batches_in_process(WOLF, sample_fps=5.0, batch_size=2, backend="pyav")
    first = next(it)
    assert len(_children() - before) == 1
    it.close()
    assert _children() == before
    assert first.frames.shape[0] == 2 and int(first.frames.max()) > 0  # still readable after the child ended


def test_a_dying_child_is_a_video_error(monkeypatch):
    monkeypatch.setattr(decode_process, "_CHILD_CODE", "import os; os._exit(3)")
    with pytest.raises(VideoError, match=r"decoder process ended without a result \(exit code 3\)"):
        next(iter_batches_in_process(SINGLE, backend="pyav"))


def test_pipeline_falls_back_to_a_thread_when_no_child_starts(monkeypatch, tmp_path, caplog):
    from fer_pipeline.pipeline import analyze_video

    def refuse(*a, **k):
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(decode_process.subprocess, "Popen", refuse)
    with caplog.at_level(logging.WARNING, logger="fer_pipeline.pipeline"):
        row = analyze_video(SINGLE, tmp_path / "out")
    assert row["status"] == "ok" and row["frames_sampled"] > 0
    assert "decoder_peak_rss_mb" not in row
    assert any("cannot start a decode process" in r.getMessage() for r in caplog.records)


def test_prestarted_process_is_taken_over_with_the_same_arguments():
    kw = {"sample_fps": 5.0, "batch_size": 8, "backend": "pyav", "snap_to_anchors": True}
    before = _children()
    assert decode_process.prestart(WOLF, **kw)
    started = _children() - before
    assert len(started) == 1 or not sys.platform.startswith("linux")
    other = list(iter_batches_in_process(WOLF, **{**kw, "batch_size": 4}))  # other arguments: not taken over
    assert len(decode_process._prestarted) == 1
    batches = list(iter_batches_in_process(WOLF, **kw))
    assert not decode_process._prestarted and _children() == before
    _same(list(iter_batches(WOLF, **kw)), batches)
    assert sum(len(b) for b in other) == sum(len(b) for b in batches)


def test_prestart_of_a_bad_file_starts_nothing(tmp_path):
    assert not decode_process.prestart(tmp_path / "missing.mp4", backend="pyav")
    assert not decode_process._prestarted


def test_discard_prestarted_ends_the_process():
    before = _children()
    assert decode_process.prestart(SINGLE, backend="pyav") and decode_process.prestart(WOLF, backend="pyav")
    assert decode_process.discard_prestarted(SINGLE) == 1 and len(decode_process._prestarted) == 1
    assert decode_process.discard_prestarted() == 1
    assert not decode_process._prestarted and _children() == before


def test_a_skipped_video_discards_its_prestarted_process(tmp_path):
    from fer_pipeline.config import PipelineConfig
    from fer_pipeline.pipeline import analyze_video

    cfg = PipelineConfig()
    d = cfg.decode
    args = (SINGLE, d.sample_fps, d.batch_size, d.backend, d.skip_nonref, d.threads, d.skip_loop_filter,
            d.snap_to_anchors)
    assert decode_process.prestart(*args)
    assert analyze_video(SINGLE, tmp_path, cfg)["status"] == "ok"  # took the prestarted process over
    assert not decode_process._prestarted
    before = _children()
    assert decode_process.prestart(*args)
    assert analyze_video(SINGLE, tmp_path, cfg)["status"] == "skipped"
    assert not decode_process._prestarted and _children() == before
