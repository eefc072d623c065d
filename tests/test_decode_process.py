"""Decoding in a child process (``fer_pipeline.decode.process``, the pipeline's default on POSIX): the same batches as
in-process decoding on the real clips, rotated files, kept batches never overwritten, errors and log records of the
child re-raised / re-logged in the parent, early stop and a dying child handled, fallback when no child starts."""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import bad_input, marker_image, red_quadrant, settings, write_video

from fer_pipeline.decode import (
    VideoError,
    iter_batches,
    iter_batches_in_process,
    prestart,
    process,
)

VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"
CLIPS = sorted(VIDEOS.glob("*.mp4")) + sorted(VIDEOS.glob("*.mov"))
WOLF = VIDEOS / "WolfgangLanger_Pexels.mp4"
SINGLE = VIDEOS / "single_face.mp4"

pytestmark = [pytest.mark.skipif(not CLIPS, reason=f"shared videos not found at {VIDEOS}"),
              pytest.mark.skipif(not process.available(), reason="decode process needs POSIX")]


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
    cfg = settings(sample_fps=5.0, batch_size=8, **kw)
    here = [b for b in iter_batches(path, cfg)]
    stats: dict = {}
    there = [b for b in iter_batches_in_process(path, cfg, stats=stats)]
    _same(here, there)
    assert stats["decode_s"] > 0 and stats["decoder_peak_rss_mb"] > 10


@pytest.mark.parametrize("ccw,quadrant", [(-90, "tr"), (180, "br")])
def test_rotated_file(tmp_path, ccw, quadrant):
    path = write_video(tmp_path / "rot.mp4", [0, 40, 80, 120], size=(64, 48), rotation_ccw=ccw,
                       image_fn=marker_image)
    cfg = settings(sample_fps=None, batch_size=3, backend="pyav")
    batches = list(iter_batches_in_process(path, cfg))
    assert [len(b) for b in batches] == [3, 1]
    assert red_quadrant(batches[0].frames[0]) == quadrant
    _same(list(iter_batches(path, cfg)), batches)


def test_kept_batches_are_never_overwritten():
    """A consumer that keeps every batch (more than there are shared slots) still gets each batch's own pixels."""
    cfg = settings(sample_fps=5.0, batch_size=1, backend="pyav")
    kept = list(iter_batches_in_process(WOLF, cfg, slots=3))
    assert len(kept) > 20
    again = list(iter_batches(WOLF, cfg))
    _same(again, kept)


def test_slots_are_reused_when_released():
    """A consumer that drops each batch gets views of the shared slots, not copies."""
    bases = set()
    for b in iter_batches_in_process(WOLF, settings(sample_fps=5.0, batch_size=2, backend="pyav"), slots=3):
        assert not b.frames.flags["OWNDATA"]
        bases.add(b.frames.__array_interface__["data"][0])
    assert 1 < len(bases) <= 3


@pytest.mark.parametrize("kind,phrase", [("truncated", "cannot decode (corrupt or truncated)"),
                                         ("text", "not a video file"), ("missing", "file not found")])
def test_bad_inputs_raise_video_error_with_path(tmp_path, kind, phrase):
    path = bad_input(kind, tmp_path)
    before = _children()  # e.g. a Prefect server an earlier test of the session started
    with pytest.raises(VideoError) as ei:
        for _ in iter_batches_in_process(path, settings(sample_fps=5.0, batch_size=8, backend="pyav")):
            pass
    assert str(ei.value).startswith(phrase) and path.name in str(ei.value)
    assert ei.value.path == path
    assert _children() <= before  # the decode child is gone


def test_child_log_records_reach_the_parent(caplog):
    # the Pexels clip fails the anchor check (B-pyramid): the child logs that it decodes B-frames too
    with caplog.at_level(logging.INFO, logger="fer_pipeline"):
        n = sum(len(b) for b in iter_batches_in_process(WOLF, settings(batch_size=16, backend="pyav",
                                                                        snap_to_anchors=True)))
    assert n > 0
    assert any(r.name == "fer_pipeline.decode.chunks" and "decoding reordered frames too" in r.getMessage()
               for r in caplog.records)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="child pids from /proc")
def test_early_stop_ends_the_child():
    before = _children()
    it = iter_batches_in_process(WOLF, settings(sample_fps=5.0, batch_size=2, backend="pyav"))
    first = next(it)
    assert len(_children() - before) == 1
    it.close()
    assert _children() == before
    assert first.frames.shape[0] == 2 and int(first.frames.max()) > 0  # still readable after the child ended


def test_a_dying_child_is_a_video_error(monkeypatch):
    monkeypatch.setattr(process, "_command", lambda args_json: [sys.executable, "-c", "import os; os._exit(3)"])
    with pytest.raises(VideoError, match=r"decoder process ended without a result \(exit code 3\)"):
        next(iter_batches_in_process(SINGLE, settings(backend="pyav")))


def test_pipeline_falls_back_to_a_thread_when_no_child_starts(monkeypatch, tmp_path, caplog):
    from fer_pipeline.pipeline import analyze_video

    def refuse(*a, **k):
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(process.subprocess, "Popen", refuse)
    with caplog.at_level(logging.WARNING, logger="fer_pipeline.pipeline"):
        row = analyze_video(SINGLE, tmp_path / "out")
    assert row["status"] == "ok" and row["frames_sampled"] > 0
    assert "decoder_peak_rss_mb" not in row
    assert any("cannot start a decode process" in r.getMessage() for r in caplog.records)


def test_prestarted_process_is_taken_over_with_the_same_arguments():
    cfg = settings(sample_fps=5.0, batch_size=8, backend="pyav", snap_to_anchors=True)
    before = _children()
    pre = prestart(WOLF, cfg)
    assert pre is not None and pre.pid is not None
    started = _children() - before
    assert len(started) == 1 or not sys.platform.startswith("linux")
    other = list(iter_batches_in_process(WOLF, settings(sample_fps=5.0, batch_size=4, backend="pyav",
                                                        snap_to_anchors=True), prestarted=pre))  # not taken over
    assert pre.pid is not None and (pre.pid in _children() or not sys.platform.startswith("linux"))
    batches = list(iter_batches_in_process(WOLF, cfg, prestarted=pre))
    assert pre.pid is None and _children() == before
    assert not pre.close()  # taken over: nothing left to end
    _same(list(iter_batches(WOLF, cfg)), batches)
    assert sum(len(b) for b in other) == sum(len(b) for b in batches)


def test_prestart_of_a_bad_file_starts_nothing(tmp_path):
    before = _children()
    assert prestart(tmp_path / "missing.mp4", settings(backend="pyav")) is None
    assert _children() == before


def test_closing_a_prestarted_process_ends_it():
    before = _children()
    cfg = settings(backend="pyav")
    single, wolf = prestart(SINGLE, cfg), prestart(WOLF, cfg)
    assert single is not None and wolf is not None
    assert len(_children() - before) == 2 or not sys.platform.startswith("linux")
    assert single.close() and not single.close()  # ended once; closing again does nothing
    assert wolf.pid is not None and single.pid is None
    with wolf:  # a context manager: leaving it closes the process
        pass
    assert wolf.pid is None and _children() == before


def test_a_skipped_video_closes_its_prestarted_process(tmp_path):
    from fer_pipeline.config import PipelineConfig
    from fer_pipeline.pipeline import analyze_video, start_decoding_ahead

    cfg = PipelineConfig()
    before = _children()
    pre = start_decoding_ahead(SINGLE, cfg)
    assert pre is not None
    assert analyze_video(SINGLE, tmp_path, cfg, prestarted=pre)["status"] == "ok"  # took the process over
    assert pre.pid is None and _children() == before
    pre = start_decoding_ahead(SINGLE, cfg)
    assert pre is not None and pre.pid is not None
    assert analyze_video(SINGLE, tmp_path, cfg, prestarted=pre)["status"] == "skipped"
    assert pre.pid is None and _children() == before
