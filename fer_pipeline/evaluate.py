"""Evaluate a shipped ONNX emotion model on FER2013, FER+ or a folder of labelled photos.

Needs no torch: the model runs with onnxruntime exactly as in the pipeline. Dataset crops (48x48) are fed as they
are; ordinary photos (``--detect``) first go through the pipeline's detector and aligner (largest face per photo).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np

from fer_pipeline.calibration import calibration_metrics
from fer_pipeline.classify import EmotionModel
from fer_pipeline.training.data import ImageSet, _Source, detect_layout, load_split_for_model
from fer_pipeline.training.evaluate import classification_metrics

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
DEFAULT_SPLIT = {"fer2013": "private-test", "ferplus": "test"}


def load_imagefolder(path: Path, labels: tuple[str, ...]) -> tuple[list[str], list[bytes], np.ndarray]:
    """Images of an ImageFolder (``<class>/<image>``) whose class folder is one of ``labels``.

    Returns:
        (names, encoded image bytes, ``(N,) int64`` label indices). Other folders are skipped with a warning.

    Raises:
        ValueError: no image under a known class folder.
    """
    src = _Source(path)
    names, blobs, ys, skipped = [], [], [], set()
    for name in sorted(src.names()):
        parts = name.split("/")
        if len(parts) < 2 or Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        cls = parts[-2].lower()
        if cls not in labels:
            skipped.add(parts[-2])
            continue
        names.append(name)
        blobs.append(src.read(name))
        ys.append(labels.index(cls))
    for s in sorted(skipped):
        warnings.warn(f"skipping folder {s!r}: not one of the model's labels {list(labels)}", stacklevel=2)
    if not names:
        raise ValueError(f"no images in class folders named after the labels {list(labels)} under {path}")
    return names, blobs, np.asarray(ys, np.int64)


def _crops_from_photos(blobs: list[bytes], model: EmotionModel, detect: bool, detector=None) -> tuple[np.ndarray,
                                                                                                         np.ndarray]:
    import io

    from PIL import Image

    from fer_pipeline.align import align_faces

    h, w = model.spec.input_hw
    crops, ok = [], []
    for b in blobs:
        img = Image.open(io.BytesIO(b))
        if detect:
            rgb = np.asarray(img.convert("RGB"))
            faces = detector.detect(rgb)
            if len(faces) == 0:
                ok.append(False)
                continue
            areas = (faces.xyxy[:, 2] - faces.xyxy[:, 0]) * (faces.xyxy[:, 3] - faces.xyxy[:, 1])
            k = int(np.argmax(areas))
            crops.append(align_faces(rgb, faces.landmarks[k:k + 1], model.spec.template, (h, w))[0])
        else:
            crops.append(np.asarray(img.convert("L").resize((w, h), Image.BILINEAR), np.uint8))
        ok.append(True)
    return (np.stack(crops) if crops else np.zeros((0, h, w), np.uint8)), np.asarray(ok, bool)


def evaluate_path(path: str | Path, model_path: str | Path, split: str | None = None, detect: bool = False,
                  batch_size: int = 256) -> dict:
    """Accuracy, macro-F1, per-class figures and the confusion matrix of a model on a dataset.

    Args:
        path: FER2013 zip/folder (splits ``train``, ``public-test``, ``private-test``; default ``private-test``),
            FER+ zip/folder (``train``, ``valid``, ``test``; default ``test``), or an ImageFolder.
        model_path: the ``.onnx`` model with its card.
        split: dataset split (ignored for an ImageFolder).
        detect: for photos, find and align the face with the pipeline's detector first. Photos where no face is
            found count as errors (``n_no_face`` reports how many).
        batch_size: faces per inference call.

    Returns:
        ``classification_metrics`` dict plus ``dataset``, ``split``, ``model``, ``n_no_face``, and the calibration
        of the top-1 probability over the faces found (:mod:`fer_pipeline.calibration`): ``ece`` (15 equal-width
        bins, [0, 1]), ``nll`` (nats) and ``reliability`` (the bins of a reliability diagram).

    Raises:
        ValueError: unknown layout/split, or label mismatch between the dataset and the model.
    """
    path = Path(path)
    model = EmotionModel(model_path, batch_size=batch_size)
    labels = model.labels
    layout = detect_layout(path)
    n_no_face = 0
    if layout in ("fer2013", "ferplus"):
        split = split or DEFAULT_SPLIT[layout]
        data: ImageSet = load_split_for_model(path, split, labels)
        if detect:
            raise ValueError("--detect is for photos; dataset images are already face crops")
        probs = model.predict(data.images)
        y_true = data.labels
        y_pred = probs.argmax(1)
    else:
        split = None
        _, blobs, y_true = load_imagefolder(path, labels)
        detector = None
        if detect:
            from fer_pipeline.detect import build_detector

            detector = build_detector("centerface", score_threshold=0.5, input_max_side=1024)
        crops, ok = _crops_from_photos(blobs, model, detect, detector)
        probs = model.predict(crops)
        y_pred = np.full(len(y_true), -1, np.int64)
        y_pred[ok] = probs.argmax(1)
        n_no_face = int((~ok).sum())
    res = classification_metrics(y_true, y_pred, labels)
    found = y_pred >= 0  # faces found (every dataset crop)
    cal = calibration_metrics(probs, np.asarray(y_true)[found])
    res.update(dataset=layout, split=split, model=str(model_path), n_no_face=n_no_face, ece=cal["ece"],
               nll=cal["nll"], reliability=cal["reliability"])
    return res


def confusion_png(res: dict, out: Path) -> Path:
    """Write the confusion matrix (row-normalised, counts annotated) as a PNG; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(res["confusion"], np.float64)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    labels = res["labels"]
    fig, ax = plt.subplots(figsize=(6.5, 5.5), dpi=110)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_title(f"accuracy {res['accuracy']:.3f}, macro-F1 {res['macro_f1']:.3f} (n={res['n']})")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def reliability_png(res: dict, out: Path) -> Path:
    """Write the reliability diagram of ``res["reliability"]`` (accuracy against mean top-1 probability per bin,
    the diagonal = perfect calibration, bar widths the bins, the share of faces per bin below) as a PNG; returns
    its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bins = [b for b in res["reliability"] if b["n"]]
    total = sum(b["n"] for b in bins) or 1
    fig, (ax, axn) = plt.subplots(2, 1, figsize=(5.0, 5.6), dpi=110, sharex=True,
                                  gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], color="#888", lw=1, ls="--", label="perfect calibration")
    ax.bar([(b["lo"] + b["hi"]) / 2 for b in bins], [b["accuracy"] for b in bins],
           width=[b["hi"] - b["lo"] for b in bins], color="#4c78a8", edgecolor="white", alpha=0.85, label="accuracy")
    ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o", color="#e45756", ms=4,
            label="mean confidence of the bin")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(f"{res.get('dataset') or ''} {res.get('split') or ''}: ECE {res['ece']:.3f}, NLL {res['nll']:.3f} "
                 f"(n={total})", fontsize=9)
    axn.bar([(b["lo"] + b["hi"]) / 2 for b in bins], [b["n"] / total for b in bins],
            width=[b["hi"] - b["lo"] for b in bins], color="#9ecae9", edgecolor="white")
    axn.set_xlabel("top-1 probability")
    axn.set_ylabel("share of faces")
    axn.set_xlim(0, 1)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
