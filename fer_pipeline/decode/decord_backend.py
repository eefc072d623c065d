"""The decord backend (``backend="decord"``): index the file, pick the kept indices from decord's timestamps
(:func:`~fer_pipeline.decode.sampling.select_sample_indices`) and decode them ``batch_size`` at a time with
``get_batch``; and decord's exact frame count and duration for :func:`fer_pipeline.decode.probe`.

Unrotated files only: decord 0.6 mishandles display matrices, so :func:`fer_pipeline.decode.iter_batches` sends rotated
files to PyAV (see "Backends" in :mod:`fer_pipeline.decode`). ``decord`` itself is imported on first use only: the
PyAV path (the pipeline's default, and the decode process) never pays for its import.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from fer_pipeline.decode.errors import VideoError, check_complete
from fer_pipeline.decode.sampling import select_sample_indices
from fer_pipeline.errors import one_line
from fer_pipeline.types import FrameBatch, VideoMeta

logger = logging.getLogger(__name__)

__all__ = ["decord_meta", "iter_decord", "open_decord"]


def open_decord(p: Path) -> Any | None:
    """A ``decord.VideoReader`` for ``p``, or ``None`` (logged) when decord is missing or cannot open the file."""
    try:
        import decord  # on first use only (see the module docstring)
    except ImportError as e:
        logger.warning("decord is not installed (%s)", one_line(e))
        return None
    try:
        return decord.VideoReader(str(p), ctx=decord.cpu(0))
    except (RuntimeError, decord.DECORDError) as e:
        logger.debug("decord cannot open %s: %s", p, one_line(e))
        return None


def decord_meta(vr: Any, meta: VideoMeta) -> VideoMeta:
    """``meta`` (from PyAV) with decord's frame count, average rate and duration (the end of the last frame), which
    come from its packet index; ``meta`` unchanged for a reader without frames."""
    n = len(vr)
    if n == 0:
        return meta
    fps = float(vr.get_avg_fps()) or meta.fps
    duration_s = float(vr.get_frame_timestamp(n - 1)[1])
    return VideoMeta(path=meta.path, duration_s=duration_s, fps=fps, width=meta.width, height=meta.height,
                     rotation=meta.rotation, n_frames=n)


def iter_decord(vr: Any, meta: VideoMeta, declared_s: float, *, sample_fps: float,
                batch_size: int) -> Iterator[FrameBatch]:
    """Decode the kept frames of an unrotated file with decord.

    Args:
        vr: from :func:`open_decord`.
        meta, declared_s: from :func:`fer_pipeline.decode.container.probe_pyav`.
        sample_fps: sampling rate in Hz (0.0: every frame); batch_size: frames per batch (the last may be shorter).

    Yields:
        ``FrameBatch`` as :func:`fer_pipeline.decode.iter_batches`; ``frames`` are decord's own arrays.

    Raises:
        VideoError: the file is truncated or a frame cannot be decoded.
        ValueError: ``meta.rotation`` is not 0.
    """
    import decord  # open_decord imported it already

    p = meta.path
    if meta.rotation != 0:
        raise ValueError(f"the decord path handles unrotated files only; {p} is rotated by {meta.rotation}")
    n = len(vr)
    if n == 0:
        check_complete(meta, None, declared_s)
    # (N, 2) float32 [start, end] seconds, relative to the stream start (decord subtracts it, as the PyAV path does).
    stamps = np.asarray(vr.get_frame_timestamp(np.arange(n)), dtype=np.float64)[:, 0]
    check_complete(meta, float(stamps[-1]), declared_s)
    keep = select_sample_indices(stamps, sample_fps)
    logger.debug("decord: %s has %d frames; keeping %d at %.3g Hz", p, n, len(keep), sample_fps)
    for start in range(0, len(keep), batch_size):
        chunk = keep[start:start + batch_size]
        try:
            arr = vr.get_batch(chunk.tolist()).asnumpy()
        except (RuntimeError, decord.DECORDError) as e:
            raise VideoError(f"cannot decode (corrupt or truncated): {p}: {one_line(e)} "
                             f"(frames {int(chunk[0])}..{int(chunk[-1])})", p) from e
        if arr.dtype != np.uint8 or arr.shape != (len(chunk), meta.height, meta.width, 3):
            raise VideoError(f"cannot decode (corrupt or truncated): {p}: decord returned {arr.shape} {arr.dtype} "
                             f"for {len(chunk)} frames", p)
        yield FrameBatch(frames=arr, frame_index=chunk.astype(np.int64), timestamp_s=stamps[chunk])
