"""Summary metrics of one video: pure functions over its ``timeline`` and ``audience`` tables.

Pandas DataFrames in, plain values (or small frames) out; nothing here reads or writes files or knows about HTML.
The per-second figures themselves (valence, expressiveness, shares, attention) come from
:mod:`fer_pipeline.aggregate`; this module only summarises them: headline figures, peak and trough, the opening hook,
peak-end, per-viewer summaries and the key moments.

:func:`key_moments` is the one rule for "which seconds are worth showing": the report shows its headline moments
(and a gallery of the others), and the pipeline saves a thumbnail for each of its ``seconds``
(:func:`fer_pipeline.pipeline.moment_seconds`), so every moment a report shows has its frame.

Conventions: ``second`` is the integer start of the window ``[second, second + 1)`` in video time; probabilities and
shares are fractions in [0, 1]; ``valence`` in [-1, 1]; ``expressiveness`` in [0, 1]; ``attention`` = share of
viewers facing the camera in [0, 1] (absent from tables written before head pose existed). Figures that cannot be
computed are ``None``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from fer_pipeline.aggregate import (
    PROB_PREFIX,
    audience_from_timeline,
    emotion_labels,
    with_derived_columns,
)

logger = logging.getLogger(__name__)

HOOK_S = 8.0
"""Length in seconds of the "opening hook" window, ``[0, HOOK_S)``."""
END_S = 3.0
"""Length in seconds of the "end" window of the peak-end summary, the last ``END_S`` seconds of the video."""
LOW_CONFIDENCE_SHARE = 0.5
"""A second is low-confidence when it has fewer viewers than this fraction of the peak number of viewers."""
KEY_MOMENTS_K = 3
""":func:`key_moments` keeps this many highest and this many lowest valence seconds."""
SMILE = "happy"
"""The label counted as a smile (smiled share, peak-end, the third key moment)."""
NEUTRAL = "neutral"
"""The label ignored by the dominant *expression*."""


def prepare_tables(timeline: pd.DataFrame | None, audience: pd.DataFrame | None, duration_s: float | None = None,
                   sort: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A video's two tables made ready for the metrics: derived columns filled in, the audience rebuilt if absent.

    Args:
        timeline: the video's ``timeline`` rows (may be ``None`` or empty).
        audience: the video's ``audience`` rows (may be ``None`` or empty: then rebuilt from ``timeline`` with
            :func:`fer_pipeline.aggregate.audience_from_timeline`).
        duration_s: video duration in seconds, for the rebuilt audience (optional).
        sort: sort the timeline by ``track_id, second`` and the audience by ``second`` (index reset).

    Returns:
        ``(timeline, audience)``; either may be an empty frame.
    """
    timeline = with_derived_columns(timeline if timeline is not None else pd.DataFrame())
    if sort and not timeline.empty:
        timeline = timeline.sort_values(["track_id", "second"], kind="stable")
    if (audience is None or audience.empty) and not timeline.empty:
        audience = audience_from_timeline(timeline, duration_s)
    audience = with_derived_columns(audience if audience is not None else pd.DataFrame())
    if sort and not audience.empty:
        audience = audience.sort_values("second", kind="stable").reset_index(drop=True)
    return timeline, audience


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
    return max(1, math.ceil(min_share * float(peak) - 1e-9))


def low_confidence_mask(audience: pd.DataFrame, min_share: float = LOW_CONFIDENCE_SHARE) -> pd.Series:
    """Boolean per row of ``audience``: True where ``viewers`` < :func:`low_confidence_threshold` (all False
    without a ``viewers`` column)."""
    if "viewers" not in audience.columns:
        return pd.Series(False, index=audience.index)
    thr = low_confidence_threshold(audience, min_share)
    return pd.to_numeric(audience["viewers"], errors="coerce").fillna(0) < thr


def smiled_share(timeline: pd.DataFrame, label: str = SMILE) -> float | None:
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
        the window, seconds), ``value`` a float, ``viewers`` an int (0 if unknown). Both ``None`` when the table is
        empty or lacks ``second`` or ``column``.
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


def key_moments(audience: pd.DataFrame, k: int = KEY_MOMENTS_K, label: str = SMILE,
                min_share: float = LOW_CONFIDENCE_SHARE) -> dict[str, Any]:
    """The key moments of a video: the one rule behind the report's "Key moments" and the pipeline's thumbnails.

    Headline moments (shown with their frame in the report): the ``peak`` and ``trough`` of audience valence and the
    peak of ``p_<label>`` (``label_peak``), each among the seconds that are not low-confidence (see
    :func:`peak_trough`; ties go to the earliest second). ``seconds`` are all the seconds worth a frame: second 0,
    the ``k`` highest and ``k`` lowest valence among seconds with viewers (ties: earliest row first), and the
    headline moments' seconds.

    Args:
        audience: per-second table with ``second``, ``viewers``, ``valence`` and ``p_<label>`` (sorted by ``second``,
            as :func:`fer_pipeline.aggregate.audience` writes it). Missing columns make the figures that need them
            ``None``; ``seconds`` always holds 0.
        k: how many highest and lowest valence seconds to keep (>= 0).
        label: the emotion of the third headline moment, ``"happy"`` by default.
        min_share: low-confidence threshold as a fraction of peak viewers.

    Returns:
        ``{"peak": {"second", "value", "viewers"} | None, "trough": ... | None,
        "label_peak": {"label", "second", "value", "viewers"} | None, "seconds": sorted list[int]}``; ``value`` is
        the valence, or for ``label_peak`` the mean ``p_<label>`` over viewers in that second.
    """
    pt = peak_trough(audience, "valence", min_share)
    lp = peak_trough(audience, PROB_PREFIX + label, min_share)["peak"]
    label_peak = {"label": label, **lp} if lp is not None else None
    seconds = {0}
    if k > 0 and {"second", "viewers", "valence"} <= set(audience.columns):
        seen = audience[audience["viewers"] > 0]
        if len(seen):
            seconds |= set(seen.nlargest(k, "valence")["second"].tolist())
            seconds |= set(seen.nsmallest(k, "valence")["second"].tolist())
    seconds |= {m["second"] for m in (pt["peak"], pt["trough"], label_peak) if m is not None}
    return {"peak": pt["peak"], "trough": pt["trough"], "label_peak": label_peak,
            "seconds": sorted(int(s) for s in seconds)}


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
             label: str = SMILE, min_share: float = LOW_CONFIDENCE_SHARE) -> dict[str, Any]:
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
        ``expressiveness``, ``attention`` (means over that viewer's seconds; NaN without head pose), ``smiled``
        (bool: ``happy`` dominant in >= 1 second) and ``emotion`` (their most frequent dominant emotion); sorted by
        ``seconds`` descending, then ``track_id``. Empty (with those columns) without rows or ``track_id``.
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
        out["smiled"] = (emo == SMILE).groupby(tl["track_id"]).any()
        out["emotion"] = emo.groupby(tl["track_id"]).agg(lambda s: s.value_counts().index[0] if s.notna().any()
                                                        else None)
    else:
        out["smiled"] = False
        out["emotion"] = None
    out = out.reset_index().sort_values(["seconds", "track_id"], ascending=[False, True], kind="stable")
    return out[cols].reset_index(drop=True)


def headline_figures(timeline: pd.DataFrame, audience: pd.DataFrame | None, duration_s: float | None = None,
                     hook_s: float = HOOK_S, end_s: float = END_S,
                     min_share: float = LOW_CONFIDENCE_SHARE) -> dict[str, Any]:
    """The headline figures of one video.

    Args:
        timeline: the video's rows of the ``timeline`` table (may be empty).
        audience: the video's rows of the ``audience`` table (may be empty; rebuilt from ``timeline`` if so, see
            :func:`prepare_tables`).
        duration_s: video duration in seconds, for the end window of :func:`peak_end` and a rebuilt audience
            (optional).
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
        mix, the latter ignoring ``neutral``), ``peak`` / ``trough`` (valence, as in :func:`key_moments`), ``hook``
        (:func:`opening_hook`), ``peak_end`` (:func:`peak_end`), ``low_confidence_threshold`` (int) and
        ``low_confidence_seconds`` (list[int]). Figures that cannot be computed are ``None``.
    """
    timeline, audience = prepare_tables(timeline, audience, duration_s, sort=False)
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
        "dominant_expression": dominant(mix, exclude=(NEUTRAL,)),
        "peak": pt["peak"],
        "trough": pt["trough"],
        "hook": opening_hook(audience, hook_s),
        "peak_end": peak_end(audience, end_s, duration_s, min_share=min_share),
        "low_confidence_threshold": low_confidence_threshold(audience, min_share),
        "low_confidence_seconds": low_seconds,
    }
