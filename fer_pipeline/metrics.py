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

Viewers: ``viewer_id`` (timeline and faces, from re-identification) joins the tracks of one person in a video; every
per-viewer figure here (heatmap rows, per-viewer summary, smiled share, the viewer count) is per ``viewer_id``, not per
``track_id``. Tables written before re-identification have no ``viewer_id``: :func:`with_viewer_ids` (called by
:func:`prepare_tables` and by each per-viewer function) then makes each track its own viewer (``viewer_id :=
track_id``). Two tracks of one viewer never overlap in time, so a viewer has at most one timeline row per second;
:func:`viewer_seconds` still merges any such rows (mean of the probabilities, then argmax), so no figure counts a
viewer twice in one second.
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
    prob_columns,
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
VIEWER_ID = "viewer_id"
"""Column of the person a track belongs to (re-identification); absent from tables written before it existed."""


def with_viewer_ids(timeline: pd.DataFrame) -> pd.DataFrame:
    """``timeline`` with a ``viewer_id`` column (int64, right after ``track_id``).

    Tables written before re-identification have none: then each track is its own viewer (``viewer_id :=
    track_id``). Rows whose ``viewer_id`` is missing (NaN: e.g. old and new parts read together) get ids of their
    own, one per track, above the largest id present, so they never merge with a known viewer.

    Returns:
        The same frame when it already has a complete ``viewer_id`` or has no ``track_id``; else a copy.
    """
    if "track_id" not in timeline.columns:
        return timeline
    if VIEWER_ID in timeline.columns:
        vid = pd.to_numeric(timeline[VIEWER_ID], errors="coerce")
        missing = vid.isna()
        if not missing.any():
            return timeline
        out = timeline.copy()
        if missing.all():
            out[VIEWER_ID] = out["track_id"].astype(np.int64)
        else:
            logger.warning("%d timeline row(s) without viewer_id: each of their tracks counts as its own viewer",
                           int(missing.sum()))
            top = int(vid.max())
            codes = pd.factorize(out.loc[missing, "track_id"], sort=True)[0]
            vid = vid.copy()
            vid[missing] = top + 1 + codes
            out[VIEWER_ID] = vid.astype(np.int64)
        return out
    out = timeline.copy()
    out.insert(out.columns.get_loc("track_id") + 1, VIEWER_ID, out["track_id"].astype(np.int64))
    return out


def viewer_seconds(timeline: pd.DataFrame) -> pd.DataFrame:
    """The timeline as one row per viewer and second (what every per-viewer figure is computed from).

    By contract a viewer's tracks never overlap, so this is normally the timeline itself (with ``viewer_id`` and the
    derived columns filled in, see :func:`with_viewer_ids`). Should a viewer still have several rows in a second,
    they are merged: ``p_<label>`` and ``attention`` are their means, ``emotion`` the argmax of the mean
    probabilities (the most frequent ``emotion`` of the rows when there are no probabilities), ``valence`` and
    ``expressiveness`` recomputed from the mean probabilities (their mean without probabilities), ``n_samples``
    summed, ``track_id`` the smallest of the merged tracks.

    Returns:
        Rows per ``viewer_id`` and ``second`` (merged rows sorted by them); the input unchanged (but for the filled
        columns) when it is empty or lacks ``track_id`` or ``second``.
    """
    tl = with_derived_columns(with_viewer_ids(timeline))
    if tl.empty or VIEWER_ID not in tl.columns or "second" not in tl.columns:
        return tl
    keys = [VIEWER_ID, "second"]
    if not tl.duplicated(keys).any():
        return tl
    logger.warning("%d timeline row(s) repeat a viewer's second (overlapping tracks of one viewer): merged",
                   int(tl.duplicated(keys).sum()))
    labels = emotion_labels(tl.columns)
    pcols = prob_columns(labels)
    # recomputed from the mean probabilities by with_derived_columns (which fills in missing columns only)
    derived = ({"emotion", "valence"} | ({"expressiveness"} if NEUTRAL in labels else set())) if labels else set()
    agg: dict[str, Any] = {}
    for c in tl.columns:
        if c in keys or c in derived:
            continue
        if c in pcols or c in ("attention", "valence", "expressiveness"):
            agg[c] = "mean"
        elif c == "n_samples":
            agg[c] = "sum"
        elif c == "track_id":
            agg[c] = "min"
        elif c == "emotion":
            agg[c] = lambda e: e.value_counts().index[0] if e.notna().any() else None
        else:
            agg[c] = "first"
    out = with_derived_columns(tl.groupby(keys, sort=True).agg(agg).reset_index())
    return out[[c for c in tl.columns if c in out.columns]]


def viewer_tracks(timeline: pd.DataFrame) -> dict[int, list[int]]:
    """``{viewer_id: [track_id, ...]}``: each viewer's tracks in order of first appearance (then track id)."""
    tl = with_viewer_ids(timeline)
    if tl.empty or VIEWER_ID not in tl.columns:
        return {}
    first = (tl.groupby([VIEWER_ID, "track_id"], sort=True)["second"].min().reset_index()
             .sort_values([VIEWER_ID, "second", "track_id"], kind="stable"))
    return {int(v): [int(t) for t in g["track_id"]] for v, g in first.groupby(VIEWER_ID, sort=True)}


def prepare_tables(timeline: pd.DataFrame | None, audience: pd.DataFrame | None, duration_s: float | None = None,
                   sort: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A video's two tables made ready for the metrics: ``viewer_id`` and derived columns filled in, the audience
    rebuilt if absent.

    Args:
        timeline: the video's ``timeline`` rows (may be ``None`` or empty). Without ``viewer_id`` (tables written
            before re-identification) each track becomes its own viewer (:func:`with_viewer_ids`).
        audience: the video's ``audience`` rows (may be ``None`` or empty: then rebuilt with
            :func:`fer_pipeline.aggregate.audience_from_timeline` from :func:`viewer_seconds`, so ``viewers``
            counts viewers).
        duration_s: video duration in seconds, for the rebuilt audience (optional).
        sort: sort the timeline by ``viewer_id, second, track_id`` and the audience by ``second`` (index reset).

    Returns:
        ``(timeline, audience)``; either may be an empty frame.
    """
    timeline = with_derived_columns(with_viewer_ids(timeline if timeline is not None else pd.DataFrame()))
    if sort and not timeline.empty:
        keys = [c for c in (VIEWER_ID, "second", "track_id") if c in timeline.columns]
        timeline = timeline.sort_values(keys, kind="stable")
    if (audience is None or audience.empty) and not timeline.empty:
        audience = audience_from_timeline(viewer_seconds(timeline), duration_s)
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
    """Share of viewers whose dominant emotion was ``label`` in at least one second.

    Viewers are ``viewer_id`` (each track its own viewer in tables without it, see :func:`with_viewer_ids`); a
    viewer's dominant emotion per second is that of :func:`viewer_seconds`.

    Args:
        timeline: rows per track and second with ``track_id`` (ideally ``viewer_id``) and ``emotion`` (or
            ``p_<label>`` to derive it).
        label: the emotion counted as a smile, ``"happy"`` by default.

    Returns:
        A fraction in [0, 1], or ``None`` when it cannot be computed (no rows, no ``track_id``, or the model has no
        such label).
    """
    counts = _smiled_counts(timeline, label)
    return None if counts is None else counts[0] / counts[1]


def _smiled_counts(timeline: pd.DataFrame, label: str = SMILE) -> tuple[int, int] | None:
    """``(viewers who smiled, viewers)`` for :func:`smiled_share`; ``None`` when it cannot be computed."""
    if timeline.empty or "track_id" not in timeline.columns:
        return None
    vs = viewer_seconds(timeline)
    labels = emotion_labels(vs.columns)
    if "emotion" not in vs.columns or (labels and label not in labels):
        return None
    viewers = vs[VIEWER_ID].nunique()
    if viewers == 0:
        return None
    smiled = vs.loc[vs["emotion"].astype(object) == label, VIEWER_ID].nunique()
    return int(smiled), int(viewers)


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


def headline_seconds(km: dict[str, Any]) -> list[int]:
    """The seconds of the headline moments of :func:`key_moments`' result (``km``): the valence ``peak`` and
    ``trough`` and the ``label_peak``, in that order, those that exist (the report's "Key moments" cards)."""
    return [m["second"] for m in (km["peak"], km["trough"], km["label_peak"]) if m is not None]


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
    """One row per viewer (``viewer_id``, over all of that person's tracks): time on screen and their own averages.

    Tables without ``viewer_id`` make each track its own viewer (:func:`with_viewer_ids`); the per-second values
    are those of :func:`viewer_seconds`.

    Returns:
        Columns ``viewer_id``, ``tracks`` (number of the viewer's tracks), ``first_second``, ``last_second``,
        ``seconds`` (number of seconds seen), ``valence``, ``expressiveness``, ``attention`` (means over that viewer's
        seconds; NaN without head pose), ``smiled`` (bool: ``happy`` dominant in >= 1 second) and ``emotion`` (their
        most frequent dominant emotion); sorted by ``seconds`` descending, then ``viewer_id``. Empty (with those
        columns) without rows or ``track_id``.
    """
    cols = [VIEWER_ID, "tracks", "first_second", "last_second", "seconds", "valence", "expressiveness", "attention",
            "smiled", "emotion"]
    if timeline.empty or "track_id" not in timeline.columns:
        return pd.DataFrame(columns=cols)
    tl = viewer_seconds(timeline)
    g = tl.groupby(VIEWER_ID, sort=True)
    out = pd.DataFrame({
        "tracks": with_viewer_ids(timeline).groupby(VIEWER_ID, sort=True)["track_id"].nunique(),
        "first_second": g["second"].min(),
        "last_second": g["second"].max(),
        "seconds": g["second"].nunique(),
        "valence": g["valence"].mean() if "valence" in tl else np.nan,
        "expressiveness": g["expressiveness"].mean() if "expressiveness" in tl else np.nan,
        "attention": g["attention"].mean() if "attention" in tl else np.nan,
    })
    if "emotion" in tl.columns:
        emo = tl["emotion"].astype(object)
        out["smiled"] = (emo == SMILE).groupby(tl[VIEWER_ID]).any()
        out["emotion"] = emo.groupby(tl[VIEWER_ID]).agg(lambda s: s.value_counts().index[0] if s.notna().any()
                                                        else None)
    else:
        out["smiled"] = False
        out["emotion"] = None
    out.index.name = VIEWER_ID
    out = out.reset_index().sort_values(["seconds", VIEWER_ID], ascending=[False, True], kind="stable")
    return out[cols].reset_index(drop=True)


def headline_figures(timeline: pd.DataFrame, audience: pd.DataFrame | None, duration_s: float | None = None,
                     hook_s: float = HOOK_S, end_s: float = END_S,
                     min_share: float = LOW_CONFIDENCE_SHARE, viewers: int | None = None) -> dict[str, Any]:
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
        viewers: the video's number of viewers as the ``videos`` table records it (its ``viewers`` column), when
            known; else it is counted from the timeline.

    Returns:
        A dict with
        ``labels`` (list[str]), ``viewers`` (int: ``viewers`` when given, else distinct ``viewer_id`` of the
        timeline, i.e. distinct tracks for tables written before re-identification; the peak audience when there is
        no timeline), ``tracks`` (distinct ``track_id``, int), ``timeline_viewers`` (distinct ``viewer_id``, int),
        ``smiled_viewers`` (viewers who smiled at least once, int), ``peak_viewers`` (most viewers in one second),
        ``seconds_with_viewers`` (int), ``mean_valence`` in [-1, 1] and ``mean_expressiveness`` in [0, 1] (means over
        viewer-seconds, i.e. over :func:`viewer_seconds` rows), ``mean_attention`` in [0, 1] (share of viewer-seconds facing the
        camera; ``None`` for tables without head pose), ``smiled_share`` in [0, 1] (see :func:`smiled_share`),
        ``emotion_mix`` ({label: fraction}), ``dominant_emotion`` and ``dominant_expression`` (largest share of the
        mix, the latter ignoring ``neutral``), ``peak`` / ``trough`` (valence, as in :func:`key_moments`), ``hook``
        (:func:`opening_hook`), ``peak_end`` (:func:`peak_end`), ``low_confidence_threshold`` (int) and
        ``low_confidence_seconds`` (list[int]). Figures that cannot be computed are ``None``.
    """
    timeline, audience = prepare_tables(timeline, audience, duration_s, sort=False)
    labels = emotion_labels(audience.columns) or emotion_labels(timeline.columns)

    tracks: int | None = None
    seen: int | None = None
    if not timeline.empty and "track_id" in timeline.columns:
        vs = viewer_seconds(timeline)
        tracks = int(timeline["track_id"].nunique())
        seen = int(vs[VIEWER_ID].nunique())
        mean_valence = weighted_mean(vs, "valence", weights=None)
        mean_expr = weighted_mean(vs, "expressiveness", weights=None)
        mean_att = weighted_mean(vs, "attention", weights=None)
    else:
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
    smiled = _smiled_counts(timeline)
    recorded = _count(viewers)
    return {
        "labels": labels,
        "viewers": recorded if recorded is not None else (seen if seen is not None else peak_viewers),
        "tracks": tracks,
        "timeline_viewers": seen,
        "smiled_viewers": smiled[0] if smiled is not None else None,
        "peak_viewers": peak_viewers,
        "seconds_with_viewers": seconds_with_viewers,
        "mean_valence": mean_valence,
        "mean_expressiveness": mean_expr,
        "mean_attention": mean_att,
        "smiled_share": smiled[0] / smiled[1] if smiled is not None else None,
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


def _count(value: Any) -> int | None:
    """A count from a table cell as an int; ``None`` for None/NaN/NA, negatives and anything not a number."""
    if value is None or value is pd.NA or isinstance(value, bool):
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return int(f) if math.isfinite(f) and f >= 0 else None
