"""Aggregation: per-face rows -> per-track-per-second ``timeline`` and per-second ``audience`` tables.

Definitions (ARCHITECTURE.md, the contract users rely on):

* ``second`` is the integer start of the window [second, second + 1) of presentation time; rows are bucketed by
  ``floor(timestamp_s)``, never by frame index / fps.
* ``valence = p_happy - (p_angry + p_disgust + p_fear + p_sad + p_contempt)``, in [-1, 1] (labels a model lacks
  count as 0: ``p_contempt`` only with an 8-class FER+ model, where contempt counts as an unpleasant, negative
  expression).
* ``expressiveness = 1 - p_neutral``, in [0, 1].
* timeline ``p_<label>`` are means over the track's samples in that second; ``emotion`` is the argmax of those means.
* audience ``p_<label>`` are means over viewers (each viewer weighs the same, however many samples it has);
  ``share_<label>`` is the fraction of viewers whose dominant emotion in that second is the label.
  Seconds of the video with no viewer have ``viewers = 0`` and NaN figures.
* timeline ``attention`` is the fraction of the track's samples in that second whose face was ``attentive`` (facing
  the camera, see :mod:`fer_pipeline.headpose`), in [0, 1]; audience ``attention`` is its mean over the viewers
  present, i.e. the share of viewers attentive (a viewer attentive in 3 of 5 samples counts as 0.6 of a viewer).
  NaN when the faces carry no ``attentive`` column (tables from before head pose existed).

This module is the only place these per-second figures are computed: the report (:mod:`fer_pipeline.report`) and
the summary metrics (:mod:`fer_pipeline.metrics`) call :func:`with_derived_columns` and :func:`audience_from_timeline`
for tables that lack them (hand-made, or written by an older version) instead of computing them again.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

PROB_PREFIX = "p_"
"""Prefix of the per-label probability columns, ``p_<label>``."""
SHARE_PREFIX = "share_"
"""Prefix of the audience's per-label share columns, ``share_<label>``."""
NEGATIVE = ("angry", "disgust", "fear", "sad", "contempt")
"""Labels that count against valence (``contempt`` exists only in 8-class FER+ models)."""


def prob_columns(labels) -> list[str]:
    """``p_<label>`` column names in label order."""
    return [f"p_{lab}" for lab in labels]


def valence(probs: pd.DataFrame | np.ndarray, labels) -> np.ndarray:
    """``p_happy - sum(p_negative)`` per row of a ``(N, C)`` probability table, in [-1, 1]."""
    p = np.asarray(probs, np.float64)
    idx = {lab: i for i, lab in enumerate(labels)}
    v = p[:, idx["happy"]] if "happy" in idx else np.zeros(len(p))
    for lab in NEGATIVE:
        if lab in idx:
            v = v - p[:, idx[lab]]
    return v


def expressiveness(probs: pd.DataFrame | np.ndarray, labels) -> np.ndarray:
    """``1 - p_neutral`` per row, in [0, 1] (1 when the model has no neutral class)."""
    p = np.asarray(probs, np.float64)
    labels = list(labels)
    return 1.0 - p[:, labels.index("neutral")] if "neutral" in labels else np.ones(len(p))


def timeline(faces: pd.DataFrame, labels) -> pd.DataFrame:
    """Per-track, per-second means.

    Args:
        faces: rows of the ``faces`` table (needs ``track_id``, ``timestamp_s``, ``p_<label>``).
        labels: model labels in order.

    Returns:
        Columns ``track_id, [viewer_id,] second, n_samples, p_<label>..., emotion, valence, expressiveness,
        attention`` (``viewer_id`` when ``faces`` has it), sorted by
        track then second; empty (with those columns) when ``faces`` is empty. ``attention`` (fraction of samples
        attentive, [0, 1]) is NaN when ``faces`` has no ``attentive`` column.
    """
    pcols = prob_columns(labels)
    viewer = ["viewer_id"] if "viewer_id" in faces.columns else []
    cols = ["track_id", *viewer, "second", "n_samples", *pcols, "emotion", "valence", "expressiveness", "attention"]
    if len(faces) == 0:
        return _empty(cols, pcols)
    df = faces[["track_id", *viewer, "timestamp_s", *pcols]].copy()
    df["attention"] = (faces["attentive"].astype(np.float64).to_numpy() if "attentive" in faces.columns
                       else np.nan)
    df["second"] = np.floor(df["timestamp_s"].to_numpy()).astype(np.int64)
    g = df.groupby(["track_id", "second"], sort=True)
    out = g[pcols + ["attention"]].mean()
    out.insert(0, "n_samples", g.size())
    if viewer:  # a track belongs to one viewer
        out.insert(0, "viewer_id", g["viewer_id"].first())
    out = out.reset_index()
    p = out[pcols].to_numpy()
    out["emotion"] = np.asarray(labels, dtype=object)[p.argmax(1)]
    out["valence"] = valence(p, labels)
    out["expressiveness"] = expressiveness(p, labels)
    return out[cols]


def audience(tl: pd.DataFrame, labels, duration_s: float) -> pd.DataFrame:
    """Per-second figures over the viewers present, one row for every second of the video.

    Args:
        tl: the :func:`timeline` table.
        labels: model labels in order.
        duration_s: video duration in seconds; rows cover ``0 .. ceil(duration_s) - 1`` (and any later second that
            ``tl`` holds).

    Returns:
        Columns ``second, viewers, p_<label>..., share_<label>..., valence, expressiveness, attention``
        (``attention``: mean of the viewers' timeline ``attention`` = share of viewers facing the camera, [0, 1]).
    """
    pcols = prob_columns(labels)
    scols = [f"share_{lab}" for lab in labels]
    n_sec = int(np.ceil(max(duration_s, 0.0)))
    if len(tl):
        n_sec = max(n_sec, int(tl["second"].max()) + 1)
    seconds = pd.Index(np.arange(n_sec, dtype=np.int64), name="second")
    out = pd.DataFrame(index=seconds)
    if len(tl):
        g = tl.groupby("second")
        out["viewers"] = g.size()
        means = g[pcols].mean()
        means["attention"] = (g["attention"].mean() if "attention" in tl.columns
                              else pd.Series(np.nan, index=means.index))
        dom = pd.get_dummies(tl["emotion"]).reindex(columns=list(labels), fill_value=0).astype(np.float64)
        dom["second"] = tl["second"].to_numpy()
        shares = dom.groupby("second")[list(labels)].mean()
        shares.columns = scols
        out = out.join(means).join(shares)
    else:
        out["viewers"] = 0
        for c in pcols + scols + ["attention"]:
            out[c] = np.nan
    out["viewers"] = out["viewers"].fillna(0).astype(np.int64)
    p = out[pcols].to_numpy(np.float64)
    out["valence"] = valence(p, labels)
    out["expressiveness"] = expressiveness(p, labels)
    return out.reset_index()[["second", "viewers", *pcols, *scols, "valence", "expressiveness", "attention"]]


def emotion_labels(columns: Iterable[str]) -> list[str]:
    """The model's labels, read from the ``p_<label>`` columns of a table, in column order.

    Args:
        columns: column names, e.g. ``timeline.columns``.

    Returns:
        Label names without the prefix, e.g. ``["angry", ..., "neutral"]``; empty if there is no ``p_*`` column.
        The confidence-interval columns of the study tables (``p_<label>_ci_low`` / ``_ci_high``) are not labels.
    """
    return [c[len(PROB_PREFIX):] for c in columns if isinstance(c, str) and c.startswith(PROB_PREFIX)
            and len(c) > len(PROB_PREFIX) and not c.endswith(("_ci_low", "_ci_high"))]


def dominant_emotion(probs: pd.DataFrame | np.ndarray, labels) -> np.ndarray:
    """The label of the largest probability per row of a ``(N, C)`` table (first label wins ties), as
    :func:`timeline`'s ``emotion``, but NaN-safe: NaN entries are ignored and all-NaN rows give ``None``.

    Returns:
        An object array of ``N`` label names (or ``None``).
    """
    p = np.asarray(probs, np.float64)
    if p.size == 0:  # no rows, or no label
        return np.full(len(p), None, dtype=object)
    valid = ~np.isnan(p).all(axis=1)
    idx = np.nanargmax(np.where(np.isnan(p), -np.inf, p), axis=1)
    out = np.asarray(list(labels), dtype=object)[idx]
    out[~valid] = None
    return out


def with_derived_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Add ``valence``, ``expressiveness`` (and ``emotion`` for rows with probabilities) when they are missing.

    The tables this module writes already carry these columns; this only fills them in for hand-made or older
    tables, with :func:`valence`, :func:`expressiveness` and :func:`dominant_emotion` over the ``p_<label>`` columns.

    Args:
        frame: a ``timeline`` or ``audience`` table with ``p_<label>`` columns (fractions in [0, 1]).

    Returns:
        The same frame if nothing was missing (or it has no ``p_*`` column), else a copy with the missing columns
        added: ``valence`` in [-1, 1], ``expressiveness`` in [0, 1] (only when the model has ``neutral``), ``emotion``
        the argmax label (timeline only: added when ``track_id`` exists; ``None`` for rows without probabilities).
    """
    labels = emotion_labels(frame.columns)
    if not labels:
        return frame
    missing_valence = "valence" not in frame.columns
    missing_expr = "expressiveness" not in frame.columns and "neutral" in labels
    missing_emotion = "emotion" not in frame.columns and "track_id" in frame.columns
    if not (missing_valence or missing_expr or missing_emotion):
        return frame
    frame = frame.copy()
    p = frame[prob_columns(labels)].to_numpy(np.float64)
    if missing_valence:
        frame["valence"] = valence(p, labels)
    if missing_expr:
        frame["expressiveness"] = expressiveness(p, labels)
    if missing_emotion:
        frame["emotion"] = pd.Series(dominant_emotion(p, labels), index=frame.index, dtype=object)
    return frame


def audience_from_timeline(tl: pd.DataFrame, duration_s: float | None = None) -> pd.DataFrame:
    """Rebuild the per-second ``audience`` table from a ``timeline`` table (when only the timeline exists).

    Labels are read from the ``p_<label>`` columns; missing ``valence`` / ``expressiveness`` / ``emotion`` are
    filled in first (:func:`with_derived_columns`); then it is :func:`audience`, so the result is the table the
    pipeline would have written.

    Args:
        tl: rows per track and second with ``second``, ``p_<label>`` and ideally ``track_id`` and ``emotion``.
        duration_s: video duration in seconds (rows cover ``0 .. ceil(duration_s) - 1`` and every timeline second);
            ``None``, NaN or <= 0: up to the last timeline second.

    Returns:
        The :func:`audience` table (``second, viewers, p_<label>..., share_<label>..., valence, expressiveness,
        attention``); empty, with those columns, for an empty timeline or one without ``second``.
    """
    tl = with_derived_columns(tl)
    labels = emotion_labels(tl.columns)
    if tl.empty or "second" not in tl.columns:
        cols = (["second", "viewers"] + prob_columns(labels) + [SHARE_PREFIX + x for x in labels]
                + ["valence", "expressiveness", "attention"])
        return pd.DataFrame(columns=cols)
    if "emotion" not in tl.columns:  # no track_id: with_derived_columns did not add it
        tl = tl.assign(emotion=dominant_emotion(tl[prob_columns(labels)], labels))
    dur = float(duration_s) if duration_s is not None and math.isfinite(duration_s) and duration_s > 0 else 0.0
    return audience(tl, labels, dur)


def _empty(cols: list[str], pcols: list[str]) -> pd.DataFrame:
    df = pd.DataFrame({c: pd.Series(dtype=np.float64) for c in cols})
    for c in ("track_id", "viewer_id", "second", "n_samples"):
        if c in df.columns:
            df[c] = df[c].astype(np.int64)
    df["emotion"] = df["emotion"].astype(object)
    return df
