"""The skip rule: when a video's stored results can be reused as they are.

Results are reused only when they are ``ok``, were made with the same settings, emotion model and detector (the
settings fingerprint, stored in ``videos.settings`` / ``videos.settings_sha256``) and every part file of the video is
readable with the number of rows recorded. Otherwise the video is analysed again, and :func:`reuse` says why.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from fer_pipeline.config import PipelineConfig
from fer_pipeline.errors import DamagedOutputError, one_line
from fer_pipeline.store import check_parts, read_video_row

if TYPE_CHECKING:
    from fer_pipeline.models import Models

logger = logging.getLogger(__name__)

__all__ = ["reuse", "settings_changes", "settings_fingerprint", "settings_json", "stored_results"]


def settings_fingerprint(cfg: PipelineConfig, models: Models) -> dict:
    """What a video's results depend on besides its content: every setting that changes them
    (:meth:`PipelineConfig.fingerprint`) and the sha256 of the emotion model's, the detector's and (with
    re-identification) the face embedder's weights. Stored in
    ``videos.settings`` (JSON) and ``videos.settings_sha256``; a re-run whose fingerprint differs re-analyses the
    video."""
    out = {"config": cfg.fingerprint(), "emotion_model_sha256": models.emotion.spec.sha256,
           "detector_sha256": models.detector_sha256}
    if models.embedder is not None:
        out["embedder_sha256"] = models.embedder.sha256
    return out


def settings_json(fingerprint: dict) -> str:
    """The fingerprint as stored in ``videos.settings`` (sorted keys, no spaces): what the skip rule compares."""
    return json.dumps(fingerprint, sort_keys=True, separators=(",", ":"))


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def settings_changes(old: str | None, new: dict) -> list[str]:
    """``"key old -> new"`` for each setting of the fingerprint ``new`` that differs from the stored JSON ``old``
    (``config.`` dropped from the keys; sha256 values shortened to 12 hex digits)."""
    if not old:
        return ["not recorded (analysed by an older version)"]
    try:
        before = _flat(json.loads(old))
    except ValueError:
        return ["unreadable record"]
    after = _flat(new)

    def show(v):
        return v[:12] if isinstance(v, str) and len(v) == 64 else v

    return [f"{k.removeprefix('config.')} {show(before.get(k))} -> {show(after.get(k))}"
            for k in sorted(set(before) | set(after)) if before.get(k) != after.get(k)]


def reuse(out_dir: Path, video_id: str, settings: str, fingerprint: dict) -> tuple[dict | None, str | None]:
    """``(stored row, None)`` when ``video_id``'s stored results can be reused as they are, else ``(None, why)``:
    why it is analysed (again), ``None`` when it never was analysed successfully."""
    try:
        prev = read_video_row(out_dir, video_id)
    except DamagedOutputError as e:
        logger.warning("%s", one_line(e))
        return None, f"damaged output {e.paths[0]}"
    if prev is None or prev.get("status") != "ok":
        return None, None
    if prev.get("settings") != settings:
        return None, "settings changed: " + "; ".join(settings_changes(prev.get("settings"), fingerprint))
    problems = check_parts(out_dir, video_id, prev.get("faces_detected"))
    if problems:
        logger.warning("%s: %s; analysing it again", video_id, "; ".join(problems))
        return None, "damaged output: " + problems[0]
    return prev, None


def stored_results(videos: list, out_dir: Path, cfg: PipelineConfig, models: Models) -> list[dict] | None:
    """The stored rows of ``videos`` when every one of them can be reused as it is (:func:`reuse`), else ``None``
    (stops at the first that cannot). Lets a run whose videos are all done finish without starting the flow engine.

    Args:
        videos: input files (as :func:`fer_pipeline.inputs.list_videos` gives them).
        out_dir: the output folder.
        cfg: the run's settings.
        models: the loaded models (their weights' sha256 are part of the fingerprint).

    Returns:
        One row per video as :func:`fer_pipeline.pipeline.analyze_video` returns it for a skipped video (status
        ``skipped``, ``video_id``, ``note`` None, ``path`` the given one), or ``None``.
    """
    from fer_pipeline.fileutil import make_video_id, sha256_file

    fingerprint = settings_fingerprint(cfg, models)
    settings = settings_json(fingerprint)
    rows = []
    for v in videos:
        p = Path(v)
        if not p.is_file():
            return None
        try:
            video_id = make_video_id(p, sha256_file(p))
        except OSError:
            return None
        prev, _ = reuse(Path(out_dir), video_id, settings, fingerprint)
        if prev is None:
            return None
        rows.append({**prev, "path": str(p), "status": "skipped", "video_id": video_id, "note": None,
                     "stage_s": {}})
    return rows
