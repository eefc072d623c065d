"""Aggregation: per-face rows -> per-track-per-second ``timeline`` and per-second ``audience`` tables.

Definitions (ARCHITECTURE.md, the contract users rely on):

* ``second`` is the integer start of the window [second, second + 1) of presentation time; rows are bucketed by
  ``floor(timestamp_s)``, never by frame index / fps.
* ``valence = p_happy - (p_angry + p_disgust + p_fear + p_sad)``, in [-1, 1] (labels a model lacks count as 0).
* ``expressiveness = 1 - p_neutral``, in [0, 1].
* timeline ``p_<label>`` are means over the track's samples in that second; ``emotion`` is the argmax of those means.
* audience ``p_<label>`` are means over viewers (each viewer weighs the same, however many samples it has);
  ``share_<label>`` is the fraction of viewers whose dominant emotion in that second is the label.
  Seconds of the video with no viewer have ``viewers = 0`` and NaN figures.
* timeline ``attention`` is the fraction of the track's samples in that second whose face was ``attentive`` (facing
  the camera, see :mod:`fer_pipeline.headpose`), in [0, 1]; audience ``attention`` is its mean over the viewers
  present, i.e. the share of viewers attentive (a viewer attentive in 3 of 5 samples counts as 0.6 of a viewer).
  NaN when the faces carry no ``attentive`` column (tables from before head pose existed).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

NEGATIVE = ("angry", "disgust", "fear", "sad")


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
        Columns ``track_id, second, n_samples, p_<label>..., emotion, valence, expressiveness, attention``, sorted by
        track then second; empty (with those columns) when ``faces`` is empty. ``attention`` (fraction of samples
        attentive, [0, 1]) is NaN when ``faces`` has no ``attentive`` column.
    """
    pcols = prob_columns(labels)
    cols = ["track_id", "second", "n_samples", *pcols, "emotion", "valence", "expressiveness", "attention"]
    if len(faces) == 0:
        return _empty(cols, pcols)
    df = faces[["track_id", "timestamp_s", *pcols]].copy()
    df["attention"] = (faces["attentive"].astype(np.float64).to_numpy() if "attentive" in faces.columns
                       else np.nan)
    df["second"] = np.floor(df["timestamp_s"].to_numpy()).astype(np.int64)
    g = df.groupby(["track_id", "second"], sort=True)
    out = g[pcols + ["attention"]].mean()
    out.insert(0, "n_samples", g.size())
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


def _empty(cols: list[str], pcols: list[str]) -> pd.DataFrame:
    df = pd.DataFrame({c: pd.Series(dtype=np.float64) for c in cols})
    for c in ("track_id", "second", "n_samples"):
        df[c] = df[c].astype(np.int64)
    df["emotion"] = df["emotion"].astype(object)
    return df
