"""PyAV decoding split over several threads by GOP: one single-threaded decoder per core, each on its own chunks.

An H.264/HEVC stream with closed GOPs is a sequence of independently decodable pieces: every keyframe (IDR) starts a
group that references nothing before it. :func:`plan_chunks` demuxes the video stream once without decoding (about
0.04 s per minute of 720p video here), computes from the packets' pts exactly which frames the sampling rule keeps
(the same rule, the same frames, indices and timestamps as a sequential decode), and cuts the packet sequence at
keyframes into chunks of at least ``min_chunk_s`` seconds. :func:`iter_chunk_batches` then runs ``workers`` threads,
each with its own container and a single-threaded decoder; worker ``w`` decodes chunks ``w, w + workers, ...`` (it
demuxes every packet, decodes only its chunks' packets, skips the non-reference frames that are not kept, and
drains the decoder at the end of each chunk), converts the kept frames to RGB, and the calling thread reassembles
them in order into batches.

Why: FFmpeg's own frame threads (``thread_type="AUTO"``) must wait for reference rows of the previous frame, and
used both cores only partly while the pipeline's inference ran beside them; single-threaded decoders on independent
chunks need no synchronisation and about 13% less CPU per frame (``benchmarks/README.md``, "Decoding in parallel
chunks").

Memory stays bounded: each worker's output queue holds at most ``queue_frames`` RGB frames, so a worker that runs
ahead waits (a GOP longer than the queue then limits the overlap, not the memory).

The plan returns ``None`` (the caller then decodes sequentially) whenever the stream does not fit the model: open
GOPs (a frame after a keyframe in decode order shown before it), packets without pts or marked discard, fewer than
two chunks, or a demux error (the sequential path then reports it).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np

from fer_pipeline.types import FrameBatch, VideoMeta

logger = logging.getLogger(__name__)

__all__ = ["Chunk", "ChunkPlan", "default_workers", "iter_chunk_batches", "plan_chunks"]


@dataclass
class Chunk:
    """Packets ``first..last`` (positions in decode order among counted packets) and the frames kept among them.

    Attributes:
        first, last: decode-order positions of the chunk's first packet (a keyframe, except for chunk 0) and last.
        kept: ``pts -> (frame_index, timestamp_s)`` of the frames the sampling rule keeps in this chunk.
    """

    first: int
    last: int
    kept: dict[int, tuple[int, float]] = field(default_factory=dict)


@dataclass
class ChunkPlan:
    """Result of :func:`plan_chunks`.

    Attributes:
        chunks: in decode (= presentation) order.
        last_ts: timestamp in seconds of the stream's last frame (for the truncation check).
    """

    chunks: list[Chunk]
    last_ts: float


def plan_chunks(path: Path, sample_fps: float, min_chunk_s: float = 1.0) -> ChunkPlan | None:
    """Demux ``path``'s video stream (no decoding) and plan the chunks; ``None`` when it cannot be split.

    Args:
        path: the video file (already validated by :func:`fer_pipeline.decode.probe`).
        sample_fps: sampling rate in Hz (``<= 0`` keeps every frame).
        min_chunk_s: a chunk spans at least this many seconds (consecutive GOPs are merged), except the last.

    Returns:
        the plan, or ``None`` for open GOPs, packets without pts or marked discard, a demux error, or fewer than two
        chunks.
    """
    from fer_pipeline.decode import _Sampler, _stream_start_s, _video_stream

    pts_list: list[int] = []
    keyframes: list[int] = []
    try:
        with av.open(str(path)) as container:
            stream = _video_stream(container, path)
            tb = float(stream.time_base)
            start_s = _stream_start_s(stream)
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
    sampler = _Sampler(sample_fps)
    keep = np.fromiter((sampler.keep(t) for t in stamps.tolist()), dtype=bool, count=n)
    kept_order, kept_stamps = order[keep], stamps[keep]
    # frame_index = number of packets with a lower pts (the frame's rank in presentation order)
    kept_ranks = np.searchsorted(order, kept_order, side="left")
    # GOPs merged into chunks of at least min_chunk_s seconds (measured keyframe to keyframe)
    starts = [0]
    for k in keyframes:
        if k > 0 and (pts[k] - pts[starts[-1]]) * tb >= min_chunk_s:
            starts.append(k)
    if len(starts) < 2:
        return None
    chunks = []
    for a, b in zip(starts, starts[1:] + [n]):
        # closed GOPs: the chunk's frames are the kept pts within its own pts range (kept_order is sorted)
        i = np.searchsorted(kept_order, pts[a:b].min(), side="left")
        j = np.searchsorted(kept_order, pts[a:b].max(), side="right")
        chunks.append(Chunk(a, b - 1, {int(p): (int(r), float(t)) for p, r, t in
                                       zip(kept_order[i:j], kept_ranks[i:j], kept_stamps[i:j])}))
    return ChunkPlan(chunks, float(stamps[-1]))


_END = object()


def iter_chunk_batches(meta: VideoMeta, plan: ChunkPlan, batch_size: int, workers: int, skip_nonref: bool = True,
                       loop_filter: str = "default", queue_frames: int = 12) -> Iterator[FrameBatch]:
    """Decode the plan's kept frames with ``workers`` threads and yield them in order as batches.

    Args:
        meta: the probed metadata (path, rotation).
        plan: from :func:`plan_chunks`.
        batch_size: frames per batch (the last may be shorter).
        workers: decoder threads (>= 1), each single-threaded.
        skip_nonref: skip decoding non-reference frames that are not kept.
        loop_filter: FFmpeg ``skip_loop_filter`` value (``"default"`` = deblock every frame).
        queue_frames: most decoded frames a worker holds ahead of the consumer.

    Yields:
        ``FrameBatch`` as :func:`fer_pipeline.decode.iter_batches` (rotation applied).

    Raises:
        VideoError: a decode error (corrupt data), with the path and the packet position.
    """
    from fer_pipeline.decode import _make_batch

    workers = max(1, min(int(workers), len(plan.chunks)))
    stop = threading.Event()
    queues = [queue.Queue(maxsize=max(1, queue_frames)) for _ in range(workers)]
    threads = [threading.Thread(target=_worker, name=f"decode-{w}", daemon=True,
                                args=(meta, plan, w, workers, skip_nonref, loop_filter, queues[w], stop))
               for w in range(workers)]
    for th in threads:
        th.start()
    frames: list[np.ndarray] = []
    idx: list[int] = []
    stamps: list[float] = []
    missing = 0
    try:
        for c, chunk in enumerate(plan.chunks):
            q = queues[c % workers]
            got = 0
            while True:
                item = q.get()
                if isinstance(item, BaseException):
                    raise item
                if item is _END:
                    break
                index, ts, rgb = item
                frames.append(rgb)
                idx.append(index)
                stamps.append(ts)
                got += 1
                if len(frames) == batch_size:
                    yield _make_batch(frames, idx, stamps, meta.rotation)
                    frames, idx, stamps = [], [], []
            missing += len(chunk.kept) - got
        if frames:
            yield _make_batch(frames, idx, stamps, meta.rotation)
    finally:
        stop.set()
        for q in queues:  # unblock workers waiting on a full queue
            try:
                while True:
                    q.get_nowait()
            except queue.Empty:
                pass
        for th in threads:
            th.join(timeout=5)
    if missing:
        logger.warning("%d sampled frame(s) of %s could not be decoded", missing, meta.path)


def _put(q: queue.Queue, item: Any, stop: threading.Event) -> bool:
    """Put ``item`` unless ``stop`` is set first; whether it was put."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _worker(meta: VideoMeta, plan: ChunkPlan, w: int, workers: int, skip_nonref: bool, loop_filter: str,
            out: queue.Queue, stop: threading.Event) -> None:
    """Decode chunks ``w, w + workers, ...`` of ``plan``; put ``(frame_index, timestamp_s, rgb)`` then ``_END`` per
    chunk into ``out``, or the exception that stopped it."""
    from fer_pipeline.decode import VideoError, _configure_decoder, _one_line, _video_stream

    p = meta.path
    mine = list(range(w, len(plan.chunks), workers))
    pos = -1
    try:
        with av.open(str(p)) as container:
            stream = _video_stream(container, p)
            _configure_decoder(stream, 1, loop_filter)
            ctx = stream.codec_context
            n_corrupt = 0
            packets = (pk for pk in container.demux(stream) if pk.size > 0)
            for c in mine:
                chunk = plan.chunks[c]
                kept = chunk.kept
                skipping: bool | None = None
                for packet in packets:
                    pos += 1
                    if pos < chunk.first:
                        continue
                    want = skip_nonref and packet.pts not in kept
                    if want is not skipping:
                        ctx.skip_frame = "NONREF" if want else "DEFAULT"
                        skipping = want
                    last = pos == chunk.last
                    for frame in ctx.decode(packet):
                        n_corrupt += frame.is_corrupt
                        if not _emit(frame, kept, out, stop):
                            return
                    if last:
                        break
                for frame in ctx.decode(None):  # drain the frames the decoder still holds (reordering delay)
                    n_corrupt += frame.is_corrupt
                    if not _emit(frame, kept, out, stop):
                        return
                ctx.flush_buffers()
                if not _put(out, _END, stop):
                    return
            if n_corrupt:
                logger.warning("%d frame(s) of %s were flagged corrupt by the decoder", n_corrupt, p)
    except av.error.FFmpegError as e:
        _put(out, VideoError(f"cannot decode (corrupt or truncated): {p}: {_one_line(e)} (near packet {pos})", p),
             stop)
    except BaseException as e:  # handed to the consumer, which re-raises it
        _put(out, e, stop)


def _emit(frame: Any, kept: dict[int, tuple[int, float]], out: queue.Queue, stop: threading.Event) -> bool:
    """Put a kept frame (RGB) into ``out``; ignore the others. False when stopped."""
    hit = kept.get(frame.pts)
    if hit is None:
        return True
    return _put(out, (hit[0], hit[1], frame.to_ndarray(format="rgb24")), stop)


def default_workers() -> int:
    """Decoder threads for ``threads=0``: one per core, at most 4."""
    return max(1, min(4, os.cpu_count() or 1))

