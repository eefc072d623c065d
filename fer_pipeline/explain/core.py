"""The ``explain`` entry: what the emotion network looks at, for an image, a folder of labelled faces or a video.

:func:`explain_path` loads the faces (:mod:`fer_pipeline.explain.sources`, :mod:`fer_pipeline.explain.video`),
computes a map per face with the chosen method (:class:`~fer_pipeline.explain.occlusion.OcclusionExplainer`,
Zeiler & Fergus 2014; :class:`~fer_pipeline.explain.gradcam.GradCamExplainer`, Selvaraju et al. 2017), summarises
where the positive importance lies (:func:`fer_pipeline.explain.regions.region_shares`) and writes the pictures
(:mod:`fer_pipeline.explain.render`).

Which class is explained (``target``): ``"auto"`` (default) takes the true class where it is known (a folder of
labelled faces: the map says what supports the right answer) and the predicted class otherwise (an image, a video);
``"true"`` insists on the true class, ``"predicted"`` always takes the model's answer.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fer_pipeline.explain.regions import REGIONS, region_bounds, region_shares, template_thirds
from fer_pipeline.explain.sources import CropSet, crops_from_folder, crops_from_image, is_image

logger = logging.getLogger(__name__)

__all__ = ["METHODS", "TARGETS", "ExplainResult", "build_explainer", "explain_crops", "explain_path", "input_kind"]

METHODS: tuple[str, ...] = ("occlusion", "gradcam")
TARGETS: tuple[str, ...] = ("auto", "true", "predicted")


@dataclass(frozen=True)
class ExplainResult:
    """Maps of a set of crops, one row each.

    Attributes:
        names: ``(N,)`` str, as :attr:`CropSet.names`.
        crops: ``(N, H, W[, 3]) uint8`` the aligned crops.
        maps: ``(N, H, W) float32`` importance in the crop's pixels (occlusion: probability drop in [-1, 1];
            Grad-CAM: >= 0, arbitrary unit).
        probs: ``(N, C) float32`` the model's probabilities for the unaltered crops.
        true: ``(N,) int64`` true class, -1 where unknown.
        target: ``(N,) int64`` the class each map explains.
        shares: ``(N, 3) float64`` positive importance in the upper, middle, lower thirds (NaN rows: no positive
            importance).
        timestamp_s: ``(N,) float64`` seconds in the video (NaN for images).
        labels: the model's class names.
    """

    names: np.ndarray
    crops: np.ndarray
    maps: np.ndarray
    probs: np.ndarray
    true: np.ndarray
    target: np.ndarray
    shares: np.ndarray
    timestamp_s: np.ndarray
    labels: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.names)

    @property
    def predicted(self) -> np.ndarray:
        """``(N,) int64`` the model's class per crop."""
        return self.probs.argmax(1).astype(np.int64) if len(self.probs) else np.zeros(0, np.int64)

    def groups(self, by: str) -> dict[str, np.ndarray]:
        """``{label: row indices}`` grouped by ``"true"`` or ``"predicted"`` class, labels in model order, only
        labels with rows."""
        cls = self.true if by == "true" else self.predicted
        return {lab: np.flatnonzero(cls == i) for i, lab in enumerate(self.labels) if (cls == i).any()}

    def mean_map(self, rows: np.ndarray) -> np.ndarray:
        """``(H, W) float64``: the mean over ``rows`` (those with positive importance) of each map's positive part
        normalised to sum 1, so every face weighs the same; its thirds' sums are the mean of the rows' shares.
        Zeros when no row has positive importance."""
        pos = np.maximum(np.nan_to_num(self.maps[rows].astype(np.float64), nan=0.0), 0.0)
        tot = pos.reshape(len(rows), -1).sum(1)
        ok = tot > 0
        if not ok.any():
            return np.zeros(self.maps.shape[1:], np.float64)
        return (pos[ok] / tot[ok, None, None]).mean(0)

    def per_class(self, by: str) -> dict[str, dict]:
        """``{label: {"n", "regions": {"upper", "middle", "lower"} | None, "n_no_signal", "mean_p_target"
        [, "accuracy"]}}``: ``regions`` is the mean share of positive importance per third over the faces of the
        class that have some (``n_no_signal`` have none; None when no face has); ``accuracy`` (grouped by true
        class) is the fraction of them the model gets right."""
        out = {}
        p_target = self.probs[np.arange(len(self)), self.target] if len(self) else np.zeros(0)
        for lab, rows in self.groups(by).items():
            s = self.shares[rows]
            ok = ~np.isnan(s).any(1)
            entry: dict = {"n": len(rows),
                           "regions": ({r: round(float(v), 4) for r, v in zip(REGIONS, s[ok].mean(0))}
                                       if ok.any() else None),
                           "n_no_signal": int((~ok).sum()),
                           "mean_p_target": round(float(p_target[rows].mean()), 4)}
            if by == "true":
                entry["accuracy"] = round(float((self.predicted[rows] == self.true[rows]).mean()), 4)
            out[lab] = entry
        return out


def build_explainer(method: str, model: str | Path | None = None, patch_px: int = 8, stride_px: int = 4,
                    fill: float | str = 0.5, emotion=None):
    """The explainer of ``method``.

    Args:
        method: ``"occlusion"`` (an ONNX emotion model with its card; the configured default model when None) or
            ``"gradcam"`` (a ``.ckpt`` training checkpoint, required).
        model: the model file.
        patch_px, stride_px, fill: occlusion settings (see :func:`fer_pipeline.explain.occlusion.occlusion_maps`).
        emotion: an already loaded :class:`~fer_pipeline.classify.EmotionModel` for occlusion (``model`` ignored).

    Raises:
        ValueError: unknown method; bad occlusion settings.
        fer_pipeline.explain.gradcam.GradCamUnavailable: Grad-CAM without a ``.ckpt`` or without torch / captum.
        fer_pipeline.classify.ModelError: the ONNX model or its card is missing or altered.
    """
    if method == "occlusion":
        from fer_pipeline.explain.occlusion import OcclusionExplainer

        if emotion is None:
            from fer_pipeline.classify import EmotionModel
            from fer_pipeline.config import PipelineConfig

            emotion = EmotionModel(model if model is not None else PipelineConfig().classify.model, batch_size=256)
        return OcclusionExplainer(emotion, patch_px, stride_px, fill)
    if method == "gradcam":
        from fer_pipeline.explain.gradcam import GRADCAM_NEEDS, GradCamExplainer, GradCamUnavailable

        if model is None:
            raise GradCamUnavailable(f"{GRADCAM_NEEDS}: give one with --model FILE.ckpt (e.g. runs/<name>/best.ckpt)")
        return GradCamExplainer(model)
    raise ValueError(f"unknown method {method!r}; expected one of {list(METHODS)}")


def explain_crops(explainer, crops: CropSet, target: str = "auto") -> ExplainResult:
    """Maps of every crop of ``crops`` for the class ``target`` says (see the module docstring).

    Raises:
        ValueError: unknown ``target``, or ``"true"`` for crops whose class is unknown.
    """
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; expected one of {list(TARGETS)}")
    known = crops.true >= 0
    if target == "true" and not known.all():
        raise ValueError("--target true needs labelled faces (a folder with class sub-folders); these have no "
                         "true class")
    t = crops.true.copy() if target in ("auto", "true") else np.full(len(crops), -1, np.int64)
    maps, probs = explainer.explain(crops.crops, t)
    if len(probs) == 0:
        probs = np.zeros((0, len(explainer.labels)), np.float32)
    t[t < 0] = probs.argmax(1)[t < 0] if len(probs) else t[t < 0]
    shares = region_shares(maps) if len(maps) else np.zeros((0, 3))
    return ExplainResult(crops.names, crops.crops, maps.astype(np.float32), probs, crops.true, t,
                         shares.reshape(len(crops), 3), crops.timestamp_s, tuple(explainer.labels))


def input_kind(path: Path) -> str:
    """``"video"``, ``"image"`` or ``"folder"`` (a folder or a ``.zip``) by what ``path`` is and its extension.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a file that is neither an image, a video nor a zip.
    """
    from fer_pipeline.inputs import VIDEO_EXTENSIONS

    if not path.exists():
        raise FileNotFoundError(f"not found: {path}")
    if path.is_dir() or path.suffix.lower() == ".zip":
        return "folder"
    if path.suffix.lower() in VIDEO_EXTENSIONS:
        return "video"
    if is_image(path):
        return "image"
    raise ValueError(f"not an image, a folder, a zip or a video: {path} (images: .jpg .jpeg .png .bmp .webp; "
                     f"videos: {' '.join(sorted(VIDEO_EXTENSIONS))})")


def explain_path(path: str | Path, out: str | Path, method: str = "occlusion", model: str | Path | None = None,
                 detect: bool = False, split: str | None = None, limit: int | None = None, target: str = "auto",
                 patch_px: int = 8, stride_px: int = 4, fill: float | str = 0.5, cfg=None) -> dict:
    """Explain the faces of ``path`` and write the pictures under ``out``.

    Args:
        path: an image (a face crop, or a photo with ``detect``: every face), a folder or zip (FER2013 / FER+
            dataset, or an ImageFolder ``<class>/<image>`` as for ``fer-pipeline evaluate``; with ``detect`` the
            largest face per photo), or a video (the faces of its key moments, :mod:`fer_pipeline.explain.video`).
        out: output folder, made if missing. Written: ``<name>.png`` per face (heatmap over the aligned crop, at the
            crop's size; ``<class>/<stem>.png`` for a folder), for a folder ``mean/<label>.png`` (mean map per true
            class) and ``mean-maps.png`` (all classes in one figure), and always ``explain.json`` (the returned
            summary), ``explain.csv`` (one row per face) and ``maps.npz`` (names, crops, maps, probs, true, target).
        method: ``"occlusion"`` or ``"gradcam"`` (see :func:`build_explainer`).
        model: the model file (default: the configured ONNX model for occlusion; required for Grad-CAM).
        detect: photos: detect and align faces first.
        split: dataset split (see :func:`fer_pipeline.explain.sources.crops_from_folder`).
        limit: at most this many faces per class of a folder.
        target: ``"auto"``, ``"true"`` or ``"predicted"`` (module docstring).
        patch_px, stride_px, fill: occlusion settings, pixels of the aligned crop and grey level.
        cfg: :class:`fer_pipeline.config.PipelineConfig` for a video (defaults when None; its ``classify.model``
            becomes ``model`` for occlusion).

    Returns:
        The summary: ``{"path", "kind", "method", "settings", "model", "target" (``"true"`` or ``"predicted"``:
        the class the maps explain), "group_by", "n", "n_no_face",
        "labels", "regions_rows", "template_thirds", "per_class": {label: {"n", "regions": {"upper", "middle",
        "lower"}, ...}}, "out", "heatmaps", "mean_maps"}`` (``key_seconds`` for a video).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: unsupported or unreadable input (an image that cannot be decoded is named), unknown method or
            target, Grad-CAM on an ONNX model (:class:`~fer_pipeline.explain.gradcam.GradCamUnavailable`), bad
            settings, or a model that cannot load (:class:`fer_pipeline.classify.ModelError`).
        fer_pipeline.decode.VideoError: the video cannot be decoded.
        OSError: ``out`` cannot be written.
    """
    path, out = Path(path), Path(out)
    kind = input_kind(path)
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {list(METHODS)}")
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; expected one of {list(TARGETS)}")
    extra: dict = {}
    layout = split_used = None
    if kind == "video":
        from fer_pipeline.config import PipelineConfig
        from fer_pipeline.explain.video import key_moment_crops
        from fer_pipeline.models import Models

        cfg = cfg or PipelineConfig()
        if method == "occlusion" and model is not None:
            cfg = cfg.model_copy(update={"classify": cfg.classify.model_copy(update={"model": Path(model)})})
        explainer = build_explainer("gradcam", model) if method == "gradcam" else None  # fails before decoding
        models = Models.load(cfg)
        if explainer is None:
            explainer = build_explainer("occlusion", patch_px=patch_px, stride_px=stride_px, fill=fill,
                                        emotion=models.emotion)
        crops, seconds = key_moment_crops(path, explainer, cfg, models)
        extra["key_seconds"] = seconds
    else:
        explainer = build_explainer(method, model, patch_px, stride_px, fill)
        if kind == "image":
            crops = crops_from_image(path, explainer, detect)
        else:
            crops, layout, split_used = crops_from_folder(path, explainer, detect, split, limit)
    result = explain_crops(explainer, crops, target)
    group_by = "true" if kind == "folder" else "predicted"
    per_class = result.per_class(group_by)
    h = result.maps.shape[1] if len(result) else explainer.input_hw[0]
    summary = {
        "path": str(path), "kind": kind if kind != "folder" else layout, "split": split_used, "method": method,
        "settings": explainer.settings(), "model": explainer.source,
        "target": "true" if target != "predicted" and len(result) and (result.true >= 0).all() else "predicted",
        "group_by": f"{group_by} class", "n": len(result), "n_no_face": crops.n_no_face,
        "labels": list(result.labels),
        "regions_rows": {r: list(b) for r, b in zip(REGIONS, region_bounds(h))},
        "template_thirds": template_thirds(explainer.template, explainer.input_hw[0]),
        "per_class": per_class, **extra,
    }
    summary.update(_write(result, out, group_by if kind == "folder" else None, per_class, summary))
    return summary


def _write(result: ExplainResult, out: Path, mean_by: str | None, per_class: dict, summary: dict) -> dict:
    """Write the pictures, ``explain.csv``, ``maps.npz`` and ``explain.json`` under ``out``; returns the summary's
    ``out``, ``heatmaps`` (count) and ``mean_maps`` (figure path or None) entries."""
    from fer_pipeline.explain.render import mean_maps_figure, overlay, write_png

    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, name in enumerate(result.names):
        png = write_png(out / f"{name}.png", overlay(result.crops[i], result.maps[i]))
        s = result.shares[i]
        rows.append({"name": name, "png": png.relative_to(out).as_posix(),
                     "true": result.labels[result.true[i]] if result.true[i] >= 0 else "",
                     "target": result.labels[result.target[i]], "predicted": result.labels[result.predicted[i]],
                     "p_target": round(float(result.probs[i, result.target[i]]), 4),
                     **{r: ("" if np.isnan(v) else round(float(v), 4)) for r, v in zip(REGIONS, s)},
                     "timestamp_s": "" if np.isnan(result.timestamp_s[i]) else round(float(result.timestamp_s[i]), 3)})
    with open(out / "explain.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["name", "png", "true", "target", "predicted", "p_target", *REGIONS,
                                          "timestamp_s"])
        w.writeheader()
        w.writerows(rows)
    np.savez_compressed(out / "maps.npz", names=result.names.astype(str), crops=result.crops, maps=result.maps,
                        probs=result.probs, true=result.true, target=result.target, labels=np.asarray(result.labels))
    figure = None
    if mean_by is not None and len(result):
        panels = []
        for lab, idx in result.groups(mean_by).items():
            crop = np.round(result.crops[idx].astype(np.float64).mean(0)).astype(np.uint8)
            m = result.mean_map(idx)
            write_png(out / "mean" / f"{lab}.png", overlay(crop, m))
            panels.append({"label": lab, "n": len(idx), "crop": crop, "map": m, "regions": per_class[lab]["regions"]})
        title = (f"{summary['method']} on {Path(summary['path']).name}"
                 f"{' ' + summary['split'] if summary.get('split') else ''}: mean map per {mean_by} class "
                 f"(U/M/L: share in upper/middle/lower third)")
        figure = str(mean_maps_figure(out / "mean-maps.png", panels, title))
    entries = {"out": str(out), "heatmaps": len(rows), "mean_maps": figure}
    (out / "explain.json").write_text(json.dumps({**summary, **entries}, indent=2) + "\n")
    return entries
