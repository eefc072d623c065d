"""Classical baselines on FER2013 pixels: PCA + decision tree / random forest / SVM (scikit-learn), with and without
oversampling (imbalanced-learn's RandomOverSampler and SMOTE), measured on PrivateTest.

The project brief quotes published figures of 29% / 40% / 44% PrivateTest accuracy for these three; this module
re-measures them here so the README's comparison table comes from a command:

    .venv/bin/python -m fer_pipeline.training.baselines --data ../shared/data/fer2013.zip --json runs/baselines.json
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from fer_pipeline.training.data import load_fer2013
from fer_pipeline.training.evaluate import classification_metrics

logger = logging.getLogger(__name__)


def _features(train_x: np.ndarray, test_x: np.ndarray, n_components: int, seed: int):
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    a = train_x.reshape(len(train_x), -1).astype(np.float32) / 255.0
    b = test_x.reshape(len(test_x), -1).astype(np.float32) / 255.0
    pca = PCA(n_components=n_components, whiten=True, random_state=seed).fit(a)
    sc = StandardScaler().fit(pca.transform(a))
    return sc.transform(pca.transform(a)), sc.transform(pca.transform(b))


def _classifier(name: str, seed: int):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.svm import SVC
    from sklearn.tree import DecisionTreeClassifier

    if name == "decision_tree":
        return DecisionTreeClassifier(max_depth=20, min_samples_leaf=5, random_state=seed)
    if name == "random_forest":
        return RandomForestClassifier(n_estimators=300, min_samples_leaf=2, n_jobs=-1, random_state=seed)
    if name == "svm":
        return SVC(kernel="rbf", C=3.0, gamma="scale", random_state=seed)
    raise ValueError(f"unknown baseline {name!r}")


def _resample(x, y, how: str, seed: int):
    if how == "none":
        return x, y
    if how == "random":
        from imblearn.over_sampling import RandomOverSampler

        return RandomOverSampler(random_state=seed).fit_resample(x, y)
    if how == "smote":
        from imblearn.over_sampling import SMOTE

        return SMOTE(random_state=seed).fit_resample(x, y)
    raise ValueError(f"unknown resampling {how!r}")


def run_baselines(data: str | Path, models=("decision_tree", "random_forest", "svm"),
                  resampling=("none", "random", "smote"), n_components: int = 100, seed: int = 0,
                  svm_max_train: int | None = None) -> list[dict]:
    """Fit each (model, resampling) pair on FER2013 train and score it on PrivateTest.

    Args:
        data: ``fer2013.zip`` or folder.
        models: baselines to run.
        resampling: ``none``, ``random`` (RandomOverSampler) and/or ``smote`` (SMOTE, Chawla et al. 2002).
        n_components: PCA dimensions (whitened, then standardised).
        seed: random state for every step.
        svm_max_train: cap on SVM training rows (SVM training is quadratic); None = all.

    Returns:
        One dict per pair with ``model``, ``resampling``, ``accuracy``, ``macro_f1``, ``fit_s``.
    """
    tr = load_fer2013(data, "train")
    te = load_fer2013(data, "private-test")
    xtr, xte = _features(tr.images, te.images, n_components, seed)
    rows = []
    for how in resampling:
        x, y = _resample(xtr, tr.labels, how, seed)
        for name in models:
            xs, ys = x, y
            if name == "svm" and svm_max_train and len(x) > svm_max_train:
                idx = np.random.default_rng(seed).choice(len(x), svm_max_train, replace=False)
                xs, ys = x[idx], y[idx]
            clf = _classifier(name, seed)
            t = time.perf_counter()
            clf.fit(xs, ys)
            fit_s = time.perf_counter() - t
            m = classification_metrics(te.labels, clf.predict(xte), te.label_names)
            rows.append({"model": f"PCA{n_components} + {name}", "resampling": how, "train_rows": int(len(xs)),
                         "accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "fit_s": round(fit_s, 1)})
            logger.info("%s", rows[-1])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description="PCA + DT/RF/SVM baselines on FER2013 PrivateTest")
    ap.add_argument("--data", default="../shared/data/fer2013.zip")
    ap.add_argument("--models", nargs="+", default=["decision_tree", "random_forest", "svm"])
    ap.add_argument("--resampling", nargs="+", default=["none", "random", "smote"])
    ap.add_argument("--components", type=int, default=100)
    ap.add_argument("--svm-max-train", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    rows = run_baselines(args.data, args.models, args.resampling, args.components,
                         svm_max_train=args.svm_max_train)
    print(f"{'model':28s} {'resampling':10s} {'accuracy':>8s} {'macro-F1':>8s} {'fit s':>7s}")
    for r in rows:
        print(f"{r['model']:28s} {r['resampling']:10s} {r['accuracy']:8.4f} {r['macro_f1']:8.4f} {r['fit_s']:7.1f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
