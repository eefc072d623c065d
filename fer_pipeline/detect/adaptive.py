"""Detector input size matched to the face size: big faces (webcam viewers) are found on a smaller input.

Detection dominates the pipeline's cost on a CPU, and its cost grows with the input's pixel count. A webcam viewer's
face spans a quarter of the frame; finding it needs far fewer input pixels than finding 40-pixel faces in a crowd.
Per batch of sampled frames, :class:`AdaptiveInput` runs the first frame at the full configured input size (so new,
small faces are still found at least once a batch: every 3.2 s at 5 Hz and 16 frames a batch), measures the smallest
face found, and runs the rest of the batch at the smallest input on which that face still spans ``target_face_px``
pixels (never below ``min_side``). With no face in the first frame the whole batch runs at full size.

With ``crops`` on, the rest of the batch is instead detected frame by frame on small crops around the previous
sample's faces (:mod:`fer_pipeline.detect.crops`) whenever that costs fewer detector-input pixels than the reduced
full frame: one 96 x 96 crop per face against, say, 640 x 384 for six small faces in 1080p. A frame whose crops
lose a face is detected again on the whole (reduced) frame, and every ``full_every``-th frame of a batch gets a
full-size pass as the first one does, so faces that appear are found within ``full_every`` samples. No state is
kept between batches (nor between videos).

:class:`AdaptiveInput` is itself a :class:`~fer_pipeline.detect.base.FaceDetector` whose thresholds, ``sha256``,
``model_path`` and ``provider`` are the wrapped detector's; the pipeline gets it from
:func:`fer_pipeline.detect.build_detector` (``CenterFaceDetector.from_config`` with ``adaptive_input`` on).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from fer_pipeline.detect.base import FaceDetector, check_frame
from fer_pipeline.types import Faces

logger = logging.getLogger(__name__)


class ResizableDetector(Protocol):
    """What :class:`AdaptiveInput` and :func:`fer_pipeline.detect.crops.detect_in_crops` need of the wrapped detector
    (:class:`~fer_pipeline.detect.centerface.CenterFaceDetector` has it)."""

    score_threshold: float
    nms_iou: float
    min_face_px: float
    input_max_side: int  # full network input long side, pixels (0 = the frame's)
    sha256: str | None

    def input_size(self, frame_hw: tuple[int, int], max_side: int | None = None) -> tuple[int, int]:
        """Network input ``(h, w)`` pixels for a frame of ``frame_hw`` at long side ``max_side``."""

    def detect_batch(self, frames: np.ndarray | Sequence[np.ndarray], max_side: int | None = None) -> list[Faces]:
        """Faces per ``(H, W, 3) uint8`` RGB frame, the network input's long side ``max_side`` pixels."""


class AdaptiveInput(FaceDetector):
    """Wraps a detector that accepts ``detect_batch(frames, max_side=...)`` (CenterFace).

    Args:
        detector: the detector (:class:`ResizableDetector`); its ``input_max_side`` is the full size.
        target_face_px: short side in input pixels the smallest face should keep (CenterFace finds faces of 20 px;
            48+ keeps landmarks precise enough for alignment).
        min_side: smallest input long side, pixels.
        crops: detect on crops around known faces between full passes (see the module docstring).
        crop_side: crop side in detector-input pixels, a multiple of 32.
        full_every: with ``crops``, a full-size pass every this many frames of a batch (frame 0 always).
        crop_context: crop side over the face's long side (see :func:`fer_pipeline.detect.crops.detect_in_crops`).

    Attributes:
        detector: the wrapped detector.
        last_side: input long side used for the rest of the last batch (pixels), for logging and benchmarks.
        n_crop_frames: frames detected on crops so far.
        score_threshold, nms_iou, min_face_px, sha256, model_path, provider: the wrapped detector's (read-only).

    Raises:
        ValueError: ``crop_side`` not a positive multiple of 32, or ``full_every < 1``.
    """

    def __init__(self, detector: ResizableDetector, target_face_px: float = 64.0, min_side: int = 256,
                 crops: bool = False, crop_side: int = 96, full_every: int = 16, crop_context: float = 1.5) -> None:
        # FaceDetector.__init__ is not called: the thresholds are the wrapped detector's (properties below)
        if crop_side < 32 or crop_side % 32:
            raise ValueError(f"crop_side must be a positive multiple of 32, got {crop_side!r}")
        if full_every < 1:
            raise ValueError(f"full_every must be >= 1, got {full_every!r}")
        self.detector = detector
        self.target_face_px = float(target_face_px)
        self.min_side = int(min_side)
        self.crops = bool(crops)
        self.crop_side = int(crop_side)
        self.full_every = int(full_every)
        self.crop_context = float(crop_context)
        self.n_crop_frames = 0  # frames detected on crops so far (for logging and benchmarks)
        self.full_side = int(getattr(detector, "input_max_side", 0))
        self.last_side = self.full_side

    # the wrapped detector's settings and identity, so the wrapper stands in for it everywhere
    @property
    def score_threshold(self) -> float:  # type: ignore[override]
        return self.detector.score_threshold

    @property
    def nms_iou(self) -> float:  # type: ignore[override]
        return self.detector.nms_iou

    @property
    def min_face_px(self) -> float:  # type: ignore[override]
        return self.detector.min_face_px

    @property
    def sha256(self) -> str | None:  # type: ignore[override]
        """The wrapped detector's weights sha256 (hex)."""
        return getattr(self.detector, "sha256", None)

    @property
    def model_path(self) -> Path | None:
        return getattr(self.detector, "model_path", None)

    @property
    def provider(self) -> str | None:
        return getattr(self.detector, "provider", None)

    def __repr__(self) -> str:
        return (f"AdaptiveInput({self.detector!r}, target_face_px={self.target_face_px}, min_side={self.min_side}, "
                f"crops={self.crops}, crop_side={self.crop_side}, full_every={self.full_every})")

    def side_for(self, faces: Faces, frame_hw: tuple[int, int]) -> int:
        """Input long side (pixels, a multiple of 64) on which the smallest of ``faces`` spans ``target_face_px``.

        Returns the full size when there is no face or the full size is already needed.
        """
        long_side = max(frame_hw)
        full = self.full_side if self.full_side > 0 else long_side
        if len(faces) == 0:
            return full
        wh = faces.xyxy[:, 2:] - faces.xyxy[:, :2]
        smallest = float(np.min(wh.min(axis=1)))
        if smallest <= 0:
            return full
        need = self.target_face_px / smallest * long_side
        # steps of 64 px: few distinct input shapes, so onnxruntime keeps few shape-specific buffers
        return int(min(full, max(self.min_side, 64 * math.ceil(need / 64))))

    def detect(self, frame: np.ndarray) -> Faces:
        """Faces in one ``(H, W, 3) uint8`` RGB frame: a full-size pass (the first frame of a batch of one)."""
        return self.detect_batch([check_frame(frame)])[0]

    def detect_batch(self, frames: np.ndarray | Sequence[np.ndarray]) -> list[Faces]:
        """Faces per frame, like ``detector.detect_batch`` (see the module docstring for the sizes used).

        Args:
            frames: ``(B, H, W, 3) uint8`` RGB frames of one size (a sampled batch), or a sequence of such frames.

        Returns:
            one ``Faces`` per frame, in order (original-frame pixels).

        Raises:
            ValueError: a frame is not ``(H, W, 3) uint8``.
            DetectorError: the wrapped detector fails.
        """
        if len(frames) == 0:
            return []
        first = self.detector.detect_batch(frames[:1])
        side = self.side_for(first[0], frames[0].shape[:2])
        self.last_side = side
        if len(frames) == 1:
            return first
        if not self.crops:
            return first + self.detector.detect_batch(frames[1:], max_side=side)
        return first + self._rest_with_crops(frames, first[0], side)

    def _rest_with_crops(self, frames, prev: Faces, side: int) -> list[Faces]:
        """Frames ``1..`` of a batch, each on crops around the previous frame's faces when that is cheaper."""
        from fer_pipeline.detect.crops import crop_cost_px, detect_in_crops

        h_in, w_in = self.detector.input_size(frames[0].shape[:2], side)
        full_px = h_in * w_in
        if len(prev) == 0 or crop_cost_px(len(prev), self.crop_side) >= full_px:
            return self.detector.detect_batch(frames[1:], max_side=side)
        out: list[Faces] = []
        for i in range(1, len(frames)):
            if i % self.full_every == 0:  # periodic full-size pass: finds faces that appeared
                faces = self.detector.detect_batch(frames[i:i + 1])[0]
                out.append(faces)
                prev = faces
                continue
            faces = None
            if len(prev) and crop_cost_px(len(prev), self.crop_side) < full_px:
                faces = detect_in_crops(self.detector, frames[i], prev, self.crop_side, self.crop_context)
                if len(faces) < len(prev):
                    faces = None  # a face was lost: look at the whole frame again
                else:
                    self.n_crop_frames += 1
            if faces is None:
                faces = self.detector.detect_batch(frames[i:i + 1], max_side=side)[0]
            out.append(faces)
            prev = faces
        return out
