"""InsightFace detector backend: SCRFD / RetinaFace detection ONNX files from a user's InsightFace model pack.

The packs (``buffalo_l`` etc.) are non-commercially licensed and are never downloaded here: the user points at a
``.onnx`` file (``model_path``) or at an unpacked pack folder (``pack`` + ``root``), and this backend loads it through
``insightface.model_zoo.get_model`` on the plain-file path (which routes any ONNX graph with >= 5 outputs to
``SCRFD``), never through the download code path. ``insightface`` is imported only when a detector is built, so this
module imports without it.

InsightFace expects **BGR** images (its ``SCRFD`` swaps to RGB inside ``blobFromImage``); frames arrive here as RGB
and are converted before the call. Its output, ``bboxes (N, 5)`` = ``x1, y1, x2, y2, score`` and ``kpss (N, 5, 2)``,
already in original-image pixels, is converted to :class:`~fer_pipeline.types.Faces` on arrival.

InsightFace builds its ONNX Runtime session itself (with ONNX Runtime's default session options, as before); the
execution providers it gets are those of :func:`fer_pipeline.onnx.providers` for the configured ``device``, the same
choice every other model of the package makes.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fer_pipeline import onnx as onnx_rt
from fer_pipeline.detect.base import (
    DetectorError,
    FaceDetector,
    check_frame,
    finalize_faces,
    register,
)
from fer_pipeline.fileutil import model_or_pack
from fer_pipeline.types import Faces

if TYPE_CHECKING:
    from fer_pipeline.config import DetectConfig

logger = logging.getLogger(__name__)

__all__ = ["InsightFaceDetector", "find_detection_model"]

DEFAULT_ROOT = "~/.insightface/models"


def find_detection_model(model_path: str | Path | None = None, pack: str | None = None,
                         root: str | Path = DEFAULT_ROOT) -> Path:
    """Resolve the detection ONNX file to load.

    Args:
        model_path: a detection ``.onnx`` file; wins over ``pack``.
        pack: a model-pack folder name under ``root`` (e.g. ``"buffalo_l"``); its ``det_*.onnx`` is used (the
            first in sorted order when there are several).
        root: folder holding unpacked packs (default ``~/.insightface/models``).

    Returns:
        the path of an existing ``.onnx`` file.

    Raises:
        DetectorError: nothing found (the message names the path looked at), or neither ``model_path`` nor ``pack``
            given.
    """
    model, folder = model_or_pack(model_path, pack, root, "InsightFace detection model", DetectorError,
                                  "a det_*.onnx file")
    if model is not None:
        return model
    found = sorted(folder.glob("det_*.onnx"))
    if not found:
        raise DetectorError(f"no InsightFace detection model (det_*.onnx) in {folder} "
                            f"(model packs are not downloaded by this pipeline; unpack one there)")
    if len(found) > 1:
        logger.warning("several detection models in %s; using %s", folder, found[0].name)
    return found[0]


@register
class InsightFaceDetector(FaceDetector):
    """SCRFD / RetinaFace detection through the ``insightface`` package.

    Args:
        score_threshold, nms_iou, min_face_px: see :class:`~fer_pipeline.detect.base.FaceDetector`
            (``score_threshold`` and ``nms_iou`` are passed to InsightFace as ``det_thresh`` and ``nms_thresh``).
        model_path: a detection ``.onnx`` file, or
        pack, root: a pack folder name and the folder holding packs; see :func:`find_detection_model`.
        input_size: ``(width, height)`` of the network input (default ``(640, 640)``; ignored by models with a fixed
            input size). Frames are letterboxed into it by InsightFace.
        device: ``"auto"`` (CUDA when this ONNX Runtime has it, default), ``"cpu"`` or ``"cuda"``; the providers
            passed to InsightFace are :func:`fer_pipeline.onnx.providers` of it.

    Attributes:
        model_path: the loaded file; sha256: its sha256 (hex).

    Raises:
        DetectorError: no model given, model file not found, ``insightface`` not installed, or the file is not a
            detection model.
        ValueError: a parameter out of range; ``device="cuda"`` without CUDA.
    """

    name = "insightface"

    def __init__(self, score_threshold: float = 0.5, nms_iou: float = 0.4, min_face_px: float = 0,
                 model_path: str | Path | None = None, pack: str | None = None, root: str | Path = DEFAULT_ROOT,
                 input_size: tuple[int, int] = (640, 640), device: str = "auto") -> None:
        super().__init__(score_threshold=score_threshold, nms_iou=nms_iou, min_face_px=min_face_px)
        providers = onnx_rt.providers(device)
        path = find_detection_model(model_path, pack, root)
        try:
            from insightface.model_zoo import get_model
        except ImportError as e:
            raise DetectorError("the 'insightface' package is needed for the insightface detector "
                                "(pip install 'fer-pipeline[insightface]')") from e
        self.model_path = path
        self.sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
        try:
            # A path ending in .onnx that exists goes straight to ModelRouter: no manifest lookup, no download.
            model = get_model(str(path), providers=providers)
        except Exception as e:  # onnx/onnxruntime/protobuf errors for unreadable files
            raise DetectorError(f"cannot load InsightFace model {path}: {type(e).__name__}: {e}") from e
        if model is None or getattr(model, "taskname", None) != "detection" or not hasattr(model, "detect"):
            raise DetectorError(f"not an InsightFace detection model (SCRFD/RetinaFace): {path} "
                                f"(routed to {type(model).__name__})")
        ctx_id = 0 if providers[0] == onnx_rt.CUDA else -1
        model.prepare(ctx_id=ctx_id, input_size=tuple(int(v) for v in input_size), det_thresh=self.score_threshold,
                      nms_thresh=self.nms_iou)
        self.model: Any = model
        self.use_kps = bool(getattr(model, "use_kps", True))
        if not self.use_kps:
            logger.warning("InsightFace model %s predicts no landmarks; landmarks will be NaN", path)
        logger.info("InsightFace detector %s (sha256 %s) on %s, input_size=%s", path, self.sha256, providers[0],
                    tuple(input_size))

    @classmethod
    def from_config(cls, cfg: DetectConfig, *, threads: int = 0, device: str = "auto") -> FaceDetector:
        """InsightFace for the pipeline: ``cfg``'s thresholds and model file settings (``model_path``, ``pack``,
        ``root``); ``threads`` is not used (InsightFace builds its session with ONNX Runtime's default options). See
        :meth:`FaceDetector.from_config`."""
        return cls(score_threshold=cfg.score_threshold, nms_iou=cfg.nms_iou, min_face_px=cfg.min_face_px,
                   model_path=cfg.model_path, pack=cfg.pack, root=Path(cfg.root).expanduser(), device=device)

    def detect(self, frame: np.ndarray) -> Faces:
        """Faces in one ``(H, W, 3) uint8`` RGB frame (see :meth:`FaceDetector.detect`).

        Raises:
            ValueError: ``frame`` is not ``(H, W, 3) uint8``.
            DetectorError: InsightFace / ONNX Runtime fails.
        """
        frame = check_frame(frame)
        bgr = np.ascontiguousarray(frame[..., ::-1])
        try:
            bboxes, kpss = self.model.detect(bgr, max_num=0)
        except Exception as e:  # onnxruntime's own exception types
            raise DetectorError(f"InsightFace detection failed on a {frame.shape} frame: {e}") from e
        return self._to_faces(bboxes, kpss, frame.shape[:2])

    def _to_faces(self, bboxes: np.ndarray, kpss: np.ndarray | None, frame_hw: tuple[int, int]) -> Faces:
        """InsightFace ``bboxes (N,5)`` and ``kpss (N,5,2)`` (or None) in original pixels -> ``Faces``."""
        bboxes = np.asarray(bboxes, np.float32).reshape(-1, 5)
        n = len(bboxes)
        if n == 0:
            return Faces.empty()
        lms = np.full((n, 5, 2), np.nan, np.float32) if kpss is None else np.asarray(kpss, np.float32).reshape(n, 5, 2)
        # InsightFace has already thresholded and suppressed overlaps; finalize clips, filters by size and sorts.
        return finalize_faces(bboxes[:, :4], bboxes[:, 4], lms, frame_hw, score_threshold=self.score_threshold,
                              nms_iou=None, min_face_px=self.min_face_px)

    def __repr__(self) -> str:
        return (f"InsightFaceDetector(model_path={str(self.model_path)!r}, score_threshold={self.score_threshold}, "
                f"nms_iou={self.nms_iou}, min_face_px={self.min_face_px})")
