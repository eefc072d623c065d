"""Decoding in a process of its own, the child's side: ``python -m fer_pipeline.decode.child ARGS`` (started by
:mod:`fer_pipeline.decode.process`, which describes the protocol) decodes one file with
:func:`~fer_pipeline.decode.iterate.decode_batches` into the parent's shared slots.

``ARGS`` is one JSON object: ``path``, ``settings`` (the keywords of ``decode_batches``, plain values: building a
:class:`~fer_pipeline.config.DecodeConfig` here would import pydantic, 0.12 s more start-up for every video),
``slots``, ``slot_bytes``, the file descriptors ``shm_fd``, ``data_fd`` and ``ctl_fd``, ``log_level`` and
``parent_pid``.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import pickle
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection

import numpy as np

from fer_pipeline import interrupt
from fer_pipeline.decode.iterate import decode_batches

logger = logging.getLogger(__name__)

__all__ = ["main"]


class _PipeHandler(logging.Handler):
    """Sends the child's log records to the parent as ``("log", levelno, logger name, message)``."""

    def __init__(self, send: Callable[[object], None]) -> None:
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
    import resource  # only where there is no /proc

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(rss / (1024.0 * 1024.0 if sys.platform == "darwin" else 1024.0), 1)


class _Slots:
    """The child's side of the shared slots: hands out free ones (waiting for the parent to give one back when none
    is), and stacks batches straight into them (``stack``, the interface of
    :class:`fer_pipeline.decode.buffers.BatchBuffers`), saving a copy per batch."""

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


def main(args: dict) -> None:
    """Body of the child process; ends the process with ``os._exit`` once its last message is sent (status 0 when
    done or stopped by the parent, 1 after an error), skipping the interpreter's slow teardown."""
    interrupt.die_with_parent(args["parent_pid"])  # no decode process outlives the pipeline, even after SIGKILL
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
        for batch in decode_batches(args["path"], buffers=slots, **args["settings"]):
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


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
