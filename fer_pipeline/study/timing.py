"""Stimulus time: a respondent's face samples mapped from recording time onto the seconds of the stimulus.

The rule (one place in the code, documented in the README):

* A sample at recording time ``t`` (its ``timestamp_s``, seconds of presentation time) of a respondent whose
  stimulus starts at ``offset_s`` and lasts ``duration_s`` belongs to the stimulus when
  ``offset_s <= t < offset_s + duration_s``; its ``stimulus_second`` is ``floor(t - offset_s)``. The difference is
  rounded to the microsecond first, so that 10.2 - 0.2 counts as second 10, not 9.999999.
* Per respondent and stimulus second: the mean of that second's samples' probabilities (after optional smoothing),
  the dominant emotion (argmax of the means), valence, expressiveness and attention, exactly as the per-video
  ``timeline`` computes them (:mod:`fer_pipeline.aggregate`).
* One respondent per recording: the viewer (``viewer_id``; ``track_id`` for tables without one) seen in the most
  samples inside the stimulus window. Other faces (someone passing behind) are left out.

Smoothing (``study.smoothing_s`` = sigma > 0): each track's probabilities are replaced by a centred Gaussian-weighted
mean over that track's samples (weights ``exp(-dt^2 / (2 sigma^2))`` for ``|dt| <= 3 sigma``, recording time),
before the per-second means; rows still sum to 1. Frame-level predictions flicker from sample to sample; what the
smoothing does to the second-to-second jitter of the dominant emotion and to the headline figures is measured by
``benchmarks/study_smoothing.py`` (figures in benchmarks/README.md), which chose the default.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fer_pipeline.aggregate import expressiveness, prob_columns, valence

PER_SECOND_COLUMNS = ("stimulus_second", "n_samples", "emotion", "valence", "expressiveness", "attention")


def stimulus_second(timestamp_s: np.ndarray, offset_s: float) -> np.ndarray:
    """``floor(t - offset_s)`` per sample (rounded to the microsecond first), as int64; shape as ``timestamp_s``."""
    d = np.round(np.asarray(timestamp_s, np.float64) - float(offset_s), 6)
    return np.floor(d).astype(np.int64)


def in_window(timestamp_s: np.ndarray, offset_s: float, duration_s: float) -> np.ndarray:
    """Boolean mask of the samples inside ``[offset_s, offset_s + duration_s)`` (same microsecond rounding)."""
    d = np.round(np.asarray(timestamp_s, np.float64) - float(offset_s), 6)
    return (d >= 0) & (d < float(duration_s))


def smooth_probs(faces: pd.DataFrame, labels, sigma_s: float) -> pd.DataFrame:
    """Gaussian temporal smoothing of each track's per-sample probabilities.

    Args:
        faces: ``faces`` rows with ``track_id``, ``timestamp_s`` (seconds) and ``p_<label>`` (rows summing to 1).
        labels: model labels in order.
        sigma_s: standard deviation of the Gaussian in seconds; ``<= 0`` returns ``faces`` unchanged.

    Returns:
        A copy with the ``p_<label>`` columns smoothed within each track (other columns untouched); every row still
        sums to 1 (a weighted mean of rows that do).
    """
    if sigma_s <= 0 or faces.empty:
        return faces
    pcols = prob_columns(labels)
    out = faces.copy()
    p = out[pcols].to_numpy(np.float64)
    t = out["timestamp_s"].to_numpy(np.float64)
    smoothed = p.copy()
    for _, idx in out.groupby("track_id", sort=False).indices.items():
        idx = idx[np.argsort(t[idx], kind="stable")]
        tt = t[idx]
        # samples within 3 sigma on each side: a band of the pairwise matrix, built window by window
        lo = np.searchsorted(tt, tt - 3 * sigma_s, side="left")
        hi = np.searchsorted(tt, tt + 3 * sigma_s, side="right")
        for j, (a, b) in enumerate(zip(lo, hi)):
            w = np.exp(-0.5 * ((tt[a:b] - tt[j]) / sigma_s) ** 2)
            smoothed[idx[j]] = w @ p[idx[a:b]] / w.sum()
    out[pcols] = smoothed.astype(out[pcols].dtypes.iloc[0] if len(pcols) else np.float64)
    return out


def main_viewer(faces: pd.DataFrame, mask: np.ndarray | None = None):
    """The viewer seen in most samples (of ``mask``'s rows when given): ``viewer_id``, else ``track_id``; ties go to
    the smaller id. ``None`` when there is no row."""
    col = "viewer_id" if "viewer_id" in faces.columns else "track_id"
    ids = faces[col] if mask is None else faces.loc[mask, col]
    if ids.empty:
        return None
    counts = ids.value_counts()
    best = counts[counts == counts.max()].index
    return int(min(best))


def viewer_rows(faces: pd.DataFrame, viewer) -> pd.DataFrame:
    """The rows of one viewer (``viewer_id``, else ``track_id``)."""
    col = "viewer_id" if "viewer_id" in faces.columns else "track_id"
    return faces.loc[faces[col] == viewer]


def per_second(samples: pd.DataFrame, labels, seconds: np.ndarray) -> pd.DataFrame:
    """Per-second means of one respondent's samples.

    Args:
        samples: the respondent's rows with ``p_<label>`` and optionally ``attentive`` (bool).
        labels: model labels.
        seconds: the integer second of each row (``len(samples)``), stimulus or recording time.

    Returns:
        Columns ``stimulus_second, n_samples, p_<label>..., emotion, valence, expressiveness, attention`` sorted by
        second (``attention``: fraction of samples attentive, NaN without ``attentive``); empty with those columns
        for no rows.
    """
    pcols = prob_columns(labels)
    cols = ["stimulus_second", "n_samples", *pcols, "emotion", "valence", "expressiveness", "attention"]
    if samples.empty:
        empty = pd.DataFrame({c: pd.Series(dtype=np.float64) for c in cols})
        empty["stimulus_second"] = empty["stimulus_second"].astype(np.int64)
        empty["n_samples"] = empty["n_samples"].astype(np.int64)
        empty["emotion"] = empty["emotion"].astype(object)
        return empty
    df = samples[pcols].astype(np.float64).copy()
    df["attention"] = (samples["attentive"].astype(np.float64).to_numpy() if "attentive" in samples.columns
                       else np.nan)
    df["stimulus_second"] = np.asarray(seconds, np.int64)
    g = df.groupby("stimulus_second", sort=True)
    out = g[[*pcols, "attention"]].mean()
    out.insert(0, "n_samples", g.size().astype(np.int64))
    out = out.reset_index()
    p = out[pcols].to_numpy()
    out["emotion"] = np.asarray(list(labels), dtype=object)[p.argmax(1)]
    out["valence"] = valence(p, labels)
    out["expressiveness"] = expressiveness(p, labels)
    return out[cols]


def respondent_seconds(faces: pd.DataFrame, labels, offset_s: float, duration_s: float,
                       smoothing_s: float = 0.0) -> tuple[pd.DataFrame, pd.DataFrame, int | None]:
    """One respondent's per-second figures on stimulus time.

    Args:
        faces: the recording's ``faces`` rows (``track_id``, ``timestamp_s``, ``p_<label>``, optionally
            ``viewer_id`` and ``attentive``).
        labels: model labels.
        offset_s: seconds into the recording at which the stimulus starts (>= 0).
        duration_s: stimulus length, seconds (> 0).
        smoothing_s: Gaussian sigma in seconds for :func:`smooth_probs` (0 = off).

    Returns:
        ``(stimulus_rows, viewer_samples, viewer)``: the :func:`per_second` table of the respondent's samples inside
        the window (``stimulus_second`` in ``0 .. ceil(duration_s) - 1``); all of that viewer's (smoothed) samples of
        the recording, for baselines; the chosen viewer id (``None`` when no face is in the window).
    """
    if faces.empty:
        return per_second(faces, labels, np.empty(0, np.int64)), faces, None
    t = faces["timestamp_s"].to_numpy(np.float64)
    mask = in_window(t, offset_s, duration_s)
    viewer = main_viewer(faces, mask)
    if viewer is None:
        return per_second(faces.iloc[:0], labels, np.empty(0, np.int64)), faces.iloc[:0], None
    mine = smooth_probs(viewer_rows(faces, viewer), labels, smoothing_s)
    t = mine["timestamp_s"].to_numpy(np.float64)
    inside = in_window(t, offset_s, duration_s)
    rows = per_second(mine.loc[inside], labels, stimulus_second(t[inside], offset_s))
    return rows, mine, viewer
