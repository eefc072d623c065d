"""The Python API (``fer_pipeline.analyze``, ``read_results``): DataFrames from one call on a real clip, in memory or
into a folder; settings as keywords; the video_id rule the README states (a renamed copy is another video); and an
``import fer_pipeline`` that loads nothing heavy."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pandas as pd
import pytest

import fer_pipeline
from conftest import REPO, VIDEOS
from fer_pipeline.aggregate import prob_columns
from fer_pipeline.fileutil import make_video_id, sha256_file

CLIP = VIDEOS / "single_face.mp4"
CLIP_ID = make_video_id(CLIP, sha256_file(CLIP))
TABLES = ("faces", "timeline", "audience", "videos")


def _labels(df: pd.DataFrame) -> list[str]:
    return [c.removeprefix("p_") for c in df.columns if c.startswith("p_")]


def test_import_is_cheap_and_the_in_memory_call_starts_no_prefect():
    """In a fresh interpreter: ``import fer_pipeline`` (and reaching the public names) loads neither torch, Prefect,
    pandas nor onnxruntime; a whole in-memory ``analyze`` then imports neither torch nor Prefect."""
    code = f"""
import sys
heavy = ("torch", "prefect", "pandas", "onnxruntime")
import fer_pipeline
assert not [m for m in heavy if m in sys.modules], [m for m in heavy if m in sys.modules]
fer_pipeline.analyze, fer_pipeline.read_results, fer_pipeline.Results, fer_pipeline.PipelineConfig
assert not [m for m in heavy if m in sys.modules], [m for m in heavy if m in sys.modules]
assert fer_pipeline.PipelineConfig().decode.sample_fps == 5.0
res = fer_pipeline.analyze({str(CLIP)!r})
assert len(res.faces) > 0 and res.out is None
print("after-analyze", sorted(m for m in ("torch", "prefect", "lightning") if m in sys.modules))
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "after-analyze []" in p.stdout


def test_public_names_are_exported_with_docstrings():
    assert set(fer_pipeline.__all__) >= {"analyze", "read_results", "Results", "PipelineConfig"}
    for name in ("analyze", "read_results", "Results", "PipelineConfig"):
        obj = getattr(fer_pipeline, name)
        assert obj.__doc__ and len(obj.__doc__) > 40, name
    assert fer_pipeline.analyze is fer_pipeline.api.analyze
    with pytest.raises(AttributeError):
        fer_pipeline.no_such_name  # noqa: B018


def test_analyze_in_memory_gives_four_dataframes_and_leaves_no_folder(tmp_path, monkeypatch):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where the call's temporary folder goes
    res = fer_pipeline.analyze(CLIP)
    assert list(scratch.iterdir()) == []  # out=None: the temporary folder is removed
    assert res.out is None and res.report_paths == []
    for t in TABLES:
        df = getattr(res, t)
        assert isinstance(df, pd.DataFrame) and df.columns[0] == "video_id", t
        assert set(df["video_id"]) == {CLIP_ID}, t
    assert len(res.faces) > 0 and res.faces["track_id"].nunique() == 1
    labels = _labels(res.faces)
    assert labels == ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    for t in ("faces", "timeline", "audience"):
        p = getattr(res, t)[prob_columns(labels)].to_numpy(float)
        p = p[~np.isnan(p).any(axis=1)]
        assert len(p) and np.allclose(p.sum(axis=1), 1.0, atol=1e-4), t
    assert res.videos.loc[0, "status"] == "ok" and res.videos.loc[0, "path"] == str(CLIP)
    assert res.summary.to_dict("records") == [{"video_id": CLIP_ID, "path": str(CLIP), "status": "ok",
                                               "error": None, "note": None}]
    assert "1 video (1 ok)" in repr(res)


def test_keyword_settings_config_forms_and_bad_arguments(tmp_path, bad_inputs):
    res = fer_pipeline.analyze([CLIP, bad_inputs["not_a_video"]], decode__sample_fps=2, reid__enabled=False)
    settings = json.loads(res.videos.set_index("video_id").loc[CLIP_ID, "settings"])
    assert settings["config"]["decode"]["sample_fps"] == 2.0 and settings["config"]["reid"]["enabled"] is False
    ts = res.faces["timestamp_s"].to_numpy()
    assert np.allclose(np.diff(ts), 0.5, atol=0.05)  # 2 Hz
    status = dict(zip(res.summary["path"], res.summary["status"]))
    assert status == {str(CLIP): "ok", str(bad_inputs["not_a_video"]): "failed"}  # a bad file does not raise
    failed = res.videos[res.videos["status"] == "failed"].iloc[0]
    assert failed["error"] and "\n" not in failed["error"]

    yaml_cfg = tmp_path / "p.yaml"
    yaml_cfg.write_text("decode:\n  sample_fps: 1\n")
    for config in (yaml_cfg, {"decode": {"sample_fps": 1}}, fer_pipeline.PipelineConfig.load(yaml_cfg)):
        cfg = fer_pipeline.api._config(config, {"track__min_track_s": 0.5})
        assert cfg.decode.sample_fps == 1 and cfg.track.min_track_s == 0.5
    with pytest.raises(TypeError, match="section__name"):
        fer_pipeline.analyze(CLIP, sample_fps=2)
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="no_such"):
        fer_pipeline.analyze(CLIP, decode__no_such=1)
    with pytest.raises(ValueError, match="needs out"):
        fer_pipeline.analyze(CLIP, reports=True)
    with pytest.raises(FileNotFoundError, match="no video files"):
        fer_pipeline.analyze(tmp_path)  # a folder without videos


def test_analyze_into_a_folder_then_read_results_and_the_video_id_rule(tmp_path):
    """``out=`` keeps the tables and the reports; ``read_results`` reads the same back. The README's rule: the id is
    the file name's slug plus the content hash, so the same bytes under the same name elsewhere (other folder, other
    extension) are skipped as already analysed, and a copy under another name is analysed as another video."""
    out = tmp_path / "OUT"
    res = fer_pipeline.analyze(CLIP, out=out)
    assert res.out == out and (out / "index.html").is_file()
    assert res.report_paths[-1] == out / "index.html" and all(p.is_file() for p in res.report_paths)
    assert out / "reports" / f"{CLIP_ID}.html" in res.report_paths

    back = fer_pipeline.read_results(out)
    assert back.out == out and back.summary is None and back.report_paths == sorted(res.report_paths[:-1]) + [
        out / "index.html"]
    for t in TABLES:
        pd.testing.assert_frame_equal(getattr(back, t), getattr(res, t))

    elsewhere = tmp_path / "other-folder"
    elsewhere.mkdir()
    same_name = shutil.copy(CLIP, elsewhere / "Single_Face.MOV")  # same slug "single-face", same bytes
    renamed = shutil.copy(CLIP, tmp_path / "respondent-7.mp4")  # same bytes, another name
    again = fer_pipeline.analyze([same_name, renamed], out=out, reports=False)
    by_path = again.summary.set_index("path")
    assert by_path.loc[str(same_name), "video_id"] == CLIP_ID
    assert by_path.loc[str(same_name), "status"] == "skipped"
    new_id = by_path.loc[str(renamed), "video_id"]
    assert new_id == f"respondent-7-{CLIP_ID.rsplit('-', 1)[1]}" and by_path.loc[str(renamed), "status"] == "ok"
    assert set(again.faces["video_id"]) == {CLIP_ID, new_id}
    both = fer_pipeline.read_results(out)
    assert sorted(both.videos["video_id"]) == sorted([CLIP_ID, new_id])
    assert both.videos["sha256"].nunique() == 1  # one content, two videos: the README says so
    a, b = (both.faces[both.faces["video_id"] == v].drop(columns="video_id").reset_index(drop=True)
            for v in (CLIP_ID, new_id))
    pd.testing.assert_frame_equal(a, b)  # and the same results


def test_video_id_depends_on_the_file_name_and_the_content_only():
    """The rule the README states: ``<slug of the name>-<10 hex of sha256>``; folder and extension do not count."""
    h, other = "0123456789" + "a" * 54, "fedcba9876" + "b" * 54
    assert make_video_id("/a/My Clip.mp4", h) == make_video_id("/b/my_clip.MOV", h) == "my-clip-0123456789"
    assert make_video_id("/a/My Clip.mp4", h) != make_video_id("/a/take-2.mp4", h)  # renamed copy: another video
    assert make_video_id("/a/My Clip.mp4", other) == "my-clip-fedcba9876"  # edited file: another video


def test_read_results_refuses_a_folder_that_is_not_an_output(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a pipeline output folder"):
        fer_pipeline.read_results(tmp_path)


@pytest.mark.slow
def test_use_prefect_runs_the_flow_with_the_same_tables(tmp_path, bad_inputs):
    direct = fer_pipeline.analyze(CLIP, out=tmp_path / "direct", reports=False)
    flow = fer_pipeline.analyze([CLIP, bad_inputs["not_a_video"]], out=tmp_path / "flow", use_prefect=True)
    assert dict(zip(flow.summary["path"], flow.summary["status"])) == {
        str(CLIP): "ok", str(bad_inputs["not_a_video"]): "failed"}
    assert (tmp_path / "flow" / "index.html").is_file() and flow.report_paths[-1] == tmp_path / "flow" / "index.html"
    for t in ("faces", "timeline", "audience"):
        pd.testing.assert_frame_equal(getattr(flow, t), getattr(direct, t))
