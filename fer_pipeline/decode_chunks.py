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

import hashlib
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


def plan_chunks(path: Path, sample_fps: float, min_chunk_s: float = 1.0, snap: bool = False) -> ChunkPlan | None:
    """Demux ``path``'s video stream (no decoding) and plan the chunks; ``None`` when it cannot be split.

    Args:
        path: the video file (already validated by :func:`fer_pipeline.decode.probe`).
        sample_fps: sampling rate in Hz (``<= 0`` keeps every frame).
        min_chunk_s: a chunk spans at least this many seconds (consecutive GOPs are merged), except the last.
        snap: also plan the samples moved to anchor frames (``Chunk.snapped``, see :func:`snap_to_anchors`) when the
            stream has reordered frames and every sampling tick has an anchor within half a sampling interval.

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
    ticks: list[float] = []
    sampler = _Sampler(sample_fps)
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


def snap_to_anchors(stamps: np.ndarray, anchor: np.ndarray, kept: np.ndarray, ticks: np.ndarray,
                    sample_fps: float) -> np.ndarray | None:
    """Move each sample that falls on a reordered frame to the nearest anchor frame.

    An *anchor* is a frame that no frame before it in decode order is shown after (an I- or P-frame of a stream with
    B-frames): decoding anchors never needs a reordered frame on the usual encoder settings, so a decoder that only
    has to deliver anchors can skip every B-frame (about a third less decode CPU on the x264 720p30 benchmark file
    than skipping only non-reference B-frames, ``benchmarks/README.md``).

    Args:
        stamps: ``(N,) float64`` timestamps in seconds of all frames, presentation order, increasing.
        anchor: ``(N,) bool``, whether each frame is an anchor.
        kept: ``(K,) int`` positions the exact sampling rule keeps, increasing.
        ticks: ``(K,) float64`` the sampling tick (seconds) each kept frame answers.
        sample_fps: sampling rate in Hz (> 0).

    Returns:
        ``(K,) int64`` positions, increasing: the exact rule's frame where it is an anchor, else the anchor nearest
        its tick within half a sampling interval (``[tick - 0.5 / sample_fps, tick + 0.5 / sample_fps)``) and after
        the previous sample; ``None`` when some tick has no such anchor (the caller keeps the exact frames).
    """
    half = 0.5 / sample_fps
    pos = np.flatnonzero(anchor)
    ats = stamps[pos]
    out = np.empty(len(kept), dtype=np.int64)
    last = -np.inf
    for k, (i, tick) in enumerate(zip(kept.tolist(), ticks.tolist())):
        if not anchor[i]:
            j = int(np.searchsorted(ats, tick))
            best = None
            for c in (j - 1, j):
                if (0 <= c < len(ats) and ats[c] > last and tick - half <= ats[c] < tick + half
                        and (best is None or abs(ats[c] - tick) < abs(ats[best] - tick))):
                    best = c
            if best is None:
                return None
            i = int(pos[best])
        out[k] = i
        last = stamps[i]
    return out


_END = object()


def iter_chunk_batches(meta: VideoMeta, plan: ChunkPlan, batch_size: int, workers: int, skip_nonref: bool = True,
                       loop_filter: str = "default", queue_frames: int = 4,
                       buffers: Any = None) -> Iterator[FrameBatch]:
    """Decode the plan's kept frames with ``workers`` threads and yield them in order as batches.

    Args:
        meta: the probed metadata (path, rotation).
        plan: from :func:`plan_chunks`.
        batch_size: frames per batch (the last may be shorter).
        workers: decoder threads (>= 1), each single-threaded.
        skip_nonref: skip decoding non-reference frames that are not kept.
        loop_filter: FFmpeg ``skip_loop_filter`` value (``"default"`` = deblock every frame).
        queue_frames: most decoded frames a worker holds ahead of the consumer (4: with B-frames skipped the
            decoders outrun the pipeline's inference, so deeper queues only hold memory; 10-minute 720p input: 658 MB
            peak RSS with 4 frames and one prefetched batch against 744 MB with 12 and two, at the same speed,
            ``benchmarks/README.md``).
        buffers: where batches are stacked (:class:`fer_pipeline.decode.BatchBuffers` or anything with its
            ``stack``); a new ``BatchBuffers`` when ``None``.

    Yields:
        ``FrameBatch`` as :func:`fer_pipeline.decode.iter_batches` (rotation applied).

    Raises:
        VideoError: a decode error (corrupt data), with the path and the packet position.
    """
    from fer_pipeline.decode import BatchBuffers, _make_batch

    workers = max(1, min(int(workers), len(plan.chunks)))
    stop = threading.Event()
    queues = [queue.Queue(maxsize=max(1, queue_frames)) for _ in range(workers)]
    check = _AnchorCheck(plan, stop) if plan.reordered is not None and workers >= 2 else None
    threads = [threading.Thread(target=_worker, name=f"decode-{w}", daemon=True,
                                args=(meta, plan, w, workers, skip_nonref, loop_filter, queues[w], stop, check))
               for w in range(workers)]
    for th in threads:
        th.start()
    frames: list[np.ndarray] = []
    idx: list[int] = []
    stamps: list[float] = []
    buffers = buffers if buffers is not None else BatchBuffers()
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
                    yield _make_batch(frames, idx, stamps, meta.rotation, buffers)
                    frames, idx, stamps = [], [], []
            missing += len(chunk.snapped if check is not None and check.skip else chunk.kept) - got
        if frames:
            yield _make_batch(frames, idx, stamps, meta.rotation, buffers)
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


# Anchor frames of chunk 0 decoded both ways by the check (fewer when chunk 0 has fewer).
CHECK_ANCHORS = 16


class _AnchorCheck:
    """Whether the decoders may skip reordered frames, decided before any frame is delivered.

    Worker 0 decodes the first ``CHECK_ANCHORS`` anchor frames of chunk 0 exactly and worker 1 decodes them with the
    reordered frames skipped, side by side, each on its own container; both report a digest per anchor. Skipping
    (and the snapped samples) are used only when every anchor came out bit-identical; otherwise the file is decoded
    exactly and delivers the exact rule's samples, as without ``snap``. An encoder that predicts I/P-frames from
    B-frames fails the check: the Pexels x264 clip in ``shared/data`` does (B-pyramid with several references);
    x264's veryfast preset (one reference, OBS's default) and the iPhone HEVC clips pass.
    """

    def __init__(self, plan: ChunkPlan, stop: threading.Event) -> None:
        self.reordered = plan.reordered or frozenset()
        self.stop = stop
        self.lock = threading.Lock()
        self.digests: dict[str, dict[int, bytes] | None] = {}
        self.decided = threading.Event()
        self.skip = False
        self.n_compared = 0

    def report(self, mode: str, digests: dict[int, bytes] | None) -> None:
        """Digests of worker 0 (``mode="exact"``) or 1 (``"skip"``), ``None`` when its pass failed; the second
        report decides."""
        with self.lock:
            self.digests[mode] = digests
            if len(self.digests) < 2:
                return
            exact, skipped = self.digests["exact"], self.digests["skip"]
            self.n_compared = len(exact or {})
            self.skip = bool(exact) and skipped == exact
            if not self.skip and exact and skipped is not None:
                logger.info("decoding reordered frames too: skipping them changed %d of %d anchor frames of the "
                            "first chunk", sum(skipped.get(k) != v for k, v in exact.items()), len(exact))
        self.decided.set()

    def wait(self) -> bool:
        """Wait for the verdict; False when the iteration is stopped first."""
        while not self.decided.wait(0.1):
            if self.stop.is_set():
                return False
        return True


def _digest(frame: Any) -> bytes:
    """Digest of a decoded frame's luma (8-bit gray), to compare two decodes of the same frame."""
    return hashlib.blake2b(frame.to_ndarray(format="gray").tobytes(), digest_size=16).digest()


def _check_pass(meta: VideoMeta, plan: ChunkPlan, check: _AnchorCheck, skip: bool,
                loop_filter: str) -> dict[int, bytes] | None:
    """Decode chunk 0 up to its ``CHECK_ANCHORS``-th anchor packet, exactly or with the reordered frames skipped
    (``skip_frame="BIDIR"`` on their packets); digests of those anchors by pts, ``None`` when stopped."""
    from fer_pipeline.decode import _configure_decoder, _video_stream

    chunk = plan.chunks[0]
    out: dict[int, bytes] = {}
    wanted: set[int] = set()
    with av.open(str(meta.path)) as container:
        stream = _video_stream(container, meta.path)
        _configure_decoder(stream, 1, loop_filter)
        ctx = stream.codec_context
        mode = None
        for pos, packet in enumerate(pk for pk in container.demux(stream) if pk.size > 0):
            if check.stop.is_set():
                return None
            pts = packet.pts
            is_anchor = pts not in check.reordered
            if is_anchor:
                wanted.add(pts)
            want = "DEFAULT" if is_anchor else "BIDIR" if skip else "NONREF"
            if want != mode:
                ctx.skip_frame = want
                mode = want
            last = pos >= chunk.last or len(wanted) >= CHECK_ANCHORS
            frames = list(ctx.decode(packet))
            if last:
                frames += ctx.decode(None)  # drain: anchors still held for reordering
            for frame in frames:
                if frame.pts in wanted:
                    out[frame.pts] = _digest(frame)
            if last:
                return out
    return out


def _worker(meta: VideoMeta, plan: ChunkPlan, w: int, workers: int, skip_nonref: bool, loop_filter: str,
            out: queue.Queue, stop: threading.Event, check: _AnchorCheck | None) -> None:
    """Decode chunks ``w, w + workers, ...`` of ``plan``; put ``(frame_index, timestamp_s, rgb)`` then ``_END`` per
    chunk into ``out``, or the exception that stopped it. With ``check`` (a plan with snapped samples), workers 0
    and 1 first run the check passes (:class:`_AnchorCheck`), and every worker waits for the verdict: skip the
    reordered frames and deliver ``Chunk.snapped``, or decode exactly and deliver ``Chunk.kept``."""
    from fer_pipeline.decode import (
        VideoError,
        _configure_decoder,
        _one_line,
        _video_stream,
    )

    p = meta.path
    mine = list(range(w, len(plan.chunks), workers))
    pos = -1
    try:
        if check is not None:
            if w < 2:
                digests = None
                try:
                    digests = _check_pass(meta, plan, check, skip=w == 1, loop_filter=loop_filter)
                finally:
                    check.report("skip" if w == 1 else "exact", digests)
            if not check.wait():
                return
        skip_reordered = check is not None and check.skip
        with av.open(str(p)) as container:
            stream = _video_stream(container, p)
            _configure_decoder(stream, 1, loop_filter)
            ctx = stream.codec_context
            n_corrupt = 0
            packets = (pk for pk in container.demux(stream) if pk.size > 0)
            for c in mine:
                chunk = plan.chunks[c]
                kept = chunk.snapped if skip_reordered else chunk.kept
                mode: str | None = None
                for packet in packets:
                    pos += 1
                    if pos < chunk.first:
                        continue
                    pts = packet.pts
                    want = ("DEFAULT" if pts in kept else "BIDIR" if skip_reordered and pts in check.reordered
                            else "NONREF" if skip_nonref else "DEFAULT")
                    if want != mode:
                        ctx.skip_frame = want
                        mode = want
                    for frame in ctx.decode(packet):
                        n_corrupt += frame.is_corrupt
                        if not _emit(frame, kept, out, stop):
                            return
                    if pos == chunk.last:
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

