"""The key-moment faces of a video, as aligned crops to explain.

The simplest path that gives the report's own moments: the video is analysed here, in this process, with the
pipeline's stages and settings (decode at ``decode.sample_fps``, detect, track, classify:
:class:`fer_pipeline.stages.FaceStages`), aggregated into the per-second audience table
(:mod:`fer_pipeline.aggregate`), and the key moments are chosen by the report's rule
(:func:`fer_pipeline.metrics.key_moments`: second 0, the 3 highest and 3 lowest valence seconds, the headline
peaks). Nothing is written to an output folder, and no frame is kept: while decoding, the aligned crop of each
track's first face in every second is kept (2.3 kB per face-second at 48x48), and those of the key seconds are
returned. A face is explained for each track seen in a key second (tracks dropped by the tracker, e.g. shorter than
``track.min_track_s``, are not).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

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
    from fer_pipeline.align import align_faces
    from fer_pipeline.cuts import CutDetector
    from fer_pipeline.decode import VideoError, iter_batches, probe
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
    hw, gray = tuple(geo.input_hw), geo.color == "gray"
    firsts: dict[int, dict[int, tuple[float, np.ndarray]]] = {}  # second -> tracker id -> (timestamp_s, crop)
    found: list[Faces] = []
    n_frames = 0
    for batch in iter_batches(path, cfg.decode):
        n_frames += len(batch.frames)
        per_frame, faces = stages(batch)
        found.append(faces)
        for i, f in enumerate(per_frame):
            if not len(f):
                continue
            ts = float(batch.timestamp_s[i])
            seen = firsts.setdefault(int(np.floor(ts)), {})
            new = [k for k in range(len(f)) if int(f.track_id[k]) not in seen]
            if new:
                crops = align_faces(batch.frames[i], f.landmarks[new], geo.template, hw, gray)
                for k, crop in zip(new, crops):
                    seen[int(f.track_id[k])] = (ts, crop)
    if n_frames == 0:
        raise VideoError(f"no frames could be decoded: {path}")
    tracked = stages.tracker.finish(Faces.concat(found, len(labels)), cfg.track.min_track_s,
                                    1.0 / cfg.decode.sample_fps)
    final = tracked.faces.with_columns(viewer_id=tracked.faces.track_id)
    attentive = is_attentive(final.pose, cfg.attention.max_yaw_deg, cfg.attention.max_pitch_deg)
    au = audience(timeline(faces_frame(final, labels, attentive), labels), labels, meta.duration_s)
    seconds = key_moments(au, KEY_MOMENTS_K)["seconds"]
    names, crops, stamps, empty = [], [], [], 0
    for s in seconds:
        best: dict[int, tuple[float, np.ndarray]] = {}
        for raw, (ts, crop) in firsts.get(s, {}).items():
            tid = tracked.ids.get(raw)
            if tid is not None and (tid not in best or ts < best[tid][0]):
                best[tid] = (ts, crop)
        if not best:
            empty += 1
        for tid in sorted(best):
            names.append(f"moment-{s}s-track{tid}")
            stamps.append(best[tid][0])
            crops.append(best[tid][1])
    logger.info("%s: %d sampled frames, key seconds %s, %d faces", path.name, n_frames, seconds, len(crops))
    return CropSet.build(names, crops, hw, geo.color, timestamp_s=stamps, n_no_face=empty), seconds
