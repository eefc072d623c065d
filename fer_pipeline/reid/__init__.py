"""Re-identification: face embeddings (:class:`FaceEmbedder`: dlib by default, ArcFace from an InsightFace pack) and
the assignment of a video's tracks to viewers (:func:`assign_viewers`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fer_pipeline.reid.base import EMBEDDERS, EmbedderError, FaceEmbedder, l2_normalise
from fer_pipeline.reid.viewers import TrackSamples, ViewerAssignment, assign_viewers, viewers_of_tracks

if TYPE_CHECKING:
    from fer_pipeline.config import ReidConfig

__all__ = ["EMBEDDERS", "EmbedderError", "FaceEmbedder", "TrackSamples", "ViewerAssignment", "assign_viewers",
           "build_embedder", "l2_normalise", "viewers_of_tracks"]


def build_embedder(cfg: ReidConfig, device: str = "auto") -> FaceEmbedder:
    """The embedder ``cfg.backend`` names: ``dlib`` (weights in the ``face-recognition-models`` package) or
    ``arcface`` (``cfg.model_path``, or the recognition model of pack ``cfg.pack`` under ``cfg.root``).

    Raises:
        EmbedderError: unknown backend, or its package or model file missing.
    """
    if cfg.backend == "dlib":
        from fer_pipeline.reid.dlib_backend import DlibEmbedder

        return DlibEmbedder()
    if cfg.backend == "arcface":
        from fer_pipeline.reid.arcface import ArcFaceEmbedder

        return ArcFaceEmbedder(model_path=cfg.model_path, pack=cfg.pack, root=cfg.root, device=device)
    raise EmbedderError(f"unknown reid backend {cfg.backend!r}; known: dlib, arcface")
