"""The plan of a chunked decode: which packets form independently decodable chunks, and which frames each chunk
delivers.

An H.264/HEVC stream with closed GOPs is a sequence of independently decodable pieces: every keyframe (IDR) starts a
group that references nothing before it. :func:`plan_chunks` demuxes the video stream once without decoding (about
0.04 s per minute of 720p video here), computes from the packets' pts exactly which frames the sampling rule keeps
(the same rule, the same frames, indices and timestamps as a sequential decode), and cuts the packet sequence at
keyframes into chunks of at least ``min_chunk_s`` seconds; :mod:`fer_pipeline.decode.chunks` decodes them.

The plan is ``None`` (the caller then decodes sequentially) whenever the stream does not fit the model: open GOPs (a
frame after a keyframe in decode order shown before it), packets without pts or marked discard, fewer than two
chunks, or a demux error (the sequential path then reports it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

from fer_pipeline.decode.container import stream_start_s, video_stream
from fer_pipeline.decode.sampling import Sampler, snap_to_anchors

logger = logging.getLogger(__name__)

__all__ = ["Chunk", "ChunkPlan", "plan_chunks"]


@dataclass
class Chunk:
    """Packets ``first..last`` (positions in decode order among counted packets) and the frames kept among them.

    Attributes:
        first, last: decode-order positions of the chunk's first packet (a keyframe, except for chunk 0) and last.
        kept: ``pts -> (frame_index, timestamp_s)`` of the frames the sampling rule keeps in this chunk.
        snapped: the same for the samples moved to anchor frames (plans made with ``snap``), else ``None``.
    """

    first: int
    last: int
    kept: dict[int, tuple[int, float]] = field(default_factory=dict)
    snapped: dict[int, tuple[int, float]] | None = None


@dataclass
class ChunkPlan:
    """Result of :func:`plan_chunks`.

    Attributes:
        chunks: in decode (= presentation) order.
        last_ts: timestamp in seconds of the stream's last frame (for the truncation check).
        reordered: with ``snap=True`` and a stream that has reordered frames: the pts of every reordered frame (no
            snapped sample is one), which the decoders skip if the check on the first chunk allows it (then they
            deliver the ``snapped`` samples, else the exact ones); otherwise ``None``.
    """

    chunks: list[Chunk]
    last_ts: float
    reordered: frozenset[int] | None = None


def plan_chunks(path: Path, sample_fps: float, *, min_chunk_s: float = 1.0, snap: bool) -> ChunkPlan | None:
    """Demux ``path``'s video stream (no decoding) and plan the chunks; ``None`` when it cannot be split.

    Args:
        path: the video file (already validated by :func:`fer_pipeline.decode.probe`).
        sample_fps: sampling rate in Hz (``<= 0`` keeps every frame).
        min_chunk_s: a chunk spans at least this many seconds (consecutive GOPs are merged), except the last.
        snap: also plan the samples moved to anchor frames (``Chunk.snapped``, see
            :func:`~fer_pipeline.decode.sampling.snap_to_anchors`) when the stream has reordered frames and every
            sampling tick has an anchor within half a sampling interval.

    Returns:
        the plan, or ``None`` for open GOPs, packets without pts or marked discard, a demux error, or fewer than two
        chunks.
    """
    pts_list: list[int] = []
    keyframes: list[int] = []
    try:
        with av.open(str(path)) as container:
            stream = video_stream(container, path)
            tb = float(stream.time_base)
            start_s = stream_start_s(stream)
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                if packet.pts is None or packet.is_discard:
                    return None
                if packet.is_keyframe:
                    keyframes.append(len(pts_list))
                pts_list.append(int(packet.pts))
    except av.error.FFmpegError as e:
        logger.debug("chunk plan: demux error in %s (%s); decoding sequentially", path, e)
        return None
    n = len(pts_list)
    if n < 2 or not keyframes:
        return None
    pts = np.asarray(pts_list, dtype=np.int64)
    # Closed GOPs: every packet after keyframe k (in decode order) is shown after it, and every packet before it is
    # shown before it. Then each group's pts range follows the previous one's and chunks are independent.
    bounds = keyframes + [n]
    shown_before = np.maximum.accumulate(pts)  # shown_before[i]: latest pts among packets 0..i
    for a, b in zip(bounds[:-1], bounds[1:]):
        if a > 0 and (pts[a:b].min() < pts[a] or shown_before[a - 1] >= pts[a]):
            logger.debug("chunk plan: open GOP at packet %d of %s; decoding sequentially", a, path)
            return None
    order = np.sort(pts)
    stamps = order * tb - start_s
    ticks: list[float] = []
    sampler = Sampler(sample_fps)
    keep = np.zeros(n, dtype=bool)
    for i, t in enumerate(stamps.tolist()):
        tick = sampler.next_tick / sample_fps if sample_fps > 0 else t
        if sampler.keep(t):
            keep[i] = True
            ticks.append(tick)
    # reordered: shown before a packet that precedes it in decode order (B-frames of H.264/HEVC)
    late = np.zeros(n, dtype=bool)
    late[1:] = pts[1:] < shown_before[:-1]
    snapped, reordered = None, None
    if snap and sample_fps > 0 and late.any():
        anchor = ~np.isin(order, pts[late], assume_unique=True)
        snapped = snap_to_anchors(stamps, anchor, np.flatnonzero(keep), np.asarray(ticks), sample_fps)
        if snapped is not None:
            reordered = frozenset(pts[late].tolist())
        else:
            logger.debug("chunk plan: a sampling tick of %s has no anchor frame near it; exact sampling", path)
    # GOPs merged into chunks of at least min_chunk_s seconds (measured keyframe to keyframe)
    starts = [0]
    for k in keyframes:
        if k > 0 and (pts[k] - pts[starts[-1]]) * tb >= min_chunk_s:
            starts.append(k)
    if len(starts) < 2:
        return None
    exact = _kept_per_chunk(pts, order, stamps, np.flatnonzero(keep), starts)
    moved = _kept_per_chunk(pts, order, stamps, snapped, starts) if snapped is not None else [None] * len(starts)
    chunks = [Chunk(a, b - 1, k, m) for a, b, k, m in zip(starts, starts[1:] + [n], exact, moved)]
    return ChunkPlan(chunks, float(stamps[-1]), reordered)


def _kept_per_chunk(pts: np.ndarray, order: np.ndarray, stamps: np.ndarray, kept: np.ndarray,
                    starts: list[int]) -> list[dict[int, tuple[int, float]]]:
    """``pts -> (frame_index, timestamp_s)`` of the kept presentation positions ``kept``, split by chunk (chunks
    start at decode positions ``starts``; closed GOPs: a chunk's frames are the kept pts within its own pts range)."""
    kept_order, kept_stamps = order[kept], stamps[kept]
    # frame_index = number of packets with a lower pts (the frame's rank in presentation order)
    kept_ranks = np.searchsorted(order, kept_order, side="left")
    out = []
    for a, b in zip(starts, starts[1:] + [len(pts)]):
        i = np.searchsorted(kept_order, pts[a:b].min(), side="left")
        j = np.searchsorted(kept_order, pts[a:b].max(), side="right")
        out.append({int(p): (int(r), float(t)) for p, r, t in zip(kept_order[i:j], kept_ranks[i:j], kept_stamps[i:j])})
    return out
