"""Viewers decided as tracks are settled, for live streams: the rule of :func:`fer_pipeline.reid.assign_viewers`
applied one track at a time.

A batch run clusters all of a video's tracks at the end; a live session must write a track's rows (with their
``viewer_id``) while the stream goes on, so each track gets its viewer once, when its first rows are settled: the
mean embedding of its reliable samples (face at least ``min_face_px``, turned at most ``max_yaw_deg``) joins the
existing viewer with the smallest complete-linkage distance (the largest distance to any of that viewer's track
embeddings, as the batch clustering's linkage) when that distance is at most ``distance_threshold`` and none of
that viewer's tracks overlaps it in time (two faces seen at once are two people: the batch rule's cannot-link);
otherwise it starts a new viewer. A track without reliable samples, or without an embedder, is its own viewer.
Decisions are never revised (rows already written keep their ids); merging two earlier viewers that a later track
would bridge is left to a batch re-run of a recording of the stream.

Embeddings stay in memory (biometric data), one ``(dim,)`` vector per track.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from fer_pipeline.reid.base import FaceEmbedder, l2_normalise

logger = logging.getLogger(__name__)

__all__ = ["OnlineViewers"]


@dataclass
class OnlineViewers:
    """Viewer ids 1, 2, ... in order of first settlement.

    Args:
        embedder: computes embeddings of the samples' crops; None: every track is its own viewer.
        distance_threshold: largest distance between unit-vector embeddings (Euclidean, [0, 2]) of one viewer.
        min_face_px: a sample is reliable when its face's short side is at least this many pixels ...
        max_yaw_deg: ... and it is turned by at most this many degrees.
    """

    embedder: FaceEmbedder | None
    distance_threshold: float = 0.40
    min_face_px: float = 40.0
    max_yaw_deg: float = 40.0
    viewer_of: dict[int, int] = field(default_factory=dict)
    spans: dict[int, list[float]] = field(default_factory=dict)
    embeddings: dict[int, np.ndarray] = field(default_factory=dict)
    embedded_faces: int = 0

    def extend(self, track: int, first_s: float, last_s: float) -> None:
        """Widen a settled track's time span (seconds) as more of its rows are seen."""
        span = self.spans.get(track)
        if span is not None:
            span[0], span[1] = min(span[0], first_s), max(span[1], last_s)

    def assign(self, track: int, first_s: float, last_s: float, samples: list) -> int:
        """The viewer of a track settled for the first time.

        Args:
            track: its final track id.
            first_s, last_s: its time span so far, seconds of stream time.
            samples: its face samples (:class:`fer_pipeline.reid.TrackSamples` entries: ``crop``, ``face_px``,
                ``yaw``, ``quality``), any number.

        Returns:
            The viewer id (an existing one or the next new one); a track already assigned keeps its viewer.
        """
        if track in self.viewer_of:
            self.extend(track, first_s, last_s)
            return self.viewer_of[track]
        self.spans[track] = [first_s, last_s]
        reliable = [s for s in samples if s.face_px >= self.min_face_px and abs(s.yaw) <= self.max_yaw_deg]
        best = None
        if self.embedder is not None and reliable:
            vecs = self.embedder.embed(np.stack([s.crop for s in reliable]))
            self.embedded_faces += len(reliable)
            emb = l2_normalise(vecs.mean(0, keepdims=True))[0]
            self.embeddings[track] = emb
            best_d = np.inf
            for viewer in sorted(set(self.viewer_of.values())):
                tracks = [t for t, v in self.viewer_of.items() if v == viewer]
                if any(_overlap(self.spans[t], (first_s, last_s)) for t in tracks):
                    continue  # seen at the same time: another person
                embs = [self.embeddings[t] for t in tracks if t in self.embeddings]
                if len(embs) < len(tracks):
                    continue  # a track of it could not be embedded: complete linkage cannot vouch for it
                d = max(float(np.linalg.norm(emb - e)) for e in embs)
                if d <= self.distance_threshold and d < best_d:
                    best, best_d = viewer, d
            if best is not None:
                logger.info("track %d is viewer %d again (distance %.2f)", track, best, best_d)
        viewer = best if best is not None else len(set(self.viewer_of.values())) + 1
        self.viewer_of[track] = viewer
        return viewer

    @property
    def n_viewers(self) -> int:
        """Viewers so far."""
        return len(set(self.viewer_of.values()))


def _overlap(a, b) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]
