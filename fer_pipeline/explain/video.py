"""The key-moment faces of a video, as aligned crops to explain.

The simplest path that gives the report's own moments: the video is analysed here, in this process, with the
pipeline's stages and settings (decode at ``decode.sample_fps``, detect, track, classify:
:class:`fer_pipeline.stages.FaceStages`), aggregated into the per-second audience table
(:mod:`fer_pipeline.aggregate`), and the key moments are chosen by the report's rule
(:func:`fer_pipeline.metrics.key_moments`: second 0, the 3 highest and 3 lowest valence seconds, the headline
peaks). Nothing is written to an output folder, and no frame is kept: while decoding,
:class:`fer_pipeline.explain.moments.MomentCrops` keeps the aligned crop of each track's first face in every second
(2.3 kB per face-second at 48x48), and those of the key seconds are returned. A face is explained for each track
seen in a key second (tracks dropped by the tracker, e.g. shorter than ``track.min_track_s``, are not).
"""

from __future__ import annotations

import logging
from pathlib import Path

from fer_pipeline.config import PipelineConfig
from fer_pipeline.explain.sources import CropSet, Geometry

logger = logging.getLogger(__name__)

__all__ = ["key_moment_crops"]


def key_moment_crops(path: str | Path, geo: Geometry, cfg: PipelineConfig | None = None,
                     models=None) -> tuple[CropSet, list[int]]:
    """Aligned crops of the faces at a video's key moments.

    Args:
        path: the video file.
        geo: the crop geometry of the explainer (crops are aligned onto its template, size and colour).
        cfg: pipeline settings (defaults when None): decode, detect, track, classify (the model whose audience
            valence picks the moments), attention.
        models: :class:`fer_pipeline.models.Models` to use instead of loading them from ``cfg``.

    Returns:
        ``(crops, seconds)``: crops named ``moment-<second>s-track<id>`` with ``timestamp_s`` set (true class
        unknown, -1; ``n_no_face`` counts key seconds without a kept face), and the key seconds (sorted ints).

    Raises:
        fer_pipeline.decode.VideoError: the file cannot be decoded or has no frame.
        fer_pipeline.classify.ModelError, fer_pipeline.detect.DetectorError: a model cannot load.
    """
    from fer_pipeline.aggregate import audience, timeline
    from fer_pipeline.cuts import CutDetector
    from fer_pipeline.decode import VideoError, iter_batches, probe
    from fer_pipeline.explain.moments import MomentCrops
    from fer_pipeline.headpose import is_attentive
    from fer_pipeline.metrics import KEY_MOMENTS_K, key_moments
    from fer_pipeline.models import Models
    from fer_pipeline.stages import FaceStages
    from fer_pipeline.store import faces_frame
    from fer_pipeline.track import build_tracker
    from fer_pipeline.types import Faces

    path = Path(path)
    cfg = cfg or PipelineConfig()
    meta = probe(path)
    models = models if models is not None else Models.load(cfg)
    labels = models.emotion.labels
    stages = FaceStages(models.detector, build_tracker(cfg.track), models.emotion,
                        cuts=CutDetector(cfg.track.cut_threshold))
    hw = tuple(geo.input_hw)
    kept = MomentCrops(geo.template, hw, geo.color)
    found: list[Faces] = []
    n_frames = 0
    for batch in iter_batches(path, cfg.decode):
        n_frames += len(batch.frames)
        per_frame, faces = stages(batch)
        found.append(faces)
        kept.add(batch, per_frame)
    if n_frames == 0:
        raise VideoError(f"no frames could be decoded: {path}")
    tracked = stages.tracker.finish(Faces.concat(found, len(labels)), cfg.track.min_track_s,
                                    1.0 / cfg.decode.sample_fps)
    final = tracked.faces.with_columns(viewer_id=tracked.faces.track_id)
    attentive = is_attentive(final.pose, cfg.attention.max_yaw_deg, cfg.attention.max_pitch_deg)
    au = audience(timeline(faces_frame(final, labels, attentive), labels), labels, meta.duration_s)
    seconds = key_moments(au, KEY_MOMENTS_K)["seconds"]
    faces_kept, empty = kept.select(seconds, tracked.ids)
    names = [f"moment-{s}s-track{tid}" for s, tid, _, _ in faces_kept]
    stamps = [ts for _, _, ts, _ in faces_kept]
    crops = [c for *_, c in faces_kept]
    logger.info("%s: %d sampled frames, key seconds %s, %d faces", path.name, n_frames, seconds, len(crops))
    return CropSet.build(names, crops, hw, geo.color, timestamp_s=stamps, n_no_face=empty), seconds
