"""Studies on real clips: respondents built from WolfgangLanger_Pexels.mp4 (crying, then laughing from about 10 s)
after grey lead-ins of different lengths, analysed by the pipeline, then aligned on stimulus time.

Checks: the happy onset lines up on stimulus time within a second across respondents while it does not on recording
time; respondents counted per second (one leaves the camera half-way); intervals contain the means and shrink when
respondents are added; the manifest's bad rows are named and the others run (CLI); the tables are recomputed from
Parquet alone; the Excel export opens with pandas; a folder of subfolders is a study.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import write_video
from study_data import clip_10fps

from fer_pipeline.config import PipelineConfig, StudyConfig
from fer_pipeline.models import Models
from fer_pipeline.pipeline import analyze_video
from fer_pipeline.study.manifest import ManifestError, folder_study, load_manifest
from fer_pipeline.study.run import run_study
from fer_pipeline.study.stats import mean_ci, per_second_ci, bootstrap_weights, permutation_test, percentile_rank
from fer_pipeline.study.store import read_study_table
from fer_pipeline.study.timing import in_window, smooth_probs, stimulus_second

pytestmark = pytest.mark.slow

FPS = 10  # the frame rate of clip_10fps
#: respondent -> (lead-in seconds without a face, mirrored, leaves the camera after this many seconds of the clip)
RESPONDENTS = {"r1": (1.3, False, None), "r2": (2.7, True, None), "r3": (4.0, False, None),
               "r4": (0.6, True, None), "r5": (2.1, False, None), "r6": (3.4, True, 8.0)}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Six analysed respondents of one stimulus ``ad_A`` in ``rec/``, results in ``out/``."""
    root = tmp_path_factory.mktemp("study")
    rec, out = root / "rec", root / "out"
    rec.mkdir()
    clip = clip_10fps()
    grey = np.full((1, *clip.shape[1:]), 90, np.uint8)
    for name, (lead, mirror, leaves) in RESPONDENTS.items():
        body = clip[:, :, ::-1] if mirror else clip
        if leaves is not None:  # the face is gone after `leaves` seconds: grey frames instead
            body = np.concatenate([body[: int(leaves * FPS)], np.repeat(grey, len(body) - int(leaves * FPS), 0)])
        frames = np.concatenate([np.repeat(grey, int(round(lead * FPS)), 0), body])
        write_video(rec / f"{name}.mp4", np.ascontiguousarray(frames), fps=FPS)
    cfg = PipelineConfig()
    models = Models.load(cfg)
    for f in sorted(rec.glob("*.mp4")):
        assert analyze_video(str(f), str(out), cfg, models=models)["status"] == "ok"
    return root, rec, out


def _manifest(root: Path, names, name="study.csv", extra_rows=()) -> Path:
    lines = ["recording,stimulus,offset_s,age_group"]
    lines += [f"{n}.mp4,ad_A,{RESPONDENTS[n][0]},{'18-34' if i % 2 == 0 else '35-54'}" for i, n in enumerate(names)]
    lines += list(extra_rows)
    p = root / name
    p.write_text("\n".join(lines) + "\n")
    return p


def _onset(frame: pd.DataFrame, second_col: str) -> int:
    """First second whose dominant emotion is happy and stays happy for 3 seconds."""
    s = frame.sort_values(second_col)
    happy = (s["emotion"] == "happy").to_numpy()
    secs = s[second_col].to_numpy()
    for i in range(len(s) - 2):
        if happy[i:i + 3].all():
            return int(secs[i])
    raise AssertionError("no happy onset")


def test_happy_onset_lines_up_on_stimulus_time(study):
    root, rec, out = study
    names = ["r1", "r2", "r3", "r4", "r5"]
    tables = run_study(out, load_manifest(_manifest(root, names), rec), write=False)
    rs = tables.respondent_seconds
    stim_onsets = {n: _onset(rs[rs["respondent"] == n], "second") for n in names}
    tl = pd.read_parquet(out / "timeline")
    vids = tables.respondents.set_index("respondent")["video_id"]
    rec_onsets = {n: _onset(tl[tl["video_id"] == vids[n]], "second") for n in names}
    assert max(stim_onsets.values()) - min(stim_onsets.values()) <= 1, stim_onsets
    # on recording time the onsets are as far apart as the lead-ins (0.6 s to 4.0 s)
    assert max(rec_onsets.values()) - min(rec_onsets.values()) >= 3, rec_onsets
    # and the stimulus figure shows it: mostly sad/crying before, happy after
    s = tables.stimulus.set_index("second")
    onset = min(stim_onsets.values())
    assert s.loc[onset + 2:, "share_happy"].mean() > 0.8
    assert s.loc[: onset - 2, "share_happy"].mean() < 0.2


def test_fractional_offsets_map_samples_to_stimulus_seconds():
    t = np.array([1.299999, 1.3, 2.2999, 2.3, 10.2, 21.0])
    assert stimulus_second(t, 1.3).tolist() == [-1, 0, 0, 1, 8, 19]
    assert stimulus_second(np.array([10.2]), 0.2).tolist() == [10]  # 10.2 - 0.2 is 10, not 9.999999
    # [offset, offset + duration): 21.0 - 1.3 = 19.7 is the first instant after a 19.7 s stimulus
    assert in_window(t, 1.3, 19.7).tolist() == [False, True, True, True, True, False]
    assert in_window(t, 1.3, 19.71).tolist() == [False, True, True, True, True, True]


def test_respondents_counted_per_second(study):
    root, rec, out = study
    names = list(RESPONDENTS)
    tables = run_study(out, load_manifest(_manifest(root, names), rec), write=False)
    s = tables.stimulus.set_index("second")
    rs = tables.respondent_seconds
    # every second: the respondents with a face in it, counted from the respondents' own rows
    counted = rs.groupby("second")["respondent"].nunique().reindex(s.index, fill_value=0)
    assert (s["respondents"] == counted).all()
    # r6 leaves the camera 8 s into the clip: present early, absent from 10 s on; the others stay
    r6 = set(rs.loc[rs["respondent"] == "r6", "second"])
    assert {2, 3, 4, 5, 6} <= r6 and not r6 & set(range(10, 19))
    assert (s.loc[10:18, "respondents"] == len(names) - 1).all()
    assert (s.loc[1:7, "respondents"] == len(names)).all()
    # the stimulus lasts to the end of the shortest recording: 19.7 s of clip after each lead-in
    assert math.isclose(tables.durations["ad_A"], 19.7, abs_tol=0.11)
    assert len(s) == math.ceil(tables.durations["ad_A"])
    r = tables.respondents.set_index("respondent")
    assert (r["status"] == "ok").all() and (r.loc["r6", "seconds_with_face"] < r.loc["r1", "seconds_with_face"])


def test_intervals_contain_means_and_shrink_with_more_respondents(study):
    root, rec, out = study
    three = run_study(out, load_manifest(_manifest(root, ["r1", "r2", "r3"]), rec), write=False).stimulus
    six = run_study(out, load_manifest(_manifest(root, list(RESPONDENTS)[:5] + ["r1"], "s6.csv"), rec),
                    write=False).stimulus
    for m in ("valence", "p_happy", "share_happy", "expressiveness", "attention"):
        for t in (three, six):
            ok = t[f"{m}_ci_low"].notna()
            assert ok.sum() >= 15
            assert (t.loc[ok, f"{m}_ci_low"] <= t.loc[ok, m] + 1e-9).all()
            assert (t.loc[ok, m] <= t.loc[ok, f"{m}_ci_high"] + 1e-9).all()
    width3 = (three["valence_ci_high"] - three["valence_ci_low"]).mean()
    width6 = (six["valence_ci_high"] - six["valence_ci_low"]).mean()
    assert width6 < width3


def test_bootstrap_and_permutation_behave():
    rng = np.random.default_rng(1)
    values = rng.normal(0.2, 0.3, size=(40, 5))
    values[::7, 2] = np.nan  # absent respondents
    mean, low, high, n = per_second_ci(values, bootstrap_weights(40, 1000, 0))
    assert np.allclose(mean, np.nanmean(values, axis=0))
    assert (low < mean).all() and (mean < high).all() and n.tolist() == [40, 40, 34, 40, 40]
    # one respondent: no interval
    _, lo1, hi1, n1 = per_second_ci(values[1:2], bootstrap_weights(1, 200, 0))
    assert np.isnan(lo1).all() and np.isnan(hi1).all() and n1.tolist() == [1] * 5
    m, lo, hi, k = mean_ci(values[:, 0], 1000, 0.95, 0)
    assert lo < m < hi and k == 40
    same = permutation_test(values[:20, 0], values[20:, 0], 2000, 0)
    apart = permutation_test(values[:, 0] + 1.0, values[:, 1], 2000, 0)
    assert 0.05 < same[1] <= 1.0
    assert apart[1] < 0.01 and apart[0] > 0.5
    assert percentile_rank(3.0, np.array([1.0, 2.0, 3.0, 4.0])) == pytest.approx(62.5)


def test_smoothing_keeps_rows_summing_to_one_and_reduces_flips(study):
    root, rec, out = study
    faces = pd.read_parquet(out / "faces")
    faces = faces[faces["video_id"] == faces["video_id"].iloc[0]].sort_values("timestamp_s")
    labels = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    pcols = [f"p_{x}" for x in labels]
    sm = smooth_probs(faces, labels, 0.4)
    assert np.allclose(sm[pcols].sum(axis=1), 1.0, atol=1e-5)

    def flips(df):
        e = df[pcols].to_numpy().argmax(1)
        return int((e[1:] != e[:-1]).sum())
    assert flips(sm) < flips(faces)


def test_baselines(study):
    root, rec, out = study
    m = load_manifest(_manifest(root, ["r1", "r3"]), rec)
    for method in ("lead_in", "resting"):
        t = run_study(out, m, StudyConfig(baseline=method), write=False)
        r = t.respondents.set_index("respondent")
        if method == "lead_in":  # the lead-ins are grey: no face before the stimulus, no baseline
            assert r["baseline_valence"].isna().all() and t.stimulus["delta_valence"].isna().all()
            continue
        assert r["baseline_valence"].notna().all()
        rs = t.respondent_seconds
        for name in ("r1", "r3"):
            mine = rs[rs["respondent"] == name]
            assert np.allclose(mine["delta_valence"], mine["valence"] - r.loc[name, "baseline_valence"])
        # the resting seconds are the least expressive: their expressiveness is below the respondent's mean
        assert (r["baseline_expressiveness"] < r["mean_expressiveness"]).all()


def test_manifest_rows_checked(tmp_path, study):
    root, rec, out = study
    p = _manifest(tmp_path, ["r1", "r2"], extra_rows=[
        "r1.mp4,ad_A,1.3,18-34", "missing.mp4,ad_A,0,x", "r3.mp4,ad_A,-2,x", "r3.mp4,ad_A,abc,x", "r3.mp4,a d,1,x",
        "r4.mp4,ad_B,0.6,x"])
    m = load_manifest(p, rec)
    assert [r.recording for r in m.rows] == ["r1.mp4", "r2.mp4", "r4.mp4"]
    joined = "\n".join(m.errors)
    for line, what in ((4, "duplicate"), (5, "not found: missing.mp4"), (6, "negative"), (7, "not a number"),
                       (8, "stimulus id")):
        assert f"study.csv line {line}: " in joined and what in joined
    assert len(m.errors) == 5 and all("\n" not in e for e in m.errors)
    (tmp_path / "nocol.csv").write_text("recording,offset_s\nr1.mp4,0\n")
    with pytest.raises(ManifestError, match="stimulus"):
        load_manifest(tmp_path / "nocol.csv", rec)
    (tmp_path / "clash.csv").write_text("recording,stimulus,offset_s,status\nr1.mp4,ad_A,0,done\n")
    with pytest.raises(ManifestError, match="status"):  # an attribute may not take a column the pipeline fills
        load_manifest(tmp_path / "clash.csv", rec)
    y = tmp_path / "study.yaml"
    y.write_text("- {recording: r1.mp4, stimulus: ad_A, offset_s: 1.3, market: UK}\n"
                 "- {recording: r2.mp4, stimulus: ad_A, offset_s: 2.7, market: US}\n")
    my = load_manifest(y, rec)
    assert [r.attributes["market"] for r in my.rows] == ["UK", "US"] and not my.errors


def test_folder_of_subfolders_is_a_study(tmp_path, study):
    root, rec, out = study
    for stim, names in (("ad_A", ["r1", "r2"]), ("ad B!", ["r3"])):
        (tmp_path / stim).mkdir()
        for n in names:
            (tmp_path / stim / f"{n}.mp4").symlink_to(rec / f"{n}.mp4")
    m = folder_study(tmp_path)
    assert sorted(m.stimuli) == ["ad_A", "ad_B"] and all(r.offset_s == 0 for r in m.rows)
    assert sorted(r.respondent for r in m.rows if r.stimulus == "ad_A") == ["r1", "r2"]
    assert folder_study(rec) is None  # recordings directly in it: not a study
    # the flow: the recordings, then one study task per stimulus, then the pages
    from fer_pipeline.flows.analyze import run_analyze

    res = run_analyze([str(tmp_path)], str(tmp_path / "out"), PipelineConfig())
    studies = {r["video_id"]: r for r in res if r["status"] == "study"}
    assert {k: v["respondents"] for k, v in studies.items()} == {"ad_A": 2, "ad_B": 1}
    assert not [r for r in res if r["status"] in ("study-error", "failed", "report-failed")]
    resp = read_study_table(tmp_path / "out", "respondents")
    assert sorted(zip(resp["stimulus"], resp["respondent"])) == [("ad_A", "r1"), ("ad_A", "r2"), ("ad_B", "r3")]


def test_cli_study_export_and_bad_rows(study, tmp_path):
    """A new user's path: analyze --study with bad rows (named, the rest runs, exit 1), the pages, then `study`
    recomputes from Parquet alone with the recordings gone, and `export` writes a workbook pandas opens."""
    root, rec, out = study
    work = tmp_path / "rec"
    work.mkdir()
    for n in ("r1", "r2", "r3"):
        (work / f"{n}.mp4").write_bytes((rec / f"{n}.mp4").read_bytes())
    manifest = _manifest(tmp_path, ["r1", "r2", "r3"], extra_rows=["r1.mp4,ad_B,0,18-34", "ghost.mp4,ad_B,0,x",
                                                                   "r2.mp4,ad_B,500,x"])
    res = tmp_path / "out"
    cli = [sys.executable, "-m", "fer_pipeline.cli"]
    p = subprocess.run([*cli, "analyze", str(work), "--out", str(res), "--study", str(manifest)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 1, p.stderr[-2000:]
    assert "study.csv line 6: recording not found: ghost.mp4" in p.stderr
    assert "study.csv line 7: offset_s 500 is beyond the end of r2.mp4" in p.stderr
    stim = pd.read_parquet(res / "stimulus")
    assert set(stim["stimulus"].astype(str)) == {"ad_A", "ad_B"}
    resp = pd.read_parquet(res / "respondents")
    assert sorted(resp.loc[resp["stimulus"].astype(str) == "ad_A", "respondent"]) == ["r1", "r2", "r3"]
    assert (res / "studies" / "index.html").is_file() and (res / "studies" / "ad_A.html").is_file()
    before = read_study_table(res, "stimulus")

    for f in work.glob("*.mp4"):
        f.unlink()  # no video from here on
    p = subprocess.run([*cli, "study", str(res)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 1 and "offset_s 500" in p.stderr  # the kept manifest still has that row
    after = read_study_table(res, "stimulus")
    pd.testing.assert_frame_equal(before.reset_index(drop=True), after.reset_index(drop=True))
    p = subprocess.run([*cli, "export", str(res), "--format", "xlsx", "--to", str(tmp_path / "x")],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    sheets = pd.read_excel(tmp_path / "x" / "fer-pipeline.xlsx", sheet_name=None)
    assert {"stimulus", "respondents", "segments", "videos", "timeline"} <= set(sheets)
    assert len(sheets["stimulus"]) == len(after)
    assert list(sheets["stimulus"].columns) == list(after.columns)
    p = subprocess.run([*cli, "export", str(res), "--format", "csv", "--to", str(tmp_path / "c")],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and len(pd.read_csv(tmp_path / "c" / "respondents.csv")) == len(resp)
    kept = json.loads((res / "studies" / "manifest.json").read_text())
    assert {r["stimulus"] for r in kept["rows"]} == {"ad_A", "ad_B"}
