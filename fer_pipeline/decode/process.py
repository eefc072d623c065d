"""Decoding in a process of its own, the parent's side: :func:`iter_batches_in_process` is
:func:`fer_pipeline.decode.iter_batches` run by a child interpreter (:mod:`fer_pipeline.decode.child`), with the
batches handed over through shared memory; :func:`prestart` starts one ahead of time.

Why: decoding is 60-70% of the pipeline's CPU on 720p, and PyAV's decoder threads need the GIL for a moment around
every packet. In one process they wait for it whenever the pipeline's own threads run Python code: above all while
the tracker's first import (``trackers`` -> ``supervision`` -> ``scipy``, ~0.7 CPU s) holds it, during which the
chunk decoders barely ran. A child process has its own interpreter and GIL, so decoding runs on its own core from
the start. 1-minute 720p benchmark input, 10 interleaved runs each (``benchmarks/README.md``, "Issue #4, sixth
round"): median 5.81 s in one process against 5.33 s with a prototype of this. A decoder crash (FFmpeg on a damaged
file) also becomes a :class:`~fer_pipeline.decode.VideoError` for that video instead of killing the worker.

How (POSIX only; :func:`available`): the parent creates one anonymous shared buffer of ``slots`` batch-sized slots
(``memfd_create`` on Linux, an unlinked temporary file elsewhere) and two pipes, and starts
``python -m fer_pipeline.decode.child ARGS`` with those file descriptors (``ARGS``: one JSON object with the path,
the decode settings as plain values, the slots and the descriptors). The child runs
:func:`~fer_pipeline.decode.iterate.decode_batches` (chunked PyAV decoding, its decoder threads included), which
stacks each batch straight into a free slot, then sends the slot number, indices and timestamps. The parent yields a
:class:`~fer_pipeline.types.FrameBatch` whose ``frames`` is a view of that slot; the slot goes back to the child when
the last reference to the array (or any view of it) is gone (``weakref.finalize``), so a batch that the consumer
keeps is never overwritten. A consumer that keeps so many batches that the child would have no slot left gets
copies instead (a pipeline that drops each batch before asking for the next never does). The child fills one slot
per batch (a rotated file's frames are turned as they are stacked), so with the parent holding at most
``slots - 1`` it can always go on. Log records of the child (e.g. "frame(s) ... flagged corrupt") are re-logged in
the parent under the same logger name; exceptions are re-raised in the parent (``VideoError`` with its path).
Stopping the iteration early ends the child; so does the parent's death (a parent-death signal, even after SIGKILL).
A watchdog ends a child that sends nothing for ``stall_timeout_s`` while the parent waits (a ``VideoError``: the
video fails, the run goes on), and a stop request (:mod:`fer_pipeline.interrupt`) ends the wait within a quarter of
a second. The child runs in a session of its own, so a terminal's Ctrl-C reaches only the parent.

Messages from the child, on the data pipe (``multiprocessing.connection`` framing): ``("batch", slot, shape,
frame_index, timestamp_s, busy_s)``, ``("log", levelno, logger name, message)``, ``("done", peak_rss_mb)``,
``("error", pickled exception or None, text)``. To the child, on the control pipe: a freed slot number (4 bytes,
little-endian); closing the pipe stops it.

Memory: the parent no longer holds decoder state or decoded frames; the child holds its decoders, queues and one
pooled batch, plus the shared slots. Both processes' peak RSS count the slots they touched.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import pickle
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fer_pipeline import interrupt
from fer_pipeline.decode.container import probe
from fer_pipeline.decode.errors import VideoError
from fer_pipeline.decode.iterate import decoder_settings
from fer_pipeline.types import FrameBatch, VideoMeta

if TYPE_CHECKING:
    from fer_pipeline.config import DecodeConfig

logger = logging.getLogger(__name__)

__all__ = ["CHILD_MODULE", "DEFAULT_SLOTS", "Prestarted", "StartError", "available", "iter_batches_in_process",
           "prestart"]

#: The module the child runs (``python -m``).
CHILD_MODULE = "fer_pipeline.decode.child"
#: Shared batch slots: one being filled by the child, one the pipeline works on, one ready in between.
DEFAULT_SLOTS = 3
_POLL_S = 0.25  # how often a wait for the child checks for a stop request


class StartError(OSError):
    """The decode process (or its shared memory or pipes) could not be set up; nothing was decoded."""


def available() -> bool:
    """Whether batches can be decoded in a child process here (POSIX: file descriptors can be passed to a child)."""
    return os.name == "posix"


def _shared_fd(size: int) -> int:
    """A file descriptor of ``size`` zeroed bytes of anonymous shared memory (no name left in any file system)."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("fer-pipeline-frames", 0)
    else:  # macOS, BSD: an unlinked temporary file (page cache backed)
        with tempfile.TemporaryFile() as f:
            fd = os.dup(f.fileno())
    try:
        os.ftruncate(fd, size)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _release(ctl: Connection, lock: threading.Lock, held: set, slot: int) -> None:
    """Give ``slot`` back to the child (a ``weakref.finalize`` callback; any thread, also after the child ended)."""
    with lock:
        held.discard(slot)
        try:
            ctl.send_bytes(slot.to_bytes(4, "little"))
        except (OSError, ValueError):  # child gone or pipe closed: nothing to give back to
            pass


def _command(args_json: str) -> list[str]:
    """The child's command line: this interpreter running :data:`CHILD_MODULE` (the package is imported as
    installed, from wherever the parent found it)."""
    return [sys.executable, "-m", CHILD_MODULE, args_json]


class _Child:
    """A started decode process: its pipes and its shared slots."""

    def __init__(self, proc: subprocess.Popen, mm: mmap.mmap, data: Connection, ctl: Connection,
                 slot_bytes: int) -> None:
        self.proc, self.mm, self.data, self.ctl, self.slot_bytes = proc, mm, data, ctl, slot_bytes

    @classmethod
    def start(cls, path: str | Path, settings: dict[str, Any], slots: int, meta: VideoMeta | None) -> _Child:
        """Start the child decoding ``path`` with ``settings`` (:func:`~fer_pipeline.decode.iterate.decoder_settings`)
        into ``slots`` shared slots; ``meta`` is probed when ``None``."""
        batch_size = settings["batch_size"]
        if slots < 2:
            raise ValueError(f"slots must be >= 2, got {slots!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        meta = meta or probe(path)
        slot_bytes = int(batch_size) * meta.height * meta.width * 3
        try:
            shm_fd = _shared_fd(slot_bytes * slots)
        except OSError as e:
            raise StartError(f"no shared memory for the decode process: {e}") from e
        try:
            data_r, data_w = os.pipe()
            ctl_r, ctl_w = os.pipe()
        except OSError as e:
            os.close(shm_fd)
            raise StartError(f"no pipes for the decode process: {e}") from e
        args = {"path": str(path), "settings": settings, "slots": slots, "slot_bytes": slot_bytes, "shm_fd": shm_fd,
                "data_fd": data_w, "ctl_fd": ctl_r,
                "log_level": logging.getLogger("fer_pipeline").getEffectiveLevel(), "parent_pid": os.getpid()}
        try:
            mm = mmap.mmap(shm_fd, slot_bytes * slots)
            # a session of its own: a terminal's Ctrl-C reaches only the parent, which then ends this child (a
            # child killed by the same SIGINT looked like a decoder failure); it dies with the parent
            # (``die_with_parent`` in ``fer_pipeline.decode.child.main``), even a parent killed by SIGKILL
            proc = subprocess.Popen(_command(json.dumps(args)), pass_fds=(shm_fd, data_w, ctl_r),
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        except BaseException as e:
            for fd in (data_r, ctl_w):
                os.close(fd)
            if isinstance(e, OSError):
                raise StartError(f"cannot start the decode process: {e}") from e
            raise
        finally:
            for fd in (shm_fd, data_w, ctl_r):  # the child has its own copies now
                os.close(fd)
        return cls(proc, mm, Connection(data_r, writable=False), Connection(ctl_w, readable=False), slot_bytes)

    def close(self, kill: bool) -> None:
        """Close the pipes and reap the child (killed first with ``kill``); the shared slots stay mapped while a
        batch array views them."""
        try:
            self.ctl.close()
        except OSError:
            pass
        if kill:
            self.proc.kill()
        try:
            self.proc.wait(timeout=5)  # after "done" the child exits at once (os._exit)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.data.close()


def _job(path: str | Path, cfg: DecodeConfig, slots: int) -> tuple:
    """What a decode process is started for: the file (its real path), the decoder settings, the slots."""
    return os.path.realpath(path), decoder_settings(cfg), int(slots)


class Prestarted:
    """A decode process started ahead by :func:`prestart`, owned by the caller until
    :func:`iter_batches_in_process` takes it over (``prestarted=``: only for the same file, the same decoder settings
    and the same ``slots``; any other call leaves it alone) or :meth:`close` ends it. A context manager: leaving the
    ``with`` block closes it. Thread-safe.

    Attributes:
        path: the real path of the file it decodes.
        settings: the decoder settings it decodes with (:func:`~fer_pipeline.decode.iterate.decoder_settings`).
        slots: its shared batch slots.
    """

    def __init__(self, job: tuple, child: _Child) -> None:
        self.path, self.settings, self.slots = job
        self._child: _Child | None = child
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        """The child's process id while this object still holds it (not taken over, not closed), else ``None``."""
        child = self._child
        return child.proc.pid if child is not None else None

    def _take(self, job: tuple) -> _Child | None:
        """The child, handed over (this object then holds nothing) when it was started for ``job`` (:func:`_job`);
        ``None`` (kept) otherwise or when already taken or closed."""
        with self._lock:
            if self._child is None or job != (self.path, self.settings, self.slots):
                return None
            child, self._child = self._child, None
        return child

    def close(self) -> bool:
        """End the child if nothing took it over; whether one was ended. Closing again does nothing."""
        with self._lock:
            child, self._child = self._child, None
        if child is None:
            return False
        child.close(kill=True)
        return True

    def __enter__(self) -> Prestarted:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Prestarted({self.path!r}, pid={self.pid})"


def prestart(path: str | Path, cfg: DecodeConfig, slots: int = DEFAULT_SLOTS) -> Prestarted | None:
    """Start decoding ``path`` now, before the caller is ready for it (e.g. while it imports and loads models): the
    child decodes until its ``slots`` are full, then waits for :func:`iter_batches_in_process` with
    ``prestarted=`` the returned object (and the same ``path``, decoder settings of ``cfg`` and ``slots``) to take it
    over.

    Returns:
        the started process, which the caller owns: close it (:meth:`Prestarted.close`, or a ``with`` block) when
        nothing took it over (e.g. the video was skipped). ``None`` where :func:`available` is not, and on any error
        (a bad file, no process): the analysis then meets that error itself.
    """
    if not available():
        return None
    job = _job(path, cfg, slots)
    try:
        child = _Child.start(path, job[1], job[2], None)
    except Exception as e:  # noqa: BLE001 - the analysis reports the problem when it gets there
        logger.debug("no decode process started ahead for %s: %s", path, e)
        return None
    return Prestarted(job, child)


def iter_batches_in_process(path: str | Path, cfg: DecodeConfig, meta: VideoMeta | None = None,
                            slots: int = DEFAULT_SLOTS, stats: dict | None = None,
                            prestarted: Prestarted | None = None) -> Iterator[FrameBatch]:
    """:func:`fer_pipeline.decode.iter_batches` with the decoding done by a child process (see the module
    docstring).

    Args:
        path: a video file.
        cfg: the decode settings: those of :func:`~fer_pipeline.decode.iter_batches` (the same batches come out:
            frames, indices, timestamps), and ``stall_timeout_s``: watchdog: the child is killed and ``VideoError``
            raised when it sends nothing for this many seconds (> 0) while the caller waits for a batch (a hung
            decoder, a stalled network file system); time the caller spends on a batch does not count.
            ``cfg.process`` is the caller's choice (this function always uses a child).
        meta: ``probe(path)`` when the caller has it (its ``width``/``height`` size the shared slots); probed here
            otherwise.
        slots: shared batch slots (>= 2), each ``batch_size * height * width * 3`` bytes.
        stats: when given, updated with ``decode_s`` (seconds the child spent producing batches, summed) and, at the
            end, ``decoder_peak_rss_mb`` (the child's peak resident memory, MB, shared slots included).
        prestarted: from :func:`prestart`: its child is taken over when it was started for this ``path``, these
            decoder settings and ``slots``; otherwise it is left alone (its owner closes it) and a child is started.

    Yields:
        ``FrameBatch`` as ``iter_batches``; ``frames`` is a read-write view of a shared slot, reused for a later batch
        only once nothing references it (or a copy, when the consumer holds ``slots - 1`` earlier batches).

    Raises:
        VideoError: the file cannot be opened or decoded (raised in the child, re-raised here), the decoder
            process died (e.g. killed by a signal while decoding this file), or it stalled (``stall_timeout_s``).
        Interrupted: a stop was requested (:func:`fer_pipeline.interrupt.request_stop`) while waiting for a batch;
            the child is ended.
        ValueError: bad settings (as ``iter_batches``).
        StartError: the child process, its shared memory or its pipes cannot be set up (an ``OSError``).
    """
    stall_timeout_s = cfg.stall_timeout_s
    if not stall_timeout_s > 0:
        raise ValueError(f"stall_timeout_s must be > 0, got {stall_timeout_s!r}")
    job = _job(path, cfg, slots)
    child = prestarted._take(job) if prestarted is not None else None
    if child is None:
        if prestarted is not None:
            logger.debug("%r was started for another file or other settings; starting a decode process", prestarted)
        child = _Child.start(path, job[1], job[2], meta)
    else:
        logger.debug("decoding %s in the process started ahead (pid %d)", path, child.proc.pid)
    mm, data, ctl, slot_bytes = child.mm, child.data, child.ctl, child.slot_bytes
    lock = threading.Lock()
    held: set[int] = set()  # slots of batches the consumer still references
    done = False
    last_ts = 0.0  # video time of the last batch received (for the stall message)
    try:
        while True:
            try:
                msg = _receive(data, stall_timeout_s, path, last_ts)
            except EOFError:
                code = child.proc.wait()
                interrupt.check()  # the child was ended by the same signal that stopped the run
                raise VideoError(f"decoder process ended without a result (exit code {code}) on {path}",
                                 path) from None
            kind = msg[0]
            if kind == "batch":
                _, slot, shape, frame_index, timestamp_s, busy_s = msg
                frames = np.ndarray(shape, np.uint8, buffer=mm, offset=slot * slot_bytes)
                with lock:
                    starved = len(held) + 1 >= slots
                    if not starved:
                        held.add(slot)
                if starved:  # the consumer keeps earlier batches: a copy, so that the child gets this slot back
                    frames = frames.copy()
                    _release(ctl, lock, held, slot)
                else:
                    weakref.finalize(frames, _release, ctl, lock, held, slot).atexit = False
                if stats is not None:
                    stats["decode_s"] = stats.get("decode_s", 0.0) + busy_s
                last_ts = float(timestamp_s[-1]) if len(timestamp_s) else last_ts
                batch = FrameBatch(frames, frame_index, timestamp_s)
                del frames
                yield batch
                del batch
            elif kind == "log":
                _, levelno, name, text = msg
                logging.getLogger(name).log(levelno, "%s", text)
            elif kind == "done":
                done = True
                if stats is not None:
                    stats["decoder_peak_rss_mb"] = msg[1]
                return
            else:  # "error"
                _, blob, text = msg
                try:
                    err = pickle.loads(blob) if blob is not None else None
                except Exception:  # noqa: BLE001 - an exception class the parent cannot rebuild
                    err = None
                raise err if isinstance(err, BaseException) else RuntimeError(f"decoder process: {text}")
    finally:
        with lock:
            ctl.close()
        child.close(kill=not done)  # stopped early, or failed: nothing more is wanted from the child
        del mm, child  # the slots are unmapped once the last batch array that views them is gone


def _receive(data: Connection, stall_timeout_s: float, path: str | Path, last_ts: float) -> tuple:
    """The child's next message; :class:`~fer_pipeline.interrupt.Interrupted` on a stop request, ``VideoError``
    after ``stall_timeout_s`` seconds without one, ``EOFError`` when the child closed its pipe."""
    deadline = time.monotonic() + stall_timeout_s
    while not data.poll(min(_POLL_S, max(0.0, deadline - time.monotonic()))):
        interrupt.check()
        if time.monotonic() >= deadline:
            raise VideoError.stalled(stall_timeout_s, last_ts, path)
    return data.recv()
