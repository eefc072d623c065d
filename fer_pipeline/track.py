"""Tracking: give each face a ``track_id`` stable for one person across a continuous shot.

The association itself is roboflow's ``trackers`` ByteTrack (Zhang et al., "ByteTrack: Multi-Object Tracking by
Associating Every Detection Box", ECCV 2022), driven by presentation timestamps so variable frame rates and sparse
sampling (5 Hz) are handled. This module adapts :class:`~fer_pipeline.types.Faces` to it and owns the whole id
lifecycle: provisional ids while a track is unconfirmed, then at the end of a video :meth:`Tracker.finish` resolves
them, drops tracks too short to be a viewer and renumbers the rest 1..K in order of first appearance.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from fer_pipeline.types import Faces

if TYPE_CHECKING:
    from fer_pipeline.config import TrackConfig

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
        set: >= 0 for confirmed tracks, <= -2 (provisional, see :meth:`resolve`) for a face that starts a track;
        faces in no track are removed."""

    @abstractmethod
    def reset(self) -> None:
        """Forget all tracks (call between videos)."""

    def cut(self) -> None:
        """End every track now (a shot cut): later faces start new tracks, whose ids continue those given so far."""

    def resolve(self, track_id: np.ndarray) -> np.ndarray:
        """Final ids for ids returned earlier by :meth:`update`: provisional ids (<= -2, given to a face that starts
        a track before the track is confirmed) become the track's id once confirmed, or -1 if it never was."""
        return np.asarray(track_id, np.int64)

    def finish(self, faces: Faces, min_track_s: float, sample_period_s: float) -> TrackResult:
        """End a video's tracking: the faces of every :meth:`update` of the video, with final ids.

        Provisional ids are resolved (:meth:`resolve`; faces of tracks never confirmed are dropped), tracks whose
        span is shorter than ``min_track_s`` are dropped (:func:`short_tracks`), and the rest are renumbered 1..K in
        order of first appearance (ties: the lower tracker id first), so ids are readable and stable for the same
        input.

        Args:
            faces: every face :meth:`update` returned for the video, in order, with ``timestamp_s`` set.
            min_track_s: shortest track kept, seconds.
            sample_period_s: 1 / sample_fps, seconds (a track seen in k samples spans k periods).

        Returns:
            :class:`TrackResult`: the kept faces (row order kept) and the map from each id :meth:`update` gave to
            the final id.
        """
        raw = faces.track_id
        resolved = self.resolve(raw)
        keep = resolved >= 0
        kept = faces[keep].with_track_id(resolved[keep])
        drop = short_tracks(kept.track_id, kept.timestamp_s, min_track_s, sample_period_s)
        kept = kept[~np.isin(kept.track_id, drop)]
        ids, inv = np.unique(kept.track_id, return_inverse=True)
        first = np.full(len(ids), np.inf)
        np.minimum.at(first, inv, kept.timestamp_s)
        renumber = {int(old): new for new, old in enumerate(ids[np.argsort(first, kind="stable")], start=1)}
        final = kept.with_track_id(np.array([renumber[int(t)] for t in kept.track_id], np.int64))
        by_raw = {}
        for r, real in zip(np.unique(raw).tolist(), self.resolve(np.unique(raw)).tolist()):
            if real in renumber:
                by_raw[int(r)] = renumber[real]
        return TrackResult(final, by_raw)


@dataclass(frozen=True)
class TrackResult:
    """A video's tracking outcome (:meth:`Tracker.finish`).

    Attributes:
        faces: the faces kept, ``track_id`` 1..K in order of first appearance.
        ids: ``{id given by update: final id}`` for every id whose track was kept (provisional and confirmed ids
            both), e.g. to carry per-track data gathered during tracking (thumbnails) over to the final ids.
    """

    faces: Faces
    ids: dict[int, int]


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

    def cut(self) -> None:
        self._tracker.tracks = []  # ids keep counting; unconfirmed tracks die (resolve() gives their faces -1)

    def reset(self) -> None:
        from trackers import ByteTrackTracker

        self._tracker = ByteTrackTracker(**self._kwargs)
        self._pending: dict[int, object] = {}  # provisional id -> tracklet not yet confirmed
        self._resolved: dict[int, int] = {}  # provisional id -> confirmed tracker id
        self._next_provisional = -2

    def update(self, faces: Faces, timestamp_s: float) -> Faces:
        """See :meth:`Tracker.update`. ByteTrack returns -1 for the detection that starts a track; that face gets a
        provisional id here (<= -2) so it is not lost, and :meth:`resolve` maps it to the track's id later."""
        import supervision as sv

        before = {id(t) for t in self._tracker.tracks}
        det = sv.Detections(xyxy=faces.xyxy.astype(np.float32), confidence=faces.scores.astype(np.float32),
                            data={"row": np.arange(len(faces))})
        out = self._tracker.update(det, timestamp=float(timestamp_s))
        for prov, t in list(self._pending.items()):
            if t.tracker_id >= 0:
                self._resolved[prov] = int(t.tracker_id)
                del self._pending[prov]
            elif not any(t is u for u in self._tracker.tracks):
                del self._pending[prov]  # died unconfirmed
        if len(out) == 0:
            return Faces.empty()
        rows = np.asarray(out.data["row"], np.int64)
        ids = np.asarray(out.tracker_id, np.int64).copy()
        new = [t for t in self._tracker.tracks if id(t) not in before and t.tracker_id < 0]
        for k in np.flatnonzero(ids < 0):
            box = faces.xyxy[rows[k]]
            for t in new:
                if np.allclose(t.get_state_bbox(), box, atol=1e-3):
                    ids[k] = self._next_provisional
                    self._pending[self._next_provisional] = t
                    self._next_provisional -= 1
                    new.remove(t)
                    break
        keep = ids != -1
        order = np.argsort(rows[keep], kind="stable")
        rows, ids = rows[keep][order], ids[keep][order]
        return faces[rows].with_track_id(ids)

    def resolve(self, track_id: np.ndarray) -> np.ndarray:
        ids = np.asarray(track_id, np.int64).copy()
        for k in np.flatnonzero(ids <= -2):
            ids[k] = self._resolved.get(int(ids[k]), -1)
        return ids


def build_tracker(spec: str | TrackConfig, **kwargs) -> Tracker:
    """Build a registered tracker: from a :class:`~fer_pipeline.config.TrackConfig` (its ``tracker`` names it; the
    association settings are passed on, ``min_track_s`` is :meth:`Tracker.finish`'s), or by name with keyword
    arguments.

    Raises:
        ValueError: unknown tracker name.
    """
    if not isinstance(spec, str):
        kwargs = {"high_conf_threshold": spec.high_conf_threshold, "activation_threshold": spec.activation_threshold,
                  "min_iou": spec.min_iou, "max_lost_s": spec.max_lost_s, **kwargs}
        spec = spec.tracker
    if spec not in TRACKERS:
        raise ValueError(f"unknown tracker {spec!r}; known: {sorted(TRACKERS)}")
    return TRACKERS[spec](**kwargs)


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
