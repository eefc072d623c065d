"""PyAV decoding split over several threads by GOP: one single-threaded decoder per core, each on its own chunks of
a :class:`~fer_pipeline.decode.chunk_plan.ChunkPlan` (see "Threads and deblocking" and "Anchor frames" in
:mod:`fer_pipeline.decode`).

:func:`iter_chunk_batches` runs ``workers`` threads, each with its own container and a single-threaded decoder;
worker ``w`` decodes chunks ``w, w + workers, ...`` (it demuxes every packet, decodes only its chunks' packets, skips
the non-reference frames that are not kept, and drains the decoder at the end of each chunk), converts the kept
frames to RGB, and the calling thread reassembles them in order into batches.

Why: FFmpeg's own frame threads (``thread_type="AUTO"``) must wait for reference rows of the previous frame, and
used both cores only partly while the pipeline's inference ran beside them; single-threaded decoders on independent
chunks need no synchronisation and about 13% less CPU per frame (``benchmarks/README.md``, "Decoding in parallel
chunks").

Memory stays bounded: each worker's output queue holds at most ``queue_frames`` RGB frames, so a worker that runs
ahead waits (a GOP longer than the queue then limits the overlap, not the memory).
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import threading
from collections.abc import Iterator
from typing import Any

import av
import numpy as np

from fer_pipeline.decode.buffers import BatchBuffers, Stacker, make_batch
from fer_pipeline.decode.chunk_plan import ChunkPlan
from fer_pipeline.decode.container import video_stream
from fer_pipeline.decode.errors import VideoError
from fer_pipeline.decode.pyav import configure_decoder
from fer_pipeline.errors import one_line
from fer_pipeline.types import FrameBatch, VideoMeta

logger = logging.getLogger(__name__)

__all__ = ["CHECK_ANCHORS", "default_workers", "iter_chunk_batches"]

#: Anchor frames of chunk 0 decoded both ways by the check (fewer when chunk 0 has fewer).
CHECK_ANCHORS = 16

_END = object()


def default_workers() -> int:
    """Decoder threads for ``threads=0``: one per core, at most 4."""
    return max(1, min(4, os.cpu_count() or 1))


def iter_chunk_batches(meta: VideoMeta, plan: ChunkPlan, *, batch_size: int, workers: int, skip_nonref: bool,
                       loop_filter: str, queue_frames: int = 4,
                       buffers: Stacker | None = None) -> Iterator[FrameBatch]:
    """Decode the plan's kept frames with ``workers`` threads and yield them in order as batches.

    Args:
        meta: the probed metadata (path, rotation).
        plan: from :func:`~fer_pipeline.decode.chunk_plan.plan_chunks`.
        batch_size: frames per batch (the last may be shorter).
        workers: decoder threads (>= 1), each single-threaded.
        skip_nonref: skip decoding non-reference frames that are not kept.
        loop_filter: FFmpeg ``skip_loop_filter`` value (``"default"`` = deblock every frame).
        queue_frames: most decoded frames a worker holds ahead of the consumer (4: with B-frames skipped the
            decoders outrun the pipeline's inference, so deeper queues only hold memory; 10-minute 720p input: 658 MB
            peak RSS with 4 frames and one prefetched batch against 744 MB with 12 and two, at the same speed,
            ``benchmarks/README.md``).
        buffers: where batches are stacked (:class:`~fer_pipeline.decode.buffers.BatchBuffers` or anything with its
            ``stack``); a new ``BatchBuffers`` when ``None``.

    Yields:
        ``FrameBatch`` as :func:`fer_pipeline.decode.iter_batches` (rotation applied).

    Raises:
        VideoError: a decode error (corrupt data), with the path and the packet position.
    """
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
                    yield make_batch(frames, idx, stamps, meta.rotation, buffers)
                    frames, idx, stamps = [], [], []
            missing += len(chunk.snapped if check is not None and check.skip else chunk.kept) - got
        if frames:
            yield make_batch(frames, idx, stamps, meta.rotation, buffers)
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
    chunk = plan.chunks[0]
    out: dict[int, bytes] = {}
    wanted: set[int] = set()
    with av.open(str(meta.path)) as container:
        stream = video_stream(container, meta.path)
        configure_decoder(stream, 1, loop_filter)
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
            stream = video_stream(container, p)
            configure_decoder(stream, 1, loop_filter)
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
        _put(out, VideoError(f"cannot decode (corrupt or truncated): {p}: {one_line(e)} (near packet {pos})", p),
             stop)
    except BaseException as e:  # handed to the consumer, which re-raises it
        _put(out, e, stop)


def _emit(frame: Any, kept: dict[int, tuple[int, float]], out: queue.Queue, stop: threading.Event) -> bool:
    """Put a kept frame (RGB) into ``out``; ignore the others. False when stopped."""
    hit = kept.get(frame.pts)
    if hit is None:
        return True
    return _put(out, (hit[0], hit[1], frame.to_ndarray(format="rgb24")), stop)
