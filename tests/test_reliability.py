"""Reliability of one analysis on real recordings: rotated phone-style clips, the decoder watchdog, re-analysis when
settings change, damaged and empty outputs, folder scans and claims on a video shared by two runs."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest

from conftest import REPO, VIDEOS, write_video
from fer_pipeline import interrupt
from fer_pipeline.config import DecodeConfig, PipelineConfig
from fer_pipeline.decode import VideoError, iter_batches_in_process, probe
from fer_pipeline.decode.process import CHILD_MODULE
from fer_pipeline.errors import DamagedOutputError
from fer_pipeline.decode import prefetch
from fer_pipeline.inputs import list_videos
from fer_pipeline.models import Models
from fer_pipeline.pipeline import analyze_video
from fer_pipeline.report import ReportError, render_all
from fer_pipeline.store import claim, clean_staging, part_path, read_table
from fer_pipeline.types import FrameBatch

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cfg():
    return PipelineConfig.load(None, {"output.reports": False, "decode.stall_timeout_s": 30})


@pytest.fixture(scope="module")
def models(cfg):
    return Models.load(cfg)


def _frames_of(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


@pytest.fixture(scope="module")
def phone_clips(tmp_path_factory) -> dict[int, Path]:
    """single_face.mp4 played forwards and back for 12 s at 10 fps (60 samples at 5 Hz: 4 batches, more than the
    decode process's 3 shared slots), upright and as recorded by a phone turned 90, 180 and 270 degrees."""
    d = tmp_path_factory.mktemp("phone")
    src = _frames_of(VIDEOS / "single_face.mp4")[::3]  # 30 fps -> 10 fps
    frames = ((src + src[::-1]) * 3)[:120]
    return {cw: write_video(d / f"phone-{cw}.mp4", np.stack(frames), 10, display_cw=cw, options={"crf": "12"})
            for cw in (0, 90, 180, 270)}


@pytest.mark.parametrize("cw", [90, 180, 270])
def test_rotated_phone_clip_finishes_upright_with_its_faces(phone_clips, cfg, models, tmp_path, cw):
    path = phone_clips[cw]
    meta = probe(path)
    assert meta.rotation == cw and (meta.width, meta.height) == (640, 360)  # delivered upright
    ref = analyze_video(phone_clips[0], tmp_path / "ref", cfg, models)
    res = analyze_video(path, tmp_path / "out", cfg, models)  # decode.process (the default): hung before
    assert res["status"] == "ok", res["error"]
    assert res["frames_sampled"] == ref["frames_sampled"] == 60
    a = read_table(tmp_path / "ref", "faces").sort_values("frame_index").reset_index(drop=True)
    b = read_table(tmp_path / "out", "faces").sort_values("frame_index").reset_index(drop=True)
    assert len(b) >= 0.95 * len(a) and len(a) >= 55  # the face in (nearly) every sample, at the same places
    both = a.merge(b, on="frame_index", suffixes=("_a", "_b"))
    for c in ("x1", "y1", "x2", "y2"):
        assert (both[f"{c}_a"] - both[f"{c}_b"]).abs().median() < 4.0, c
    assert ((both.y2_b - both.y1_b) > 0.8 * (both.x2_b - both.x1_b)).all()  # an upright face is not lying down


def _decode_children() -> list[psutil.Process]:
    return [p for p in psutil.Process().children() if CHILD_MODULE in " ".join(p.cmdline())]


def test_a_stalled_decode_process_is_a_video_error_and_is_ended():
    it = iter_batches_in_process(VIDEOS / "WolfgangLanger_Pexels.mp4",
                                 DecodeConfig(batch_size=8, snap_to_anchors=False, stall_timeout_s=2.0))
    next(it)
    (child,) = _decode_children()
    child.suspend()  # SIGSTOP: a decoder that hangs without dying
    with pytest.raises(VideoError, match="decoder stalled"):
        for _ in range(6):  # the batches it decoded ahead before the stop (at most one per shared slot) still come
            next(it)
    assert not child.is_running()  # killed (and reaped) by the watchdog


def test_a_stalled_decode_thread_is_a_video_error():
    release = threading.Event()

    def stalls():
        yield FrameBatch(np.zeros((1, 8, 8, 3), np.uint8), np.array([0]), np.array([0.0]))
        release.wait(30)

    it = prefetch(stalls(), stall_timeout_s=1.0, path="x.mp4")
    try:
        next(it)
        with pytest.raises(VideoError, match="decoder stalled.*x.mp4"):
            next(it)
    finally:
        release.set()


def test_a_stalled_video_fails_and_the_run_goes_on(cfg, models, tmp_path):
    stalled_cfg = cfg.model_copy(update={"decode": cfg.decode.model_copy(update={"stall_timeout_s": 2.0})})

    def stop_decoder(t: float) -> None:
        for p in _decode_children():
            p.suspend()

    res = analyze_video(VIDEOS / "WolfgangLanger_Pexels.mp4", tmp_path, stalled_cfg, models, progress=stop_decoder)
    assert res["status"] == "failed" and res["error"].startswith("decoder stalled")
    assert not _decode_children()
    assert analyze_video(VIDEOS / "single_face.mp4", tmp_path, stalled_cfg, models)["status"] == "ok"


def _with(cfg: PipelineConfig, **dotted) -> PipelineConfig:
    raw = cfg.model_dump(mode="json")
    for k, v in dotted.items():
        section, key = k.split("__")
        raw[section][key] = v
    return PipelineConfig.model_validate(raw)


def test_changed_settings_re_analyse_and_say_why(cfg, models, tmp_path):
    clip = VIDEOS / "single_face.mp4"
    first = analyze_video(clip, tmp_path, cfg, models)
    assert first["status"] == "ok" and first["note"] is None
    assert analyze_video(clip, tmp_path, cfg, models)["status"] == "skipped"
    # settings that never change results do not re-analyse
    same = _with(cfg, classify__batch_size=7, decode__process=False, decode__stall_timeout_s=5)
    assert analyze_video(clip, tmp_path, same, models)["status"] == "skipped"

    slower = _with(cfg, decode__sample_fps=2.0)
    r = analyze_video(clip, tmp_path, slower, models)
    assert r["status"] == "ok" and "decode.sample_fps 5.0 -> 2.0" in r["note"]
    assert r["frames_sampled"] < first["frames_sampled"]
    assert len(read_table(tmp_path, "faces")) == r["faces_detected"]  # the 5 Hz rows are gone
    for change in ({"detect__score_threshold": 0.5}, {"track__min_track_s": 0.5}):
        r = analyze_video(clip, tmp_path, _with(slower, **change), models)
        key = next(iter(change)).replace("__", ".")
        assert r["status"] == "ok" and key in r["note"], r["note"]
    stored = read_table(tmp_path, "videos").iloc[0]
    assert '"min_track_s":0.5' in stored.settings and len(stored.settings_sha256) == 64


def test_damaged_parts_are_detected_and_re_analysed(cfg, models, tmp_path):
    clip = VIDEOS / "single_face.mp4"
    vid = analyze_video(clip, tmp_path, cfg, models)["video_id"]
    for table in ("faces", "timeline", "videos"):
        part_path(tmp_path, table, vid).write_bytes(b"not parquet at all" * 10)
        with pytest.raises(DamagedOutputError, match=str(part_path(tmp_path, table, vid))):
            read_table(tmp_path, table)
        r = analyze_video(clip, tmp_path, cfg, models)
        assert r["status"] == "ok" and "damaged output" in r["note"], (table, r)
        assert len(pd.read_parquet(tmp_path / "faces")) == r["faces_detected"]  # readable again
    # a part with the wrong number of rows (e.g. another video's file copied over it) is damage too
    other = analyze_video(VIDEOS / "WolfgangLanger_Pexels.mp4", tmp_path, cfg, models)["video_id"]
    part_path(tmp_path, "faces", vid).write_bytes(part_path(tmp_path, "faces", other).read_bytes())
    assert "rows" in analyze_video(clip, tmp_path, cfg, models)["note"]


def test_reports_over_damaged_parts_fail_loudly(cfg, models, tmp_path):
    vid = analyze_video(VIDEOS / "single_face.mp4", tmp_path, cfg, models)["video_id"]
    render_all(tmp_path)
    report = tmp_path / "reports" / f"{vid}.html"
    assert report.is_file()
    part_path(tmp_path, "timeline", vid).write_bytes(b"garbage")
    with pytest.raises(ReportError) as e:
        render_all(tmp_path)
    assert vid in e.value.errors and e.value.damaged == [part_path(tmp_path, "timeline", vid)]
    assert not report.exists() and (tmp_path / "index.html").is_file()  # no stale report left
    cli = [sys.executable, "-m", "fer_pipeline.cli", "report", str(tmp_path)]
    part_path(tmp_path, "videos", vid).write_bytes(b"garbage")
    p = subprocess.run(cli, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert p.returncode == 1 and "Traceback" not in p.stderr + p.stdout
    assert str(part_path(tmp_path, "videos", vid)) in " ".join((p.stderr + p.stdout).split())


def test_output_of_only_failures_reads_as_empty_tables(cfg, models, tmp_path, bad_inputs):
    for kind in ("not_a_video", "truncated", "missing"):
        assert analyze_video(bad_inputs[kind], tmp_path, cfg, models)["status"] == "failed"
    ok = tmp_path / "ok"
    analyze_video(VIDEOS / "single_face.mp4", ok, cfg, models)
    for table in ("faces", "timeline", "audience"):
        empty = pd.read_parquet(tmp_path / table)
        assert len(empty) == 0
        assert list(empty.columns) == list(pd.read_parquet(ok / table).columns)
    assert len(pd.read_parquet(tmp_path / "videos")) == 3


def test_folder_scan(tmp_path):
    d = tmp_path / "in"
    (d / "x.mp4").mkdir(parents=True)  # a folder with a video's name is scanned as a folder
    (d / "x.mp4" / "inner.MOV").write_bytes(b"")
    (d / ".hidden.mp4").write_bytes(b"")
    (d / ".cache").mkdir()
    (d / ".cache" / "c.mp4").write_bytes(b"")
    (d / "notes.txt").write_text("no")
    (d / "broken.mp4").symlink_to(tmp_path / "gone.mp4")
    (d / "link.mp4").symlink_to(VIDEOS / "single_face.mp4")
    found = [p.relative_to(d).as_posix() for p in list_videos([d])]
    assert found == ["broken.mp4", "link.mp4", "x.mp4/inner.MOV"]


def test_a_broken_link_in_a_folder_is_a_failed_row(cfg, models, tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    (d / "broken.mp4").symlink_to(tmp_path / "gone.mp4")
    (path,) = list_videos([d])
    r = analyze_video(path, tmp_path / "out", cfg, models)
    assert r["status"] == "failed" and "file not found" in r["error"]


_HOLDER = """
import sys, time
from fer_pipeline.store import claim
c = claim(sys.argv[1], "clip-0123456789")
print("held", flush=True)
time.sleep(600)
"""


def test_a_claimed_video_waits_and_a_dead_owners_claim_is_taken_over(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                              cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "held"
        staged = tmp_path / ".staging" / "clip-0123456789-abcd1234"
        staged.mkdir(parents=True)
        (tmp_path / ".staging" / "other-0123456789-abcd1234").mkdir()
        clean_staging(tmp_path)  # another run's work in progress is left alone
        assert staged.is_dir() and not (tmp_path / ".staging" / "other-0123456789-abcd1234").exists()
        owners: list[str] = []
        killer = threading.Timer(1.0, holder.kill)  # the owner dies (kill -9) while we wait
        killer.start()
        with claim(tmp_path, "clip-0123456789", wait=owners.append):
            assert owners == [f"{holder.pid}@{os.uname().nodename}"]
            assert holder.poll() is not None
        killer.join()
    finally:
        holder.kill()
        holder.wait()


def test_a_stop_request_interrupts_without_writing(cfg, models, tmp_path):
    def stop_after_first_batch(t: float) -> None:
        interrupt.request_stop("test")

    try:
        with pytest.raises(interrupt.Interrupted):
            analyze_video(VIDEOS / "WolfgangLanger_Pexels.mp4", tmp_path, cfg, models,
                          progress=stop_after_first_batch)
    finally:
        interrupt.reset()
    assert not (tmp_path / "videos").exists() and not (tmp_path / ".staging").exists()
    assert not _decode_children()


def test_two_runs_on_one_video_analyse_it_once(cfg, models, tmp_path):
    results: list[dict] = []
    runs = [threading.Thread(target=lambda: results.append(
        analyze_video(VIDEOS / "face_noface.mov", tmp_path, cfg, models))) for _ in range(2)]
    for t in runs:
        t.start()
    for t in runs:
        t.join(timeout=120)
    assert sorted(r["status"] for r in results) == ["ok", "skipped"]  # the second waited, then found it done
    assert len(read_table(tmp_path, "videos")) == 1
    assert not (tmp_path / ".locks" / f"{results[0]['video_id']}.lock").exists()  # released claims leave no file
