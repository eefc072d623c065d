"""Decoding in a process of its own: :func:`iter_batches_in_process` is :func:`fer_pipeline.decode.iter_batches` run
by a child interpreter, with the batches handed over through shared memory.

Why: decoding is 60-70% of the pipeline's CPU on 720p, and PyAV's decoder threads need the GIL for a moment around
every packet. In one process they wait for it whenever the pipeline's own threads run Python code: above all while
the tracker's first import (``trackers`` -> ``supervision`` -> ``scipy``, ~0.7 CPU s) holds it, during which the
chunk decoders barely ran. A child process has its own interpreter and GIL, so decoding runs on its own core from
the start. 1-minute 720p benchmark input, 10 interleaved runs each (``benchmarks/README.md``, "Issue #4, sixth
round"): median 5.81 s in one process against 5.33 s with a prototype of this. A decoder crash (FFmpeg on a damaged
file) also becomes a :class:`~fer_pipeline.decode.VideoError` for that video instead of killing the worker.

How (POSIX only; :func:`available`): the parent creates one anonymous shared buffer of ``slots`` batch-sized slots
(``memfd_create`` on Linux, an unlinked temporary file elsewhere) and two pipes, and starts ``python -c ...`` (this
module's ``_child_main``, from this copy of the package) with those file descriptors. The child runs ``iter_batches`` (chunked PyAV decoding,
its decoder threads included), which stacks each batch straight into a free slot, then sends the slot number, indices and
timestamps. The parent yields a :class:`~fer_pipeline.types.FrameBatch` whose ``frames`` is a view of that slot; the
slot goes back to the child when the last reference to the array (or any view of it) is gone
(``weakref.finalize``), so a batch that the consumer keeps is never overwritten. A consumer that keeps so many
batches that the child would have no slot left gets copies instead (a pipeline that drops each batch before asking
for the next never does). The child fills one slot per batch (a rotated file's frames are turned as they are stacked),
so with the parent holding at most ``slots - 1`` it can always go on. Log records of the child (e.g. "frame(s) ...
flagged corrupt") are re-logged in the parent under the same logger name; exceptions are re-raised in the parent
(``VideoError`` with its path). Stopping the iteration early ends the child; so does the parent's death (a
parent-death signal, even after SIGKILL). A watchdog ends a child that sends nothing for ``stall_timeout_s`` while
the parent waits (a ``VideoError``: the video fails, the run goes on), and a stop request
(:mod:`fer_pipeline.interrupt`) ends the wait within a quarter of a second. The child runs in a session of its own,
so a terminal's Ctrl-C reaches only the parent.

Memory: the parent no longer holds decoder state or decoded frames; the child holds its decoders, queues and one
pooled batch, plus the shared slots. Both processes' peak RSS count the slots they touched.
"""

from __future__ import annotations

import atexit
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

import numpy as np

from fer_pipeline import interrupt
from fer_pipeline.types import FrameBatch, VideoMeta

logger = logging.getLogger(__name__)

__all__ = ["StartError", "available", "discard_prestarted", "iter_batches_in_process", "prestart"]

_CHILD_CODE = ("import json, sys; a = json.loads(sys.argv[1]); "
               "a['root'] in sys.path or sys.path.insert(0, a['root']); "
               "from fer_pipeline.decode_process import _child_main; _child_main(a)")

#: Shared batch slots: one being filled by the child, one the pipeline works on, one ready in between.
DEFAULT_SLOTS = 3
#: Seconds without a message from the child after which it counts as stalled (``decode.stall_timeout_s``).
DEFAULT_STALL_TIMEOUT_S = 60.0
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


class _Child:
    """A started decode process: its pipes, its shared slots and the key of the arguments it decodes with."""

    def __init__(self, key: tuple, proc: subprocess.Popen, mm: mmap.mmap, data: Connection, ctl: Connection,
                 slot_bytes: int) -> None:
        self.key, self.proc, self.mm, self.data, self.ctl, self.slot_bytes = key, proc, mm, data, ctl, slot_bytes

    @classmethod
    def start(cls, key: tuple, path: str | Path, meta: VideoMeta | None) -> _Child:
        """Start the child for ``key`` (see :func:`_key`); ``meta`` is probed when ``None``."""
        from fer_pipeline.decode import probe

        _, sample_fps, batch_size, backend, skip_nonref, threads, skip_loop_filter, snap_to_anchors, slots = key
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
        args = {"path": str(path), "sample_fps": sample_fps, "batch_size": batch_size, "backend": backend,
                "skip_nonref": skip_nonref, "threads": threads, "skip_loop_filter": skip_loop_filter,
                "snap_to_anchors": snap_to_anchors, "slots": slots, "slot_bytes": slot_bytes, "shm_fd": shm_fd,
                "data_fd": data_w, "ctl_fd": ctl_r,
                "log_level": logging.getLogger("fer_pipeline").getEffectiveLevel(), "parent_pid": os.getpid(),
                "root": str(Path(__file__).resolve().parent.parent)}  # the child imports this copy of the package
        try:
            mm = mmap.mmap(shm_fd, slot_bytes * slots)
            # a session of its own: a terminal's Ctrl-C reaches only the parent, which then ends this child (a
            # child killed by the same SIGINT looked like a decoder failure); it dies with the parent
            # (``die_with_parent`` in ``_child_main``), even a parent killed by SIGKILL
            proc = subprocess.Popen([sys.executable, "-c", _CHILD_CODE, json.dumps(args)],
                                    pass_fds=(shm_fd, data_w, ctl_r), stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        except BaseException as e:
            for fd in (data_r, ctl_w):
                os.close(fd)
            if isinstance(e, OSError):
                raise StartError(f"cannot start the decode process: {e}") from e
            raise
        finally:
            for fd in (shm_fd, data_w, ctl_r):  # the child has its own copies now
                os.close(fd)
        return cls(key, proc, mm, Connection(data_r, writable=False), Connection(ctl_w, readable=False), slot_bytes)

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


def _key(path: str | Path, sample_fps, batch_size, backend, skip_nonref, threads, skip_loop_filter, snap_to_anchors,
         slots) -> tuple:
    return (os.path.realpath(path), None if sample_fps is None else float(sample_fps), int(batch_size), str(backend),
            bool(skip_nonref), int(threads), str(skip_loop_filter), bool(snap_to_anchors), int(slots))


_prestarted: dict[tuple, _Child] = {}
_prestarted_lock = threading.Lock()


def prestart(path: str | Path, sample_fps: float | None = 5.0, batch_size: int = 16, backend: str = "decord",
             skip_nonref: bool = True, threads: int = 0, skip_loop_filter: str = "default",
             snap_to_anchors: bool = False, slots: int = DEFAULT_SLOTS) -> bool:
    """Start decoding ``path`` now, before the caller is ready for it (e.g. while it imports and loads models); the
    next :func:`iter_batches_in_process` with the same arguments takes this process over instead of starting one.
    The child decodes until its ``slots`` are full, then waits.

    Arguments as :func:`iter_batches_in_process`. Returns whether a process was started: False where
    :func:`available` is not, and on any error (a bad file, no process): the analysis then meets that error itself.
    A process that nothing takes over is ended by :func:`discard_prestarted`, by another ``prestart`` of the same
    arguments, or at interpreter exit.
    """
    if not available():
        return False
    key = _key(path, sample_fps, batch_size, backend, skip_nonref, threads, skip_loop_filter, snap_to_anchors, slots)
    try:
        child = _Child.start(key, path, None)
    except Exception as e:  # noqa: BLE001 - the analysis reports the problem when it gets there
        logger.debug("no decode process started ahead for %s: %s", path, e)
        return False
    with _prestarted_lock:
        if not _prestarted:
            atexit.register(discard_prestarted)
        old = _prestarted.pop(key, None)
        _prestarted[key] = child
    if old is not None:
        old.close(kill=True)
    return True


def discard_prestarted(path: str | Path | None = None) -> int:
    """End the processes :func:`prestart` started that nothing took over: those of ``path``, or all. Returns how
    many."""
    real = os.path.realpath(path) if path is not None else None
    with _prestarted_lock:
        gone = [k for k in _prestarted if real is None or k[0] == real]
        children = [_prestarted.pop(k) for k in gone]
    for child in children:
        child.close(kill=True)
    return len(children)


def iter_batches_in_process(path: str | Path, sample_fps: float | None = 5.0, batch_size: int = 16,
                            backend: str = "decord", skip_nonref: bool = True, threads: int = 0,
                            skip_loop_filter: str = "default", snap_to_anchors: bool = False,
                            meta: VideoMeta | None = None, slots: int = DEFAULT_SLOTS,
                            stats: dict | None = None,
                            stall_timeout_s: float = DEFAULT_STALL_TIMEOUT_S) -> Iterator[FrameBatch]:
    """:func:`fer_pipeline.decode.iter_batches` with the decoding done by a child process (see the module docstring;
    one started by :func:`prestart` with the same arguments is taken over).

    Args:
        path, sample_fps, batch_size, backend, skip_nonref, threads, skip_loop_filter, snap_to_anchors: as for
            :func:`~fer_pipeline.decode.iter_batches` (the same batches come out: frames, indices, timestamps).
        meta: ``probe(path)`` when the caller has it (its ``width``/``height`` size the shared slots); probed here
            otherwise.
        slots: shared batch slots (>= 2), each ``batch_size * height * width * 3`` bytes.
        stats: when given, updated with ``decode_s`` (seconds the child spent producing batches, summed) and, at the
            end, ``decoder_peak_rss_mb`` (the child's peak resident memory, MB, shared slots included).
        stall_timeout_s: watchdog: the child is killed and ``VideoError`` raised when it sends nothing for this many
            seconds (> 0) while the caller waits for a batch (a hung decoder, a stalled network file system).
            Time the caller spends on a batch does not count.

    Yields:
        ``FrameBatch`` as ``iter_batches``; ``frames`` is a read-write view of a shared slot, reused for a later batch
        only once nothing references it (or a copy, when the consumer holds ``slots - 1`` earlier batches).

    Raises:
        VideoError: the file cannot be opened or decoded (raised in the child, re-raised here), the decoder
            process died (e.g. killed by a signal while decoding this file), or it stalled (``stall_timeout_s``).
        Interrupted: a stop was requested (:func:`fer_pipeline.interrupt.request_stop`) while waiting for a batch;
            the child is ended.
        ValueError: bad arguments (as ``iter_batches``).
        StartError: the child process, its shared memory or its pipes cannot be set up (an ``OSError``).
    """
    from fer_pipeline.decode import VideoError

    if not stall_timeout_s > 0:
        raise ValueError(f"stall_timeout_s must be > 0, got {stall_timeout_s!r}")
    key = _key(path, sample_fps, batch_size, backend, skip_nonref, threads, skip_loop_filter, snap_to_anchors, slots)
    with _prestarted_lock:
        child = _prestarted.pop(key, None)
    if child is None:
        child = _Child.start(key, path, meta)
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


def _receive(data: Connection, stall_timeout_s: float, path, last_ts: float):
    """The child's next message; :class:`~fer_pipeline.interrupt.Interrupted` on a stop request, ``VideoError``
    after ``stall_timeout_s`` seconds without one, ``EOFError`` when the child closed its pipe."""
    from fer_pipeline.decode import VideoError

    deadline = time.monotonic() + stall_timeout_s
    while not data.poll(min(_POLL_S, max(0.0, deadline - time.monotonic()))):
        interrupt.check()
        if time.monotonic() >= deadline:
            raise VideoError(f"decoder stalled: nothing decoded for {stall_timeout_s:g} s after {last_ts:.1f} s of "
                             f"video (decode.stall_timeout_s): {path}", path)
    return data.recv()


# --- child ------------------------------------------------------------------------------------------------------------


class _PipeHandler(logging.Handler):
    """Sends the child's log records to the parent as ``("log", levelno, logger name, message)``."""

    def __init__(self, send) -> None:
        super().__init__()
        self._send = send

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._send(("log", record.levelno, record.name, record.getMessage()))
        except Exception:  # noqa: BLE001, S110 - parent gone; logging must not raise, and nothing is left to tell
            pass


def _peak_rss_mb() -> float:
    """This process's peak resident memory in MB: ``VmHWM`` of ``/proc/self/status`` where there is one (Linux's
    ``ru_maxrss`` of a child started by fork + exec also counts its parent's memory at the fork), else
    ``ru_maxrss``."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024.0, 1)
    except OSError:
        pass
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(rss / (1024.0 * 1024.0 if sys.platform == "darwin" else 1024.0), 1)


class _Slots:
    """The child's side of the shared slots: hands out free ones (waiting for the parent to give one back when none
    is), and stacks batches straight into them (``stack``, the interface of
    :class:`fer_pipeline.decode.BatchBuffers`), saving a copy per batch."""

    def __init__(self, mm: mmap.mmap, n: int, slot_bytes: int, ctl: Connection) -> None:
        self.mm, self.slot_bytes, self.ctl = mm, slot_bytes, ctl
        self.free = list(range(n))
        self.last: tuple[np.ndarray, int] | None = None  # the array ``stack`` returned last, and its slot
        self.wait_s = 0.0  # time spent waiting for a free slot

    def take(self) -> int:
        """A free slot (raises EOFError when the parent closed the control pipe)."""
        t = time.perf_counter()
        while not self.free or self.ctl.poll():
            self.free.append(int.from_bytes(self.ctl.recv_bytes(), "little"))
        self.wait_s += time.perf_counter() - t
        return self.free.pop(0)

    def view(self, slot: int, shape: tuple) -> np.ndarray:
        return np.ndarray(shape, np.uint8, buffer=self.mm, offset=slot * self.slot_bytes)

    def stack(self, frames: list[np.ndarray]) -> np.ndarray:
        shape = (len(frames),) + frames[0].shape
        if frames[0].dtype != np.uint8 or int(np.prod(shape)) > self.slot_bytes:
            # not a batch of frames this slot size was made for: copied later (C order, also for rotated views)
            return np.stack(frames, out=np.empty(shape, frames[0].dtype))
        slot = self.take()
        arr = np.stack(frames, out=self.view(slot, shape))
        self.last = (arr, slot)
        return arr

    def slot_of(self, frames: np.ndarray) -> int:
        """The slot holding ``frames``: the one ``stack`` filled when ``frames`` is that array, else a free slot
        that ``frames`` (e.g. rotated, or from decord) is copied into."""
        if self.last is not None and self.last[0] is frames:
            slot = self.last[1]
        else:
            if self.last is not None:
                # derived from the slot ``stack`` filled (e.g. turned after stacking): copied out, so that this
                # batch never holds two slots at once (the parent keeps up to ``slots - 1``; a second slot could
                # then never come)
                frames = np.array(frames)
                self.free.append(self.last[1])
                self.last = None
            slot = self.take()
            self.view(slot, frames.shape)[...] = frames
        self.last = None
        return slot


def _child_main(args: dict) -> None:
    """Body of the child process (``_CHILD_CODE``); ends the process with ``os._exit`` once its last message is sent
    (status 0 when done or stopped by the parent, 1 after an error), skipping the interpreter's slow teardown."""
    interrupt.die_with_parent(args["parent_pid"])  # no decode process outlives the pipeline, even after SIGKILL
    from fer_pipeline.decode import iter_batches

    data = Connection(args["data_fd"], readable=False)
    ctl = Connection(args["ctl_fd"], writable=False)
    slot_bytes, n_slots = int(args["slot_bytes"]), int(args["slots"])
    mm = mmap.mmap(args["shm_fd"], slot_bytes * n_slots)
    send_lock = threading.Lock()

    def send(obj) -> None:
        with send_lock:
            data.send(obj)

    root = logging.getLogger("fer_pipeline")
    root.handlers[:] = [_PipeHandler(send)]
    root.setLevel(int(args["log_level"]))
    root.propagate = False
    slots = _Slots(mm, n_slots, slot_bytes, ctl)
    try:
        t, waited = time.perf_counter(), 0.0
        for batch in iter_batches(args["path"], args["sample_fps"], args["batch_size"], args["backend"],
                                  args["skip_nonref"], args["threads"], args["skip_loop_filter"],
                                  args["snap_to_anchors"], buffers=slots):
            if batch.frames.nbytes > slot_bytes:
                raise RuntimeError(f"batch of {batch.frames.shape} does not fit a slot of {slot_bytes} bytes")
            slot = slots.slot_of(batch.frames)
            busy = time.perf_counter() - t - (slots.wait_s - waited)
            send(("batch", slot, batch.frames.shape, batch.frame_index, batch.timestamp_s, busy))
            del batch
            t, waited = time.perf_counter(), slots.wait_s
        send(("done", _peak_rss_mb()))
    except (EOFError, BrokenPipeError, KeyboardInterrupt):
        os._exit(0)  # the parent stopped the iteration, or went away
    except BaseException as e:  # noqa: BLE001 - handed to the parent, which re-raises it
        try:
            blob = pickle.dumps(e)
        except Exception:  # noqa: BLE001 - unpicklable exception: its text only
            blob = None
        try:
            send(("error", blob, f"{type(e).__name__}: {e}"))
        except OSError:
            pass
        os._exit(1)
    os._exit(0)
