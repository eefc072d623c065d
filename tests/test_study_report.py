"""Study pages: real recordings analysed, aligned into study tables, rendered from Parquet alone.

Four respondents are made from WolfgangLanger_Pexels.mp4 (10 fps) behind grey lead-ins of different lengths, one of
them played backwards so the respondents differ; a fifth recording has no face, a sixth is never analysed. The
manifest has two stimuli (different windows of the recordings) and two attributes, one with a hostile value and one
with a hostile name; one respondent id is hostile too. The pages must show the study tables' own numbers (traces,
intervals, respondent counts), tests whose p-values and norms are in range, and user text escaped only.

The folder is built by :func:`study_data.study_folder`, once per session (the browser tests reuse it).
"""
from __future__ import annotations

import html
import json
import math
import re
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pytest
from study_data import EVIL_ATTRIBUTE, EVIL_RESPONDENT, EVIL_VALUE, STIMULI, study_folder

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from fer_pipeline.report.study import render_studies

    info = study_folder(tmp_path_factory)
    info["written"] = render_studies(info["out"], info["cfg"])
    return info


def _data(page: Path, element_id: str) -> dict:
    m = re.search(rf'<script type="application/json" id="{element_id}">(.*?)</script>', page.read_text(), re.DOTALL)
    assert m, f"no #{element_id} in {page}"
    return json.loads(m.group(1))


def _table(out: Path, name: str, stimulus: str) -> pd.DataFrame:
    from fer_pipeline.study.store import read_study_table

    df = read_study_table(out, name)
    return df.loc[df["stimulus"] == stimulus].reset_index(drop=True)


def _same(json_values, column: pd.Series, atol: float = 6e-5) -> None:
    want = pd.to_numeric(column, errors="coerce").to_numpy(np.float64)
    got = np.array([np.nan if v is None else v for v in json_values], np.float64)
    assert got.shape == want.shape
    assert np.array_equal(np.isnan(got), np.isnan(want)), (got, want)
    np.testing.assert_allclose(got[~np.isnan(got)], want[~np.isnan(want)], atol=atol)


# --------------------------------------------------------------------------------------------------------------------
# The real study
# --------------------------------------------------------------------------------------------------------------------


def test_pages_written_for_every_stimulus(study):
    out = study["out"]
    folder = out / "studies"
    assert study["written"] == [folder / "ad_A.html", folder / "spot-B.v2.html", folder / "index.html"]
    assert (folder / "plotly.min.js").stat().st_size > 100_000
    assert any("r6.mp4" in e for e in study["errors"])  # listed, never analysed
    index = (folder / "index.html").read_text()
    for stim in STIMULI:
        text = (folder / f"{stim}.html").read_text()
        assert f'<h1 id="stimulus-id">{html.escape(stim)}</h1>' in text
        assert f'href="{stim}.html"' in index and html.escape(stim) in index
        assert 'src="plotly.min.js"' in text
        assert not re.search(r'(src|href)="(https?:|//|/)', text)  # nothing to fetch from anywhere


def test_traces_and_intervals_are_the_stimulus_table(study):
    out = study["out"]
    for stim in STIMULI:
        table = _table(out, "stimulus", stim).sort_values("second")
        d = _data(out / "studies" / f"{stim}.html", "study-data")
        assert d["seconds"] == table["second"].tolist()
        assert d["respondents"] == table["respondents"].tolist()
        for metric in ("valence", "expressiveness", "attention", "delta_valence", "delta_expressiveness",
                       "share_happy"):
            band = d["traces"][metric]
            _same(band["mean"], table[metric])
            _same(band["low"], table[f"{metric}_ci_low"])
            _same(band["high"], table[f"{metric}_ci_high"])
        assert d["hasDelta"]  # resting baseline: the delta traces are drawn
        ok = table["valence_ci_low"].notna()
        assert ok.any() and (table.loc[ok, "valence_ci_low"] <= table.loc[ok, "valence"] + 1e-9).all()
        assert (table.loc[table["respondents"] < 2, "valence_ci_low"].isna()).all()
        for i, label in enumerate(d["labels"]):
            _same(d["shares"][i], table[f"share_{label}"])


def test_respondent_counts_and_statuses_shown(study):
    out = study["out"]
    resp = _table(out, "respondents", "ad_A")
    assert dict(resp["status"].value_counts()) == {"ok": 4, "no_face": 1, "missing": 1}
    text = (out / "studies" / "ad_A.html").read_text()
    assert '<span id="respondent-count">4</span> respondents analysed of 6' in text
    assert "1 no face" in text and "1 missing" in text
    assert "low confidence" in text  # 4 respondents < 5
    d = _data(out / "studies" / "ad_A.html", "study-data")
    assert max(d["respondents"]) == 4
    assert d["heatmap"]["total"] == 4 and len(d["heatmap"]["z"]) == 4
    assert all(len(row) == len(d["seconds"]) for row in d["heatmap"]["z"])
    rsec = _table(out, "respondent_seconds", "ad_A")
    first = rsec.loc[rsec["row"] == d["heatmap"]["rows"][0]].set_index("second")["valence"]
    z0 = d["heatmap"]["z"][0]
    for s, v in first.items():
        assert abs(z0[int(s)] - v) < 1e-3
    index = (out / "studies" / "index.html").read_text()
    row = re.search(r'<tr data-stimulus="ad_A">(.*?)</tr>', index, re.DOTALL).group(1)
    assert re.search(r'<td class="num" data-sort="4">4<div class="small muted">of 6</div>', row)


def test_key_moments_use_the_metrics_and_show_faces(study):
    from fer_pipeline import metrics
    from fer_pipeline.report.study import audience_frame, smile_rises

    out = study["out"]
    table = _table(out, "stimulus", "ad_A")
    au = audience_frame(table)
    pt = metrics.peak_trough(au)
    d = _data(out / "studies" / "ad_A.html", "study-data")
    assert d["peak"]["second"] == pt["peak"]["second"] and d["trough"]["second"] == pt["trough"]["second"]
    rises = smile_rises(table)
    share = table.set_index("second")["share_happy"]
    assert rises and all(r["rise"] > 0 for r in rises)
    for r in rises:
        assert r["rise"] == pytest.approx(share[r["second"]] - share[r["second"] - 1])
    best = max(share[s] - share[s - 1] for s in share.index[1:] if not math.isnan(share[s] - share[s - 1]))
    assert rises[0]["rise"] == pytest.approx(best)
    assert d["smileRises"] == [r["second"] for r in rises]

    text = (out / "studies" / "ad_A.html").read_text()
    peak_card = re.search(r'data-moment="peak">(.*?)</div>\s*</div>\s*</div>', text, re.DOTALL).group(1)
    rsec = _table(out, "respondent_seconds", "ad_A")
    at_peak = rsec.loc[rsec["second"] == pt["peak"]["second"]].sort_values(["valence", "row"],
                                                                          ascending=[False, True])
    top = html.escape(str(at_peak["respondent"].iloc[0]))
    assert top in peak_card
    thumbs = re.findall(r'src="(\.\./reports/thumbs/[^"]+)"', peak_card)
    assert thumbs, "no respondent thumbnail at the peak"
    for t in set(re.findall(r'src="(\.\./reports/[^"]+)"', text)):
        assert (out / "studies" / unquote(t)).resolve().is_file(), t
    for href in set(re.findall(r'href="(\.\./reports/[^"]+\.html)"', text)):
        assert (out / "studies" / href).resolve().is_file(), href
    assert re.search(r'href="\.\./reports/[^"]+\.html"', text)  # respondents link to their video's report


def test_pairwise_tests_and_norms_in_range(study):
    from fer_pipeline.study.stats import permutation_test
    from fer_pipeline.study.store import read_study_table
    from fer_pipeline.study.tables import respondent_values

    out, cfg = study["out"], study["cfg"]
    index = out / "studies" / "index.html"
    d = _data(index, "studies-data")
    assert [s["id"] for s in d["stimuli"]] == list(STIMULI)
    assert len(d["pairs"]) == 1
    pair = d["pairs"][0]
    assert (pair["a"], pair["b"]) == STIMULI
    resp = read_study_table(out, "respondents")
    for fig in ("mean_valence", "smiled", "mean_attention"):
        f = pair["figures"][fig]
        assert 0 < f["p"] <= 1
        diff, p = permutation_test(respondent_values(resp, STIMULI[0], fig), respondent_values(resp, STIMULI[1], fig),
                                   cfg.permutations, cfg.seed)
        assert f["diff"] == pytest.approx(diff) and f["p"] == pytest.approx(p)
        assert f["na"] == 4 and f["nb"] == 4
    text = index.read_text()
    pcts = [float(x) for x in re.findall(r'data-percentile="([0-9.]+)"', text)]
    assert len(pcts) == 2 * 4 and all(0 <= x <= 100 for x in pcts)
    assert "Mean valence: among 2 stimuli, 8 respondents" in re.sub(r"\s+", " ", text)
    # the two stimuli's valence percentiles are 25 and 75 (or both 50 when equal)
    vp = sorted(float(x) for x in re.findall(r'data-figure="mean_valence" data-percentile="([0-9.]+)"', text))
    assert vp in ([25.0, 75.0], [50.0, 50.0])


def test_hostile_text_is_escaped_only(study):
    out = study["out"]
    pages = [out / "studies" / f"{s}.html" for s in STIMULI] + [out / "studies" / "index.html"]
    for page in pages:
        text = page.read_text()
        for evil in (EVIL_VALUE, EVIL_RESPONDENT, EVIL_ATTRIBUTE):
            assert evil not in text, (page.name, evil)
    a = (out / "studies" / "ad_A.html").read_text()
    assert html.escape(EVIL_VALUE, quote=False) in a  # in the respondents table
    assert html.escape(EVIL_RESPONDENT, quote=False) in a
    assert html.escape(EVIL_ATTRIBUTE, quote=False) in a  # table header and segment selector
    d = _data(out / "studies" / "ad_A.html", "study-data")
    values = {v["value"] for g in d["segments"] for v in g["values"]}
    assert EVIL_VALUE in values  # the JSON holds the text itself; the page script escapes it for the chart
    assert EVIL_RESPONDENT in d["heatmap"]["respondents"]
    assert "\\u003cscript\\u003e" in a and "</script>alert" not in a


def test_segments_match_the_segments_table(study):
    out = study["out"]
    seg = _table(out, "segments", "ad_A")
    d = _data(out / "studies" / "ad_A.html", "study-data")
    assert [g["attribute"] for g in d["segments"]] == ["group", EVIL_ATTRIBUTE]
    group = d["segments"][0]
    assert {v["value"]: v["n"] for v in group["values"]} == {"control": 2, EVIL_VALUE: 2}  # r5 (control) has no face
    for v in group["values"]:
        rows = seg.loc[(seg["attribute"] == "group") & (seg["value"] == v["value"])].sort_values("second")
        _same(v["valence"]["mean"], rows["valence"])
        _same(v["valence"]["low"], rows["valence_ci_low"])
        assert v["respondents"] == rows["respondents"].tolist()


def test_method_section_states_the_settings(study):
    out, cfg = study["out"], study["cfg"]
    text = re.sub(r"\s+", " ", (out / "studies" / "ad_A.html").read_text())
    assert "stimulus_second = floor(t − offset_s)" in text
    assert "offset_s ≤ t &lt; offset_s + duration_s" in text
    assert f"{cfg.bootstrap:,} resamples" in text and f"seed {cfg.seed}" in text
    assert "resting is their mean" in text and "delta_valence" in text
    assert f"σ = {cfg.smoothing_s:.2f} s" in text if cfg.smoothing_s > 0 else "No temporal smoothing" in text
    idx = re.sub(r"\s+", " ", (out / "studies" / "index.html").read_text())
    assert f"{cfg.permutations:,} times" in idx and "Percentile of a stimulus" in idx


def test_one_stimulus_page_still_indexes_all(study, tmp_path):
    from fer_pipeline.report.study import render_studies

    out = study["out"]
    written = render_studies(out, study["cfg"], stimuli=["spot-B.v2"])
    assert [p.name for p in written] == ["spot-B.v2.html", "index.html"]
    d = _data(out / "studies" / "index.html", "studies-data")
    assert [s["id"] for s in d["stimuli"]] == list(STIMULI)
    with pytest.raises(ValueError, match="no_such"):
        render_studies(out, study["cfg"], stimuli=["no_such"])
    with pytest.raises(FileNotFoundError):
        render_studies(tmp_path)


# --------------------------------------------------------------------------------------------------------------------
# Pure builders on small hand-made tables
# --------------------------------------------------------------------------------------------------------------------


def test_smile_rises_hand_table():
    from fer_pipeline.report.study import smile_rises

    t = pd.DataFrame({"second": range(6), "respondents": [2, 2, 0, 2, 2, 2],
                      "share_happy": [0.0, 0.5, np.nan, 0.0, 1.0, 0.5]})
    r = smile_rises(t)
    # 1: +0.5 (over 0); 3 follows a second without respondents; 4: +1.0; 5 falls
    assert [(m["second"], m["rise"]) for m in r] == [(4, 1.0), (1, 0.5)]
    assert smile_rises(t.drop(columns="share_happy")) == []


def test_page_names_never_take_the_index():
    from fer_pipeline.report.study import page_names

    names = page_names(["index", "Index", "ad.1", "ad_1"])
    assert "index.html" not in {n.lower() for n in names.values()}
    assert len({n.lower() for n in names.values()}) == 4


def test_norms_and_pair_cap():
    from fer_pipeline.config import StudyConfig
    from fer_pipeline.report.study import pair_comparisons, study_headlines, study_norms

    rng = np.random.default_rng(0)
    rows = []
    for k in range(12):
        for r in range(3 + k):
            rows.append({"stimulus": f"s{k:02d}", "respondent": f"p{r}", "row": len(rows) + 1, "status": "ok",
                         "mean_valence": float(rng.normal(k / 20, 0.1)), "mean_expressiveness": 0.5,
                         "mean_attention": float(rng.uniform()), "smiled": bool(rng.uniform() < 0.5)})
    resp = pd.DataFrame(rows)
    resp["smiled"] = resp["smiled"].astype("boolean")
    cfg = StudyConfig(permutations=200, bootstrap=100)
    stimuli = sorted(resp["stimulus"].unique())
    heads = study_headlines(resp, stimuli, cfg)
    norms = study_norms(heads)
    assert heads["s00"]["low_confidence"] and not heads["s11"]["low_confidence"]
    for s in stimuli:
        for n in norms[s].values():
            assert 0 <= n["percentile"] <= 100 and n["stimuli"] == 12
    assert norms["s00"]["mean_expressiveness"]["percentile"] == 50.0  # all equal
    assert norms["s00"]["mean_valence"]["respondents"] == len(resp)
    pairs = pair_comparisons(resp, stimuli, cfg)
    assert pairs["total"] == 66 and pairs["shown"] == 45 and len(pairs["stimuli"]) == 10
    assert "s00" not in pairs["stimuli"] and "s01" not in pairs["stimuli"]  # the two smallest are left out
    assert all(0 < f["p"] <= 1 for p in pairs["pairs"] for f in p["figures"].values())


def test_eight_label_study_renders(tmp_path):
    """A model with contempt: labels come from the tables, the page renders and the shares cover all 8."""
    from fer_pipeline.config import StudyConfig
    from fer_pipeline.report.study import render_studies
    from fer_pipeline.study.manifest import Manifest, ManifestRow
    from fer_pipeline.study.store import write_study
    from fer_pipeline.study.tables import build_study

    labels = ["neutral", "happy", "surprise", "sad", "angry", "disgust", "fear", "contempt"]
    rng = np.random.default_rng(1)
    faces = {}
    for k in range(3):
        t = np.arange(0, 8, 0.2)
        p = rng.dirichlet(np.ones(8), len(t))
        faces[f"v{k}"] = pd.DataFrame({"track_id": 1, "viewer_id": 1, "timestamp_s": t, "attentive": True,
                                       **{f"p_{x}": p[:, i] for i, x in enumerate(labels)}})
    videos = pd.DataFrame({"video_id": list(faces), "path": [f"/rec/v{k}.mp4" for k in range(3)],
                           "status": "ok", "error": None, "duration_s": 8.0})
    manifest = Manifest([ManifestRow(k + 2, f"v{k}.mp4", "eight", 1.0, None, f"p{k}", {"g": "x" if k else "y"})
                         for k in range(3)], [], ["g"], "m.csv")
    cfg = StudyConfig(bootstrap=100, permutations=100)
    tables = build_study(manifest, videos, lambda v: faces[v], labels, cfg)
    write_study(tmp_path, tables, manifest)
    written = render_studies(tmp_path, cfg)
    d = _data(written[0], "study-data")
    assert d["labels"] == labels and len(d["shares"]) == 8
    text = written[0].read_text()
    valence_note = re.search(r"<dt>Valence</dt>(.*?)</dd>", text, re.DOTALL).group(1)
    assert "p(contempt)" in valence_note.split("not counted")[0]  # contempt counts as negative (issue #18)
    assert "surprise not counted" in re.sub(r"\s+", " ", valence_note)
    idx = _data(written[-1], "studies-data")
    assert idx["pairs"] == [] and [s["id"] for s in idx["stimuli"]] == ["eight"]
