"""Prefect servers started by the CLI: a persistent one for `fer-pipeline serve` (schedules need one; the ephemeral
mode has no scheduler) and a temporary one for `fer-pipeline analyze`.

Why `analyze` starts its own temporary server instead of letting Prefect's ephemeral mode start one: Prefect starts
that server as a plain child in the CLI's process group, so a terminal's Ctrl-C killed it mid-run (hundreds of lines
of ``ConnectError`` tracebacks), and ``kill -9`` of the CLI left it running for good. Ours runs the same app with the
same settings as Prefect's ephemeral server, in a session of its own (Ctrl-C reaches only the CLI, which then stops
it) and with a parent-death signal (it ends with the CLI, even after ``kill -9``).

Deliberately imports nothing from Prefect: ``PREFECT_API_URL`` must be set before Prefect is first imported, because
Prefect reads its settings at import time.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import time
import urllib.request

from fer_pipeline.interrupt import child_command

logger = logging.getLogger(__name__)


def _wait_healthy(proc: subprocess.Popen, url: str, timeout_s: float, what: str) -> None:
    """Poll ``url``/health until it answers 200; RuntimeError when ``proc`` exits first or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} (is the port in use?)")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            proc.terminate()
            raise RuntimeError(f"{what} did not answer within {timeout_s:.0f} s")
        time.sleep(0.1)


def start_local_server(port: int = 4200, timeout_s: float = 180.0, ui: bool = True) -> subprocess.Popen:
    """Start ``prefect server start`` on 127.0.0.1:``port``, wait for its health check, set ``PREFECT_API_URL``.
    ``ui``: serve Prefect's UI too (on by default: it shows the runs of ``serve`` and, sharing the database, of
    ``analyze``).

    Returns:
        The server process (terminate it when done).

    Raises:
        RuntimeError: the server exited or did not answer within ``timeout_s`` seconds (the first start migrates
            its SQLite database, which can take a minute on 2 cores).
    """
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
           "PREFECT_UI_ENABLED": "1" if ui else "0"}
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.Popen(child_command("prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)),
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    _wait_healthy(proc, url, timeout_s, f"prefect server on port {port}")
    os.environ["PREFECT_API_URL"] = url
    logger.info("started a local Prefect server at %s (UI: http://127.0.0.1:%d)", url, port)
    return proc


class TemporaryServer:
    """A Prefect API server for one CLI run (the app and settings of Prefect's own ephemeral server), started at
    once and waited for only when needed (:meth:`wait_ready`), so that its start-up overlaps the models' loading.
    ``PREFECT_API_URL`` points at it from construction on; :meth:`stop` ends it (so does the CLI's death).

    Args:
        timeout_s: how long :meth:`wait_ready` waits for its health check (seconds).

    Raises:
        OSError: the process cannot be started.
    """

    def __init__(self, timeout_s: float = 120.0) -> None:
        import importlib.util

        self.timeout_s = timeout_s
        spec = importlib.util.find_spec("prefect")  # finds the package without importing it
        self._app_dir = str(os.path.dirname(os.path.dirname(spec.origin)))
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/api"
        env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1",
               "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
        env.pop("PREFECT_API_URL", None)
        self.proc = subprocess.Popen(
            child_command("uvicorn", "--app-dir", self._app_dir, "--factory", "prefect.server.api.server:create_app",
                          "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "error", "--lifespan", "on"),
            env=env, stdin=subprocess.DEVNULL, start_new_session=True)
        os.environ["PREFECT_API_URL"] = self.url

    def wait_ready(self) -> None:
        """Wait for the server's health check.

        Raises:
            RuntimeError: it exited (e.g. its port was taken since it was picked), or did not answer within
                ``timeout_s``.
        """
        try:
            _wait_healthy(self.proc, self.url, self.timeout_s, f"the temporary Prefect server on port {self.port}")
        except RuntimeError:
            self.stop()
            raise

    def stop(self) -> None:
        """End the server (idempotent)."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
