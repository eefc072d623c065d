"""Plain data passed between stages: video metadata, batches of sampled frames, faces.

Conventions: images are ``(H, W, 3) uint8`` **RGB**; coordinates are pixels of the original (upright) frame, x to the
right, y down; times are seconds (float64) of presentation time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class VideoMeta:
    """What the decoder learned about a video before decoding it.

    Attributes:
        path: the file.
        duration_s: duration in seconds (> 0).
        fps: average frame rate in Hz (frames per second; may be fractional, e.g. 29.97).
        width, height: size in pixels of the frames as delivered, i.e. after applying ``rotation``.
        rotation: clockwise rotation in degrees (0, 90, 180, 270) that the container asks players to apply; frames
            delivered by the decoder are already upright.
        n_frames: number of frames in the stream (estimate for some containers).
    """

    path: Path
    duration_s: float
    fps: float
    width: int
    height: int
    rotation: int = 0
    n_frames: int = 0


@dataclass(frozen=True)
class FrameBatch:
    """Consecutive sampled frames of one video.

    Attributes:
        frames: ``(B, H, W, 3) uint8`` RGB, upright.
        frame_index: ``(B,) int64`` index of each frame in the decoded stream (0-based).
        timestamp_s: ``(B,) float64`` presentation time of each frame in seconds from the start of the video,
            strictly increasing.
    """

    frames: np.ndarray
    frame_index: np.ndarray
    timestamp_s: np.ndarray

    def __post_init__(self) -> None:
        b = len(self.frames)
        if self.frames.ndim != 4 or self.frames.shape[-1] != 3 or self.frames.dtype != np.uint8:
            raise ValueError(f"frames must be (B,H,W,3) uint8, got {self.frames.shape} {self.frames.dtype}")
        if self.frame_index.shape != (b,) or self.timestamp_s.shape != (b,):
            raise ValueError(f"frame_index and timestamp_s must be ({b},), got {self.frame_index.shape}, "
                             f"{self.timestamp_s.shape}")

    def __len__(self) -> int:
        return len(self.frames)


#: Per-face columns of :class:`Faces`: name -> (dtype, trailing shape, fill value of a row not yet set).
#: ``probs`` has a trailing size of its own (the model's number of labels, 0 before classification).
FACE_COLUMNS: dict[str, tuple[type, tuple[int, ...], float]] = {
    "xyxy": (np.float32, (4,), np.nan),
    "scores": (np.float32, (), np.nan),
    "landmarks": (np.float32, (5, 2), np.nan),
    "track_id": (np.int64, (), -1),
    "viewer_id": (np.int64, (), -1),
    "frame_index": (np.int64, (), -1),
    "timestamp_s": (np.float64, (), np.nan),
    "probs": (np.float32, (0,), np.nan),
    "pose": (np.float32, (3,), np.nan),
}


@dataclass(frozen=True)
class Faces:
    """Faces as columns of N rows (N may be 0, never ``None``), filled in stage by stage: the detector sets boxes,
    scores and landmarks; the tracker ``track_id``; re-identification ``viewer_id``; the stage loop the frame each
    face is in; the classifier ``probs``; head pose ``pose``. Modelled on supervision's ``Detections``; every column
    is a numpy array whose first axis is the face.

    Attributes:
        xyxy: ``(N, 4) float32`` boxes ``x1, y1, x2, y2`` in original-frame pixels.
        scores: ``(N,) float32`` detection confidence in [0, 1].
        landmarks: ``(N, 5, 2) float32`` (x, y) pixels of left eye, right eye, nose, left mouth corner, right mouth
            corner ("left" = the subject's left as seen in the image's left half, i.e. image-left).
        track_id: ``(N,) int64`` identity across frames; -1 until a tracker confirms it (<= -2: provisional, see
            :meth:`fer_pipeline.track.Tracker.resolve`).
        viewer_id: ``(N,) int64`` the person across tracks (:mod:`fer_pipeline.reid`); -1 until assigned.
        frame_index: ``(N,) int64`` index in the decoded stream of the frame the face is in; -1 unknown.
        timestamp_s: ``(N,) float64`` presentation time of that frame, seconds; NaN unknown.
        probs: ``(N, K) float32`` emotion probabilities over the model's K labels (rows sum to 1); ``(N, 0)``
            before classification.
        pose: ``(N, 3) float32`` head yaw, pitch, roll in degrees (:mod:`fer_pipeline.headpose`); NaN unknown.

    Columns left out are filled with their "not set" value (-1 or NaN). Raises ``ValueError`` when a column's
    length or trailing shape is wrong (the message names it).
    """

    xyxy: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray
    track_id: np.ndarray = field(default=None)  # type: ignore[assignment]
    viewer_id: np.ndarray = field(default=None)  # type: ignore[assignment]
    frame_index: np.ndarray = field(default=None)  # type: ignore[assignment]
    timestamp_s: np.ndarray = field(default=None)  # type: ignore[assignment]
    probs: np.ndarray = field(default=None)  # type: ignore[assignment]
    pose: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        n = len(np.asarray(self.xyxy).reshape(-1, 4))
        for name, (dtype, tail, fill) in FACE_COLUMNS.items():
            value = getattr(self, name)
            if value is None:
                value = np.full((n, *tail), fill, dtype)
            else:
                value = np.asarray(value, dtype)
                if name == "probs":
                    if value.ndim != 2 or len(value) != n:
                        raise ValueError(f"Faces.probs must be ({n}, K), got {value.shape}")
                else:
                    try:
                        value = value.reshape((n, *tail))
                    except ValueError:
                        raise ValueError(f"Faces.{name} must be {(n, *tail)} for {n} faces, got {value.shape}") \
                            from None
            object.__setattr__(self, name, value)

    @classmethod
    def empty(cls, n_labels: int = 0) -> "Faces":
        """No faces: every column with 0 rows (``probs`` ``(0, n_labels)``)."""
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32),
                   probs=np.zeros((0, n_labels), np.float32))

    def __len__(self) -> int:
        return len(self.xyxy)

    def columns(self) -> dict[str, np.ndarray]:
        """Every column by name (the arrays themselves, not copies)."""
        return {name: getattr(self, name) for name in FACE_COLUMNS}

    def __getitem__(self, idx) -> "Faces":
        """Select rows (every column) by boolean mask, index array or slice; an int selects one row as ``Faces``."""
        if isinstance(idx, (int, np.integer)):
            idx = [idx]
        return Faces(**{k: v[idx] for k, v in self.columns().items()})

    def with_columns(self, **columns: np.ndarray) -> "Faces":
        """A copy with the given columns replaced (validated as at construction)."""
        unknown = set(columns) - set(FACE_COLUMNS)
        if unknown:
            raise ValueError(f"unknown Faces column(s) {sorted(unknown)}; known: {list(FACE_COLUMNS)}")
        return Faces(**{**self.columns(), **columns})

    def with_track_id(self, track_id: np.ndarray) -> "Faces":
        """A copy with ``track_id`` replaced (``(N,) int64``)."""
        return self.with_columns(track_id=track_id)

    @staticmethod
    def concat(items: list["Faces"], n_labels: int = 0) -> "Faces":
        """Stack several Faces into one container (rows in order). ``n_labels``: width of ``probs`` when ``items``
        is empty.

        Raises:
            ValueError: ``probs`` of different widths.
        """
        if not items:
            return Faces.empty(n_labels)
        widths = {f.probs.shape[1] for f in items}
        if len(widths) > 1:
            raise ValueError(f"cannot concatenate Faces with probs of widths {sorted(widths)}")
        return Faces(**{k: np.concatenate([f.columns()[k] for f in items]) for k in FACE_COLUMNS})
