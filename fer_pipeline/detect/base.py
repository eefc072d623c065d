"""The face-detector interface, its registry and the post-processing every backend shares.

A detector maps one upright **RGB** ``(H, W, 3) uint8`` frame to :class:`~fer_pipeline.types.Faces`: boxes
``x1, y1, x2, y2`` and 5 landmarks (left eye, right eye, nose, left mouth corner, right mouth corner; "left" =
image-left) in pixels of the original frame, scores in [0, 1], ``Faces.empty()`` when there is none. Backends convert
their library's output into ``Faces`` on arrival, in their own module.

Backends register under a short name with :func:`register`. :func:`build_detector` builds either a bare backend by
name (``build_detector("centerface", score_threshold=0.5)``) or, from a
:class:`~fer_pipeline.config.DetectConfig`, the full detector the pipeline runs (``backend.from_config``: CenterFace
comes wrapped in :class:`~fer_pipeline.detect.adaptive.AdaptiveInput` when ``adaptive_input`` is on), so callers
never branch on the backend's name.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np

from fer_pipeline.types import Faces

if TYPE_CHECKING:
    from fer_pipeline.config import DetectConfig

logger = logging.getLogger(__name__)

__all__ = ["DETECTORS", "DetectorError", "FaceDetector", "as_frame_list", "build_detector", "check_frame",
           "finalize_faces", "nms", "register"]


class DetectorError(RuntimeError):
    """A detector cannot be built or run: missing or unreadable model file, missing optional package, bad model."""


class FaceDetector(ABC):
    """Finds faces in RGB frames.

    Args:
        score_threshold: keep faces whose score is at least this, in [0, 1] (default 0.5).
        nms_iou: non-maximum suppression drops a face overlapping a higher-scored one by more than this IoU, in
            [0, 1] (default 0.4).
        min_face_px: drop faces whose box (after clipping to the frame) is shorter than this many pixels on its short
            side; 0 keeps all (default).

    Attributes:
        sha256: hex sha256 of the weights file the detector runs (part of the pipeline's settings fingerprint),
            ``None`` when it has no single weights file.

    Raises:
        ValueError: a parameter is out of range.
    """

    name: ClassVar[str]
    sha256: str | None = None

    def __init__(self, score_threshold: float = 0.5, nms_iou: float = 0.4, min_face_px: float = 0) -> None:
        if not 0.0 <= float(score_threshold) <= 1.0:
            raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold!r}")
        if not 0.0 <= float(nms_iou) <= 1.0:
            raise ValueError(f"nms_iou must be in [0, 1], got {nms_iou!r}")
        if not float(min_face_px) >= 0.0:
            raise ValueError(f"min_face_px must be >= 0, got {min_face_px!r}")
        self.score_threshold = float(score_threshold)
        self.nms_iou = float(nms_iou)
        self.min_face_px = float(min_face_px)

    @abstractmethod
    def detect(self, frame: np.ndarray) -> Faces:
        """Faces in one frame.

        Args:
            frame: ``(H, W, 3) uint8`` RGB image.

        Returns:
            ``Faces`` (N may be 0) in original-frame pixels, sorted by decreasing score; ``track_id`` all -1.

        Raises:
            ValueError: ``frame`` is not ``(H, W, 3) uint8``.
        """

    def detect_batch(self, frames: np.ndarray | Sequence[np.ndarray]) -> list[Faces]:
        """Faces in each of several frames (the default calls :meth:`detect` per frame).

        Args:
            frames: ``(B, H, W, 3) uint8`` RGB array, or a sequence of ``(H_i, W_i, 3) uint8`` RGB images.

        Returns:
            one ``Faces`` per frame, in order.

        Raises:
            ValueError: a frame is not ``(H, W, 3) uint8``.
        """
        return [self.detect(f) for f in as_frame_list(frames)]

    @classmethod
    def from_config(cls, cfg: DetectConfig, *, threads: int = 0, device: str = "auto") -> FaceDetector:
        """The detector the pipeline runs for ``cfg`` (``cfg.backend`` names this class). The default passes the
        shared thresholds only; backends with more settings override it.

        Args:
            cfg: the ``detect`` section of the pipeline config.
            threads: ONNX Runtime intra-op threads (0 = its default), for backends that take them.
            device: ``"auto"``, ``"cpu"`` or ``"cuda"`` (:func:`fer_pipeline.onnx.select_providers`).

        Raises:
            DetectorError: the backend cannot load its model.
            ValueError: a setting is out of range, or ``device="cuda"`` without CUDA.
        """
        return cls(score_threshold=cfg.score_threshold, nms_iou=cfg.nms_iou, min_face_px=cfg.min_face_px)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(score_threshold={self.score_threshold}, nms_iou={self.nms_iou}, "
                f"min_face_px={self.min_face_px})")


DETECTORS: dict[str, type[FaceDetector]] = {}

_D = TypeVar("_D", bound=type)


def register(cls: _D) -> _D:
    """Class decorator: add a :class:`FaceDetector` subclass to :data:`DETECTORS` under its ``name``.

    Raises:
        TypeError: ``cls`` is not a FaceDetector subclass or has no ``name``.
        ValueError: another class already uses that name.
    """
    if not (isinstance(cls, type) and issubclass(cls, FaceDetector)):
        raise TypeError(f"@register expects a FaceDetector subclass, got {cls!r}")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__name__} must define a non-empty class attribute `name`")
    if name in DETECTORS and DETECTORS[name] is not cls:
        raise ValueError(f"detector name {name!r} is already registered by {DETECTORS[name].__name__}")
    DETECTORS[name] = cls
    return cls


def build_detector(spec: str | DetectConfig, /, **kwargs: Any) -> FaceDetector:
    """Build a detector, by registry name or from the pipeline's ``detect`` config.

    ``build_detector("centerface", score_threshold=0.5)``: the class registered under that name, called with
    ``kwargs`` (a bare backend, e.g. for tests and scripts).

    ``build_detector(cfg, threads=1, device="cpu")`` with a :class:`~fer_pipeline.config.DetectConfig`: the full
    detector the pipeline runs, ``DETECTORS[cfg.backend].from_config(cfg, threads=..., device=...)`` (CenterFace
    wrapped in :class:`~fer_pipeline.detect.adaptive.AdaptiveInput` when ``cfg.adaptive_input``); the only keyword
    arguments are ``threads`` (ONNX Runtime intra-op threads, 0 = its default) and ``device`` (``"auto"``, ``"cpu"``,
    ``"cuda"``; default ``"auto"``).

    Raises:
        ValueError: no detector has that name; ``device="cuda"`` without CUDA.
        TypeError: other keyword arguments given with a config.
        DetectorError: the backend cannot load its model.
    """
    name = spec if isinstance(spec, str) else spec.backend
    try:
        cls = DETECTORS[name]
    except KeyError as e:
        raise ValueError(f"unknown detector {name!r}; available: {sorted(DETECTORS)}") from e
    if isinstance(spec, str):
        return cls(**kwargs)
    unknown = set(kwargs) - {"threads", "device"}
    if unknown:
        raise TypeError(f"build_detector(config) takes only threads= and device=, got {sorted(unknown)}")
    return cls.from_config(spec, **kwargs)


# --------------------------------------------------------------------------------------------------------------------
# shared helpers for backends
# --------------------------------------------------------------------------------------------------------------------

def check_frame(frame: np.ndarray) -> np.ndarray:
    """Validate one frame.

    Returns:
        ``frame`` itself, an ``(H, W, 3) uint8`` array with H, W >= 1.

    Raises:
        ValueError: wrong type, shape or dtype.
    """
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8 \
            or frame.shape[0] < 1 or frame.shape[1] < 1:
        desc = f"{frame.shape} {frame.dtype}" if isinstance(frame, np.ndarray) else type(frame).__name__
        raise ValueError(f"frame must be an (H,W,3) uint8 RGB array, got {desc}")
    return frame


def as_frame_list(frames: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    """``(B,H,W,3)`` array or sequence of frames -> list of validated ``(H,W,3) uint8`` frames."""
    if isinstance(frames, np.ndarray):
        if frames.ndim != 4:
            raise ValueError(f"frames must be (B,H,W,3) uint8, got {frames.shape} {frames.dtype}")
        return [check_frame(f) for f in frames]
    return [check_frame(f) for f in frames]


def nms(xyxy: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression.

    Args:
        xyxy: ``(N, 4)`` boxes ``x1, y1, x2, y2`` in pixels.
        scores: ``(N,)`` scores.
        iou_threshold: a box is dropped when its IoU with a kept, higher-scored box exceeds this.

    Returns:
        ``(K,) int64`` indices of the kept boxes, by decreasing score.
    """
    xyxy = np.asarray(xyxy, np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    x1, y1, x2, y2 = xyxy.T
    areas = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        iw = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        ih = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = iw * ih
        union = areas[i] + areas[rest] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def finalize_faces(xyxy: np.ndarray, scores: np.ndarray, landmarks: np.ndarray, frame_hw: tuple[int, int], *,
                   score_threshold: float, nms_iou: float | None, min_face_px: float) -> Faces:
    """Turn raw detections in original-frame pixels into ``Faces``.

    Clips boxes to the frame, clips scores to [0, 1], drops faces under ``score_threshold``, runs NMS (unless
    ``nms_iou`` is None, for backends that already did), drops boxes whose short side is under ``min_face_px`` and
    sorts by decreasing score. Landmarks are not clipped (points of a face cut by the frame edge may lie outside).

    Args:
        xyxy: ``(N, 4)`` boxes in original-frame pixels.
        scores: ``(N,)`` scores.
        landmarks: ``(N, 5, 2)`` (x, y) pixels.
        frame_hw: ``(H, W)`` of the original frame.

    Returns:
        ``Faces`` with float32 columns and ``track_id`` -1.
    """
    n = len(xyxy)
    if n == 0:
        return Faces.empty()
    h, w = frame_hw
    boxes = np.asarray(xyxy, np.float32).reshape(n, 4).copy()
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, w)
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, h)
    sc = np.clip(np.asarray(scores, np.float32).reshape(n), 0.0, 1.0)
    lms = np.asarray(landmarks, np.float32).reshape(n, 5, 2)
    finite = np.isfinite(boxes).all(1) & np.isfinite(sc)
    ok = finite & (sc >= score_threshold) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    boxes, sc, lms = boxes[ok], sc[ok], lms[ok]
    if nms_iou is not None and len(boxes) > 1:
        keep = nms(boxes, sc, nms_iou)
        boxes, sc, lms = boxes[keep], sc[keep], lms[keep]
    if min_face_px > 0 and len(boxes):
        short = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        big = short >= min_face_px
        boxes, sc, lms = boxes[big], sc[big], lms[big]
    if len(boxes) == 0:
        return Faces.empty()
    order = np.argsort(-sc, kind="stable")
    return Faces(boxes[order], sc[order], lms[order])
