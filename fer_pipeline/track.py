"""Tracking: give each face a ``track_id`` stable for one person across a continuous shot.

The association itself is roboflow's ``trackers`` ByteTrack (Zhang et al., "ByteTrack: Multi-Object Tracking by
Associating Every Detection Box", ECCV 2022), driven by presentation timestamps so variable frame rates and sparse
sampling (5 Hz) are handled. This module only adapts :class:`~fer_pipeline.types.Faces` to it and drops tracks too
short to be a viewer.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np

from fer_pipeline.types import Faces

logger = logging.getLogger(__name__)

TRACKERS: dict[str, type["Tracker"]] = {}


def register(cls):
    TRACKERS[cls.name] = cls
    return cls


class Tracker(ABC):
    """Per-video tracker protocol: feed frames in time order, ``reset()`` between videos."""

    name: ClassVar[str]

    @abstractmethod
    def update(self, faces: Faces, timestamp_s: float) -> Faces:
        """Faces of one frame -> the same faces (possibly reordered, low-score strays removed) with ``track_id``
        set (>= 0); faces not (yet) in a track are removed."""

    @abstractmethod
    def reset(self) -> None:
        """Forget all tracks (call between videos)."""


@register
class ByteTrack(Tracker):
    """ByteTrack from roboflow ``trackers``.

    Args:
        high_conf_threshold: detections at or above this score are matched first and may start tracks; lower ones
            (down to the detector's threshold) only extend existing tracks (ByteTrack's second stage).
        activation_threshold: minimum score to start a new track.
        min_iou: minimum IoU between a track's predicted box and a detection to associate them.
        max_lost_s: seconds a lost track waits for re-association before it ends.
    """

    name = "bytetrack"

    def __init__(self, high_conf_threshold: float = 0.6, activation_threshold: float = 0.6, min_iou: float = 0.1,
                 max_lost_s: float = 1.0) -> None:
        self._kwargs = dict(lost_track_buffer=max(1, round(max_lost_s * 30)), frame_rate=30.0,
                            track_activation_threshold=activation_threshold, minimum_consecutive_frames=1,
                            minimum_iou_threshold=min_iou, high_conf_det_threshold=high_conf_threshold)
        self.reset()

    def reset(self) -> None:
        from trackers import ByteTrackTracker

        self._tracker = ByteTrackTracker(**self._kwargs)

    def update(self, faces: Faces, timestamp_s: float) -> Faces:
        import supervision as sv

        det = sv.Detections(xyxy=faces.xyxy.astype(np.float32), confidence=faces.scores.astype(np.float32),
                            data={"row": np.arange(len(faces))})
        out = self._tracker.update(det, timestamp=float(timestamp_s))
        if len(out) == 0:
            return Faces.empty()
        rows = np.asarray(out.data["row"], np.int64)
        ids = np.asarray(out.tracker_id, np.int64)
        keep = ids >= 0
        order = np.argsort(rows[keep], kind="stable")
        rows, ids = rows[keep][order], ids[keep][order]
        return faces[rows].with_track_id(ids)


def build_tracker(name: str, **kwargs) -> Tracker:
    """Build a registered tracker by name (``"bytetrack"``).

    Raises:
        ValueError: unknown tracker name.
    """
    if name not in TRACKERS:
        raise ValueError(f"unknown tracker {name!r}; known: {sorted(TRACKERS)}")
    return TRACKERS[name](**kwargs)


def short_tracks(track_id: np.ndarray, timestamp_s: np.ndarray, min_track_s: float,
                 sample_period_s: float) -> np.ndarray:
    """Track ids whose span is shorter than ``min_track_s``.

    A track's span is (last timestamp - first timestamp) + one sampling period, so a track seen in k consecutive
    samples at ``sample_fps`` spans k / sample_fps seconds.

    Args:
        track_id: ``(N,) int64`` per face row.
        timestamp_s: ``(N,) float64`` seconds per face row.
        min_track_s: minimum span in seconds.
        sample_period_s: 1 / sample_fps, seconds.

    Returns:
        ``(K,) int64`` sorted ids to drop.
    """
    if len(track_id) == 0:
        return np.zeros(0, np.int64)
    ids, inv = np.unique(track_id, return_inverse=True)
    first = np.full(len(ids), np.inf)
    last = np.full(len(ids), -np.inf)
    np.minimum.at(first, inv, timestamp_s)
    np.maximum.at(last, inv, timestamp_s)
    span = last - first + sample_period_s
    return ids[span < min_track_s - 1e-9].astype(np.int64)
