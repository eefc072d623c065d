"""A local Prefect server for `fer-pipeline serve` (schedules need one; the ephemeral mode has no scheduler).

Deliberately imports nothing from Prefect: ``PREFECT_API_URL`` must be set before Prefect is first imported, because
Prefect reads its settings at import time.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import urllib.request

logger = logging.getLogger(__name__)


def start_local_server(port: int = 4200, timeout_s: float = 180.0) -> subprocess.Popen:
    """Start ``prefect server start`` on 127.0.0.1:``port``, wait for its health check, set ``PREFECT_API_URL``.

    Returns:
        The server process (terminate it when done).

    Raises:
        RuntimeError: the server exited or did not answer within ``timeout_s`` seconds (the first start migrates
            its SQLite database, which can take a minute on 2 cores).
    """
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port",
                             str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited with code {proc.returncode} (is port {port} in use?)")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            proc.terminate()
            raise RuntimeError(f"prefect server on port {port} did not answer within {timeout_s:.0f} s")
        time.sleep(1)
    os.environ["PREFECT_API_URL"] = url
    logger.info("started a local Prefect server at %s (UI: http://127.0.0.1:%d)", url, port)
    return proc
