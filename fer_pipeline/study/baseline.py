"""Per-respondent baselines: what a respondent's face reads as when nothing is happening to it.

Resting faces differ: some read sad or angry at rest. A baseline is one probability vector per respondent;
the study reports ``delta_valence`` and ``delta_expressiveness`` (the respondent's figure minus their baseline's)
beside the raw figures, never instead of them.

* ``lead_in``: the mean of the respondent's sample probabilities before the stimulus starts (``t < offset_s``);
  undefined (NaN) without a face before the offset.
* ``resting``: the mean of the respondent's per-second probabilities over their least expressive seconds of the whole
  recording (the ``resting_share`` of them, at least one second; expressiveness = 1 - p_neutral).
* ``none``: no baseline (the delta columns are NaN).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from fer_pipeline.aggregate import expressiveness, prob_columns, valence

METHODS = ("none", "lead_in", "resting")


def baseline_probs(samples: pd.DataFrame, labels, method: str, offset_s: float,
                   resting_share: float = 0.25) -> np.ndarray | None:
    """One respondent's baseline probabilities.

    Args:
        samples: all of the respondent's (smoothed) face samples of the recording (``timestamp_s``, ``p_<label>``).
        labels: model labels.
        method: ``none``, ``lead_in`` or ``resting``.
        offset_s: stimulus start in the recording, seconds.
        resting_share: ``resting``: share of the respondent's seconds (least expressive first) averaged, (0, 1].

    Returns:
        ``(C,)`` float64 probabilities summing to 1, or ``None`` (method ``none``, or no sample to base it on).

    Raises:
        ValueError: unknown method.
    """
    if method not in METHODS:
        raise ValueError(f"unknown baseline {method!r}; expected one of {', '.join(METHODS)}")
    if method == "none" or samples.empty:
        return None
    pcols = prob_columns(labels)
    t = samples["timestamp_s"].to_numpy(np.float64)
    p = samples[pcols].to_numpy(np.float64)
    if method == "lead_in":
        before = t < offset_s
        return p[before].mean(axis=0) if before.any() else None
    seconds = np.floor(t).astype(np.int64)
    per_sec = pd.DataFrame(p, columns=pcols).groupby(seconds).mean().to_numpy()
    expr = expressiveness(per_sec, labels)
    k = max(1, math.ceil(resting_share * len(per_sec)))
    calm = np.argsort(expr, kind="stable")[:k]
    return per_sec[calm].mean(axis=0)


def baseline_figures(probs: np.ndarray | None, labels) -> tuple[float, float]:
    """``(valence, expressiveness)`` of a baseline vector; NaN for ``None``."""
    if probs is None:
        return float("nan"), float("nan")
    p = np.asarray(probs, np.float64)[None, :]
    return float(valence(p, labels)[0]), float(expressiveness(p, labels)[0])
