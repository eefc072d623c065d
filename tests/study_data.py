"""The study folder the study-page tests share, and the 10 fps clip the study tests build respondents from.

Four respondents are made from WolfgangLanger_Pexels.mp4 (10 fps) behind grey lead-ins of different lengths, one of
them played backwards so the respondents differ; a fifth recording has no face, a sixth is never analysed. The
manifest has two stimuli (different windows of the recordings) and two attributes, one with a hostile value and one
with a hostile name; one respondent id is hostile too. :func:`study_folder` builds it once per session.
"""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
from conftest import VIDEOS, write_video

EVIL_VALUE = "<script>alert(1)</script>"
EVIL_RESPONDENT = "<img src=x onerror=alert(1)>"
EVIL_ATTRIBUTE = "<svg onload=alert(2)>"
STIMULI = ("ad_A", "spot-B.v2")
LEADS = {"r1": 1.0, "r2": 2.5, "r3": 4.0, "r4": 0.5}
# (stimulus, offset after the lead-in, duration): two windows of the clip
WINDOWS = (("ad_A", 0.0, 12.0), ("spot-B.v2", 6.0, 10.0))
GROUPS = {"r1": "control", "r2": "control", "r3": EVIL_VALUE, "r4": EVIL_VALUE, "r5": "control"}
PANEL = {"r1": "a", "r2": "b", "r3": "a", "r4": "b", "r5": "a"}
RESPONDENT_IDS = {"r3": EVIL_RESPONDENT}


def clip_10fps() -> np.ndarray:
    """WolfgangLanger_Pexels.mp4 resampled to 10 fps (nearest earlier frame), ``(N, H, W, 3)`` uint8."""
    import av

    frames = []
    with av.open(str(VIDEOS / "WolfgangLanger_Pexels.mp4")) as c:
        s = c.streams.video[0]
        nxt = 0.0
        for f in c.decode(s):
            if float(f.pts * s.time_base) + 1e-6 >= nxt:
                frames.append(f.to_ndarray(format="rgb24"))
                nxt += 0.1
    return np.stack(frames)


def _build(base: Path) -> dict:
    from fer_pipeline.config import PipelineConfig, StudyConfig
    from fer_pipeline.models import Models
    from fer_pipeline.pipeline import analyze_video
    from fer_pipeline.report import render_all
    from fer_pipeline.study.manifest import load_manifest
    from fer_pipeline.study.run import run_study

    rec = base / "recordings"
    rec.mkdir(parents=True)
    clip = clip_10fps()
    grey = np.full((1,) + clip.shape[1:], 90, np.uint8)
    for name, lead in LEADS.items():
        body = clip[::-1] if name == "r4" else clip
        write_video(rec / f"{name}.mp4", np.concatenate([np.repeat(grey, round(lead * 10), 0), body]), fps=10)
    write_video(rec / "r5.mp4", np.repeat(grey, 30, 0), fps=10)  # no face at all
    write_video(rec / "r6.mp4", np.repeat(grey, 10, 0), fps=10)  # listed, never analysed
    out = base / "out"
    cfg = PipelineConfig()
    models = Models.load(cfg)
    for name in ("r1", "r2", "r3", "r4", "r5"):
        r = analyze_video(str(rec / f"{name}.mp4"), str(out), cfg, models=models)
        assert r["status"] == "ok", r
    render_all(out)  # per-video reports, linked from the study pages

    manifest = base / "study.csv"
    with manifest.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["recording", "stimulus", "offset_s", "duration_s", "respondent", "group", EVIL_ATTRIBUTE])
        for stim, start, dur in WINDOWS:
            for name, lead in LEADS.items():
                w.writerow([f"{name}.mp4", stim, f"{lead + start:.1f}", f"{dur:g}", RESPONDENT_IDS.get(name, name),
                            GROUPS[name], PANEL[name]])
        w.writerow(["r5.mp4", "ad_A", "0", "12", "r5", GROUPS["r5"], PANEL["r5"]])
        w.writerow(["r6.mp4", "ad_A", "0", "12", "r6", "control", "a"])
    study_cfg = StudyConfig(baseline="resting")
    tables = run_study(out, load_manifest(manifest, rec), study_cfg)
    shutil.rmtree(rec)  # the pages come from the Parquet tables (and saved thumbnails) alone
    return {"out": out, "cfg": study_cfg, "errors": tables.errors}


def study_folder(tmp_path_factory) -> dict:
    """The analysed study folder, built once per session under pytest's base temp folder and reused."""
    base = tmp_path_factory.getbasetemp() / "study-pages"
    done = base / "done.json"
    if not done.is_file():
        if base.exists():
            shutil.rmtree(base)
        info = _build(base)
        done.write_text(json.dumps({"errors": info["errors"], "cfg": info["cfg"].model_dump()}))
    from fer_pipeline.config import StudyConfig

    meta = json.loads(done.read_text())
    return {"out": base / "out", "cfg": StudyConfig(**meta["cfg"]), "errors": meta["errors"]}
