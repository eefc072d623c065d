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


@dataclass(frozen=True)
class Faces:
    """Faces found in one frame, as columns of N rows (N may be 0; never ``None``).

    Attributes:
        xyxy: ``(N, 4) float32`` boxes ``x1, y1, x2, y2`` in original-frame pixels.
        scores: ``(N,) float32`` detection confidence in [0, 1].
        landmarks: ``(N, 5, 2) float32`` (x, y) pixels of left eye, right eye, nose, left mouth corner, right mouth
            corner ("left" = the subject's left as seen in the image's left half, i.e. image-left).
        track_id: ``(N,) int64`` identity across frames; -1 until a tracker confirms it.
    """

    xyxy: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray
    track_id: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        n = len(self.xyxy)
        if self.track_id is None:
            object.__setattr__(self, "track_id", np.full(n, -1, np.int64))
        object.__setattr__(self, "xyxy", np.asarray(self.xyxy, np.float32).reshape(n, 4))
        object.__setattr__(self, "scores", np.asarray(self.scores, np.float32).reshape(n))
        object.__setattr__(self, "landmarks", np.asarray(self.landmarks, np.float32).reshape(n, 5, 2))
        object.__setattr__(self, "track_id", np.asarray(self.track_id, np.int64).reshape(n))

    @classmethod
    def empty(cls) -> "Faces":
        """No faces: shapes (0,4), (0,), (0,5,2), (0,)."""
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32),
                   np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.xyxy)

    def __getitem__(self, idx) -> "Faces":
        """Select rows by boolean mask, index array or slice."""
        if isinstance(idx, (int, np.integer)):
            idx = [idx]
        return Faces(self.xyxy[idx], self.scores[idx], self.landmarks[idx], self.track_id[idx])

    def with_track_id(self, track_id: np.ndarray) -> "Faces":
        """A copy with ``track_id`` replaced (``(N,) int64``)."""
        return Faces(self.xyxy, self.scores, self.landmarks, track_id)

    @staticmethod
    def concat(items: list["Faces"]) -> "Faces":
        """Stack several frames' faces into one container (rows in order)."""
        if not items:
            return Faces.empty()
        return Faces(np.concatenate([f.xyxy for f in items]), np.concatenate([f.scores for f in items]),
                     np.concatenate([f.landmarks for f in items]), np.concatenate([f.track_id for f in items]))
