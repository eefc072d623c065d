"""End to end through the library on real recordings: tables, tracks, timelines, bad inputs, skipping."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import VIDEOS
from fer_pipeline.aggregate import prob_columns
from fer_pipeline.config import PipelineConfig
from fer_pipeline.inputs import list_videos
from fer_pipeline.models import Models
from fer_pipeline.pipeline import analyze_video
from fer_pipeline.store import read_table

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def cfg():
    return PipelineConfig.load(None, {"output.reports": False})


@pytest.fixture(scope="session")
def models(cfg):
    return Models.load(cfg)


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory, cfg, models):
    """The real clips analysed once, shared by the tests below."""
    out = tmp_path_factory.mktemp("out")
    results = {name: analyze_video(VIDEOS / name, out, cfg, models)
               for name in ("single_face.mp4", "WolfgangLanger_Pexels.mp4", "face_noface.mov")}
    return out, results


def _video(out, name):
    v = read_table(out, "videos")
    return v[v.path.str.endswith(name)].iloc[0]


def test_tables_have_documented_columns(run_dir, models):
    out, results = run_dir
    labels = models.emotion.labels
    p = prob_columns(labels)
    assert all(r["status"] == "ok" for r in results.values()), results
    faces = pd.read_parquet(out / "faces")
    assert list(faces.columns) == ["video_id", "frame_index", "timestamp_s", "track_id", "viewer_id", "x1", "y1", "x2",
                                   "y2", "det_score", *p, "emotion", "yaw", "pitch", "roll", "attentive"]
    tl = pd.read_parquet(out / "timeline")
    assert list(tl.columns) == ["video_id", "track_id", "viewer_id", "second", "n_samples", *p, "emotion", "valence",
                                "expressiveness", "attention"]
    au = pd.read_parquet(out / "audience")
    assert list(au.columns) == ["video_id", "second", "viewers", *p, *[f"share_{x}" for x in labels], "valence",
                                "expressiveness", "attention"]
    assert faces.attentive.dtype == bool and faces[["yaw", "pitch", "roll"]].notna().all().all()
    assert tl.attention.between(0, 1).all() and au.attention.dropna().between(0, 1).all()
    vids = pd.read_parquet(out / "videos")
    assert {"video_id", "path", "sha256", "status", "error", "duration_s", "fps", "width", "height",
            "frames_sampled", "faces_detected", "tracks", "viewers", "processing_s", "emotion_model", "detector",
            "pipeline_version", "created_at"} <= set(vids.columns)
    assert set(vids.video_id.astype(str)) == {r["video_id"] for r in results.values()}


def test_probabilities_sum_to_one_and_emotion_is_argmax(run_dir, models):
    out, _ = run_dir
    p = prob_columns(models.emotion.labels)
    faces = pd.read_parquet(out / "faces")
    assert len(faces) > 100
    np.testing.assert_allclose(faces[p].sum(axis=1), 1.0, atol=1e-4)
    assert (faces[p].to_numpy() >= 0).all()
    assert (faces.emotion == np.asarray(models.emotion.labels)[faces[p].to_numpy().argmax(1)]).all()
    tl = pd.read_parquet(out / "timeline")
    np.testing.assert_allclose(tl[p].sum(axis=1), 1.0, atol=1e-4)
    assert tl.valence.between(-1, 1).all() and tl.expressiveness.between(0, 1).all()


@pytest.mark.parametrize("name", ["single_face.mp4", "WolfgangLanger_Pexels.mp4"])
def test_one_stable_track_for_single_viewer_clips(run_dir, name):
    out, results = run_dir
    r = results[name]
    faces = pd.read_parquet(out / "faces", filters=[("video_id", "==", r["video_id"])])
    assert r["tracks"] == 1 and faces.track_id.nunique() == 1
    # the one viewer is seen in (nearly) every sampled frame
    assert len(faces) >= 0.9 * r["frames_sampled"]


def test_every_viewer_has_a_face_thumbnail_and_frontal_viewers_are_attentive(run_dir):
    out, results = run_dir
    faces = pd.read_parquet(out / "faces")
    for r in results.values():
        viewers = faces.loc[faces.video_id.astype(str) == r["video_id"], "viewer_id"].unique()
        assert len(viewers) == r["viewers"] >= 1
        for v in viewers:
            thumb = out / "reports" / "thumbs" / r["video_id"] / f"viewer-{v}.jpg"
            assert thumb.is_file() and thumb.stat().st_size > 500, thumb
    # these clips show viewers facing the camera: nearly every face is attentive
    assert faces.attentive.mean() >= 0.9


def test_timestamps_monotonic_and_sampled_at_5hz(run_dir):
    out, results = run_dir
    r = results["WolfgangLanger_Pexels.mp4"]
    faces = pd.read_parquet(out / "faces", filters=[("video_id", "==", r["video_id"])])
    ts = faces.sort_values("frame_index").timestamp_s.to_numpy()
    assert (np.diff(ts) > 0).all()
    assert np.median(np.diff(ts)) == pytest.approx(0.2, abs=0.03)
    assert r["frames_sampled"] == pytest.approx(19.7 * 5, abs=3)


def test_every_second_with_a_face_has_a_timeline_row(run_dir):
    out, _ = run_dir
    faces = pd.read_parquet(out / "faces")
    tl = pd.read_parquet(out / "timeline")
    seen = set(zip(faces.video_id.astype(str), faces.track_id, np.floor(faces.timestamp_s).astype(int)))
    rows = set(zip(tl.video_id.astype(str), tl.track_id, tl.second))
    assert seen == rows
    au = pd.read_parquet(out / "audience")
    per_sec = tl.groupby([tl.video_id.astype(str), "second"]).size()
    a = au.set_index([au.video_id.astype(str), "second"]).viewers
    assert (a.reindex(per_sec.index) == per_sec).all()


def test_face_then_no_face_clip(run_dir):
    out, results = run_dir
    r = results["face_noface.mov"]
    tl = pd.read_parquet(out / "timeline", filters=[("video_id", "==", r["video_id"])])
    au = pd.read_parquet(out / "audience", filters=[("video_id", "==", r["video_id"])])
    assert r["tracks"] >= 1
    assert len(au) == int(np.ceil(r["duration_s"]))
    # the face is in the first part only: the last second has no viewer
    assert au.sort_values("second").viewers.iloc[0] >= 1 and au.sort_values("second").viewers.iloc[-1] == 0
    assert tl.second.max() < au.second.max()


def test_no_face_video_is_ok_with_zero_tracks(tmp_path, cfg, models, no_face_video):
    r = analyze_video(no_face_video, tmp_path, cfg, models)
    assert r["status"] == "ok" and r["tracks"] == 0 and r["faces_detected"] == 0
    au = read_table(tmp_path, "audience")
    assert len(au) == 3 and (au.viewers == 0).all()


@pytest.mark.parametrize("kind", ["not_a_video", "zero_length", "truncated", "audio_only", "missing"])
def test_bad_input_gets_failed_row_and_nothing_partial(tmp_path, cfg, models, bad_inputs, kind):
    r = analyze_video(bad_inputs[kind], tmp_path, cfg, models)
    assert r["status"] == "failed"
    assert r["error"] and "\n" not in r["error"] and len(r["error"]) <= 300
    vids = read_table(tmp_path, "videos")
    assert list(vids.status) == ["failed"]
    for table in ("faces", "timeline", "audience"):  # empty parts: the tables read, with their columns
        assert len(pd.read_parquet(tmp_path / table)) == 0
    assert not (tmp_path / ".staging").exists()


def test_rerun_skips_and_force_redoes(tmp_path, cfg, models):
    clip = VIDEOS / "single_face.mp4"
    first = analyze_video(clip, tmp_path, cfg, models)
    again = analyze_video(clip, tmp_path, cfg, models)
    assert first["status"] == "ok" and again["status"] == "skipped"
    forced = analyze_video(clip, tmp_path, cfg, models, force=True)
    assert forced["status"] == "ok"
    assert len(read_table(tmp_path, "videos")) == 1


def test_switch_interval_is_short_during_analysis_and_restored(tmp_path, cfg, models, no_face_video, bad_inputs):
    import sys
    import threading

    from fer_pipeline import pipeline

    before = sys.getswitchinterval()
    seen = []
    try:
        sys.setswitchinterval(0.004)
        analyze_video(no_face_video, tmp_path / "a", cfg, models, progress=lambda t: seen.append(sys.getswitchinterval()))
        assert seen and set(seen) == {pipeline.SWITCH_INTERVAL_S} and sys.getswitchinterval() == pytest.approx(0.004)
        assert analyze_video(bad_inputs["truncated"], tmp_path / "b", cfg, models)["status"] == "failed"
        assert sys.getswitchinterval() == pytest.approx(0.004)
        # overlapping analyses in threads: the setting holds until the last one ends
        inside, release = threading.Event(), threading.Event()

        def hold():
            with pipeline._switch_interval(0.001):
                inside.set()
                release.wait(10)

        th = threading.Thread(target=hold)
        th.start()
        inside.wait(10)
        with pipeline._switch_interval(0.001):
            pass
        assert sys.getswitchinterval() == pytest.approx(0.001)
        release.set()
        th.join(10)
        assert sys.getswitchinterval() == pytest.approx(0.004)
    finally:
        sys.setswitchinterval(before)


def test_list_videos_expands_folders(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.mp4").write_bytes(b"1")
    (tmp_path / "a" / "notes.txt").write_text("n")
    (tmp_path / "a" / ".hidden.mp4").write_bytes(b"1")
    got = list_videos([tmp_path, tmp_path / "a" / "x.mp4", tmp_path / "named.txt"])
    assert got == [tmp_path / "a" / "x.mp4", tmp_path / "named.txt"]
