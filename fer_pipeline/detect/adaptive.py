"""Detector input size matched to the face size: big faces (webcam viewers) are found on a smaller input.

Detection dominates the pipeline's cost on a CPU, and its cost grows with the input's pixel count. A webcam viewer's
face spans a quarter of the frame; finding it needs far fewer input pixels than finding 40-pixel faces in a crowd.
Per batch of sampled frames, :class:`AdaptiveInput` runs the first frame at the full configured input size (so new,
small faces are still found at least once a batch: every 3.2 s at 5 Hz and 16 frames a batch), measures the smallest
face found, and runs the rest of the batch at the smallest input on which that face still spans ``target_face_px``
pixels (never below ``min_side``). With no face in the first frame the whole batch runs at full size.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from fer_pipeline.types import Faces

logger = logging.getLogger(__name__)


class AdaptiveInput:
    """Wraps a detector that accepts ``detect_batch(frames, max_side=...)`` (CenterFace).

    Args:
        detector: the detector; its ``input_max_side`` is the full size.
        target_face_px: short side in input pixels the smallest face should keep (CenterFace finds faces of 20 px;
            48+ keeps landmarks precise enough for alignment).
        min_side: smallest input long side, pixels.

    Attributes:
        last_side: input long side used for the rest of the last batch (pixels), for logging and benchmarks.
    """

    def __init__(self, detector, target_face_px: float = 64.0, min_side: int = 256) -> None:
        self.detector = detector
        self.target_face_px = float(target_face_px)
        self.min_side = int(min_side)
        self.full_side = int(getattr(detector, "input_max_side", 0))
        self.last_side = self.full_side

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

    def detect_batch(self, frames) -> list[Faces]:
        """Faces per frame, like ``detector.detect_batch`` (see the module docstring for the sizes used)."""
        if len(frames) == 0:
            return []
        first = self.detector.detect_batch(frames[:1])
        side = self.side_for(first[0], frames[0].shape[:2])
        self.last_side = side
        if len(frames) == 1:
            return first
        return first + self.detector.detect_batch(frames[1:], max_side=side)
