"""The face-embedding interface: aligned face crops -> L2-normalised vectors, one backend per model.

Embeddings are biometric data: they live in memory for the viewer assignment of one video and are written only when
the user asks (``--save-embeddings``); they never appear in reports.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np

from fer_pipeline.types import Faces

logger = logging.getLogger(__name__)

__all__ = ["EMBEDDERS", "EmbedderError", "FaceEmbedder", "l2_normalise", "register"]

EMBEDDERS: dict[str, type["FaceEmbedder"]] = {}


class EmbedderError(RuntimeError):
    """An embedding model is missing or cannot be loaded (the message names the file or package)."""


def register(cls):
    """Class decorator: make an embedder backend buildable by its ``name``."""
    EMBEDDERS[cls.name] = cls
    return cls


def l2_normalise(v: np.ndarray) -> np.ndarray:
    """Rows of ``v`` ``(N, D)`` scaled to unit L2 norm (float32; an all-zero row stays zero)."""
    v = np.asarray(v, np.float32)
    n = np.linalg.norm(v, axis=1, keepdims=True)
    return np.divide(v, n, out=np.zeros_like(v), where=n > 0)


class FaceEmbedder(ABC):
    """Face embeddings in two steps, because frames are gone once their batch is done while the decision which
    tracks need embeddings comes at the end of the video:

    1. :meth:`crops` while the frame is at hand: the face crops, aligned as the model expects (small: a few per track
       are kept).
    2. :meth:`embed` later, on the crops of the tracks that need it: ``(N, dim)`` float32, each row of unit L2 norm.
       Distances between embeddings are Euclidean on the unit sphere, in [0, 2].

    Attributes:
        name: registry name (``reid.backend``).
        dim: embedding size.
        sha256: of the weights file (part of the settings fingerprint), or None.
    """

    name: ClassVar[str]
    dim: int
    sha256: str | None = None

    @abstractmethod
    def crops(self, frame: np.ndarray, faces: Faces) -> np.ndarray:
        """Aligned crops of ``faces`` (boxes and 5 landmarks in pixels of ``frame``, an ``(H, W, 3) uint8`` RGB
        image): ``(N, h, w, 3) uint8``, N = ``len(faces)``."""

    @abstractmethod
    def embed(self, crops: np.ndarray) -> np.ndarray:
        """``(N, h, w, 3) uint8`` crops from :meth:`crops` -> ``(N, dim) float32`` unit vectors (N may be 0)."""
