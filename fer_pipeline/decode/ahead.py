"""Decoding ahead of the consumer, so that decoding overlaps detection and classification on a 2-core CPU: in the
decode process (:mod:`fer_pipeline.decode.process`: its own interpreter, so its decoder threads never wait for the
consumer's GIL) or, with ``decode.process: false`` or where no child can be started, in a thread one batch ahead.
Both have a watchdog (``stall_timeout_s``) and honour stop requests (:mod:`fer_pipeline.interrupt`)."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from fer_pipeline import interrupt
from fer_pipeline.decode.errors import VideoError
from fer_pipeline.decode.iterate import iter_batches
from fer_pipeline.decode.process import Prestarted, StartError, available, iter_batches_in_process
from fer_pipeline.errors import one_line
from fer_pipeline.types import FrameBatch, VideoMeta

if TYPE_CHECKING:
    from fer_pipeline.config import DecodeConfig

logger = logging.getLogger(__name__)

__all__ = ["decode_ahead", "prefetch"]


def prefetch(it: Iterator[FrameBatch], depth: int = 1, stall_timeout_s: float = 60.0, path: str | Path = "",
             stats: dict | None = None) -> Iterator[FrameBatch]:
    """Run ``it`` in a thread, ``depth`` batches ahead; re-raise its exception in the caller. ``stats`` (when given)
    gets ``decode_s``, the thread's time producing batches, summed.

    Raises:
        VideoError: ``it`` produced nothing for ``stall_timeout_s`` seconds while the caller waited ("decoder
            stalled"; the thread, which cannot be killed, is told to stop and left behind as a daemon).
        Interrupted: a stop was requested while waiting.
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def worker() -> None:
        try:
            t = time.perf_counter()
            for batch in it:
                if stats is not None:
                    stats["decode_s"] = stats.get("decode_s", 0.0) + time.perf_counter() - t
                while not stop.is_set():
                    try:
                        q.put(batch, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
                t = time.perf_counter()
            q.put(done)
        except BaseException as e:  # handed to the consumer, which re-raises it
            q.put(e)

    th = threading.Thread(target=worker, name="decode", daemon=True)
    th.start()
    last_ts = 0.0
    try:
        while True:
            deadline = time.monotonic() + stall_timeout_s
            while True:
                try:
                    item = q.get(timeout=min(0.25, max(0.0, deadline - time.monotonic())))
                    break
                except queue.Empty:
                    interrupt.check()
                    if time.monotonic() >= deadline:
                        raise VideoError.stalled(stall_timeout_s, last_ts, path) from None
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            if len(item.timestamp_s):
                last_ts = float(item.timestamp_s[-1])
            yield item
    finally:
        stop.set()
        th.join(timeout=5)


def decode_ahead(path: str | Path, cfg: DecodeConfig, meta: VideoMeta | None = None, stats: dict | None = None,
                 prestarted: Prestarted | None = None) -> Iterator[FrameBatch]:
    """A video's batches decoded ahead of the caller: by a child process (``cfg.process``, where :func:`available`;
    ``prestarted``'s when it was started for this video and these settings), else by a thread of this process
    (:func:`prefetch`, one batch ahead: decoders and onnxruntime release the GIL). A child that cannot be started
    falls back to the thread, with a warning. ``stats`` gets ``decode_s`` and, from a child, ``decoder_peak_rss_mb``.

    Raises:
        VideoError: as :func:`iter_batches`, or the decoder stalled for ``cfg.stall_timeout_s``.
        Interrupted: a stop was requested while waiting for a batch.
    """
    if cfg.process and available():
        it = iter_batches_in_process(path, cfg, meta=meta, stats=stats, prestarted=prestarted)
        try:
            first = next(it)
        except StopIteration:
            return
        except StartError as e:  # fd limits, no fork...: decode in this process instead
            logger.warning("decoding %s in this process: cannot start a decode process (%s)", path, one_line(e))
        else:
            yield first
            del first
            yield from it
            return
    yield from prefetch(iter_batches(path, cfg), stall_timeout_s=cfg.stall_timeout_s, path=path, stats=stats)
