"""A video file -> its batches: the settings checked, the file probed, the backend and decoder chosen
(:func:`iter_batches`, the public entry point, and :func:`decode_batches`, the same with the settings as keyword
values, which the decode process's child runs)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fer_pipeline.decode.buffers import Stacker
from fer_pipeline.decode.chunk_plan import plan_chunks
from fer_pipeline.decode.chunks import default_workers, iter_chunk_batches
from fer_pipeline.decode.container import check_backend, check_path, probe_pyav
from fer_pipeline.decode.decord_backend import iter_decord, open_decord
from fer_pipeline.decode.errors import check_complete
from fer_pipeline.decode.pyav import LOOP_FILTER, iter_pyav
from fer_pipeline.decode.sampling import check_sample_fps
from fer_pipeline.types import FrameBatch

if TYPE_CHECKING:
    from fer_pipeline.config import DecodeConfig

logger = logging.getLogger(__name__)

__all__ = ["DECODER_SETTINGS", "decode_batches", "decoder_settings", "iter_batches"]

#: The fields of :class:`~fer_pipeline.config.DecodeConfig` that decide the batches (the others, ``process`` and
#: ``stall_timeout_s``, decide where and how long the caller waits for them): the keywords of :func:`decode_batches`.
DECODER_SETTINGS: tuple[str, ...] = ("sample_fps", "batch_size", "backend", "skip_nonref", "threads",
                                     "skip_loop_filter", "snap_to_anchors")


def decoder_settings(cfg: DecodeConfig) -> dict[str, Any]:
    """The :data:`DECODER_SETTINGS` of ``cfg`` as a plain dict (JSON-ready; the keywords of
    :func:`decode_batches`)."""
    return {name: getattr(cfg, name) for name in DECODER_SETTINGS}


def iter_batches(path: str | Path, cfg: DecodeConfig | None = None,
                 buffers: Stacker | None = None) -> Iterator[FrameBatch]:
    """Stream a video as batches of sampled, upright RGB frames (see :mod:`fer_pipeline.decode` for the sampling
    rule, skipping, threads, anchors and backends).

    The file is probed (and validated) before the first batch is produced, so a bad file raises on the first
    ``next()``.

    Args:
        path: a video file.
        cfg: the decode settings (``DecodeConfig()`` when ``None``): ``sample_fps`` (Hz of video time; the output
            rate is at most this; ``None`` or ``<= 0`` keeps every frame, which only an unvalidated config such as
            ``cfg.model_copy(update={"sample_fps": None})`` can ask for), ``batch_size`` (most frames per batch;
            bounds memory to ``batch_size * H * W * 3`` bytes of kept frames), ``backend``, ``skip_nonref``,
            ``threads``, ``skip_loop_filter``, ``snap_to_anchors`` (see :class:`~fer_pipeline.config.DecodeConfig`
            and :func:`decode_batches`). ``process`` and ``stall_timeout_s`` are not used here (see
            :func:`fer_pipeline.decode.iter_batches_in_process`).
        buffers: PyAV: where batches are stacked (anything with
            :meth:`~fer_pipeline.decode.buffers.BatchBuffers.stack`; the decode process passes its shared slots); a
            new :class:`~fer_pipeline.decode.buffers.BatchBuffers` when ``None``. decord batches are its own arrays.

    Yields:
        ``FrameBatch`` with ``frames`` ``(B, H, W, 3) uint8`` RGB upright (``H, W`` as in
        :func:`~fer_pipeline.decode.probe`), ``frame_index`` ``(B,) int64`` increasing, ``timestamp_s`` ``(B,)
        float64`` seconds, strictly increasing across the whole iteration; ``1 <= B <= batch_size``.

    Raises:
        VideoError: the file cannot be opened or decoded, including decode errors mid-stream.
        ValueError: bad settings (an unvalidated ``cfg``: ``sample_fps``, ``batch_size``, ``backend``, ``threads`` or
            ``skip_loop_filter``).
    """
    if cfg is None:
        # imported here, not at the top: pydantic costs the decode process's child 0.12 s of start-up, and it has
        # no config object (it calls decode_batches)
        from fer_pipeline.config import DecodeConfig

        cfg = DecodeConfig()
    yield from decode_batches(path, buffers=buffers, **decoder_settings(cfg))


def _check_settings(sample_fps: float | None, batch_size: int, backend: str, threads: int,
                    skip_loop_filter: str) -> float:
    """Validate the settings of :func:`decode_batches`; returns ``sample_fps`` as a float (0.0 = every frame)."""
    check_backend(backend)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    fps = check_sample_fps(sample_fps)
    if skip_loop_filter not in LOOP_FILTER:
        raise ValueError(f"skip_loop_filter must be one of {sorted(LOOP_FILTER)}, got {skip_loop_filter!r}")
    if int(threads) < 0:
        raise ValueError(f"threads must be >= 0, got {threads!r}")
    return fps


def decode_batches(path: str | Path, *, sample_fps: float | None, batch_size: int, backend: str, skip_nonref: bool,
                   threads: int, skip_loop_filter: str, snap_to_anchors: bool,
                   buffers: Stacker | None = None) -> Iterator[FrameBatch]:
    """:func:`iter_batches` with the decode settings as keyword values (no defaults: they live in
    :class:`~fer_pipeline.config.DecodeConfig`).

    Args:
        path: a video file.
        sample_fps: sampling rate in Hz; ``None`` or ``<= 0`` keeps every frame.
        batch_size: most frames per batch (>= 1).
        backend: ``"decord"`` (falls back to PyAV with a warning when decord cannot open the file, and for rotated
            files) or ``"pyav"``.
        skip_nonref: PyAV: skip decoding non-reference frames that the sampler cannot keep (see "Skipping" in
            :mod:`fer_pipeline.decode`); ``False`` decodes every frame. Ignored by decord and when ``sample_fps``
            keeps every frame.
        threads: PyAV: ``0`` one chunk decoder per core (at most 4), ``N > 1`` N chunk decoders, side by side on
            chunks of GOPs; files that cannot be split fall back to FFmpeg's frame threads; ``1`` decodes
            sequentially on the calling thread (see "Threads and deblocking").
        skip_loop_filter: PyAV: frames decoded without the in-loop deblocking filter: ``"default"`` none (exact
            decode), ``"nonref"`` only non-reference frames (no other frame depends on them, so only those samples
            change), ``"all"`` every frame (errors then accumulate until the next keyframe).
        snap_to_anchors: PyAV, chunked decoding only: a sample that the rule puts on a reordered frame (a B-frame)
            takes the nearest anchor frame (I/P) within half a sampling interval instead, so that B-frames need not
            be decoded (see "Anchor frames"). Timestamps and indices stay those of the frames delivered; samples move
            by at most half a sampling interval (two frames at 30 fps and 5 Hz on x264's usual three B-frames).
        buffers: as for :func:`iter_batches`.

    Yields, Raises: as :func:`iter_batches`.
    """
    fps = _check_settings(sample_fps, batch_size, backend, threads, skip_loop_filter)
    meta, declared_s = probe_pyav(check_path(path))
    if backend == "decord" and meta.rotation != 0:
        # decord 0.6 half-applies display matrices: 180 is flipped for us, +-90 come out as 4-channel buffers of the
        # wrong size and both turn the same way. Rotated files therefore always go through PyAV.
        logger.warning("%s is rotated by %d degrees, which decord mishandles; decoding it with PyAV instead",
                       meta.path, meta.rotation)
        backend = "pyav"
    if backend == "decord":
        vr = open_decord(meta.path)
        if vr is not None:
            yield from iter_decord(vr, meta, declared_s, sample_fps=fps, batch_size=int(batch_size))
            return
        logger.warning("decord cannot open %s; decoding it with PyAV instead", meta.path)
    loop_filter = LOOP_FILTER[skip_loop_filter]
    if int(threads) != 1:
        workers = int(threads) or default_workers()
        plan = plan_chunks(meta.path, fps, snap=bool(snap_to_anchors)) if workers > 1 else None
        if plan is not None:
            check_complete(meta, plan.last_ts, declared_s)
            logger.debug("decoding %s in %d chunks on %d threads", meta.path, len(plan.chunks), workers)
            yield from iter_chunk_batches(meta, plan, batch_size=int(batch_size), workers=workers,
                                          skip_nonref=bool(skip_nonref), loop_filter=loop_filter, buffers=buffers)
            return
    yield from iter_pyav(meta, declared_s, sample_fps=fps, batch_size=int(batch_size), skip_nonref=bool(skip_nonref),
                         threads=int(threads), loop_filter=loop_filter, buffers=buffers)
