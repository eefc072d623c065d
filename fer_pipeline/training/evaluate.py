"""Evaluation: accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix (scikit-learn)."""

from __future__ import annotations

import numpy as np


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, labels: tuple[str, ...]) -> dict:
    """Metrics of hard predictions.

    Args:
        y_true, y_pred: ``(N,) int`` class indices into ``labels``.
        labels: class names.

    Returns:
        ``{"accuracy", "macro_f1", "n", "labels", "per_class": {label: {precision, recall, f1, support}},
        "confusion": [[...]]}`` with fractions in [0,1]; ``confusion[i][j]`` counts true ``i`` predicted ``j``.
    """
    from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

    idx = list(range(len(labels)))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=idx, zero_division=0)
    return {
        "accuracy": float((np.asarray(y_true) == np.asarray(y_pred)).mean()) if len(y_true) else 0.0,
        "macro_f1": float(f1_score(y_true, y_pred, labels=idx, average="macro", zero_division=0)),
        "n": int(len(y_true)),
        "labels": list(labels),
        "per_class": {lab: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
                      for i, lab in enumerate(labels)},
        "confusion": confusion_matrix(y_true, y_pred, labels=idx).tolist(),
    }


def evaluate_module(module, data, tta: bool = True, batch_size: int = 512) -> dict:
    """Evaluate a trained :class:`~fer_pipeline.training.module.EmotionClassifier` on an ImageSet."""
    import torch

    probs = []
    with torch.inference_mode():
        for i in range(0, len(data), batch_size):
            x = torch.from_numpy(data.images[i:i + batch_size])[:, None]
            probs.append(module.predict_proba(x, tta=tta).numpy())
    pred = np.concatenate(probs).argmax(1)
    return classification_metrics(data.labels, pred, data.label_names)
