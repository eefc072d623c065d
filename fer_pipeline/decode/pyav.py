"""Sequential PyAV decoding (``threads=1``, and files the chunk planner cannot split): frames decoded in order,
only the kept ones converted to RGB, non-reference frames the sampler cannot keep skipped (see "Skipping" in
:mod:`fer_pipeline.decode`); and the decoder set-up (threads, deblocking) that the chunk decoders share."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import av
import numpy as np

from fer_pipeline.decode.buffers import BatchBuffers, Stacker, make_batch
from fer_pipeline.decode.container import open_container, stream_start_s, video_stream
from fer_pipeline.decode.errors import VideoError, check_complete
from fer_pipeline.decode.sampling import PtsIndex, Sampler, in_sample_window
from fer_pipeline.errors import one_line
from fer_pipeline.types import FrameBatch, VideoMeta

logger = logging.getLogger(__name__)

__all__ = ["LOOP_FILTER", "configure_decoder", "iter_pyav"]

#: ``skip_loop_filter`` values (``decode.skip_loop_filter``) -> FFmpeg's AVDiscard option names.
LOOP_FILTER = {"default": "default", "nonref": "noref", "all": "all"}


def configure_decoder(stream: Any, threads: int, loop_filter: str) -> None:
    """Set a PyAV video stream's decoder up before its first packet: ``threads`` 1 = decode on the calling thread
    only, otherwise FFmpeg's frame threads (``0`` = FFmpeg's choice); ``loop_filter`` is an FFmpeg
    ``skip_loop_filter`` value (a value of :data:`LOOP_FILTER`; ``"default"`` leaves deblocking on)."""
    if threads == 1:
        stream.thread_type = "NONE"
        stream.thread_count = 1
    else:
        stream.thread_type = "AUTO"
        stream.thread_count = threads
    if loop_filter != "default":
        stream.codec_context.options = {"skip_loop_filter": loop_filter}


def iter_pyav(meta: VideoMeta, declared_s: float, *, sample_fps: float, batch_size: int, skip_nonref: bool,
              threads: int, loop_filter: str, buffers: Stacker | None = None) -> Iterator[FrameBatch]:
    """Decode the frames in order, convert to RGB only the frames the sampler keeps (stacked by ``buffers``, a new
    :class:`~fer_pipeline.decode.buffers.BatchBuffers` when ``None``).

    With ``skip_nonref`` (and ``0 < sample_fps`` below the stream's frame rate) the decoder is told, packet by
    packet, to skip non-reference frames (``skip_frame="NONREF"``: no other frame is predicted from them, so nothing
    else changes) unless the packet's pts lies within one nominal frame interval after a sampling tick. Those are the
    only frames the sampler can keep on a constant-rate stream, so the kept frames are the same as with every frame
    decoded; on variable frame rate a tick whose first frame comes later than that window gets the next decoded
    frame instead (at most a few frames later). ``frame_index`` is then the frame's rank among all packets' pts
    (:class:`~fer_pipeline.decode.sampling.PtsIndex`), and ``timestamp_s`` stays the decoded frame's own pts.

    Args:
        meta, declared_s: from :func:`fer_pipeline.decode.container.probe_pyav`.
        sample_fps: sampling rate in Hz (0.0: every frame).
        batch_size: frames per batch (the last may be shorter).
        skip_nonref: skip the non-reference frames the sampler cannot keep.
        threads: decoder threads (:func:`configure_decoder`).
        loop_filter: FFmpeg ``skip_loop_filter`` value (a value of :data:`LOOP_FILTER`).
        buffers: where batches are stacked.

    Yields:
        ``FrameBatch`` as :func:`fer_pipeline.decode.iter_batches`.

    Raises:
        VideoError: a decode error mid-stream (with the last frame index reached), or a truncated stream.
    """
    p = meta.path
    sampler = Sampler(sample_fps)
    frames: list[np.ndarray] = []
    idx: list[int] = []
    stamps: list[float] = []
    last_ts: float | None = None
    n_corrupt = 0
    container = open_container(p)
    try:
        stream = video_stream(container, p)
        configure_decoder(stream, threads, loop_filter)
        tb = float(stream.time_base)
        start_s = stream_start_s(stream)
        nominal_dt = 1.0 / meta.fps if meta.fps > 0 else 0.0
        skip = skip_nonref and sample_fps > 0 and 0 < sample_fps < meta.fps
        packets = _skipping_packets(container, stream, sample_fps, nominal_dt, start_s) if skip else None
        pts_index = PtsIndex()
        buffers = buffers if buffers is not None else BatchBuffers()
        index = -1
        try:
            for frame in _decode(container, stream, packets, pts_index):
                index = pts_index.index_of(frame.pts) if skip else index + 1
                if frame.pts is not None:
                    ts = frame.pts * tb - start_s
                else:  # no pts: continue from the previous frame at the nominal rate
                    ts = (last_ts if last_ts is not None else -nominal_dt) + nominal_dt
                    logger.debug("frame %d of %s has no pts; using %.4f s", index, p, ts)
                last_ts = ts
                if frame.is_corrupt:
                    n_corrupt += 1
                if not sampler.keep(ts):
                    continue
                frames.append(frame.to_ndarray(format="rgb24"))
                idx.append(index)
                stamps.append(ts)
                if len(frames) == batch_size:
                    yield make_batch(frames, idx, stamps, meta.rotation, buffers)
                    frames, idx, stamps = [], [], []
        except av.error.FFmpegError as e:
            raise VideoError(f"cannot decode (corrupt or truncated): {p}: {one_line(e)} (after frame {index})",
                             p) from e
    finally:
        container.close()
    if n_corrupt:
        logger.warning("%d frame(s) of %s were flagged corrupt by the decoder", n_corrupt, p)
    check_complete(meta, last_ts, declared_s)
    if frames:
        yield make_batch(frames, idx, stamps, meta.rotation, buffers)


def _skipping_packets(container: Any, stream: Any, sample_fps: float, window_s: float,
                      start_s: float) -> Iterator[tuple[Any, int | None]]:
    """Demux ``stream``, setting the decoder's ``skip_frame`` before each packet (see :func:`iter_pyav`).

    Yields:
        ``(packet, pts)``: ``pts`` is the packet's pts in stream time-base units, or ``None`` for the end-of-stream
        flush packet and for packets without pts or marked discard (those are not counted as frames).
    """
    ctx = stream.codec_context
    tb = float(stream.time_base)
    skipping: bool | None = None
    for packet in container.demux(stream):
        pts = packet.pts
        if packet.size == 0 or pts is None or packet.is_discard:
            want = False  # decode it normally; it counts as no frame of the stream
            pts = None
        else:
            want = not in_sample_window(pts * tb - start_s, sample_fps, window_s)
        if want is not skipping:
            ctx.skip_frame = "NONREF" if want else "DEFAULT"
            skipping = want
        yield packet, pts


def _decode(container: Any, stream: Any, packets: Iterator[tuple[Any, int | None]] | None,
            pts_index: PtsIndex) -> Iterator[Any]:
    """Decoded frames of ``stream``: every frame (``packets`` None) or those the skipping demuxer lets through, with
    every counted packet's pts recorded in ``pts_index``."""
    if packets is None:
        yield from container.decode(stream)
        return
    for packet, pts in packets:
        if pts is not None:
            pts_index.add(pts)
        yield from packet.decode()
