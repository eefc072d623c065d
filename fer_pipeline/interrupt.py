"""Stopping a run from outside, and keeping child processes from outliving it.

A stop request is process-wide (:func:`request_stop`): Ctrl-C or SIGTERM in the CLI, or a library caller's own
code. Long work checks it between steps (:func:`check`, every batch of the analysis and while waiting for the decode
process) and raises :class:`Interrupted`; the video being analysed is then left as it was (no ``failed`` row, nothing
staged left behind) and videos not started are not started.

:func:`run_interruptible` is how the CLI uses it: the work runs in a thread while the main thread waits with SIGINT
and SIGTERM handlers that request the stop; a second signal, or work that does not stop within ``grace_s``, ends the
process at once. Every child process this package starts (the decode process, the Prefect server) is in a session
of its own, so a terminal's Ctrl-C reaches only the CLI, and carries a parent-death signal
(:func:`die_with_parent`), so that not even ``kill -9`` of the CLI leaves one running.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time
from typing import Any, Callable

__all__ = ["Interrupted", "check", "child_command", "die_with_parent", "request_stop", "reset", "run_interruptible",
           "stop_requested"]

_stop = threading.Event()
_reason = ["interrupted"]


class Interrupted(Exception):
    """The run was asked to stop (:func:`request_stop`) before this work finished; nothing of it was written."""


def request_stop(reason: str = "interrupted") -> None:
    """Ask every analysis of this process to stop at its next check (thread-safe; also from a signal handler)."""
    if not _stop.is_set():
        _reason[0] = reason
    _stop.set()


def stop_requested() -> bool:
    """Whether :func:`request_stop` was called since the last :func:`reset`."""
    return _stop.is_set()


def check() -> None:
    """Raise :class:`Interrupted` when a stop was requested."""
    if _stop.is_set():
        raise Interrupted(_reason[0])


def reset() -> None:
    """Forget an earlier stop request (a new run in the same process)."""
    _stop.clear()
    _reason[0] = "interrupted"


def die_with_parent(parent_pid: int | None = None, sig: int = signal.SIGKILL) -> None:
    """Have the kernel send ``sig`` to this process when its parent dies (Linux ``PR_SET_PDEATHSIG``; nothing
    elsewhere). Called first thing in a child process; survives ``exec``. With ``parent_pid`` (the parent's pid,
    passed down by it), a parent that died before this call is noticed too, and this process exits at once.

    The kernel's "parent" is the thread that started the child: start children from a thread that outlives them.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, int(sig), 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        return
    if parent_pid is not None and os.getppid() != int(parent_pid):  # the parent died before prctl
        os._exit(1)


def child_command(module: str, *args: str) -> list[str]:
    """``python -m module args...`` for a child process that dies with this one (:func:`die_with_parent` runs in
    it before the module). Start it in a session of its own (``start_new_session=True``) so that a terminal's
    Ctrl-C reaches only this process, which then stops the child itself."""
    return [sys.executable, "-c", _CHILD_PRELUDE, str(os.getpid()), module, *args]


_CHILD_PRELUDE = ("import sys, runpy; from fer_pipeline.interrupt import die_with_parent; "
                  "die_with_parent(int(sys.argv[1])); sys.argv = sys.argv[2:]; "
                  "runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)")


def run_interruptible(fn: Callable[[], Any], grace_s: float = 15.0,
                      on_signal: Callable[[int], None] | None = None) -> tuple[Any, int | None]:
    """Run ``fn()`` in a thread, with SIGINT and SIGTERM requesting a stop instead of killing the process.

    Must be called from the main thread. The first signal calls :func:`request_stop` (and ``on_signal(signum)``,
    e.g. to print one line); ``fn`` is expected to return (or raise) soon after. A second signal, or ``fn`` still
    running ``grace_s`` seconds after the first, ends the process with ``os._exit(128 + signum)`` (children end
    with it: :func:`die_with_parent`).

    Returns:
        ``(fn's result, signal number or None)``.

    Raises:
        whatever ``fn`` raised.
    """
    box: dict[str, Any] = {}
    got: list[int] = []

    def target() -> None:
        try:
            box["result"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = e

    def handler(signum, frame) -> None:
        if got:  # second signal: the user insists
            os._exit(128 + got[0])
        got.append(signum)
        request_stop("interrupted by " + signal.Signals(signum).name)
        if on_signal is not None:
            on_signal(signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        th = threading.Thread(target=target, name="run", daemon=True)
        th.start()
        deadline = None
        while th.is_alive():
            th.join(timeout=0.2)
            if got and deadline is None:
                deadline = time.monotonic() + grace_s
            if deadline is not None and th.is_alive() and time.monotonic() > deadline:
                sys.stderr.write(f"did not stop within {grace_s:.0f} s; exiting now\n")
                sys.stderr.flush()
                os._exit(128 + got[0])
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if "error" in box:
        raise box["error"]
    return box.get("result"), (got[0] if got else None)


def stop_children(exclude: set[int] | frozenset = frozenset(), timeout_s: float = 60.0) -> int:
    """End this process's child processes (but ``exclude``, e.g. a server they still need): SIGTERM, then up to
    ``timeout_s`` seconds for them to finish their own clean-up, then SIGKILL. Returns how many there were.

    ``fer-pipeline serve`` calls it on SIGTERM before it stops its Prefect server, so that a flow run in progress
    can still report its end to the server instead of dying with connection errors.
    """
    import psutil

    kids = [c for c in psutil.Process().children(recursive=False) if c.pid not in exclude]
    for c in kids:
        try:
            c.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(kids, timeout=timeout_s)
    for c in alive:
        try:
            c.kill()
        except psutil.NoSuchProcess:
            pass
    return len(kids)
