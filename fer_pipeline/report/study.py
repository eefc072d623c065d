"""Study pages: one page per stimulus (respondents aligned on stimulus time) and an index comparing the stimuli.

Reads only the study tables of an output folder (``stimulus``, ``respondents``, ``segments``,
``respondent_seconds``; :mod:`fer_pipeline.study.tables` defines them) and the viewer thumbnails the pipeline saved,
so the pages can be rendered again long after the study was computed. Layout of what is written::

    OUT/studies/<stimulus>.html     one page per stimulus: traces with intervals, key moments, heatmap, segments
    OUT/studies/index.html          every stimulus of OUT: headlines, overlaid traces, pairwise tests, norms
    OUT/studies/plotly.min.js       plotly.js, copied once

Like the video reports the pages make no network request (plotly.js is a relative ``<script src>``, the data inline
JSON, thumbnails relative paths) and every text that comes from a manifest (respondent ids, attribute names and
values) is escaped, in the HTML by Jinja2's autoescape, inside the charts by the page script.

The context builders here are pure (frames in, plain values out); :func:`render_studies` does the reading and
writing. Conventions as in :mod:`fer_pipeline.metrics`: ``second`` is the integer start of the window
``[second, second + 1)`` of stimulus time; probabilities and shares are fractions in [0, 1]; valence in [-1, 1];
figures that cannot be computed are ``None``.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fer_pipeline import metrics
from fer_pipeline.aggregate import NEGATIVE, PROB_PREFIX, SHARE_PREFIX, emotion_labels
from fer_pipeline.config import StudyConfig
from fer_pipeline.fileutil import atomic_write_text
from fer_pipeline.report.context import _clean, _now, contiguous_ranges, label_colors
from fer_pipeline.report.html import (
    PLOTLY_JS_NAME,
    ensure_plotly_js,
    json_for_script,
    relative_ref,
    render_template,
    safe_filename,
)
from fer_pipeline.study.stats import (
    MIN_RESPONDENTS_FOR_CI,
    percentile_rank,
    permutation_test,
)
from fer_pipeline.study.store import read_study_table
from fer_pipeline.study.tables import RESPONDENT_FIGURES, headline, respondent_values

logger = logging.getLogger(__name__)

STUDIES_DIR = "studies"
"""Folder of the study pages under the output folder."""
INDEX_NAME = "index.html"
"""File name of the studies index (a stimulus whose id would take it gets another name)."""
MAX_RESPONDENT_ROWS = 200
"""At most this many respondents are drawn in the heatmap and listed in the per-respondent table of a page."""
MAX_PAIRS = 45
"""At most this many pairs of stimuli are tested (the pairs of the 10 stimuli with the most respondents)."""
MAX_OVERLAY = 24
"""At most this many stimuli (those with the most respondents) are drawn in the index's overlay chart."""
MAX_SEGMENT_VALUES = 12
"""At most this many values of one attribute (those with the most respondents) are drawn as segment traces."""
LOW_CONFIDENCE_RESPONDENTS = 5
"""A headline over fewer respondents than this is marked low-confidence."""
SMILE_RISES_K = 3
"""How many "smiles rise fastest" seconds a page shows."""
MOMENT_FACES = 3
"""Respondents shown (with their thumbnail) at each key moment."""

COMPARED = ("mean_valence", "smiled", "mean_attention")
"""Per-respondent figures compared between pairs of stimuli (permutation test)."""
FIGURE_TITLES = {"mean_valence": "Mean valence", "mean_expressiveness": "Expressiveness",
                 "mean_attention": "Attention", "smiled": "Smiled at least once"}
TRACE_TITLES = {"valence": "Valence", "expressiveness": "Expressiveness", "attention": "Attention",
                "delta_valence": "Valence minus baseline", "delta_expressiveness": "Expressiveness minus baseline"}
_TRACE_METRICS = ("valence", "expressiveness", "attention", "delta_valence", "delta_expressiveness")
_FIXED_RESPONDENT_COLUMNS = frozenset((
    "stimulus", "respondent", "row", "recording", "offset_s", "duration_s", "video_id", "status", "error",
    "viewer_id", "seconds", "seconds_with_face", "mean_valence", "mean_expressiveness", "mean_attention", "smiled",
    "peak_second", "peak_valence", "baseline", "baseline_valence", "baseline_expressiveness"))
_STATUS_ORDER = {"ok": 0, "no_face": 1, "failed": 2, "missing": 3}
_STIMULUS_COLORS = ("#2f5bd3", "#e07b39", "#1f8a5b", "#c8424f", "#8e6cc2", "#1fa39a", "#b8860b", "#c56aa6",
                    "#4a5468", "#7a8b3a")


# --------------------------------------------------------------------------------------------------------------------
# The tables
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class StudyData:
    """The four study tables of an output folder, as :func:`fer_pipeline.study.store.read_study_table` returns them
    (``stimulus`` the first column of each; empty frames for a missing table), and the model labels."""

    stimulus: pd.DataFrame
    respondents: pd.DataFrame
    segments: pd.DataFrame
    respondent_seconds: pd.DataFrame
    labels: list[str]

    @property
    def stimuli(self) -> list[str]:
        """Every stimulus id of the ``stimulus`` and ``respondents`` tables, sorted (a stimulus whose window turned
        out empty has respondents but no per-second row)."""
        ids: set[str] = set()
        for df in (self.stimulus, self.respondents):
            if not df.empty and "stimulus" in df.columns:
                ids |= {str(s) for s in df["stimulus"]}
        return sorted(ids)

    def of(self, table: str, stimulus: str) -> pd.DataFrame:
        """The rows of one table for one stimulus (sorted by ``second`` for the per-second tables)."""
        df = getattr(self, table)
        if df.empty or "stimulus" not in df.columns:
            return df
        out = df.loc[df["stimulus"].astype(str) == stimulus]
        if table == "stimulus":
            out = out.sort_values("second", kind="stable")
        return out.reset_index(drop=True)


def study_labels(stimulus: pd.DataFrame, respondent_seconds: pd.DataFrame | None = None) -> list[str]:
    """The model's labels of a study: the ``p_<label>`` columns of ``respondent_seconds`` when it has rows, else
    those of the ``stimulus`` table without its interval columns (``p_<label>_ci_low`` / ``_ci_high``)."""
    if respondent_seconds is not None and len(respondent_seconds.columns):
        found = emotion_labels(respondent_seconds.columns)
        if found:
            return found
    return [x for x in emotion_labels(stimulus.columns) if not x.endswith(("_ci_low", "_ci_high"))]


def load_study_data(out_dir: str | Path) -> StudyData:
    """Read the four study tables of ``out_dir``.

    Raises:
        DamagedOutputError: a Parquet part cannot be read.
    """
    out_dir = Path(out_dir)
    tables = {t: read_study_table(out_dir, t) for t in ("stimulus", "respondents", "segments", "respondent_seconds")}
    for name, df in tables.items():
        if "stimulus" in df.columns:
            tables[name] = df.assign(stimulus=df["stimulus"].astype(str))
    return StudyData(tables["stimulus"], tables["respondents"], tables["segments"], tables["respondent_seconds"],
                     study_labels(tables["stimulus"], tables["respondent_seconds"]))


# --------------------------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------------------------


def _series(frame: pd.DataFrame, column: str, digits: int = 4) -> list[float | None]:
    """A column as a JSON-ready list, rounded; ``None`` for NaN and for a missing column."""
    if column not in frame.columns:
        return [None] * len(frame)
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(np.float64, na_value=np.nan)
    return [None if math.isnan(v) else round(float(v), digits) for v in values]


def _band(frame: pd.DataFrame, metric: str) -> dict[str, list[float | None]]:
    """``{"mean", "low", "high"}`` of one per-second metric and its interval (``<metric>_ci_low/_high``)."""
    return {"mean": _series(frame, metric), "low": _series(frame, f"{metric}_ci_low"),
            "high": _series(frame, f"{metric}_ci_high")}


def _has_values(frame: pd.DataFrame, column: str) -> bool:
    return column in frame.columns and bool(pd.to_numeric(frame[column], errors="coerce").notna().any())


def _float(value: Any) -> float | None:
    v = _clean(value)
    if v is None or isinstance(v, bool):
        return None if v is None else float(v)
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _interval(fig: Mapping[str, Any]) -> dict[str, Any]:
    """A headline figure (``{"mean", "low", "high", "n"}`` of :func:`~fer_pipeline.study.tables.headline`) with NaN
    as ``None``."""
    return {"mean": _float(fig.get("mean")), "low": _float(fig.get("low")), "high": _float(fig.get("high")),
            "n": int(fig.get("n") or 0)}


def audience_frame(stimulus_rows: pd.DataFrame) -> pd.DataFrame:
    """One stimulus' rows of the ``stimulus`` table as an "audience" frame for :mod:`fer_pipeline.metrics`:
    ``respondents`` renamed to ``viewers``, sorted by ``second``, index reset."""
    au = stimulus_rows.rename(columns={"respondents": "viewers"})
    if "second" in au.columns:
        au = au.sort_values("second", kind="stable")
    return au.reset_index(drop=True)


def attribute_columns(respondents: pd.DataFrame) -> list[str]:
    """The respondent attribute columns (manifest extras) of the ``respondents`` table, in column order."""
    return [c for c in respondents.columns if c not in _FIXED_RESPONDENT_COLUMNS]


def stimulus_duration(stimulus_rows: pd.DataFrame, respondent_rows: pd.DataFrame) -> float | None:
    """The stimulus length in seconds: the largest ``duration_s`` of its respondents' rows, else the number of
    stimulus seconds; ``None`` without either."""
    if "duration_s" in respondent_rows.columns:
        d = pd.to_numeric(respondent_rows["duration_s"], errors="coerce").max()
        if pd.notna(d) and d > 0:
            return float(d)
    return float(len(stimulus_rows)) if len(stimulus_rows) else None


def _ok(respondent_rows: pd.DataFrame) -> pd.DataFrame:
    if respondent_rows.empty or "status" not in respondent_rows.columns:
        return respondent_rows.iloc[:0]
    return respondent_rows.loc[respondent_rows["status"].astype(str) == "ok"]


def _respondent_labels(respondent_rows: pd.DataFrame) -> dict[int, str]:
    """``{row: label}``: the respondent id, made unique with its manifest row where two rows share an id."""
    ids = {int(r): str(_clean(i) if _clean(i) is not None else f"row {r}")
           for r, i in zip(respondent_rows["row"], respondent_rows["respondent"])}
    counts: dict[str, int] = {}
    for v in ids.values():
        counts[v] = counts.get(v, 0) + 1
    return {r: (v if counts[v] == 1 else f"{v} (row {r})") for r, v in ids.items()}


# --------------------------------------------------------------------------------------------------------------------
# Figures: headlines, norms, pairwise tests, key moments
# --------------------------------------------------------------------------------------------------------------------


def study_headlines(respondents: pd.DataFrame, stimuli: Sequence[str], cfg: StudyConfig | None = None
                    ) -> dict[str, dict[str, Any]]:
    """:func:`fer_pipeline.study.tables.headline` of each stimulus, NaN as ``None``.

    Returns:
        ``{stimulus: {"respondents": int, "low_confidence": bool, "<figure>": {"mean", "low", "high", "n"}}}`` for
        each figure of :data:`~fer_pipeline.study.tables.RESPONDENT_FIGURES` (means of one value per ``ok``
        respondent; ``smiled`` a share in [0, 1]; bounds: the bootstrap interval, ``None`` under 2 respondents).
        ``low_confidence``: fewer than :data:`LOW_CONFIDENCE_RESPONDENTS` respondents.
    """
    cfg = cfg or StudyConfig()
    out: dict[str, dict[str, Any]] = {}
    for s in stimuli:
        if respondents.empty:
            h: dict[str, Any] = {"respondents": 0, **{f: {"mean": None, "low": None, "high": None, "n": 0}
                                                      for f in RESPONDENT_FIGURES}}
        else:
            raw = headline(respondents, s, cfg)
            h = {"respondents": int(raw["respondents"]), **{f: _interval(raw[f]) for f in RESPONDENT_FIGURES}}
        h["low_confidence"] = h["respondents"] < LOW_CONFIDENCE_RESPONDENTS
        out[s] = h
    return out


def study_norms(headlines: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Each stimulus' percentile among all the stimuli of ``headlines`` (normally every stimulus of the folder).

    Per figure of :data:`~fer_pipeline.study.tables.RESPONDENT_FIGURES`, the population is the stimuli's headline
    means (the stimulus itself included) and the percentile is :func:`fer_pipeline.study.stats.percentile_rank`:
    the share of stimuli below plus half the share equal, times 100.

    Returns:
        ``{stimulus: {figure: {"percentile": float in [0, 100] | None, "stimuli": int, "respondents": int}}}``;
        ``stimuli`` and ``respondents``: the stimuli with a value for that figure and their respondents summed (a
        respondent who watched several stimuli counts once per stimulus).
    """
    out: dict[str, dict[str, dict[str, Any]]] = {s: {} for s in headlines}
    for fig in RESPONDENT_FIGURES:
        values = {s: h[fig]["mean"] for s, h in headlines.items() if h[fig]["mean"] is not None}
        population = np.array(list(values.values()), np.float64)
        resp = int(sum(headlines[s][fig]["n"] for s in values))
        for s in headlines:
            v = values.get(s)
            pct = percentile_rank(v, population) if v is not None else float("nan")
            out[s][fig] = {"percentile": None if math.isnan(pct) else round(pct, 1), "stimuli": len(values),
                           "respondents": resp}
    return out


def pair_comparisons(respondents: pd.DataFrame, stimuli: Sequence[str], cfg: StudyConfig | None = None,
                     max_pairs: int = MAX_PAIRS) -> dict[str, Any]:
    """Every pair of stimuli compared on :data:`COMPARED` with a two-sided permutation test.

    The difference is ``mean(A) - mean(B)`` of one value per ``ok`` respondent
    (:func:`~fer_pipeline.study.tables.respondent_values`); the p-value is that of
    :func:`fer_pipeline.study.stats.permutation_test` with ``cfg.permutations`` relabellings drawn from ``cfg.seed``.
    With more than ``max_pairs`` pairs only those among the stimuli with the most respondents are tested.

    Returns:
        ``{"pairs": [{"a", "b", "figures": {figure: {"a", "b", "diff", "p", "na", "nb"}}}], "stimuli": [ids tested],
        "total": int (all pairs of ``stimuli``), "shown": int}``; ``a``/``b`` in a figure are the two means, ``na`` /
        ``nb`` the respondents with a value, ``diff`` and ``p`` ``None`` when a side has none.
    """
    cfg = cfg or StudyConfig()
    stimuli = list(stimuli)
    total = len(stimuli) * (len(stimuli) - 1) // 2
    chosen = stimuli
    if total > max_pairs:
        k = max(2, int((1 + math.isqrt(1 + 8 * max_pairs)) // 2))
        while k * (k - 1) // 2 > max_pairs and k > 2:
            k -= 1
        size = {s: len(respondent_values(respondents, s, "mean_valence")) if not respondents.empty else 0
                for s in stimuli}
        keep = set(sorted(stimuli, key=lambda s: (-size[s], s))[:k])
        chosen = [s for s in stimuli if s in keep]
    values = {(s, f): (respondent_values(respondents, s, f) if not respondents.empty else np.empty(0))
              for s in chosen for f in COMPARED}
    pairs = []
    for a, b in itertools.combinations(chosen, 2):
        figs = {}
        for f in COMPARED:
            va, vb = values[(a, f)], values[(b, f)]
            va, vb = va[~np.isnan(va)], vb[~np.isnan(vb)]
            diff, p = permutation_test(va, vb, cfg.permutations, cfg.seed)
            figs[f] = {"a": float(va.mean()) if len(va) else None, "b": float(vb.mean()) if len(vb) else None,
                       "diff": None if math.isnan(diff) else diff, "p": None if math.isnan(p) else p,
                       "na": len(va), "nb": len(vb)}
        pairs.append({"a": a, "b": b, "figures": figs})
    return {"pairs": pairs, "stimuli": chosen, "total": total, "shown": len(pairs)}


def smile_rises(stimulus_rows: pd.DataFrame, k: int = SMILE_RISES_K, label: str = metrics.SMILE
                ) -> list[dict[str, Any]]:
    """The seconds where the share of respondents smiling rises fastest.

    The rise of second ``s`` is ``share_<label>[s] - share_<label>[s - 1]`` (the share of respondents whose dominant
    emotion is ``label``), over seconds where both ``s`` and ``s - 1`` have respondents; the ``k`` largest positive
    rises are kept (ties: the earlier second).

    Returns:
        ``[{"second": int, "rise": float, "share": float, "previous": float, "respondents": int}]``, largest rise
        first; empty without a ``share_<label>`` column or without a rise.
    """
    col = SHARE_PREFIX + label
    if col not in stimulus_rows.columns or stimulus_rows.empty:
        return []
    df = stimulus_rows.sort_values("second", kind="stable").set_index("second")
    n = int(df.index.max()) + 1
    df = df.reindex(range(n))
    share = pd.to_numeric(df[col], errors="coerce").to_numpy(np.float64, na_value=np.nan)
    count = pd.to_numeric(df["respondents"], errors="coerce").fillna(0).to_numpy(np.float64)
    share = np.where(count > 0, share, np.nan)
    out = []
    for s in range(1, n):
        if np.isnan(share[s]) or np.isnan(share[s - 1]):
            continue
        rise = share[s] - share[s - 1]
        if rise > 1e-12:
            out.append({"second": s, "rise": float(rise), "share": float(share[s]), "previous": float(share[s - 1]),
                        "respondents": int(count[s])})
    out.sort(key=lambda m: (-m["rise"], m["second"]))
    return out[:k]


def moment_faces(rsec_rows: pd.DataFrame, second: int, highest: bool = True, k: int = MOMENT_FACES,
                 faces: Mapping[int, str] | None = None, names: Mapping[int, str] | None = None
                 ) -> list[dict[str, Any]]:
    """The respondents with the highest (or lowest) valence in one stimulus second.

    Args:
        rsec_rows: one stimulus' ``respondent_seconds`` rows.
        second: the stimulus second.
        highest: highest valence first (peak, smiles); ``False``: lowest first (trough).
        k: how many respondents.
        faces: ``{row: thumbnail ref}`` (relative paths).
        names: ``{row: label}`` of the respondents.

    Returns:
        ``[{"row", "respondent", "valence", "thumb"}]`` (ties: lower manifest row first).
    """
    if rsec_rows.empty:
        return []
    here = rsec_rows.loc[(rsec_rows["second"] == second) & rsec_rows["valence"].notna(), ["row", "respondent",
                                                                                          "valence"]]
    here = here.sort_values(["valence", "row"], ascending=[not highest, True], kind="stable").head(k)
    faces, names = faces or {}, names or {}
    return [{"row": int(r), "respondent": names.get(int(r), str(rid)), "valence": float(v),
             "thumb": faces.get(int(r))} for r, rid, v in zip(here["row"], here["respondent"], here["valence"])]


def study_moments(stimulus_rows: pd.DataFrame, rsec_rows: pd.DataFrame, duration_s: float | None,
                  faces: Mapping[int, str] | None = None, names: Mapping[int, str] | None = None
                  ) -> dict[str, Any]:
    """The key moments of one stimulus, from :mod:`fer_pipeline.metrics` over :func:`audience_frame`.

    Returns:
        ``{"peak", "trough"}`` (valence; :func:`fer_pipeline.metrics.peak_trough`, among seconds with at least half
        the peak number of respondents) and ``"label_peak"`` (highest mean p(happy)), each ``{"second", "value",
        "respondents", "faces"}`` or ``None``; ``"hook"`` (:func:`fer_pipeline.metrics.opening_hook`: means over the
        respondent-seconds of the first :data:`fer_pipeline.metrics.HOOK_S` seconds), ``"peak_end"``
        (:func:`fer_pipeline.metrics.peak_end`), ``"smile_rises"`` (:func:`smile_rises`, each with ``faces``) and
        ``"seconds"`` (:func:`fer_pipeline.metrics.key_moments`' seconds worth showing).
    """
    au = audience_frame(stimulus_rows)
    km = metrics.key_moments(au)

    def moment(m: Mapping[str, Any] | None, highest: bool) -> dict[str, Any] | None:
        if m is None:
            return None
        return {"second": int(m["second"]), "value": float(m["value"]), "respondents": int(m.get("viewers") or 0),
                "faces": moment_faces(rsec_rows, int(m["second"]), highest, faces=faces, names=names)}

    rises = [{**r, "faces": moment_faces(rsec_rows, r["second"], True, faces=faces, names=names)}
             for r in smile_rises(stimulus_rows)]
    return {"peak": moment(km["peak"], True), "trough": moment(km["trough"], False),
            "label_peak": moment(km["label_peak"], True), "hook": metrics.opening_hook(au),
            "peak_end": metrics.peak_end(au, duration_s=duration_s), "smile_rises": rises,
            "seconds": km["seconds"], "low_confidence_threshold": metrics.low_confidence_threshold(au)}


# --------------------------------------------------------------------------------------------------------------------
# Page data (JSON for the charts)
# --------------------------------------------------------------------------------------------------------------------


def _heatmap(rsec_rows: pd.DataFrame, respondent_rows: pd.DataFrame, n_seconds: int,
             faces: Mapping[int, str], names: Mapping[int, str]) -> dict[str, Any]:
    """Respondents x seconds of valence: ``{"respondents": [labels], "rows": [manifest rows], "z": [[valence |
    None]], "thumbs": [ref | None], "total": int}``, in manifest order, at most :data:`MAX_RESPONDENT_ROWS` rows."""
    if rsec_rows.empty:
        return {"respondents": [], "rows": [], "z": [], "thumbs": [], "total": 0}
    rows = sorted({int(r) for r in rsec_rows["row"]})
    shown = rows[:MAX_RESPONDENT_ROWS]
    grid = (rsec_rows.loc[rsec_rows["row"].isin(shown)].pivot_table(index="row", columns="second", values="valence",
                                                                     aggfunc="mean")
            .reindex(index=shown, columns=range(n_seconds)))
    z = [[None if math.isnan(v) else round(float(v), 3) for v in line] for line in grid.to_numpy(np.float64)]
    return {"respondents": [names.get(r, f"row {r}") for r in shown], "rows": shown, "z": z,
            "thumbs": [faces.get(r) for r in shown], "total": len(rows)}


def _segment_data(segment_rows: pd.DataFrame, respondent_rows: pd.DataFrame, n_seconds: int, smile: str | None
                  ) -> list[dict[str, Any]]:
    """The ``segments`` rows of one stimulus per attribute: ``[{"attribute", "values": [{"value", "n",
    "respondents", <metric>: band}], "dropped": int}]``, attributes in table order, values with the most respondents
    first (``n``: the ``ok`` respondents with that value), at most :data:`MAX_SEGMENT_VALUES` of them (``dropped``:
    how many more)."""
    if segment_rows.empty:
        return []
    ok = _ok(respondent_rows)
    metric_cols = ["valence", "expressiveness", "attention"] + ([SHARE_PREFIX + smile] if smile else [])
    out = []
    for attr in dict.fromkeys(str(a) for a in segment_rows["attribute"]):
        mine = segment_rows.loc[segment_rows["attribute"].astype(str) == attr]
        values = []
        for value, g in mine.groupby(mine["value"].astype(str), sort=True):
            g = g.sort_values("second", kind="stable").set_index("second").reindex(range(n_seconds))
            g = g.reset_index()
            n = int((ok[attr].astype(str) == value).sum()) if attr in ok.columns else int(
                pd.to_numeric(g["respondents"], errors="coerce").max() or 0)
            entry = {"value": value, "n": n,
                     "respondents": [0 if v is None else int(v) for v in _series(g, "respondents", 0)]}
            for m in metric_cols:
                entry[m] = _band(g, m)
            values.append(entry)
        values.sort(key=lambda e: (-e["n"], e["value"]))
        out.append({"attribute": attr, "values": values[:MAX_SEGMENT_VALUES],
                    "dropped": max(0, len(values) - MAX_SEGMENT_VALUES)})
    return out


def study_chart_data(stimulus: str, stimulus_rows: pd.DataFrame, rsec_rows: pd.DataFrame,
                     segment_rows: pd.DataFrame, respondent_rows: pd.DataFrame, labels: Sequence[str],
                     moments: Mapping[str, Any], faces: Mapping[int, str] | None = None,
                     names: Mapping[int, str] | None = None) -> dict[str, Any]:
    """Everything the charts of one stimulus page need, as plain lists (rounded to 4 decimals).

    Returns:
        ``seconds`` (0 .. n-1), ``respondents`` (per second), ``low``/``lowRanges``/``noRespondentRanges``
        (seconds with fewer than half the peak number of respondents / none), ``traces`` (``{metric: {"mean", "low",
        "high"}}`` for valence, expressiveness, attention, the deltas and ``share_<smile>``: the ``stimulus`` table's
        columns and their intervals), ``shares`` (``share_<label>`` per label), ``heatmap`` (see :func:`_heatmap`),
        ``segments`` (see :func:`_segment_data`) and ``segmentMetrics``, ``peak``/``trough``/``smileRises``/
        ``hookSeconds`` for the annotations.
    """
    faces, names = faces or {}, names or {}
    labels = list(labels)
    st = stimulus_rows.sort_values("second", kind="stable").reset_index(drop=True)
    n = int(st["second"].max()) + 1 if len(st) else 0
    st = st.set_index("second").reindex(range(n)).rename_axis("second").reset_index()
    counts = [0 if v is None else int(v) for v in _series(st, "respondents", 0)]
    thr = int(moments.get("low_confidence_threshold") or 1)
    low = [0 < c < thr for c in counts]
    smile = metrics.SMILE if metrics.SMILE in labels else None
    traces = {m: _band(st, m) for m in _TRACE_METRICS}
    if smile:
        traces[SHARE_PREFIX + smile] = _band(st, SHARE_PREFIX + smile)
    seg = _segment_data(segment_rows, respondent_rows, n, smile)
    seg_metrics = [["valence", "Valence"], ["expressiveness", "Expressiveness"], ["attention", "Attention"]]
    if smile:
        seg_metrics.append([SHARE_PREFIX + smile, "Share smiling"])
    share_kind = "share" if all(SHARE_PREFIX + x in st.columns for x in labels) else "p"
    prefix = SHARE_PREFIX if share_kind == "share" else PROB_PREFIX
    colors = label_colors(labels)
    return {
        "stimulus": stimulus,
        "labels": labels,
        "colors": [colors[x] for x in labels],
        "seconds": list(range(n)),
        "respondents": counts,
        "low": low,
        "lowThreshold": thr,
        "lowRanges": [list(r) for r in contiguous_ranges(s for s, f in enumerate(low) if f)],
        "noRespondentRanges": [list(r) for r in contiguous_ranges(s for s, c in enumerate(counts) if c == 0)],
        "traces": traces,
        "hasAttention": _has_values(st, "attention"),
        "hasDelta": _has_values(st, "delta_valence"),
        "smile": smile,
        "shareKind": share_kind,
        "shares": [_series(st, prefix + x) for x in labels],
        "heatmap": _heatmap(rsec_rows, respondent_rows, n, faces, names),
        "segments": seg,
        "segmentMetrics": seg_metrics,
        "peak": {k: moments["peak"][k] for k in ("second", "value")} if moments.get("peak") else None,
        "trough": {k: moments["trough"][k] for k in ("second", "value")} if moments.get("trough") else None,
        "smileRises": [m["second"] for m in moments.get("smile_rises") or []],
        "hookSeconds": moments["hook"]["seconds"] if moments.get("hook") else metrics.HOOK_S,
    }


# --------------------------------------------------------------------------------------------------------------------
# Page contexts
# --------------------------------------------------------------------------------------------------------------------


def _method_notes(cfg: StudyConfig, labels: Sequence[str], baselines: Sequence[str]) -> dict[str, Any]:
    """What the "How these figures are computed" sections state, from the settings and the tables."""
    negative = [x for x in NEGATIVE if x in labels]
    others = [x for x in labels if x not in negative and x not in ("happy", "neutral")]
    return {"bootstrap": cfg.bootstrap, "permutations": cfg.permutations, "seed": cfg.seed,
            "confidence": cfg.confidence, "smoothing_s": cfg.smoothing_s, "baselines": list(baselines),
            "resting_share": cfg.resting_share, "negative": negative, "not_in_valence": others,
            "has_happy": "happy" in labels, "has_neutral": "neutral" in labels, "labels": list(labels),
            "min_ci": MIN_RESPONDENTS_FOR_CI, "low_respondents": LOW_CONFIDENCE_RESPONDENTS,
            "hook_s": metrics.HOOK_S, "end_s": metrics.END_S, "low_share": metrics.LOW_CONFIDENCE_SHARE,
            "rises_k": SMILE_RISES_K}


def _status_counts(respondent_rows: pd.DataFrame) -> list[tuple[str, int]]:
    if respondent_rows.empty or "status" not in respondent_rows.columns:
        return []
    counts = respondent_rows["status"].astype(str).value_counts()
    return sorted(((str(k), int(v)) for k, v in counts.items()), key=lambda kv: (_STATUS_ORDER.get(kv[0], 9), kv[0]))


def _respondent_table(respondent_rows: pd.DataFrame, attributes: Sequence[str], faces: Mapping[int, str],
                      reports: Mapping[str, str], names: Mapping[int, str]) -> list[dict[str, Any]]:
    rows = []
    for rec in respondent_rows.sort_values("row", kind="stable").head(MAX_RESPONDENT_ROWS).to_dict("records"):
        r = {k: _clean(v) for k, v in rec.items()}
        row = int(r["row"])
        vid = r.get("video_id")
        rows.append({
            "row": row, "respondent": names.get(row, str(r.get("respondent") or "")),
            "recording": r.get("recording"), "offset_s": _float(r.get("offset_s")),
            "attributes": [r.get(a) if r.get(a) is not None else "" for a in attributes],
            "status": str(r.get("status") or "unknown"), "error": r.get("error"),
            "seconds": r.get("seconds"), "seconds_with_face": r.get("seconds_with_face"),
            "valence": _float(r.get("mean_valence")), "expressiveness": _float(r.get("mean_expressiveness")),
            "attention": _float(r.get("mean_attention")),
            "smiled": None if r.get("smiled") is None else bool(r.get("smiled")),
            "peak_second": r.get("peak_second"), "baseline_valence": _float(r.get("baseline_valence")),
            "thumb": faces.get(row), "href": reports.get(str(vid)) if vid is not None else None,
        })
    return rows


def study_context(stimulus: str, data: StudyData, cfg: StudyConfig | None = None,
                  headlines: Mapping[str, Mapping[str, Any]] | None = None,
                  norms: Mapping[str, Mapping[str, Any]] | None = None,
                  faces: Mapping[int, str] | None = None, reports: Mapping[str, str] | None = None,
                  index_href: str = INDEX_NAME) -> dict[str, Any]:
    """Template context of one stimulus page (``study.html.j2``).

    Args:
        stimulus: the stimulus id.
        data: the folder's study tables.
        cfg: the study settings (intervals, tests, smoothing stated on the page).
        headlines: :func:`study_headlines` of every stimulus (this one's is computed when absent).
        norms: :func:`study_norms` over every stimulus of the folder (optional).
        faces: ``{manifest row: thumbnail ref}`` of this stimulus' respondents (relative to the page's folder).
        reports: ``{video_id: href}`` of the per-video reports (relative to the page's folder).
        index_href: the studies index, relative to the page.

    Returns:
        Every variable of ``study.html.j2``; ``chart_json`` is escaped JSON (:func:`study_chart_data`) to be inserted
        unescaped.

    Raises:
        TypeError: a value of the tables cannot be serialised to JSON.
    """
    cfg = cfg or StudyConfig()
    faces, reports = dict(faces or {}), dict(reports or {})
    st = data.of("stimulus", stimulus)
    resp = data.of("respondents", stimulus)
    rsec = data.of("respondent_seconds", stimulus)
    seg = data.of("segments", stimulus)
    head = (headlines or {}).get(stimulus) or study_headlines(data.respondents, [stimulus], cfg)[stimulus]
    norm = (norms or {}).get(stimulus) or {}
    duration = stimulus_duration(st, resp)
    names = _respondent_labels(resp) if not resp.empty else {}
    moments = study_moments(st, rsec, duration, faces, names)
    attributes = [a for a in attribute_columns(resp) if resp[a].notna().any()] if not resp.empty else []
    baselines = sorted({str(b) for b in resp["baseline"].dropna()}) if "baseline" in resp.columns else []
    labels = data.labels
    chart = study_chart_data(stimulus, st, rsec, seg, resp, labels, moments, faces, names)
    figures = [{"key": f, "title": FIGURE_TITLES[f], **head[f], "norm": norm.get(f)} for f in RESPONDENT_FIGURES]
    counts = chart["respondents"]
    ok = _ok(resp)
    return {
        "title": stimulus,
        "stimulus": stimulus,
        "duration": duration,
        "head": head,
        "figures": figures,
        "by_key": {f["key"]: f for f in figures},
        "moments": moments,
        "labels": labels,
        "colors": label_colors(labels),
        "status_counts": _status_counts(resp),
        "problems": [{"respondent": names.get(int(r["row"]), str(r["respondent"])), "status": str(r["status"]),
                      "error": _clean(r.get("error")), "recording": _clean(r.get("recording"))}
                     for r in resp.sort_values("row").to_dict("records") if str(r.get("status")) != "ok"],
        "n_rows": len(resp),
        "n_ok": len(ok),
        "peak_respondents": max(counts) if counts else 0,
        "seconds_with_respondents": sum(1 for c in counts if c > 0),
        "low_seconds": sum(chart["low"]),
        "attributes": attributes,
        "segments": [{"attribute": g["attribute"], "n_values": len(g["values"]), "dropped": g["dropped"]}
                     for g in chart["segments"]],
        "respondents": _respondent_table(resp, attributes, faces, reports, names),
        "respondents_total": len(resp),
        "heatmap_total": chart["heatmap"]["total"],
        "max_rows": MAX_RESPONDENT_ROWS,
        "has_delta": chart["hasDelta"],
        "has_attention": chart["hasAttention"],
        "has_data": any(c > 0 for c in counts),
        "method": _method_notes(cfg, labels, baselines),
        "index_href": index_href,
        "chart_json": json_for_script(chart),
        "plotly_src": PLOTLY_JS_NAME,
        "generated": _now(),
    }


def studies_index_context(data: StudyData, cfg: StudyConfig | None = None,
                          headlines: Mapping[str, Mapping[str, Any]] | None = None,
                          norms: Mapping[str, Mapping[str, Any]] | None = None,
                          pairs: Mapping[str, Any] | None = None,
                          pages: Mapping[str, str | None] | None = None,
                          run_index: str | None = None) -> dict[str, Any]:
    """Template context of the studies index (``studies_index.html.j2``): every stimulus of the folder.

    Args:
        data: the folder's study tables.
        cfg: the study settings.
        headlines: :func:`study_headlines` of every stimulus (computed when absent).
        norms: :func:`study_norms` (computed when absent).
        pairs: :func:`pair_comparisons` (computed when absent).
        pages: ``{stimulus: href}`` of the stimulus pages relative to the index (stimuli without one are listed
            without a link).
        run_index: the output folder's video index relative to the studies index (``"../index.html"``), when it
            exists.

    Returns:
        Every variable of ``studies_index.html.j2``; ``chart_json`` (overlay traces and every pair's test) is escaped
        JSON to be inserted unescaped.
    """
    cfg = cfg or StudyConfig()
    stimuli = data.stimuli
    headlines = headlines if headlines is not None else study_headlines(data.respondents, stimuli, cfg)
    norms = norms if norms is not None else study_norms(headlines)
    pairs = pairs if pairs is not None else pair_comparisons(data.respondents, stimuli, cfg)
    pages = dict(pages or {})
    labels = data.labels
    smile = metrics.SMILE if metrics.SMILE in labels else None
    rows, overlay = [], []
    total_rows = total_ok = 0
    people: set[str] = set()
    for s in stimuli:
        st = data.of("stimulus", s)
        resp = data.of("respondents", s)
        ok = _ok(resp)
        total_rows += len(resp)
        total_ok += len(ok)
        people |= {str(x) for x in ok["respondent"]} if "respondent" in ok.columns else set()
        h = headlines[s]
        moments_peak = metrics.peak_trough(audience_frame(st))["peak"] if len(st) else None
        rows.append({"stimulus": s, "href": relative_ref(pages.get(s)), "respondents": h["respondents"],
                     "rows": len(resp), "duration": stimulus_duration(st, resp), "head": h,
                     "low_confidence": h["low_confidence"],
                     "figures": [{"key": f, "title": FIGURE_TITLES[f], **h[f], "norm": norms[s][f]}
                                 for f in RESPONDENT_FIGURES],
                     "peak_second": moments_peak["second"] if moments_peak else None,
                     "status_counts": _status_counts(resp)})
        full = st.sort_values("second", kind="stable")
        traces = {m: _band(full, m) for m in ("valence", "expressiveness", "attention")}
        if smile:
            traces[SHARE_PREFIX + smile] = _band(full, SHARE_PREFIX + smile)
        overlay.append({"id": s, "respondents": [0 if v is None else int(v) for v in _series(full, "respondents", 0)],
                        "seconds": [int(x) for x in full["second"]] if len(full) else [], "traces": traces,
                        "n": h["respondents"]})
    ranked = sorted(overlay, key=lambda o: (-o["n"], o["id"]))[:MAX_OVERLAY]
    keep = {o["id"] for o in ranked}
    overlay = [o for o in overlay if o["id"] in keep]
    for i, o in enumerate(overlay):
        o["color"] = _STIMULUS_COLORS[i % len(_STIMULUS_COLORS)]
    metric_opts = [["valence", "Valence"], ["expressiveness", "Expressiveness"], ["attention", "Attention"]]
    if smile:
        metric_opts.append([SHARE_PREFIX + smile, "Share smiling"])
    chart = {"stimuli": overlay, "metrics": metric_opts, "pairs": pairs["pairs"],
             "figures": [[f, FIGURE_TITLES[f]] for f in COMPARED]}
    baselines = (sorted({str(b) for b in data.respondents["baseline"].dropna()})
                 if "baseline" in data.respondents.columns else [])
    n_norm = {f: next(iter(norms.values()))[f] if norms else {"stimuli": 0, "respondents": 0}
              for f in RESPONDENT_FIGURES}
    return {
        "stimuli": stimuli,
        "rows": rows,
        "n_stimuli": len(stimuli),
        "total_rows": total_rows,
        "total_ok": total_ok,
        "people": len(people),
        "pairs": pairs["pairs"],
        "pairs_total": pairs["total"],
        "pairs_shown": pairs["shown"],
        "pair_stimuli": pairs["stimuli"],
        "compared": [[f, FIGURE_TITLES[f]] for f in COMPARED],
        "figure_titles": FIGURE_TITLES,
        "norm_figures": list(RESPONDENT_FIGURES),
        "n_norm": n_norm,
        "overlay_total": len(stimuli),
        "overlay_shown": len(overlay),
        "max_pairs": MAX_PAIRS,
        "run_index": relative_ref(run_index),
        "method": _method_notes(cfg, labels, baselines),
        "chart_json": json_for_script(chart),
        "plotly_src": PLOTLY_JS_NAME,
        "generated": _now(),
    }


# --------------------------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------------------------


def page_names(stimuli: Sequence[str]) -> dict[str, str]:
    """``{stimulus: file name}`` of the stimulus pages: :func:`~fer_pipeline.report.html.safe_filename` of the id
    plus ``.html``, made unique (ignoring case) in sorted order of the ids and never ``index.html``."""
    used = {Path(INDEX_NAME).stem.lower()}
    out = {}
    for s in sorted(stimuli):
        stem = safe_filename(s)
        while stem.lower() in used:
            stem += "_"
        used.add(stem.lower())
        out[s] = f"{stem}.html"
    return out


def respondent_faces(out_dir: Path, respondent_rows: pd.DataFrame) -> dict[int, str]:
    """``{manifest row: ref}`` of the respondents whose viewer thumbnail the pipeline saved, refs relative to
    ``OUT/studies/``: ``../reports/thumbs/<video_id>/viewer-<viewer_id>.jpg`` (``track-<id>.jpg`` in folders
    analysed before re-identification, where the respondent's id is a track's)."""
    out: dict[int, str] = {}
    if respondent_rows.empty or not {"video_id", "viewer_id", "row"} <= set(respondent_rows.columns):
        return out
    thumbs = Path(out_dir) / "reports" / "thumbs"
    for row, vid, viewer in zip(respondent_rows["row"], respondent_rows["video_id"], respondent_rows["viewer_id"]):
        vid, viewer = _clean(vid), _clean(viewer)
        if vid is None or viewer is None:
            continue
        for kind in ("viewer", "track"):
            f = thumbs / str(vid) / f"{kind}-{int(viewer)}.jpg"
            if f.is_file():
                ref = relative_ref(f"../reports/thumbs/{vid}/{f.name}")
                if ref:
                    out[int(row)] = ref
                break
    return out


def video_reports(out_dir: Path, video_ids: Sequence[str]) -> dict[str, str]:
    """``{video_id: ref}`` of the per-video reports that exist, relative to ``OUT/studies/``."""
    out = {}
    for vid in dict.fromkeys(str(v) for v in video_ids):
        name = f"{safe_filename(vid)}.html"
        if (Path(out_dir) / "reports" / name).is_file():
            ref = relative_ref(f"../reports/{name}")
            if ref:
                out[vid] = ref
    return out


def render_studies(out_dir: Path, cfg: StudyConfig | None = None, stimuli: list[str] | None = None) -> list[Path]:
    """Render the study pages of an output folder from its study tables alone (no video is read).

    Writes ``OUT/studies/<stimulus>.html`` for each stimulus of ``stimuli`` (default: every stimulus of the
    ``stimulus`` table), ``OUT/studies/index.html`` (always over every stimulus of the folder: the norms and the
    pairwise tests are over the folder) and ``OUT/studies/plotly.min.js``, each atomically.

    Args:
        out_dir: an output folder holding study tables (:func:`fer_pipeline.study.run.run_study`).
        cfg: the study settings: bootstrap resamples, level and seed of the headline intervals, permutations and seed
            of the pairwise tests; also stated on the pages (smoothing, baseline settings). Defaults:
            :class:`fer_pipeline.config.StudyConfig`.
        stimuli: only these stimulus pages (the index still covers every stimulus).

    Returns:
        The files written: the stimulus pages (sorted by id), then the index last.

    Raises:
        FileNotFoundError: ``out_dir`` has no study tables.
        ValueError: a stimulus of ``stimuli`` is not in the folder's tables.
        DamagedOutputError: a study table part cannot be read.
        OSError: a file cannot be written.
    """
    out_dir = Path(out_dir)
    cfg = cfg or StudyConfig()
    data = load_study_data(out_dir)
    every = data.stimuli
    if not every:
        raise FileNotFoundError(f"no study tables in {out_dir} (run the study step first)")
    wanted = every if stimuli is None else list(dict.fromkeys(str(s) for s in stimuli))
    unknown = [s for s in wanted if s not in set(every)]
    if unknown:
        raise ValueError(f"stimulus {', '.join(unknown[:5])} not in the study tables of {out_dir} "
                         f"(known: {', '.join(every[:10])})")
    folder = out_dir / STUDIES_DIR
    names = page_names(every)
    headlines = study_headlines(data.respondents, every, cfg)
    norms = study_norms(headlines)
    vids = data.respondents["video_id"].dropna() if "video_id" in data.respondents.columns else []
    reports = video_reports(out_dir, list(vids))
    ensure_plotly_js(folder)
    written = []
    for s in sorted(wanted):
        resp = data.of("respondents", s)
        ctx = study_context(s, data, cfg, headlines, norms, respondent_faces(out_dir, resp), reports)
        html = render_template("study.html.j2", ctx, safe=("chart_json",))
        written.append(atomic_write_text(folder / names[s], html))
        logger.info("wrote study page %s", folder / names[s])
    pages = {s: names[s] for s in every if (folder / names[s]).is_file()}
    pairs = pair_comparisons(data.respondents, every, cfg)
    run_index = "../index.html" if (out_dir / "index.html").is_file() else None
    ctx = studies_index_context(data, cfg, headlines, norms, pairs, pages, run_index)
    html = render_template("studies_index.html.j2", ctx, safe=("chart_json",))
    written.append(atomic_write_text(folder / INDEX_NAME, html))
    logger.info("wrote studies index %s (%d stimuli)", folder / INDEX_NAME, len(every))
    return written
