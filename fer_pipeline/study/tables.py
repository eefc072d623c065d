"""The study tables: per stimulus second over respondents, per respondent, per segment; and the headline figures.

Tables (pandas; :mod:`fer_pipeline.study.store` writes them as Parquet partitioned by ``stimulus``):

* ``stimulus``: one row per stimulus and stimulus second ``0 .. ceil(duration) - 1``: ``second``, ``respondents``
  (respondents with a face in that second), ``p_<label>`` (mean over those respondents of their per-second mean),
  ``share_<label>`` (share of them whose dominant emotion is the label), ``valence``, ``expressiveness``,
  ``attention`` (share facing the camera), ``delta_valence`` / ``delta_expressiveness`` (minus each respondent's
  baseline; NaN without one), and for each of these ``<metric>_ci_low`` / ``<metric>_ci_high``: the percentile
  bootstrap interval over respondents (``study.bootstrap`` resamples, seeded; NaN with fewer than 2 respondents).
* ``respondents``: one row per manifest row (respondent and stimulus): the manifest columns, ``video_id``,
  ``status`` (``ok``, ``no_face``, ``failed``: the recording failed, ``missing``: not analysed), ``error``,
  ``viewer_id``, ``seconds``, ``seconds_with_face``, ``mean_valence``, ``mean_expressiveness``, ``mean_attention``,
  ``smiled`` (happy dominant in at least one second), ``peak_second`` / ``peak_valence`` (their highest valence
  second), ``baseline`` (method), ``baseline_valence``, ``baseline_expressiveness``.
* ``segments``: the ``stimulus`` figures per respondent attribute value (``attribute``, ``value``, then the same
  columns), with the respondent count behind each second.
* ``respondent_seconds``: one row per respondent and stimulus second with a face (``respondent``, ``video_id``,
  ``second``, ``n_samples``, ``p_<label>``, ``emotion``, ``valence``, ``expressiveness``, ``attention``,
  ``delta_valence``, ``delta_expressiveness``): the data behind the heatmap, and what analysts resample themselves.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fer_pipeline.aggregate import prob_columns
from fer_pipeline.config import StudyConfig
from fer_pipeline.study.baseline import baseline_figures, baseline_probs
from fer_pipeline.study.manifest import Manifest, ManifestRow, check_offsets, row_label
from fer_pipeline.study.stats import bootstrap_weights, mean_ci, per_second_ci
from fer_pipeline.study.timing import respondent_seconds

SMILE = "happy"
RESPONDENT_FIGURES = ("mean_valence", "mean_expressiveness", "mean_attention", "smiled")
"""Per-respondent figures the headline, the A/B test and the norms are computed from."""


def metrics(labels) -> list[str]:
    """The per-second figures of the ``stimulus`` and ``segments`` tables, in column order."""
    return [*prob_columns(labels), *[f"share_{lab}" for lab in labels], "valence", "expressiveness", "attention",
            "delta_valence", "delta_expressiveness"]


def stimulus_columns(labels) -> list[str]:
    """Columns of the ``stimulus`` table (without the ``stimulus`` partition column)."""
    cols = ["second", "respondents"]
    for m in metrics(labels):
        cols += [m, f"{m}_ci_low", f"{m}_ci_high"]
    return cols


@dataclass
class StudyTables:
    """Everything one study run computes (pandas frames; ``stimulus`` is a column of each)."""

    labels: list[str]
    stimulus: pd.DataFrame
    respondents: pd.DataFrame
    segments: pd.DataFrame
    respondent_seconds: pd.DataFrame
    durations: dict[str, float]
    attributes: list[str]
    errors: list[str] = field(default_factory=list)

    def respondents_with_face(self, stimulus: str) -> int:
        """How many of the stimulus' respondents (manifest rows) had a face in its window (status ``ok``)."""
        r = self.respondents
        return int(((r["stimulus"] == stimulus) & (r["status"] == "ok")).sum()) if len(r) else 0


def match_recordings(manifest: Manifest, videos: pd.DataFrame,
                     known: dict[str, str] | None = None) -> dict[int, str]:
    """Which analysed video each manifest row is: ``{row: video_id}``.

    Rows with a resolved ``path`` match the ``videos`` row of the same file (``known`` maps resolved paths to
    video ids, e.g. from the run that just analysed them); others match the videos whose stored ``path`` ends with the
    row's ``recording`` path components. Several candidates (the file was edited and re-analysed): the newest
    ``created_at`` wins. Rows without a match are absent from the result.
    """
    out: dict[int, str] = {}
    if videos.empty and not known:
        return out
    vids = videos.copy() if not videos.empty else pd.DataFrame(columns=["video_id", "path", "created_at"])
    if "created_at" in vids.columns:
        vids = vids.sort_values("created_at", kind="stable", na_position="first")
    resolved = {}
    for vid, p in zip(vids["video_id"], vids["path"].astype(str)):
        try:
            resolved[str(Path(p).resolve())] = vid
        except OSError:
            continue
    for r in manifest.rows:
        if r.path is not None:
            key = str(r.path.resolve())
            if known and key in known:
                out[r.row] = known[key]
                continue
            if key in resolved:
                out[r.row] = resolved[key]
                continue
        want = Path(r.recording).parts
        hits = [vid for vid, p in zip(vids["video_id"], vids["path"].astype(str))
                if Path(p).parts[-len(want):] == want]
        if hits:
            out[r.row] = hits[-1]
    return out


def _stimulus_durations(rows: list[ManifestRow], rec_durations: dict[int, float]) -> dict[str, float]:
    """Stimulus length: the largest ``duration_s`` given for it, else the shortest ``recording end - offset``."""
    out: dict[str, float] = {}
    for stim in dict.fromkeys(r.stimulus for r in rows):
        mine = [r for r in rows if r.stimulus == stim]
        given = [r.duration_s for r in mine if r.duration_s is not None]
        if given:
            out[stim] = float(max(given))
            continue
        ends = [rec_durations[r.row] - r.offset_s for r in mine
                if rec_durations.get(r.row) is not None and math.isfinite(rec_durations[r.row])]
        out[stim] = float(min(ends)) if ends else float("nan")
    return out


def build_study(manifest: Manifest, videos: pd.DataFrame, faces_of: Callable[[str], pd.DataFrame], labels,
                cfg: StudyConfig | None = None, known: dict[str, str] | None = None) -> StudyTables:
    """Compute the study tables from the analysed recordings.

    Args:
        manifest: the checked manifest (:func:`fer_pipeline.study.manifest.load_manifest`).
        videos: the ``videos`` table (``video_id``, ``path``, ``status``, ``error``, ``duration_s``).
        faces_of: ``video_id -> faces rows`` (called once per video).
        labels: the emotion model's labels (``p_<label>`` columns of the faces).
        cfg: the study settings (defaults: :class:`fer_pipeline.config.StudyConfig`).
        known: resolved recording path -> video id of this run (see :func:`match_recordings`).

    Returns:
        :class:`StudyTables`; ``errors`` holds the manifest's errors plus one line per row whose recording was not
        analysed or whose offset lies beyond its end.
    """
    cfg = cfg or StudyConfig()
    labels = list(labels)
    match = match_recordings(manifest, videos, known)
    by_id = videos.set_index("video_id") if not videos.empty else pd.DataFrame()
    rec_durations = {}
    for r in manifest.rows:
        vid = match.get(r.row)
        if vid is not None and vid in by_id.index:
            d = by_id.loc[vid, "duration_s"]
            rec_durations[r.row] = float(d) if d is not None and pd.notna(d) else None
    checked = check_offsets(manifest, rec_durations)
    errors = list(checked.errors)
    durations = _stimulus_durations(checked.rows, rec_durations)
    cache: dict[str, pd.DataFrame] = {}
    resp_rows, second_frames = [], []
    for r in checked.rows:
        vid = match.get(r.row)
        base = {"respondent": r.respondent, "stimulus": r.stimulus, "recording": r.recording, "row": r.row,
                "offset_s": r.offset_s, "duration_s": r.duration_s if r.duration_s is not None
                else durations.get(r.stimulus), **r.attributes, "video_id": vid, "baseline": cfg.baseline}
        if vid is None:
            errors.append(f"{row_label(manifest.source, r.row)}: recording {r.recording} has not been analysed into "
                          "this output folder")
            resp_rows.append({**base, "status": "missing", "error": "not analysed"})
            continue
        status = by_id.loc[vid, "status"] if vid in by_id.index else None
        if status == "failed":
            resp_rows.append({**base, "status": "failed", "error": by_id.loc[vid, "error"]})
            continue
        dur = r.duration_s if r.duration_s is not None else durations.get(r.stimulus, float("nan"))
        if vid not in cache:
            cache[vid] = faces_of(vid)
        faces = cache[vid]
        if not math.isfinite(dur) or dur <= 0:
            resp_rows.append({**base, "status": "no_face", "error": "stimulus window is empty"})
            continue
        secs, samples, viewer = respondent_seconds(faces, labels, r.offset_s, dur, cfg.smoothing_s)
        secs = secs.loc[secs["stimulus_second"] < math.ceil(durations[r.stimulus])]
        bprobs = baseline_probs(samples, labels, cfg.baseline, r.offset_s, cfg.resting_share)
        b_val, b_expr = baseline_figures(bprobs, labels)
        row = {**base, "status": "ok" if len(secs) else "no_face", "error": None,
               "viewer_id": viewer, "seconds": int(math.ceil(dur)), "seconds_with_face": int(len(secs)),
               "baseline_valence": b_val, "baseline_expressiveness": b_expr}
        if len(secs):
            peak = secs.loc[secs["valence"].idxmax()]
            row.update(mean_valence=float(secs["valence"].mean()),
                       mean_expressiveness=float(secs["expressiveness"].mean()),
                       mean_attention=float(secs["attention"].mean()) if secs["attention"].notna().any()
                       else float("nan"),
                       smiled=bool((secs["emotion"] == SMILE).any()), peak_second=int(peak["stimulus_second"]),
                       peak_valence=float(peak["valence"]))
            s = secs.rename(columns={"stimulus_second": "second"})
            s.insert(0, "video_id", vid)
            s.insert(0, "respondent", r.respondent)
            s.insert(0, "row", r.row)
            s.insert(0, "stimulus", r.stimulus)
            s["delta_valence"] = s["valence"] - b_val
            s["delta_expressiveness"] = s["expressiveness"] - b_expr
            second_frames.append(s)
        resp_rows.append(row)
    respondents = _respondents_frame(resp_rows, checked.attributes)
    rs_cols = ["stimulus", "row", "respondent", "video_id", "second", "n_samples", *prob_columns(labels), "emotion",
               "valence", "expressiveness", "attention", "delta_valence", "delta_expressiveness"]
    rsec = (pd.concat(second_frames, ignore_index=True)[rs_cols] if second_frames
            else pd.DataFrame({c: pd.Series(dtype=object if c in ("stimulus", "respondent", "video_id", "emotion")
                                            else np.float64) for c in rs_cols}))
    stim_frames, seg_frames = [], []
    for stim, dur in durations.items():
        n_sec = int(math.ceil(dur)) if math.isfinite(dur) and dur > 0 else 0
        mine = rsec.loc[rsec["stimulus"] == stim]
        table = aggregate_seconds(mine, labels, n_sec, cfg)
        table.insert(0, "stimulus", stim)
        stim_frames.append(table)
        rows_here = respondents.loc[(respondents["stimulus"] == stim) & (respondents["status"] == "ok")]
        for attr in checked.attributes:
            for value in sorted(v for v in rows_here[attr].astype(str).unique() if v != ""):
                keep = set(rows_here.loc[rows_here[attr].astype(str) == value, "row"])
                seg = aggregate_seconds(mine.loc[mine["row"].isin(keep)], labels, n_sec, cfg)
                seg.insert(0, "value", value)
                seg.insert(0, "attribute", attr)
                seg.insert(0, "stimulus", stim)
                seg_frames.append(seg)
    stimulus = (pd.concat(stim_frames, ignore_index=True) if stim_frames
                else pd.DataFrame(columns=["stimulus", *stimulus_columns(labels)]))
    segments = (pd.concat(seg_frames, ignore_index=True) if seg_frames
                else pd.DataFrame(columns=["stimulus", "attribute", "value", *stimulus_columns(labels)]))
    return StudyTables(labels, stimulus, respondents, segments, rsec, durations, list(checked.attributes), errors)


def _respondents_frame(rows: list[dict], attributes: list[str]) -> pd.DataFrame:
    cols = ["stimulus", "respondent", "row", "recording", "offset_s", "duration_s", *attributes, "video_id",
            "status", "error", "viewer_id", "seconds", "seconds_with_face", "mean_valence", "mean_expressiveness",
            "mean_attention", "smiled", "peak_second", "peak_valence", "baseline", "baseline_valence",
            "baseline_expressiveness"]
    df = pd.DataFrame(rows).reindex(columns=cols)
    for c in ("viewer_id", "seconds", "seconds_with_face", "peak_second"):
        df[c] = pd.to_numeric(df[c], errors="coerce").astype("Int64")
    for c in ("offset_s", "duration_s", "mean_valence", "mean_expressiveness", "mean_attention", "peak_valence",
              "baseline_valence", "baseline_expressiveness"):
        df[c] = pd.to_numeric(df[c], errors="coerce").astype(np.float64)
    df["smiled"] = df["smiled"].astype("boolean")
    df["row"] = df["row"].astype(np.int64)
    for c in ("stimulus", "respondent", "recording", "video_id", "status", "error", "baseline", *attributes):
        df[c] = df[c].astype(object).where(df[c].notna(), None)
    return df


def aggregate_seconds(rsec: pd.DataFrame, labels, n_seconds: int, cfg: StudyConfig) -> pd.DataFrame:
    """The per-second figures over a set of respondents, with bootstrap intervals.

    Args:
        rsec: ``respondent_seconds`` rows of one stimulus (any subset of its respondents; ``row`` identifies a
            respondent).
        labels: model labels.
        n_seconds: stimulus seconds; the result has one row for each of ``0 .. n_seconds - 1`` (plus any later
            second present in ``rsec``).
        cfg: ``bootstrap``, ``confidence`` and ``seed``.

    Returns:
        The :func:`stimulus_columns` table; seconds without respondents have ``respondents = 0`` and NaN figures.
    """
    ms = metrics(labels)
    n_sec = max(n_seconds, int(rsec["second"].max()) + 1 if len(rsec) else 0)
    respondents = list(dict.fromkeys(rsec["row"].tolist())) if len(rsec) else []
    weights = bootstrap_weights(len(respondents), cfg.bootstrap, cfg.seed)
    ridx = {r: i for i, r in enumerate(respondents)}
    ri = np.array([ridx[r] for r in rsec["row"]], np.int64) if len(rsec) else np.empty(0, np.int64)
    si = rsec["second"].to_numpy(np.int64) if len(rsec) else np.empty(0, np.int64)
    out = {"second": np.arange(n_sec, dtype=np.int64)}
    count = np.zeros(n_sec, np.int64)
    for m in ms:
        grid = np.full((len(respondents), n_sec), np.nan)
        if m.startswith("share_"):
            vals = (rsec["emotion"].astype(object) == m[len("share_"):]).to_numpy(np.float64)
        else:
            vals = rsec[m].to_numpy(np.float64) if len(rsec) else np.empty(0)
        grid[ri, si] = vals
        mean, low, high, n = per_second_ci(grid, weights, cfg.confidence)
        if m == ms[0]:
            count = n
        out[m], out[f"{m}_ci_low"], out[f"{m}_ci_high"] = mean, low, high
    out["respondents"] = count
    return pd.DataFrame(out)[stimulus_columns(labels)]


def headline(respondents: pd.DataFrame, stimulus: str, cfg: StudyConfig | None = None) -> dict:
    """Headline figures of one stimulus over its respondents (status ``ok``), each with its bootstrap interval.

    Returns:
        ``{"stimulus", "respondents": int, "<figure>": {"mean", "low", "high", "n"}}`` for each of
        :data:`RESPONDENT_FIGURES` (``smiled`` is the share who smiled at least once, in [0, 1]).
    """
    cfg = cfg or StudyConfig()
    mine = respondents.loc[(respondents["stimulus"] == stimulus) & (respondents["status"] == "ok")]
    out: dict = {"stimulus": stimulus, "respondents": int(len(mine))}
    for fig in RESPONDENT_FIGURES:
        v = pd.to_numeric(mine[fig].astype("Float64"), errors="coerce").to_numpy(np.float64, na_value=np.nan)
        m, lo, hi, n = mean_ci(v, cfg.bootstrap, cfg.confidence, cfg.seed)
        out[fig] = {"mean": m, "low": lo, "high": hi, "n": n}
    return out


def respondent_values(respondents: pd.DataFrame, stimulus: str, figure: str) -> np.ndarray:
    """One figure of :data:`RESPONDENT_FIGURES` per ``ok`` respondent of a stimulus, float64 (NaN = unknown)."""
    mine = respondents.loc[(respondents["stimulus"] == stimulus) & (respondents["status"] == "ok"), figure]
    return pd.to_numeric(mine.astype("Float64"), errors="coerce").to_numpy(np.float64, na_value=np.nan)
