"""The loaded models of a worker: the detector and the emotion model, built once from the configuration and shared
by every video it analyses."""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fer_pipeline.config import PipelineConfig

logger = logging.getLogger(__name__)

__all__ = ["Models", "auto_threads"]


def auto_threads(threads: int) -> int:
    """onnxruntime intra-op threads: ``threads`` when set, else all cores but one (at least 1), leaving a core to the
    decode thread, which runs alongside inference. On the 2-core machine this gives 1: measured 8.6x real time on a
    720p single-viewer minute against 6.5x with onnxruntime's default of one thread per core (`benchmarks/`)."""
    if threads > 0:
        return threads
    return max(1, (os.cpu_count() or 2) - 1)


if TYPE_CHECKING:  # Models' annotations only; Models.load imports both when it runs (onnxruntime, ...)
    from fer_pipeline.classify import EmotionModel
    from fer_pipeline.detect import FaceDetector
    from fer_pipeline.reid import FaceEmbedder


@dataclass
class Models:
    """Loaded detector and emotion model, built once and shared by all videos of a worker.

    Attributes:
        detector: the full detector (for CenterFace with ``adaptive_input``, the
            :class:`~fer_pipeline.detect.adaptive.AdaptiveInput` wrapper), from
            :func:`fer_pipeline.detect.build_detector`.
        emotion: the emotion classifier.
        detector_name: the detector backend's registry name (``detect.backend``).
        detector_sha256: hex sha256 of the detector's weights file (part of the settings fingerprint).
        embedder: the face embedder of re-identification (``reid.enabled``), else None.
    """

    detector: FaceDetector
    emotion: EmotionModel
    detector_name: str
    detector_sha256: str | None = None  # of the detector's weights file (part of the settings fingerprint)
    embedder: FaceEmbedder | None = None

    @classmethod
    def cached(cls, cfg_json: str) -> "Models":
        """:meth:`load` once per configuration (its JSON) and process: the CLI's check of what is already done and
        the flow's tasks share the loaded models. Raises as :meth:`load`."""
        return _cached_models(cfg_json)

    @classmethod
    def load(cls, cfg: PipelineConfig) -> "Models":
        """Build the configured detector and emotion model. Both run on one device: ``classify.device``, which
        ``detect.device`` follows unless set.

        Raises:
            fer_pipeline.detect.DetectorError: detector weights missing or not the expected file.
            fer_pipeline.classify.ModelError: emotion model or card missing or altered.
            ValueError: ``device`` is ``cuda`` and onnxruntime has no working CUDA provider.
            fer_pipeline.reid.EmbedderError: ``reid.enabled`` and the embedder's package or weights are missing.
        """
        from fer_pipeline.classify import EmotionModel
        from fer_pipeline.detect import build_detector

        d = cfg.detect
        detector = build_detector(d, threads=auto_threads(d.threads), device=d.device or cfg.classify.device)
        emotion = EmotionModel(cfg.classify.model, cfg.classify.batch_size, cfg.classify.device,
                               auto_threads(cfg.classify.threads))
        embedder = None
        if cfg.reid.enabled:
            from fer_pipeline.reid import build_embedder

            embedder = build_embedder(cfg.reid, device=cfg.classify.device)
        return cls(detector, emotion, d.backend, detector.sha256, embedder)


@functools.lru_cache(maxsize=2)
def _cached_models(cfg_json: str) -> Models:
    return Models.load(PipelineConfig.model_validate_json(cfg_json))
