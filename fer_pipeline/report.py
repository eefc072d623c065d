"""Report stage: the Parquet tables of a run -> one self-contained HTML report per video and an index of the run.

Reads only the output tables of ARCHITECTURE.md (``videos``, ``timeline``, ``audience``), so ``fer-pipeline report OUT``
can re-render a run long after it was analysed. Layout of what is written::

    OUT/index.html                  every video of the run, sortable, failed/skipped files with their reasons
    OUT/reports/<video_id>.html     one report per ``ok`` video
    OUT/reports/plotly.min.js       plotly.js (cartesian bundle, fer_pipeline/static/), copied once

The reports make no network request: plotly.js is referenced by a relative ``<script src>``, the data is inline JSON,
CSS is inline, and there are no external fonts or images (thumbnails, when given, are relative paths).

Labels are never hard-coded: they are read from the ``p_<label>`` columns, in column order (FER2013 order for the
shipped model). Summary figures are small pure functions (:func:`headline_figures` and the helpers it calls) so they
can be tested without rendering anything.

Conventions: ``second`` is the integer start of the window ``[second, second + 1)`` in video time; probabilities and
shares are fractions in [0, 1]; ``valence`` = p_happy - (p_angry + p_disgust + p_fear + p_sad) in [-1, 1];
``expressiveness`` = 1 - p_neutral in [0, 1]; ``attention`` = share of viewers facing the camera in [0, 1] (absent
from tables written before head pose existed: then shown as "—").
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd

from fer_pipeline.errors import DamagedOutputError, is_disk_full, one_line
from fer_pipeline.fileutil import atomic_write_bytes, atomic_write_text

logger = logging.getLogger(__name__)

TEMPLATES_DIR = Path(__file__).resolve().parents[1] / "reports" / "templates"
"""Folder of the Jinja2 templates (``video.html.j2``, ``index.html.j2``, ``base.html.j2``)."""

PLOTLY_JS_NAME = "plotly.min.js"
PROB_PREFIX = "p_"
SHARE_PREFIX = "share_"

HOOK_S = 8.0
"""Length in seconds of the "opening hook" window, ``[0, HOOK_S)``."""
END_S = 3.0
"""Length in seconds of the "end" window of the peak-end summary, the last ``END_S`` seconds of the video."""
LOW_CONFIDENCE_SHARE = 0.5
"""A second is low-confidence when it has fewer viewers than this fraction of the peak number of viewers."""
MAX_VIEWER_ROWS = 200
"""At most this many viewers are listed in the per-viewer table of a report (the heatmap shows all)."""

# Valence terms, by label name (ARCHITECTURE.md). Labels absent from the model simply do not contribute.
_POSITIVE = ("happy",)
_NEGATIVE = ("angry", "disgust", "fear", "sad")
_NEUTRAL = "neutral"
_SMILE = "happy"

# Colours only (not the label list): known labels get a stable, meaningful colour, others a fallback palette.
_LABEL_COLORS = {
    "angry": "#d1495b",
    "disgust": "#7a8b3a",
    "fear": "#8e6cc2",
    "happy": "#f0a202",
    "sad": "#3f7cc0",
    "surprise": "#1fa39a",
    "neutral": "#b4bcc8",
    "contempt": "#c56aa6",
}
_FALLBACK_COLORS = ("#e377c2", "#8c564b", "#bcbd22", "#17becf", "#7f7f7f", "#ff7f0e", "#2ca02c", "#9467bd")

_STATUS_ORDER = {"ok": 0, "failed": 1, "skipped": 2}
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


# --------------------------------------------------------------------------------------------------------------------
# Pure helpers: labels, derived columns, summary figures
# --------------------------------------------------------------------------------------------------------------------


def emotion_labels(columns: Iterable[str]) -> list[str]:
    """The model's labels, read from the ``p_<label>`` columns of a table, in column order.

    Args:
        columns: column names, e.g. ``timeline.columns``.

    Returns:
        Label names without the prefix, e.g. ``["angry", ..., "neutral"]``; empty if there is no ``p_*`` column.
    """
    return [c[len(PROB_PREFIX):] for c in columns if isinstance(c, str) and c.startswith(PROB_PREFIX)
            and len(c) > len(PROB_PREFIX)]


def label_colors(labels: Iterable[str]) -> dict[str, str]:
    """A CSS hex colour per label: fixed for the known emotions, from a fallback palette for any other label."""
    out: dict[str, str] = {}
    k = 0
    for label in labels:
        if label in _LABEL_COLORS:
            out[label] = _LABEL_COLORS[label]
        else:
            out[label] = _FALLBACK_COLORS[k % len(_FALLBACK_COLORS)]
            k += 1
    return out


def with_derived_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Add ``valence``, ``expressiveness`` (and ``emotion`` for rows with probabilities) when they are missing.

    The contract tables already carry these columns; this only fills them in for hand-made or older tables.

    Args:
        frame: a ``timeline`` or ``audience`` table with ``p_<label>`` columns (fractions in [0, 1]).

    Returns:
        The same frame if nothing was missing, else a copy with the missing columns added. ``valence`` in [-1, 1],
        ``expressiveness`` in [0, 1], ``emotion`` the argmax label (timeline only: added when ``track_id`` exists).
    """
    labels = emotion_labels(frame.columns)
    if not labels:
        return frame
    missing_valence = "valence" not in frame.columns
    missing_expr = "expressiveness" not in frame.columns and _NEUTRAL in labels
    missing_emotion = "emotion" not in frame.columns and "track_id" in frame.columns
    if not (missing_valence or missing_expr or missing_emotion):
        return frame
    frame = frame.copy()
    if missing_valence:
        pos = sum((frame[PROB_PREFIX + x] for x in _POSITIVE if x in labels), start=pd.Series(0.0, frame.index))
        neg = sum((frame[PROB_PREFIX + x] for x in _NEGATIVE if x in labels), start=pd.Series(0.0, frame.index))
        frame["valence"] = (pos - neg).astype(float)
    if missing_expr:
        frame["expressiveness"] = 1.0 - frame[PROB_PREFIX + _NEUTRAL].astype(float)
    if missing_emotion:
        frame["emotion"] = _argmax_labels(frame, labels)
    return frame


def _argmax_labels(frame: pd.DataFrame, labels: list[str]) -> pd.Series:
    """The label of the largest ``p_<label>`` per row (first label wins ties); all-NaN rows give ``None``."""
    if frame.empty:
        return pd.Series([], index=frame.index, dtype=object)
    probs = frame[[PROB_PREFIX + x for x in labels]].to_numpy(float)
    valid = ~np.isnan(probs).all(axis=1)
    idx = np.nanargmax(np.where(np.isnan(probs), -np.inf, probs), axis=1)
    out = np.array(labels, dtype=object)[idx]
    out[~valid] = None
    return pd.Series(out, index=frame.index, dtype=object)


def audience_from_timeline(timeline: pd.DataFrame) -> pd.DataFrame:
    """Rebuild the per-second ``audience`` table from a ``timeline`` table (fallback when only the timeline exists).

    Args:
        timeline: rows per track and second with ``track_id``, ``second``, ``p_<label>`` and ideally ``emotion``.

    Returns:
        One row per second with ``second``, ``viewers`` (distinct tracks), mean ``p_<label>``, ``share_<label>``
        (fraction of viewers whose dominant emotion is the label), ``valence``, ``expressiveness`` and
        ``attention`` (means; ``attention`` only when the timeline has it).
        Sorted by ``second``; empty (with those columns) for an empty timeline.
    """
    timeline = with_derived_columns(timeline)
    labels = emotion_labels(timeline.columns)
    cols = (["second", "viewers"] + [PROB_PREFIX + x for x in labels] + [SHARE_PREFIX + x for x in labels]
            + ["valence", "expressiveness", "attention"])
    if timeline.empty or "second" not in timeline.columns:
        return pd.DataFrame(columns=cols)
    g = timeline.groupby("second", sort=True)
    out = g[[PROB_PREFIX + x for x in labels]
            + [c for c in ("valence", "expressiveness", "attention") if c in timeline]].mean()
    out.insert(0, "viewers", g["track_id"].nunique() if "track_id" in timeline else g.size())
    if "emotion" in timeline.columns:
        counts = pd.crosstab(timeline["second"], timeline["emotion"])
        for x in labels:
            share = counts[x] / counts.sum(axis=1) if x in counts.columns else 0.0
            out[SHARE_PREFIX + x] = share
    out = out.reset_index()
    return out[[c for c in cols if c in out.columns]]


def weighted_mean(frame: pd.DataFrame, column: str, weights: str | None = "viewers") -> float | None:
    """Mean of ``frame[column]`` weighted by ``frame[weights]`` (unweighted if ``weights`` is None or absent).

    Rows where the value is NaN or the weight is not positive are ignored. Over the ``audience`` table weighted by
    ``viewers`` this is the mean over viewer-seconds, i.e. the plain mean of the same column in ``timeline``.

    Returns:
        The mean as a float, or ``None`` when no row counts (missing column, empty table, all weights zero).
    """
    if column not in frame.columns or frame.empty:
        return None
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(float)
    if weights is not None and weights in frame.columns:
        w = pd.to_numeric(frame[weights], errors="coerce").fillna(0).to_numpy(float)
    else:
        w = np.ones(len(values))
    ok = ~np.isnan(values) & (w > 0)
    if not ok.any():
        return None
    return float(np.average(values[ok], weights=w[ok]))


def low_confidence_threshold(audience: pd.DataFrame, min_share: float = LOW_CONFIDENCE_SHARE) -> int:
    """Fewest viewers a second needs not to be low-confidence: ``max(1, ceil(min_share * peak viewers))``.

    Args:
        audience: per-second table with ``viewers``.
        min_share: fraction in (0, 1] of the peak audience.

    Returns:
        A viewer count >= 1 (1 when the table is empty or has no ``viewers``).
    """
    if audience.empty or "viewers" not in audience.columns:
        return 1
    peak = pd.to_numeric(audience["viewers"], errors="coerce").max()
    if pd.isna(peak) or peak <= 0:
        return 1
    return max(1, int(math.ceil(min_share * float(peak) - 1e-9)))


def low_confidence_mask(audience: pd.DataFrame, min_share: float = LOW_CONFIDENCE_SHARE) -> pd.Series:
    """Boolean per row of ``audience``: True where ``viewers`` < :func:`low_confidence_threshold`."""
    if "viewers" not in audience.columns:
        return pd.Series(False, index=audience.index)
    thr = low_confidence_threshold(audience, min_share)
    return pd.to_numeric(audience["viewers"], errors="coerce").fillna(0) < thr


def smiled_share(timeline: pd.DataFrame, label: str = _SMILE) -> float | None:
    """Share of viewers (tracks) whose dominant emotion was ``label`` in at least one second.

    Args:
        timeline: rows per track and second with ``track_id`` and ``emotion`` (or ``p_<label>`` to derive it).
        label: the emotion counted as a smile, ``"happy"`` by default.

    Returns:
        A fraction in [0, 1], or ``None`` when it cannot be computed (no rows, no ``track_id``, or the model has no
        such label).
    """
    if timeline.empty or "track_id" not in timeline.columns:
        return None
    timeline = with_derived_columns(timeline)
    labels = emotion_labels(timeline.columns)
    if "emotion" not in timeline.columns or (labels and label not in labels):
        return None
    tracks = timeline["track_id"].nunique()
    if tracks == 0:
        return None
    smiled = timeline.loc[timeline["emotion"].astype(str) == label, "track_id"].nunique()
    return smiled / tracks


def peak_trough(audience: pd.DataFrame, column: str = "valence",
                min_share: float = LOW_CONFIDENCE_SHARE) -> dict[str, dict[str, Any] | None]:
    """Seconds of highest and lowest ``column`` (valence by default) in the per-second audience curve.

    Only seconds that are not low-confidence (see :func:`low_confidence_mask`) compete, so that a second where one
    viewer happened to grin does not become "the peak". Ties go to the earliest second.

    Returns:
        ``{"peak": {"second", "value", "viewers"} | None, "trough": {...} | None}``; ``second`` is an int (start of
        the window, seconds), ``value`` a float, ``viewers`` an int (0 if unknown).
    """
    out: dict[str, dict[str, Any] | None] = {"peak": None, "trough": None}
    if audience.empty or column not in audience.columns or "second" not in audience.columns:
        return out
    frame = audience.loc[~low_confidence_mask(audience, min_share)]
    frame = frame.loc[frame[column].notna()].sort_values("second", kind="stable")
    if frame.empty:
        return out
    values = frame[column].to_numpy(float)
    for key, pos in (("peak", values.argmax()), ("trough", values.argmin())):
        row = frame.iloc[int(pos)]
        out[key] = {"second": int(row["second"]), "value": float(row[column]),
                    "viewers": int(row["viewers"]) if "viewers" in frame.columns else 0}
    return out


def opening_hook(audience: pd.DataFrame, seconds: float = HOOK_S) -> dict[str, Any]:
    """Mean expressiveness, valence and attention over the first ``seconds`` of the video (the "hook").

    Seconds ``s`` with ``s < seconds`` count, each weighted by its viewers (i.e. the mean over viewer-seconds).

    Returns:
        ``{"seconds": float, "expressiveness": float | None, "valence": float | None, "attention": float | None}``.
    """
    window = audience.loc[audience["second"] < seconds] if "second" in audience.columns else audience.iloc[:0]
    return {"seconds": float(seconds), "expressiveness": weighted_mean(window, "expressiveness"),
            "valence": weighted_mean(window, "valence"), "attention": weighted_mean(window, "attention")}


def peak_end(audience: pd.DataFrame, end_s: float = END_S, duration_s: float | None = None,
             label: str = _SMILE, min_share: float = LOW_CONFIDENCE_SHARE) -> dict[str, Any]:
    """Peak-end summary of ``p_<label>`` (``p_happy`` by default): its peak second and its level at the end.

    People remember an experience mostly by its most intense moment and its end; this reports both.

    Args:
        audience: per-second table with ``second``, ``viewers`` and ``p_<label>``.
        end_s: length of the end window in seconds; seconds ``s >= duration_s - end_s`` count.
        duration_s: video duration in seconds; if ``None``, the last audience second + 1.
        label: the emotion summarised.
        min_share: low-confidence seconds (see :func:`low_confidence_mask`) cannot be the peak.

    Returns:
        ``{"label", "peak": float | None, "peak_second": int | None, "end": float | None, "end_from_s": float | None}``
        where ``peak`` is the highest per-second mean over viewers and ``end`` the viewer-weighted mean over the end
        window, both fractions in [0, 1].
    """
    col = PROB_PREFIX + label
    out: dict[str, Any] = {"label": label, "peak": None, "peak_second": None, "end": None, "end_from_s": None}
    if audience.empty or col not in audience.columns or "second" not in audience.columns:
        return out
    pt = peak_trough(audience, column=col, min_share=min_share)["peak"]
    if pt is not None:
        out["peak"], out["peak_second"] = pt["value"], pt["second"]
    if duration_s is None or not np.isfinite(duration_s) or duration_s <= 0:
        duration_s = float(audience["second"].max()) + 1.0
    start = max(0.0, float(duration_s) - end_s)
    out["end_from_s"] = start
    out["end"] = weighted_mean(audience.loc[audience["second"] >= start - 1e-9], col)
    return out


def emotion_mix(audience: pd.DataFrame) -> dict[str, float]:
    """Mean ``p_<label>`` over the audience table, weighted by viewers (= the mean over viewer-seconds).

    Returns:
        ``{label: fraction}`` in the model's label order (sums to 1 when the inputs do); empty if nothing to average.
    """
    out: dict[str, float] = {}
    for label in emotion_labels(audience.columns):
        m = weighted_mean(audience, PROB_PREFIX + label)
        if m is not None:
            out[label] = m
    return out


def dominant(mix: Mapping[str, float], exclude: Iterable[str] = ()) -> str | None:
    """The label with the largest value in ``mix`` (first wins ties), skipping ``exclude``; ``None`` if empty."""
    skip = set(exclude)
    items = [(k, v) for k, v in mix.items() if k not in skip and v is not None and not math.isnan(v)]
    if not items:
        return None
    return max(items, key=lambda kv: kv[1])[0]


def viewer_summary(timeline: pd.DataFrame) -> pd.DataFrame:
    """One row per viewer (track): time on screen and their own averages.

    Returns:
        Columns ``track_id``, ``first_second``, ``last_second``, ``seconds`` (number of seconds seen), ``valence``,
        ``expressiveness``, ``attention`` (means over that viewer's seconds; NaN without head pose), ``smiled`` (bool: ``happy`` dominant in >= 1 second)
        and ``emotion`` (their most frequent dominant emotion); sorted by ``seconds`` descending, then ``track_id``.
    """
    cols = ["track_id", "first_second", "last_second", "seconds", "valence", "expressiveness", "attention", "smiled",
            "emotion"]
    if timeline.empty or "track_id" not in timeline.columns:
        return pd.DataFrame(columns=cols)
    tl = with_derived_columns(timeline)
    g = tl.groupby("track_id", sort=True)
    out = pd.DataFrame({
        "first_second": g["second"].min(),
        "last_second": g["second"].max(),
        "seconds": g["second"].nunique(),
        "valence": g["valence"].mean() if "valence" in tl else np.nan,
        "expressiveness": g["expressiveness"].mean() if "expressiveness" in tl else np.nan,
        "attention": g["attention"].mean() if "attention" in tl else np.nan,
    })
    if "emotion" in tl.columns:
        emo = tl["emotion"].astype(object)
        out["smiled"] = (emo == _SMILE).groupby(tl["track_id"]).any()
        out["emotion"] = emo.groupby(tl["track_id"]).agg(lambda s: s.value_counts().index[0] if s.notna().any()
                                                        else None)
    else:
        out["smiled"] = False
        out["emotion"] = None
    out = out.reset_index().sort_values(["seconds", "track_id"], ascending=[False, True], kind="stable")
    return out[cols].reset_index(drop=True)


def headline_figures(timeline: pd.DataFrame, audience: pd.DataFrame, duration_s: float | None = None,
                     hook_s: float = HOOK_S, end_s: float = END_S,
                     min_share: float = LOW_CONFIDENCE_SHARE) -> dict[str, Any]:
    """The headline figures of one video.

    Args:
        timeline: the video's rows of the ``timeline`` table (may be empty).
        audience: the video's rows of the ``audience`` table (may be empty; rebuilt from ``timeline`` if so).
        duration_s: video duration in seconds, for the end window of :func:`peak_end` (optional).
        hook_s: opening-hook window, seconds.
        end_s: end window of the peak-end summary, seconds.
        min_share: low-confidence threshold as a fraction of peak viewers (see :func:`low_confidence_threshold`).

    Returns:
        A dict with
        ``labels`` (list[str]), ``viewers`` (distinct tracks, int), ``peak_viewers`` (most viewers in one second),
        ``seconds_with_viewers`` (int), ``mean_valence`` in [-1, 1] and ``mean_expressiveness`` in [0, 1] (means over
        viewer-seconds, i.e. over timeline rows), ``mean_attention`` in [0, 1] (share of viewer-seconds facing the
        camera; ``None`` for tables without head pose), ``smiled_share`` in [0, 1] (see :func:`smiled_share`),
        ``emotion_mix`` ({label: fraction}), ``dominant_emotion`` and ``dominant_expression`` (largest share of the
        mix, the latter ignoring ``neutral``), ``peak`` / ``trough`` (valence, see :func:`peak_trough`), ``hook``
        (:func:`opening_hook`), ``peak_end`` (:func:`peak_end`), ``low_confidence_threshold`` (int) and
        ``low_confidence_seconds`` (list[int]). Figures that cannot be computed are ``None``.
    """
    timeline = with_derived_columns(timeline)
    if (audience is None or audience.empty) and not timeline.empty:
        audience = audience_from_timeline(timeline)
    audience = with_derived_columns(audience if audience is not None else pd.DataFrame())
    labels = emotion_labels(audience.columns) or emotion_labels(timeline.columns)

    if not timeline.empty and "track_id" in timeline.columns:
        viewers: int | None = int(timeline["track_id"].nunique())
        mean_valence = weighted_mean(timeline, "valence", weights=None)
        mean_expr = weighted_mean(timeline, "expressiveness", weights=None)
        mean_att = weighted_mean(timeline, "attention", weights=None)
    else:
        viewers = None
        mean_valence = weighted_mean(audience, "valence")
        mean_expr = weighted_mean(audience, "expressiveness")
        mean_att = weighted_mean(audience, "attention")
    has_viewers = "viewers" in audience.columns and not audience.empty
    peak_viewers = int(pd.to_numeric(audience["viewers"]).max()) if has_viewers else None
    seconds_with_viewers = int((pd.to_numeric(audience["viewers"]) > 0).sum()) if has_viewers else None
    mix = emotion_mix(audience)
    low = low_confidence_mask(audience, min_share)
    low_seconds = sorted(int(s) for s in audience.loc[low, "second"]) if "second" in audience.columns else []
    pt = peak_trough(audience, "valence", min_share)
    return {
        "labels": labels,
        "viewers": viewers if viewers is not None else peak_viewers,
        "peak_viewers": peak_viewers,
        "seconds_with_viewers": seconds_with_viewers,
        "mean_valence": mean_valence,
        "mean_expressiveness": mean_expr,
        "mean_attention": mean_att,
        "smiled_share": smiled_share(timeline),
        "emotion_mix": mix,
        "dominant_emotion": dominant(mix),
        "dominant_expression": dominant(mix, exclude=(_NEUTRAL,)),
        "peak": pt["peak"],
        "trough": pt["trough"],
        "hook": opening_hook(audience, hook_s),
        "peak_end": peak_end(audience, end_s, duration_s, min_share=min_share),
        "low_confidence_threshold": low_confidence_threshold(audience, min_share),
        "low_confidence_seconds": low_seconds,
    }


def contiguous_ranges(seconds: Iterable[int]) -> list[tuple[int, int]]:
    """Merge integer seconds into half-open ranges: ``[3, 4, 5, 9] -> [(3, 6), (9, 10)]``."""
    out: list[tuple[int, int]] = []
    for s in sorted(set(int(x) for x in seconds)):
        if out and out[-1][1] == s:
            out[-1] = (out[-1][0], s + 1)
        else:
            out.append((s, s + 1))
    return out


def format_clock(seconds: float | None) -> str:
    """Video time as ``m:ss`` (or ``h:mm:ss`` from one hour); ``"—"`` for ``None``/NaN. Fractions are truncated."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "—"
    s = int(seconds)
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def json_for_script(obj: Any) -> str:
    """Serialise ``obj`` as JSON that is safe inside an HTML ``<script type="application/json">`` element.

    NaN/inf become ``null`` (JSON has no NaN); numpy scalars and arrays are converted; ``<``, ``>``, ``&``, ``'``,
    U+2028 and U+2029 are written as ``\\uXXXX`` escapes, so the text can contain neither ``</script>`` nor ``<!--``.

    Raises:
        TypeError: ``obj`` holds something JSON cannot represent.
    """
    text = json.dumps(_jsonable(obj), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    for ch, esc in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"), ("'", "\\u0027"),
                    ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text


def _jsonable(obj: Any) -> Any:
    """Plain Python types for :func:`json.dumps`: NaN/inf -> None, numpy -> Python, tuples -> lists."""
    if obj is None or isinstance(obj, (str, bool)):
        return obj
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return [_jsonable(v) for v in obj.tolist()]
    if isinstance(obj, (list, tuple, pd.Series)):
        return [_jsonable(v) for v in obj]
    if obj is pd.NA or obj is pd.NaT:
        return None
    if isinstance(obj, (pd.Timestamp, datetime)):
        return obj.isoformat()
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


# --------------------------------------------------------------------------------------------------------------------
# IO helpers
# --------------------------------------------------------------------------------------------------------------------


PLOTLY_BUNDLE = Path(__file__).resolve().parent / "static" / "plotly-cartesian.min.js"
"""plotly.js's "cartesian" partial bundle (1.5 MB; every trace type the reports use), vendored from npm
(``fer_pipeline/static/README.md``). It parses in about half the time of the full 4.8 MB bundle."""


def _plotly_js_source() -> bytes:
    """The minified plotly.js the reports load: the vendored cartesian bundle, else the full bundle of the installed
    ``plotly`` package (no network either way).

    Raises:
        OSError: neither bundle is available.
    """
    if PLOTLY_BUNDLE.is_file():
        return PLOTLY_BUNDLE.read_bytes()
    try:
        from importlib.resources import files

        return files("plotly").joinpath("package_data", PLOTLY_JS_NAME).read_bytes()
    except (ModuleNotFoundError, FileNotFoundError, OSError) as e:
        try:
            from plotly.offline import get_plotlyjs
        except ImportError as e2:
            raise OSError("plotly is not installed: cannot write plotly.min.js for the reports") from e2
        logger.debug("packaged plotly.min.js not found (%s); using plotly.offline.get_plotlyjs()", e)
        return get_plotlyjs().encode("utf-8")


def ensure_plotly_js(folder: Path) -> Path:
    """Write ``folder/plotly.min.js`` once (rewritten only if missing or of a different size).

    Raises:
        OSError: the file cannot be written, or plotly is not installed.
    """
    target = Path(folder) / PLOTLY_JS_NAME
    data = _plotly_js_source()
    if target.is_file() and target.stat().st_size == len(data):
        return target
    logger.info("writing %s (%d bytes)", target, len(data))
    return atomic_write_bytes(target, data)


def safe_filename(video_id: str) -> str:
    """A file-name stem for ``video_id``: characters other than ``A-Za-z0-9._-`` become ``_``; never empty/dotted."""
    name = _SAFE_NAME.sub("_", str(video_id)).strip(".")
    return name or "video"


@functools.lru_cache(maxsize=4)
def _environment(templates_dir: str = str(TEMPLATES_DIR)):
    """The Jinja2 environment: autoescape on, ``StrictUndefined``, templates from ``reports/templates``."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    env = Environment(loader=FileSystemLoader(templates_dir), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["pct"] = _fmt_pct
    env.filters["signed"] = _fmt_signed
    env.filters["num"] = _fmt_num
    env.filters["clock"] = format_clock
    env.filters["duration"] = _fmt_duration
    env.filters["when"] = format_when
    return env


def format_when(value: Any) -> str:
    """A timestamp (``created_at``) as ``YYYY-MM-DD HH:MM`` plus the zone name when known; ``"—"`` for None.

    Strings that do not parse as a timestamp are returned unchanged.
    """
    if value is None or value is pd.NaT:
        return "—"
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError):
        return str(value)
    if ts is pd.NaT:
        return "—"
    return ts.strftime("%Y-%m-%d %H:%M %Z").strip()


def _fmt_pct(x: Any, digits: int = 0) -> str:
    """0.1234 -> '12%'; None/NaN -> '—'."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{100.0 * float(x):.{digits}f}%"


def _fmt_signed(x: Any, digits: int = 2) -> str:
    """0.1234 -> '+0.12', -0.5 -> '−0.50' (typographic minus); None/NaN -> '—'."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    v = round(float(x), digits)
    if v == 0:
        return f"{0:.{digits}f}"
    return f"+{v:.{digits}f}" if v > 0 else f"\u2212{abs(v):.{digits}f}"


def _fmt_num(x: Any, digits: int = 0) -> str:
    """Thousands-separated number; None/NaN -> '—'."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    try:
        return f"{float(x):,.{digits}f}"
    except (TypeError, ValueError):
        return str(x)


def _fmt_duration(x: Any) -> str:
    """Seconds as '1:05' (m:ss) or '12.4 s' under a minute; None/NaN -> '—'."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    x = float(x)
    return f"{x:.1f} s" if x < 60 else format_clock(x)


def _clean(value: Any) -> Any:
    """A value from a DataFrame row as plain Python: NaN/NA/NaT -> None, numpy scalars -> Python."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _first_line(text: Any, limit: int = 300) -> str:
    """The first non-empty line of an error message, at most ``limit`` characters."""
    if text is None:
        return ""
    for line in str(text).splitlines():
        line = line.strip()
        if line:
            return line if len(line) <= limit else line[: limit - 1] + "…"
    return ""


def _relative_ref(ref: Any) -> str | None:
    """``ref`` if it is a relative path usable in ``src``/``href`` without any network access, else ``None``."""
    if ref is None:
        return None
    s = str(ref).strip()
    if not s or s.startswith(("/", "\\")) or re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", s):
        return None
    return quote(s.replace("\\", "/"), safe="/._-~")


# --------------------------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------------------------


def _model_card_summary(card: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Name, labels, test accuracy / macro-F1 and sha256 from a model card, whatever its exact nesting."""
    if not card:
        return None

    def dig(*paths: tuple[str, ...]) -> Any:
        for p in paths:
            node: Any = card
            for key in p:
                if not isinstance(node, Mapping) or key not in node:
                    node = None
                    break
                node = node[key]
            if node is not None:
                return node
        return None

    labels = dig(("labels",), ("spec", "labels"), ("model_spec", "labels"))
    return {
        "name": dig(("name",), ("model",), ("model_name",), ("file",)),
        "labels": [str(x) for x in labels] if isinstance(labels, (list, tuple)) else None,
        "test_accuracy": dig(("onnx_metrics", "test", "accuracy"), ("metrics", "test", "accuracy"),
                             ("test", "accuracy"), ("test_accuracy",),
                             ("metrics", "test_accuracy")),
        "test_macro_f1": dig(("onnx_metrics", "test", "macro_f1"), ("metrics", "test", "macro_f1"),
                             ("test", "macro_f1"), ("test_macro_f1",)),
        "dataset": dig(("dataset",), ("training", "dataset"), ("data", "dataset"), ("config", "data", "dataset")),
        "sha256": dig(("sha256",), ("onnx_sha256",)),
    }


def _chart_data(timeline: pd.DataFrame, audience: pd.DataFrame, head: dict[str, Any],
                duration_s: float | None, track_thumbs: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Everything the charts need, as plain lists (rounded to 4 decimals to keep the HTML small).

    ``track_thumbs`` maps ``str(track_id)`` to a relative thumbnail path, shown beside the heatmap's rows."""
    labels = head["labels"]
    colors = label_colors(labels)
    last = int(audience["second"].max()) if not audience.empty else -1
    if not timeline.empty:
        last = max(last, int(timeline["second"].max()))
    if duration_s is not None and math.isfinite(duration_s) and duration_s > 0:
        last = max(last, int(math.ceil(duration_s)) - 1)
    seconds = list(range(0, last + 1))
    au = audience.set_index("second").reindex(seconds) if not audience.empty else pd.DataFrame(index=seconds)

    def col(name: str, digits: int = 4) -> list[float | None]:
        if name not in au.columns:
            return [None] * len(seconds)
        return [None if pd.isna(v) else round(float(v), digits) for v in au[name]]

    share_kind = "share" if all(SHARE_PREFIX + x in au.columns for x in labels) else "p"
    prefix = SHARE_PREFIX if share_kind == "share" else PROB_PREFIX
    viewers = [0 if v is None else int(v) for v in col("viewers")]
    thr = head["low_confidence_threshold"]
    low = [0 < v < thr for v in viewers]

    heat: dict[str, Any] = {"tracks": [], "z": [], "p": [], "thumbs": []}
    if not timeline.empty and labels:
        tl = timeline
        order = (tl.groupby("track_id")["second"].min().reset_index().sort_values(["second", "track_id"])["track_id"])
        label_index = {x: i for i, x in enumerate(labels)}
        pos = {s: i for i, s in enumerate(seconds)}
        emo = tl["emotion"].astype(object) if "emotion" in tl.columns else _argmax_labels(tl, labels)
        probs = tl[[PROB_PREFIX + x for x in labels]].to_numpy(float)
        z = {t: [None] * len(seconds) for t in order}
        p = {t: [None] * len(seconds) for t in order}
        for i, (t, s, e) in enumerate(zip(tl["track_id"].to_numpy(), tl["second"].to_numpy(), emo.to_numpy())):
            j = pos.get(int(s))
            if j is None or e not in label_index:
                continue
            k = label_index[e]
            z[t][j] = k
            p[t][j] = None if math.isnan(probs[i, k]) else round(float(probs[i, k]), 3)
        heat = {"tracks": [f"#{_clean(t)}" for t in order], "z": [z[t] for t in order], "p": [p[t] for t in order],
                "thumbs": [(track_thumbs or {}).get(str(_clean(t))) for t in order]}

    return {
        "labels": labels,
        "colors": [colors[x] for x in labels],
        "seconds": seconds,
        "viewers": viewers,
        "low": low,
        "lowRanges": [list(r) for r in contiguous_ranges(s for s, f in zip(seconds, low) if f)],
        "noViewerRanges": [list(r) for r in contiguous_ranges(s for s, v in zip(seconds, viewers) if v == 0)],
        "lowThreshold": thr,
        "shareKind": share_kind,
        "share": [col(prefix + x) for x in labels],
        "valence": col("valence"),
        "expressiveness": col("expressiveness"),
        "attention": col("attention"),
        "hasAttention": "attention" in au.columns and bool(au["attention"].notna().any()),
        "heatmap": heat,
        "mix": [round(head["emotion_mix"].get(x, float("nan")), 4) if x in head["emotion_mix"] else None
                for x in labels],
        "peak": head["peak"],
        "trough": head["trough"],
        "hookSeconds": head["hook"]["seconds"],
    }


def _video_context(video: Mapping[str, Any], timeline: pd.DataFrame, audience: pd.DataFrame,
                   model_card: Mapping[str, Any] | None, thumbnails: Mapping[str, Any] | None
                   ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Template context and headline figures for one video."""
    video = {k: _clean(v) for k, v in dict(video).items()}
    duration = video.get("duration_s")
    duration = float(duration) if isinstance(duration, (int, float)) else None
    timeline = with_derived_columns(timeline if timeline is not None else pd.DataFrame())
    if not timeline.empty:
        timeline = timeline.sort_values(["track_id", "second"], kind="stable")
    if (audience is None or audience.empty) and not timeline.empty:
        audience = audience_from_timeline(timeline)
    audience = with_derived_columns(audience if audience is not None else pd.DataFrame())
    if not audience.empty:
        audience = audience.sort_values("second", kind="stable").reset_index(drop=True)
    head = headline_figures(timeline, audience, duration_s=duration)

    thumbs = thumbnails or {}
    track_thumbs = {str(k): r for k, v in (thumbs.get("tracks") or {}).items() if (r := _relative_ref(v))}
    moment_thumbs: dict[int, str] = {}
    for k, v in (thumbs.get("moments") or {}).items():
        r = _relative_ref(v)
        try:
            if r:
                moment_thumbs[int(float(k))] = r
        except (TypeError, ValueError):
            logger.warning("ignoring moment thumbnail with non-numeric second %r", k)
    dropped = sum(len(thumbs.get(k) or {}) for k in ("tracks", "moments")) - len(track_thumbs) - len(moment_thumbs)
    if dropped:
        logger.warning("ignored %d thumbnail(s) that were not relative paths", dropped)

    viewers = viewer_summary(timeline)
    viewer_rows = []
    for row in viewers.head(MAX_VIEWER_ROWS).itertuples(index=False):
        tid = _clean(row.track_id)
        viewer_rows.append({
            "track_id": tid, "first": _clean(row.first_second), "last": _clean(row.last_second),
            "seconds": _clean(row.seconds), "valence": _clean(row.valence),
            "expressiveness": _clean(row.expressiveness), "attention": _clean(row.attention),
            "smiled": bool(row.smiled),
            "emotion": _clean(row.emotion), "thumb": track_thumbs.get(str(tid)),
        })

    moments = []
    for key, title in (("peak", "Highest valence"), ("trough", "Lowest valence")):
        m = head[key]
        if m is not None:
            moments.append({"title": title, "second": m["second"], "value": m["value"], "viewers": m["viewers"],
                            "thumb": moment_thumbs.get(m["second"])})
    pe = head["peak_end"]
    if pe["peak_second"] is not None:
        moments.append({"title": f"Peak {pe['label']}", "second": pe["peak_second"], "value": None,
                        "p": pe["peak"], "viewers": None, "thumb": moment_thumbs.get(pe["peak_second"])})
    used = {m["second"] for m in moments}
    frames = [{"second": s, "thumb": r} for s, r in sorted(moment_thumbs.items()) if s not in used][:24]

    path = video.get("path") or ""
    name = Path(str(path)).name or str(video.get("video_id", ""))
    proc = video.get("processing_s")
    speed = (duration / proc) if (duration and proc and proc > 0) else None
    colors = label_colors(head["labels"])
    ctx = {
        "title": name,
        "video": video,
        "speed": speed,
        "head": head,
        "labels": head["labels"],
        "colors": colors,
        "mix_rows": [{"label": x, "value": head["emotion_mix"].get(x), "color": colors[x]} for x in head["labels"]],
        "moments": moments,
        "frames": frames,
        "viewers": viewer_rows,
        "viewers_total": len(viewers),
        "has_data": not audience.empty,
        "card": _model_card_summary(model_card),
        "chart_json": json_for_script(_chart_data(timeline, audience, head, duration, track_thumbs)),
        "plotly_src": PLOTLY_JS_NAME,
        "generated": datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z").strip(),
        "hook_s": HOOK_S,
        "end_s": END_S,
        "low_share": LOW_CONFIDENCE_SHARE,
    }
    return ctx, head


def _mark_safe(ctx: dict[str, Any]) -> dict[str, Any]:
    """Mark the pre-escaped JSON block as safe for Jinja (it is escaped by :func:`json_for_script`)."""
    from markupsafe import Markup

    ctx = dict(ctx)
    ctx["chart_json"] = Markup(ctx["chart_json"])
    return ctx


def _render_video(video: Mapping[str, Any], timeline: pd.DataFrame | None, audience: pd.DataFrame | None,
                  out_path: Path, model_card: Mapping[str, Any] | None = None,
                  thumbnails: Mapping[str, Any] | None = None) -> tuple[Path, dict[str, Any]]:
    """:func:`render_video_report`, also returning the headline figures (for the index)."""
    out_path = Path(out_path)
    ctx, head = _video_context(video, timeline, audience, model_card, thumbnails)
    html = _environment().get_template("video.html.j2").render(**_mark_safe(ctx))
    ensure_plotly_js(out_path.parent)
    atomic_write_text(out_path, html)
    logger.info("wrote report %s", out_path)
    return out_path, head


def render_video_report(video: dict, timeline: pd.DataFrame, audience: pd.DataFrame, out_path: Path,
                        model_card: dict | None = None, thumbnails: dict | None = None) -> Path:
    """Render one video's self-contained HTML report.

    Writes ``out_path`` atomically and, next to it, ``plotly.min.js`` (once). The page opens offline and makes no
    network request.

    Args:
        video: one row of the ``videos`` table as a dict (``video_id``, ``path``, ``status``, ``duration_s`` in
            seconds, ``fps`` in Hz, ``width``/``height`` in pixels, ``processing_s`` in seconds, ...). Missing keys
            are shown as "—".
        timeline: the video's ``timeline`` rows (track x second); may be empty (no faces).
        audience: the video's ``audience`` rows (per second); may be empty (then rebuilt from ``timeline``).
        out_path: the HTML file to write, e.g. ``OUT/reports/<video_id>.html``.
        model_card: the emotion model's card (name, labels, metrics); a summary is shown when given.
        thumbnails: ``{"tracks": {track_id: "rel/path.jpg"}, "moments": {second: "rel/path.jpg"}}``, paths relative
            to ``out_path``'s folder; absolute paths and URLs are ignored (they would break the offline guarantee).

    Returns:
        ``out_path``.

    Raises:
        OSError: the report or plotly.min.js cannot be written.
        jinja2.TemplateError: a template is missing or broken.
    """
    return _render_video(video, timeline, audience, out_path, model_card, thumbnails)[0]


def _index_context(videos: pd.DataFrame, reports: Mapping[str, str],
                   headlines: Mapping[str, Mapping[str, Any]] | None,
                   report_errors: Mapping[str, str] | None) -> dict[str, Any]:
    """Template context of the index page."""
    headlines = headlines or {}
    report_errors = report_errors or {}
    rows, problems = [], []
    statuses: dict[str, int] = {}
    total_duration = 0.0
    total_viewers = 0
    versions, models = set(), set()
    created = []
    for rec in videos.to_dict("records"):
        v = {k: _clean(x) for k, x in rec.items()}
        vid = str(v.get("video_id", ""))
        status = str(v.get("status") or "unknown")
        statuses[status] = statuses.get(status, 0) + 1
        path = str(v.get("path") or "")
        name = Path(path).name or vid
        if v.get("pipeline_version"):
            versions.add(str(v["pipeline_version"]))
        if v.get("emotion_model"):
            models.add(str(v["emotion_model"]))
        if v.get("created_at") is not None:
            created.append(v["created_at"])
        if status != "ok":
            problems.append({"name": name, "path": path, "status": status,
                             "reason": _first_line(v.get("error")) or "no reason recorded"})
            continue
        h = headlines.get(vid, {})
        viewers = h.get("viewers", v.get("tracks"))
        duration = v.get("duration_s")
        total_duration += float(duration) if isinstance(duration, (int, float)) else 0.0
        total_viewers += int(viewers) if isinstance(viewers, (int, float)) else 0
        peak = h.get("peak")
        rows.append({
            "video_id": vid, "name": name, "path": path,
            "href": _relative_ref(reports.get(vid)),
            "report_error": _first_line(report_errors.get(vid)) or None,
            "duration": duration, "viewers": viewers,
            "valence": h.get("mean_valence"), "expressiveness": h.get("mean_expressiveness"),
            "attention": h.get("mean_attention"),
            "smiled": h.get("smiled_share"),
            "dominant": h.get("dominant_emotion"), "expression": h.get("dominant_expression"),
            "peak_second": peak["second"] if peak else None,
            "color": label_colors([h.get("dominant_emotion") or ""]).get(h.get("dominant_emotion") or ""),
            "created_at": v.get("created_at"),
        })
    rows.sort(key=lambda r: r["name"].lower())
    return {
        "rows": rows, "problems": problems, "statuses": statuses, "n_videos": len(videos),
        "total_duration": total_duration, "total_viewers": total_viewers,
        "versions": sorted(versions), "models": sorted(models),
        "created_from": format_when(min(created, key=str)) if created else None,
        "created_to": format_when(max(created, key=str)) if created else None,
        "status_counts": sorted(statuses.items(), key=lambda kv: (_STATUS_ORDER.get(kv[0], 9), kv[0])),
        "generated": datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z").strip(),
    }


def render_index(videos: pd.DataFrame, out_path: Path, reports: dict[str, str],
                 headlines: dict[str, dict] | None = None, report_errors: dict[str, str] | None = None) -> Path:
    """Render the run index: every video with its headline figures, sortable, plus failed/skipped files.

    Args:
        videos: the ``videos`` table (one row per input file; ``video_id`` as str).
        out_path: the HTML file to write, normally ``OUT/index.html``.
        reports: ``{video_id: href}`` of the rendered reports, relative to ``out_path``'s folder
            (e.g. ``"reports/<video_id>.html"``). Videos without an entry are listed without a link.
        headlines: ``{video_id: headline_figures(...)}``; when absent, only the ``videos`` columns are shown
            (``tracks`` as viewers, duration).
        report_errors: ``{video_id: message}`` for ok videos whose report could not be rendered.

    Returns:
        ``out_path``.

    Raises:
        OSError: the file cannot be written.
        jinja2.TemplateError: a template is missing or broken.
    """
    out_path = Path(out_path)
    ctx = _index_context(videos, reports, headlines, report_errors)
    html = _environment().get_template("index.html.j2").render(**ctx)
    atomic_write_text(out_path, html)
    logger.info("wrote index %s (%d videos)", out_path, len(videos))
    return out_path


def _read_dataset(path: Path, video_id: str | None = None, damaged: list[Path] | None = None) -> pd.DataFrame:
    """Read a Hive-partitioned Parquet dataset (or one video of it) with ``video_id`` as str
    (:func:`fer_pipeline.store.read_parts`).

    Returns:
        The rows (all videos, or those of ``video_id``); an empty frame when the folder does not exist or holds no
        data files.

    Raises:
        DamagedOutputError: a part file cannot be read (not with ``damaged``, which collects them).
    """
    from fer_pipeline.store import read_parts

    return read_parts(path, video_id, damaged=damaged)


class ReportError(Exception):
    """Some reports could not be rendered (the others and the index were written).

    Attributes:
        errors: ``{video_id: one-line reason}``.
        damaged: the unreadable Parquet files behind them.
    """

    def __init__(self, errors: dict[str, str], damaged: list[Path]) -> None:
        self.errors, self.damaged = dict(errors), list(damaged)
        first = next(iter(self.errors.items()), None)
        head = f"{first[0]}: {first[1]}" if first else ", ".join(map(str, damaged[:3]))
        n = max(len(self.errors), len(self.damaged))
        super().__init__(f"{n} report{'s' if n != 1 else ''} not rendered ({head}"
                         + (f"; and {n - 1} more" if n > 1 else "") + ")")


def _saved_thumbnails(reports_dir: Path, video_id: str) -> dict:
    """Thumbnails the pipeline saved for a video (``reports/thumbs/<video_id>/track-<id>.jpg`` and
    ``second-<s>.jpg``), as paths relative to the report files in ``reports_dir``."""
    folder = reports_dir / "thumbs" / video_id
    thumbs: dict = {"tracks": {}, "moments": {}}
    if not folder.is_dir():
        return thumbs
    for f in sorted(folder.glob("*.jpg")):
        kind, _, num = f.stem.partition("-")
        if not num.isdigit():
            continue
        rel = f"thumbs/{video_id}/{f.name}"
        if kind == "track":
            thumbs["tracks"][int(num)] = rel
        elif kind == "second":
            thumbs["moments"][int(num)] = rel
    return thumbs


def render_all(out_dir: Path, model_card: dict | None = None) -> list[Path]:
    """Re-render every report of a run from its Parquet tables alone.

    Reads ``out_dir/videos`` (required) and, per ``ok`` video, its rows of ``out_dir/timeline`` and
    ``out_dir/audience`` (either may be missing, e.g. when every video failed or no face was seen). Writes
    ``out_dir/reports/<video_id>.html`` per ok video, ``out_dir/reports/plotly.min.js`` and ``out_dir/index.html``.
    A video whose report fails to render (e.g. its Parquet part is damaged) loses its old report, is listed in the
    index with the error, and the others go on; :class:`ReportError` then says so at the end.

    Args:
        out_dir: the run's output folder.
        model_card: the emotion model's card, summarised in each report when given.

    Returns:
        The paths written: the reports (in index order of the ``videos`` table), then the index last.

    Raises:
        FileNotFoundError: ``out_dir/videos`` does not exist (not an output folder).
        OSError: a file cannot be written.
        ReportError: after writing the rest, when any report could not be rendered or a ``videos`` part could not be
            read.
    """
    out_dir = Path(out_dir)
    videos_dir = out_dir / "videos"
    if not videos_dir.exists():
        raise FileNotFoundError(f"{videos_dir} not found: {out_dir} is not a pipeline output folder")
    damaged: list[Path] = []
    videos = _read_dataset(videos_dir, damaged=damaged)
    if "video_id" not in videos.columns:
        videos = videos.assign(video_id=pd.Series(dtype=str))
    if "created_at" in videos.columns:
        videos = videos.sort_values("created_at", kind="stable")
    videos = videos.drop_duplicates("video_id", keep="last").reset_index(drop=True)

    reports_dir = out_dir / "reports"
    written: list[Path] = []
    hrefs: dict[str, str] = {}
    headlines: dict[str, dict] = {}
    errors: dict[str, str] = {}
    used_names: set[str] = set()
    for video in videos.to_dict("records"):
        if str(video.get("status")) != "ok":
            continue
        vid = str(video["video_id"])
        stem = safe_filename(vid)
        while stem in used_names:  # two ids that sanitise to the same name
            stem += "_"
        used_names.add(stem)
        target = reports_dir / f"{stem}.html"
        try:
            timeline = _read_dataset(out_dir / "timeline", vid)
            audience = _read_dataset(out_dir / "audience", vid)
            path, head = _render_video(video, timeline, audience, target, model_card,
                                       _saved_thumbnails(reports_dir, vid))
        except Exception as e:  # one video's report must not stop the run's index
            if isinstance(e, OSError) and is_disk_full(e):
                raise
            if isinstance(e, DamagedOutputError):
                logger.warning("report for video %s not rendered: %s", vid, one_line(e))
                damaged += e.paths
                errors[vid] = one_line(e)
            else:
                logger.exception("report for video %s (%s) failed", vid, video.get("path"))
                errors[vid] = f"{type(e).__name__}: {e}"
            target.unlink(missing_ok=True)  # an older report of it would show results that may no longer hold
            continue
        written.append(path)
        headlines[vid] = head
        hrefs[vid] = f"reports/{stem}.html"
    written.append(render_index(videos, out_dir / "index.html", hrefs, headlines, errors))
    if errors or damaged:
        for f in damaged:
            if f.parent.parent.name == "videos":
                errors.setdefault(f.parent.name.partition("=")[2], f"damaged output file {f}")
        raise ReportError(errors, damaged)
    return written
