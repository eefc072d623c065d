"""Calibration of the emotion model's probabilities: how far "70% happy" is from being right 70% of the time.

Every report figure is a mean of probabilities, so they must mean what they say. Measures, as in Guo et al. 2017
("On Calibration of Modern Neural Networks", ICML; ECE after Naeini et al. 2015):

- :func:`expected_calibration_error` (ECE): the top-1 probability (confidence) of each face in 15 equal-width bins
  over [0, 1]; the mean over faces of ``|accuracy(bin) - confidence(bin)|`` weighted by the bin's share of faces;
  0 = perfectly calibrated, in [0, 1].
- :func:`negative_log_likelihood` (NLL): mean ``-ln p(true class)``, nats (probabilities clipped at 1e-12).
- :func:`reliability_bins`: the per-bin table behind a reliability diagram.

And the fix, temperature scaling (Guo et al. 2017): ``softmax(ln p / T)`` with one ``T > 0`` fitted on held-out
data by NLL (:func:`fit_temperature`); ``T > 1`` softens over-confident probabilities, ``T < 1`` sharpens
under-confident ones; the predicted class never changes. On probabilities rather than logits it is exact for a
single softmax and a monotone power calibration for averaged (TTA) probabilities.
"""

from __future__ import annotations

import numpy as np

__all__ = ["N_BINS", "apply_temperature", "calibration_metrics", "expected_calibration_error", "fit_temperature",
           "negative_log_likelihood", "reliability_bins"]

#: Equal-width confidence bins of ECE (Guo et al. 2017 use 15).
N_BINS = 15
_EPS = 1e-12


def _check(probs: np.ndarray, y_true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probs, np.float64)
    y = np.asarray(y_true, np.int64)
    if p.ndim != 2 or y.shape != (len(p),):
        raise ValueError(f"probs must be (N, K) and y_true (N,), got {p.shape} and {y.shape}")
    if len(y) and (y.min() < 0 or y.max() >= p.shape[1]):
        raise ValueError(f"y_true must be class indices in [0, {p.shape[1]})")
    return p, y


def reliability_bins(probs: np.ndarray, y_true: np.ndarray, n_bins: int = N_BINS) -> list[dict]:
    """Per confidence bin: ``lo``, ``hi`` (bin edges of the top-1 probability), ``n`` (faces), ``confidence`` (their
    mean top-1 probability) and ``accuracy`` (share whose top-1 class is right); ``None`` for empty bins.

    Args:
        probs: ``(N, K)`` probabilities (rows sum to 1).
        y_true: ``(N,)`` true class indices.
        n_bins: equal-width bins over [0, 1] (a top-1 probability of exactly 1 falls in the last).

    Raises:
        ValueError: shapes that do not match, or labels outside [0, K).
    """
    p, y = _check(probs, y_true)
    conf = p.max(1) if len(p) else np.zeros(0)
    right = (p.argmax(1) == y) if len(p) else np.zeros(0, bool)
    idx = np.minimum((conf * n_bins).astype(np.int64), n_bins - 1)
    out = []
    for b in range(n_bins):
        m = idx == b
        n = int(m.sum())
        out.append({"lo": b / n_bins, "hi": (b + 1) / n_bins, "n": n,
                    "confidence": float(conf[m].mean()) if n else None,
                    "accuracy": float(right[m].mean()) if n else None})
    return out


def expected_calibration_error(probs: np.ndarray, y_true: np.ndarray, n_bins: int = N_BINS) -> float:
    """ECE of the top-1 probability (see the module docstring), in [0, 1]; 0.0 for no faces.

    Raises:
        ValueError: see :func:`reliability_bins`.
    """
    bins = reliability_bins(probs, y_true, n_bins)
    total = sum(b["n"] for b in bins)
    if total == 0:
        return 0.0
    return float(sum(b["n"] * abs(b["accuracy"] - b["confidence"]) for b in bins if b["n"]) / total)


def negative_log_likelihood(probs: np.ndarray, y_true: np.ndarray) -> float:
    """Mean ``-ln p(true class)`` in nats (probabilities clipped at 1e-12); 0.0 for no faces.

    Raises:
        ValueError: see :func:`reliability_bins`.
    """
    p, y = _check(probs, y_true)
    if not len(y):
        return 0.0
    return float(-np.log(np.clip(p[np.arange(len(y)), y], _EPS, 1.0)).mean())


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(ln p / T)`` row by row: ``(N, K)`` float64 probabilities, argmax unchanged.

    Raises:
        ValueError: ``temperature <= 0``.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z = np.log(np.clip(np.asarray(probs, np.float64), _EPS, 1.0)) / float(temperature)
    z -= z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def fit_temperature(probs: np.ndarray, y_true: np.ndarray, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The temperature ``T`` in ``bounds`` that minimises the NLL of :func:`apply_temperature` on held-out faces
    (bounded scalar minimisation, scipy).

    Raises:
        ValueError: no faces, or see :func:`reliability_bins`.
    """
    from scipy.optimize import minimize_scalar

    p, y = _check(probs, y_true)
    if not len(y):
        raise ValueError("fit_temperature needs at least one face")
    res = minimize_scalar(lambda t: negative_log_likelihood(apply_temperature(p, t), y), bounds=bounds,
                          method="bounded", options={"xatol": 1e-4})
    return float(res.x)


def calibration_metrics(probs: np.ndarray, y_true: np.ndarray, n_bins: int = N_BINS) -> dict:
    """``{"ece", "nll", "reliability": reliability_bins(...)}`` of the faces given.

    Raises:
        ValueError: see :func:`reliability_bins`.
    """
    return {"ece": expected_calibration_error(probs, y_true, n_bins), "nll": negative_log_likelihood(probs, y_true),
            "reliability": reliability_bins(probs, y_true, n_bins)}
