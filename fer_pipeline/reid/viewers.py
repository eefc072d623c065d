"""Viewers, not tracks: tracks of the same person in one video get one ``viewer_id``.

Tracking gives a new id whenever a face is lost for longer than the tracker waits (the viewer turns away, is
occluded, leaves and comes back, or the footage cuts). This module:

1. keeps a few good samples per track while the video is analysed (:class:`TrackSamples`): the face crops, aligned
   for the embedder, of its best faces by detection score x face size x frontalness (cos yaw x cos pitch), never
   every frame; a crop is made only when a face enters a track's best ``k``;
2. at the end (:func:`assign_viewers`) embeds the samples of the tracks that could be merged (a track that overlaps
   in time every other track cannot be anyone else: no embedding is computed for it), averages each track's
   sample embeddings (unit vectors; the mean renormalised), and clusters the tracks: scikit-learn's agglomerative
   clustering with complete linkage on the Euclidean distance between track embeddings, cut at
   ``distance_threshold``, with a cannot-link constraint between tracks that overlap in time (their distance is set
   to infinity, and complete linkage then never puts them in one cluster). Tracks whose samples are all unreliable
   (face smaller than ``min_face_px`` or turned more than ``max_yaw_deg``) stay their own viewer rather than be merged
   wrongly.

Distance threshold 0.40 (unit-normalised dlib embeddings), measured on the shared data: one person's single-frame
embeddings lie within 0.05-0.45 of each other (0.30 median for a woman crying with her hands over her face, 0.17 for a
steady face), track means of one person within 0.02; different people 0.43-0.64 (six people of a group photo:
0.43-0.62; the woman and the man of the shared clips: 0.53-0.64 single frames, 0.54 as means).

Viewer ids run from 1 in order of first appearance.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from fer_pipeline.reid.base import FaceEmbedder, l2_normalise
from fer_pipeline.types import Faces, FrameBatch

if TYPE_CHECKING:
    from fer_pipeline.config import ReidConfig
    from fer_pipeline.track import TrackResult

logger = logging.getLogger(__name__)

__all__ = ["TrackSamples", "ViewerAssignment", "assign_viewers", "viewers_of_tracks"]


@dataclass
class _Sample:
    quality: float
    crop: np.ndarray
    face_px: float
    yaw: float


@dataclass
class TrackSamples:
    """The best ``k`` face samples of each track (raw tracker ids), with their aligned crops.

    Args:
        embedder: makes the crops (:meth:`FaceEmbedder.crops`).
        k: samples kept per track.
    """

    embedder: FaceEmbedder
    k: int = 3
    samples: dict[int, list[_Sample]] = field(default_factory=dict)
    crops_made: int = 0

    @staticmethod
    def quality(faces: Faces) -> np.ndarray:
        """``(N,)`` detection score x face short side (pixels) x cos(yaw) x cos(pitch) (0 for a face turned away)."""
        side = np.minimum(faces.xyxy[:, 2] - faces.xyxy[:, 0], faces.xyxy[:, 3] - faces.xyxy[:, 1])
        yaw, pitch = np.radians(np.nan_to_num(faces.pose[:, 0], nan=90.0)), np.radians(
            np.nan_to_num(faces.pose[:, 1], nan=90.0))
        return faces.scores * side * np.clip(np.cos(yaw), 0, 1) * np.clip(np.cos(pitch), 0, 1)

    def add_batch(self, batch: FrameBatch, faces: Faces) -> None:
        """Offer a batch's faces (:class:`~fer_pipeline.stages.FaceStages` output: raw track ids, ``frame_index``
        and ``pose`` set)."""
        if not len(faces):
            return
        pos = np.searchsorted(batch.frame_index, faces.frame_index)
        for i in np.unique(pos):
            self.add(batch.frames[i], faces[pos == i])

    def add(self, frame: np.ndarray, faces: Faces) -> None:
        """Offer the faces of one frame (raw track ids, ``pose`` set)."""
        if not len(faces):
            return
        q = self.quality(faces)
        take = []
        for i in range(len(faces)):
            kept = self.samples.get(int(faces.track_id[i]), [])
            if len(kept) < self.k or q[i] > kept[-1].quality:
                take.append(i)
        if not take:
            return
        sel = faces[np.array(take)]
        crops = self.embedder.crops(frame, sel)
        self.crops_made += len(take)
        side = np.minimum(sel.xyxy[:, 2] - sel.xyxy[:, 0], sel.xyxy[:, 3] - sel.xyxy[:, 1])
        for j, i in enumerate(take):
            kept = self.samples.setdefault(int(faces.track_id[i]), [])
            kept.append(_Sample(float(q[i]), crops[j], float(side[j]), float(np.nan_to_num(sel.pose[j, 0], nan=90))))
            kept.sort(key=lambda s: -s.quality)
            del kept[self.k:]


@dataclass(frozen=True)
class ViewerAssignment:
    """The outcome of :func:`assign_viewers`.

    Attributes:
        viewer_of: ``{final track id: viewer id}`` for every track.
        embeddings: ``{final track id: (dim,) float32}`` mean embedding of each track that was embedded (biometric
            data: kept in memory, written only on request).
        embedded_faces: how many face samples were embedded.
    """

    viewer_of: dict[int, int]
    embeddings: dict[int, np.ndarray]
    embedded_faces: int


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def assign_viewers(spans: dict[int, tuple[float, float]], samples: dict[int, list], embedder: FaceEmbedder | None,
                   distance_threshold: float = 0.40, min_face_px: float = 40.0,
                   max_yaw_deg: float = 40.0) -> ViewerAssignment:
    """Group a video's tracks into viewers.

    Args:
        spans: ``{final track id: (first, last) timestamp in seconds}`` of every track.
        samples: ``{final track id: samples}`` (:attr:`TrackSamples.samples`, re-keyed to final ids; of several
            tracker ids that became one track, all samples).
        embedder: computes the embeddings; None: every track is its own viewer.
        distance_threshold: largest complete-linkage distance between two tracks' mean embeddings (unit vectors,
            Euclidean, [0, 2]) for them to be one viewer.
        min_face_px: a sample is reliable when its face's short side is at least this (pixels) ...
        max_yaw_deg: ... and it is turned by at most this (degrees).

    Returns:
        :class:`ViewerAssignment`; viewer ids 1..V in order of first appearance.
    """
    ids = sorted(spans, key=lambda t: (spans[t][0], t))
    groups: dict[int, int] = {t: t for t in ids}  # track -> representative track
    embeddings: dict[int, np.ndarray] = {}
    n_embedded = 0
    candidates = [t for t in ids if any(not _overlap(spans[t], spans[u]) for u in ids if u != t)]
    reliable = {t: [s for s in samples.get(t, []) if s.face_px >= min_face_px and abs(s.yaw) <= max_yaw_deg]
                for t in candidates}
    cand = [t for t in candidates if reliable[t]]
    if embedder is not None and len(cand) >= 2:
        crops = np.concatenate([np.stack([s.crop for s in reliable[t]]) for t in cand])
        vecs = embedder.embed(crops)
        n_embedded = len(crops)
        start = 0
        for t in cand:
            n = len(reliable[t])
            embeddings[t] = l2_normalise(vecs[start:start + n].mean(0, keepdims=True))[0]
            start += n
        from sklearn.cluster import AgglomerativeClustering

        emb = np.stack([embeddings[t] for t in cand])
        dist = np.linalg.norm(emb[:, None] - emb[None], axis=2).astype(np.float64)
        big = 1e6
        for i, a in enumerate(cand):
            for j, b in enumerate(cand):
                if i != j and _overlap(spans[a], spans[b]):
                    dist[i, j] = big
        labels = AgglomerativeClustering(n_clusters=None, metric="precomputed", linkage="complete",
                                         distance_threshold=distance_threshold).fit_predict(dist)
        first_of: dict[int, int] = {}
        for t, lab in zip(cand, labels):
            first_of.setdefault(int(lab), t)  # cand is in order of first appearance
            groups[t] = first_of[int(lab)]
    viewer_of: dict[int, int] = {}
    numbers: dict[int, int] = {}
    for t in ids:
        rep = groups[t]
        if rep not in numbers:
            numbers[rep] = len(numbers) + 1
        viewer_of[t] = numbers[rep]
    if embedder is not None:
        logger.info("%d tracks -> %d viewers (%d candidates, %d faces embedded)", len(ids), len(numbers), len(cand),
                    n_embedded)
    return ViewerAssignment(viewer_of, embeddings, n_embedded)


def viewers_of_tracks(tracked: TrackResult, samples: TrackSamples | None, embedder: FaceEmbedder | None,
                      cfg: ReidConfig) -> ViewerAssignment:
    """:func:`assign_viewers` for a video's final tracks (:meth:`fer_pipeline.track.Tracker.finish`): spans from
    their faces' timestamps, samples re-keyed from tracker ids to final ids (the best ``k`` of merged ids)."""
    faces = tracked.faces
    spans: dict[int, tuple[float, float]] = {}
    for tid in np.unique(faces.track_id).tolist():
        ts = faces.timestamp_s[faces.track_id == tid]
        spans[int(tid)] = (float(ts.min()), float(ts.max()))
    by_final: dict[int, list[_Sample]] = {}
    if samples is not None:
        for raw, kept in samples.samples.items():
            final = tracked.ids.get(raw)
            if final is not None:
                by_final.setdefault(final, []).extend(kept)
        for kept in by_final.values():
            kept.sort(key=lambda s: -s.quality)
            del kept[samples.k:]
    return assign_viewers(spans, by_final, embedder if cfg.enabled else None, cfg.distance_threshold,
                          cfg.min_face_px, cfg.max_yaw_deg)
