"""Statistics over respondents: bootstrap confidence intervals, permutation tests, norms (percentile ranks).

Respondents are the unit of resampling: a respondent's seconds are not independent of each other, respondents are
(Efron & Tibshirani 1993, "An Introduction to the Bootstrap", ch. 13: percentile intervals; Good 2005,
"Permutation, Parametric and Bootstrap Tests of Hypotheses": two-sample permutation test). Every draw comes from a
``numpy.random.default_rng(seed)``, so the same tables give the same intervals and p-values.
"""

from __future__ import annotations

import numpy as np

MIN_RESPONDENTS_FOR_CI = 2
"""Fewer respondents than this in a second (or a group): its interval is NaN, not a zero-width band."""


def bootstrap_weights(n: int, n_boot: int, seed: int) -> np.ndarray:
    """Multinomial resampling counts: row ``b`` says how often each of ``n`` respondents is drawn in resample ``b``.

    Returns:
        ``(n_boot, n)`` float64 counts, each row summing to ``n``.
    """
    rng = np.random.default_rng(seed)
    if n == 0:
        return np.zeros((n_boot, 0))
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)


def per_second_ci(values: np.ndarray, weights: np.ndarray, confidence: float = 0.95
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean over respondents per second, with a percentile-bootstrap interval.

    Args:
        values: ``(R, S)`` one figure per respondent and second, NaN where the respondent has no face that second.
        weights: ``(B, R)`` from :func:`bootstrap_weights` (the same draws for every figure of a study, so intervals
            of different figures come from the same resamples).
        confidence: interval level in (0, 1).

    Returns:
        ``(mean, low, high, n)``: ``(S,)`` float64 mean over the respondents present, interval bounds (NaN where
        fewer than :data:`MIN_RESPONDENTS_FOR_CI` are present, or where every resample lacks the second), and the
        ``(S,)`` int64 count of respondents present.
    """
    v = np.asarray(values, np.float64)
    present = ~np.isnan(v)
    n = present.sum(axis=0).astype(np.int64)
    filled = np.where(present, v, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = filled.sum(axis=0) / n
        num = weights @ filled
        den = weights @ present.astype(np.float64)
        boot = num / den  # (B, S); NaN where a resample drew no respondent present
    alpha = (1.0 - confidence) / 2.0
    low = np.full(v.shape[1], np.nan)
    high = np.full(v.shape[1], np.nan)
    ok = n >= MIN_RESPONDENTS_FOR_CI
    if ok.any() and len(weights):
        b = boot[:, ok]
        valid = ~np.isnan(b).all(axis=0)
        lo = np.full(b.shape[1], np.nan)
        hi = np.full(b.shape[1], np.nan)
        if valid.any():
            lo[valid], hi[valid] = np.nanquantile(b[:, valid], [alpha, 1.0 - alpha], axis=0)
        low[ok], high[ok] = lo, hi
    mean = np.where(n > 0, mean, np.nan)
    return mean, low, high, n


def mean_ci(values: np.ndarray, n_boot: int = 1000, confidence: float = 0.95, seed: int = 0
            ) -> tuple[float, float, float, int]:
    """Mean of one value per respondent with a percentile-bootstrap interval (NaN values left out).

    Returns:
        ``(mean, low, high, n)``; all NaN (and ``n``) when ``n`` is 0; NaN bounds when
        ``n < MIN_RESPONDENTS_FOR_CI``.
    """
    v = np.asarray(values, np.float64)
    v = v[~np.isnan(v)]
    n = len(v)
    if n == 0:
        return float("nan"), float("nan"), float("nan"), 0
    m = float(v.mean())
    if n < MIN_RESPONDENTS_FOR_CI:
        return m, float("nan"), float("nan"), n
    w = bootstrap_weights(n, n_boot, seed)
    boot = w @ v / n
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(boot, [alpha, 1.0 - alpha])
    return m, float(lo), float(hi), n


def permutation_test(a: np.ndarray, b: np.ndarray, n_perm: int = 10000, seed: int = 0) -> tuple[float, float]:
    """Two-sided two-sample permutation test of the difference of means (NaN values left out).

    The respondents of both groups are pooled and relabelled at random ``n_perm`` times; the p-value is
    ``(1 + #{|diff_perm| >= |diff_obs|}) / (1 + n_perm)`` (never 0; Phipson & Smyth 2010). Respondents who saw both
    stimuli are treated as independent samples (a conservative choice for a within-subject design).

    Returns:
        ``(mean(a) - mean(b), p)``; ``(NaN, NaN)`` when either group is empty.
    """
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    if len(a) == 0 or len(b) == 0:
        return float("nan"), float("nan")
    diff = float(a.mean() - b.mean())
    pooled = np.concatenate([a, b])
    rng = np.random.default_rng(seed)
    n_a = len(a)
    total = pooled.sum()
    hits = 0
    chunk = 2000
    for start in range(0, n_perm, chunk):
        k = min(chunk, n_perm - start)
        perm = rng.permuted(np.broadcast_to(pooled, (k, len(pooled))), axis=1)
        sa = perm[:, :n_a].sum(axis=1)
        d = sa / n_a - (total - sa) / len(b)
        hits += int((np.abs(d) >= abs(diff) - 1e-12).sum())
    return diff, (1 + hits) / (1 + n_perm)


def percentile_rank(value: float, population: np.ndarray) -> float:
    """Percentile of ``value`` among ``population`` (which includes it, or not): the share of values below it plus
    half the share equal to it, times 100, in [0, 100]. NaN for a NaN value or an empty population."""
    pop = np.asarray(population, np.float64)
    pop = pop[~np.isnan(pop)]
    if len(pop) == 0 or value is None or np.isnan(value):
        return float("nan")
    below = (pop < value - 1e-12).sum()
    equal = (np.abs(pop - value) <= 1e-12).sum()
    return float(100.0 * (below + 0.5 * equal) / len(pop))
