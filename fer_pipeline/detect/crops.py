"""Face detection on small crops around faces already known from the previous sample (the detector's input matched
to the faces rather than to the frame).

Between two full-frame passes a face moves little (at 5 Hz, 0.2 s apart), so instead of the whole frame the detector
sees one square crop per known face: ``context`` times the face's size, centred on it, scaled so the face spans about
``input_side / context`` pixels (never enlarged). Six faces of a 1080p group recording then cost 6 x 96 x 96 input
pixels instead of the 640 x 384 of a full pass, and a webcam viewer's one face 96 x 96 instead of 256 x 160, with the
face at a finer scale than in the shrunk full frame. Each crop contributes at most the one detection nearest its
centre (within one face size), so a neighbour cut by the crop's edge is never reported; faces found twice by
overlapping crops are merged by non-maximum suppression. New faces are found by the next full pass
(:class:`fer_pipeline.detect.adaptive.AdaptiveInput` decides when).
"""

from __future__ import annotations

import logging

import numpy as np

from fer_pipeline.detect.base import finalize_faces
from fer_pipeline.resize import shrink
from fer_pipeline.types import Faces

logger = logging.getLogger(__name__)

__all__ = ["crop_cost_px", "detect_in_crops"]


def crop_cost_px(n_faces: int, input_side: int) -> int:
    """Detector input pixels of one frame done as crops: ``n_faces * input_side ** 2``."""
    return int(n_faces) * int(input_side) ** 2


def _crop(frame: np.ndarray, box: np.ndarray, input_side: int, context: float) -> tuple[np.ndarray, tuple]:
    """One ``(input_side, input_side, 3) uint8`` canvas around ``box`` and its mapping back to frame pixels.

    Returns:
        the canvas (zeros where the crop leaves the frame) and ``(x0, y0, sx, sy, ox, oy)``: a canvas point
        ``(u, v)`` is frame point ``(x0 + (u - ox) / sx, y0 + (v - oy) / sy)``.
    """
    h, w = frame.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    size = max(x2 - x1, y2 - y1, 1.0)
    side = max(context * size, float(input_side))  # frame pixels covered; never enlarge (scale <= 1)
    scale = input_side / side
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    fx0, fy0 = cx - side / 2.0, cy - side / 2.0  # crop corner, may lie outside the frame
    xa, ya = max(0, round(fx0)), max(0, round(fy0))
    xb, yb = min(w, round(fx0 + side)), min(h, round(fy0 + side))
    canvas = np.zeros((input_side, input_side, 3), np.uint8)
    if xb <= xa or yb <= ya:
        return canvas, (xa, ya, 1.0, 1.0, 0, 0)
    ox = min(input_side - 1, max(0, round((xa - fx0) * scale)))
    oy = min(input_side - 1, max(0, round((ya - fy0) * scale)))
    rw = max(1, min(input_side - ox, round((xb - xa) * scale)))
    rh = max(1, min(input_side - oy, round((yb - ya) * scale)))
    region = frame[ya:yb, xa:xb]
    if (rh, rw) != region.shape[:2]:
        region = shrink(region, (rw, rh))
    canvas[oy:oy + rh, ox:ox + rw] = region
    return canvas, (xa, ya, rw / (xb - xa), rh / (yb - ya), ox, oy)


def detect_in_crops(detector, frame: np.ndarray, known: Faces, input_side: int = 96,
                    context: float = 1.5) -> Faces:
    """Re-detect the ``known`` faces in ``frame`` on one crop each.

    Args:
        detector: a :class:`~fer_pipeline.detect.centerface.CenterFaceDetector` (needs ``detect_batch(frames,
            max_side=0)`` and its ``score_threshold``, ``nms_iou``, ``min_face_px``).
        frame: ``(H, W, 3) uint8`` RGB.
        known: faces of a nearby sample, in pixels of a frame of the same size (only ``xyxy`` is used).
        input_side: crop side in detector-input pixels, a multiple of 32 (default 96: with ``context`` 1.5 the face
            spans 64 px, the adaptive input's ``target_face_px``).
        context: crop side over the face's long side (default 1.5: the face fills two thirds of the crop and may
            move by a quarter of its size between samples and stay whole in it; chosen on emotion agreement with a
            full-resolution detection, ``benchmarks/README.md``).

    Returns:
        ``Faces`` in original-frame pixels, at most ``len(known)``, sorted by decreasing score, ``track_id`` -1;
        a face not found again in its crop is missing.

    Raises:
        ValueError: ``input_side`` is not a positive multiple of 32 or ``context < 1``.
    """
    if input_side < 32 or input_side % 32:
        raise ValueError(f"input_side must be a positive multiple of 32, got {input_side!r}")
    if not context >= 1.0:
        raise ValueError(f"context must be >= 1, got {context!r}")
    if len(known) == 0:
        return Faces.empty()
    canvases, maps = zip(*(_crop(frame, b, input_side, context) for b in known.xyxy))
    found = detector.detect_batch(list(canvases), max_side=0)
    boxes, scores, lms = [], [], []
    for faces, (x0, y0, sx, sy, ox, oy), box in zip(found, maps, known.xyxy):
        if len(faces) == 0:
            continue
        # the known face's centre and size in canvas pixels
        ccx = ox + ((box[0] + box[2]) / 2.0 - x0) * sx
        ccy = oy + ((box[1] + box[3]) / 2.0 - y0) * sy
        reach = max(float(box[2] - box[0]) * sx, float(box[3] - box[1]) * sy)
        centres = (faces.xyxy[:, :2] + faces.xyxy[:, 2:]) / 2.0
        dist = np.hypot(centres[:, 0] - ccx, centres[:, 1] - ccy)
        k = int(np.argmin(dist))
        if dist[k] > reach:
            continue
        xyxy = faces.xyxy[k].astype(np.float64)
        boxes.append([x0 + (xyxy[0] - ox) / sx, y0 + (xyxy[1] - oy) / sy,
                      x0 + (xyxy[2] - ox) / sx, y0 + (xyxy[3] - oy) / sy])
        lm = faces.landmarks[k].astype(np.float64)
        lms.append(np.stack([x0 + (lm[:, 0] - ox) / sx, y0 + (lm[:, 1] - oy) / sy], axis=1))
        scores.append(float(faces.scores[k]))
    if not boxes:
        return Faces.empty()
    return finalize_faces(np.asarray(boxes), np.asarray(scores), np.asarray(lms), frame.shape[:2],
                          score_threshold=detector.score_threshold, nms_iou=detector.nms_iou,
                          min_face_px=detector.min_face_px)
