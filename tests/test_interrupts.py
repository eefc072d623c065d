"""The real CLI under signals and a full disk: Ctrl-C and SIGTERM stop it cleanly, kill -9 leaves no process behind,
and running out of space gives one line and a non-zero exit code."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest

from conftest import REPO, VIDEOS, write_video

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-m", "fer_pipeline.cli", "analyze"]


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory) -> Path:
    """90 s of single_face.mp4 played forwards and back at 10 fps (a few seconds of analysis)."""
    import av

    with av.open(str(VIDEOS / "single_face.mp4")) as c:
        src = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)][::3]
    frames = np.stack(((src + src[::-1]) * 19)[:900])
    path = write_video(tmp_path_factory.mktemp("long") / "long-viewer.mp4", frames, 10, options={"preset": "veryfast"})
    return path


class Run:
    """A CLI process in a session of its own (as a terminal's foreground job), its output collected by threads."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([*CLI, *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, start_new_session=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            assert self.proc.poll() is None, f"exited before {text!r}: {self.lines}"
            assert time.monotonic() < deadline, f"no {text!r} in {self.lines}"
            time.sleep(0.05)

    def descendants(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children(recursive=True)

    def finish(self, timeout: float = 60) -> int:
        rc = self.proc.wait(timeout=timeout)  # a hang fails here
        self._reader.join(timeout=10)
        return rc

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def _gone(procs: list[psutil.Process], timeout: float = 10) -> list[psutil.Process]:
    """The processes of ``procs`` still alive after ``timeout`` seconds."""
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    return alive


def _started_analysing(run: Run) -> list[psutil.Process]:
    run.wait_for("emotion model")  # INFO line of the models' loading: the first video's analysis starts now
    time.sleep(1.0)
    kids = run.descendants()
    names = " ".join(" ".join(p.cmdline()) for p in kids)
    assert "fer_pipeline.decode.child" in names and "uvicorn" in names, names
    return kids


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_stops_the_run_cleanly(long_clip, tmp_path, sig, code):
    out = tmp_path / "out"
    run = Run(str(long_clip), str(VIDEOS / "single_face.mp4"), "--out", str(out), "-v")
    kids = _started_analysing(run)
    if sig == signal.SIGINT:
        os.killpg(run.proc.pid, sig)  # Ctrl-C at a terminal: the whole foreground process group
    else:
        run.proc.send_signal(sig)
    assert run.finish() == code, run.text
    assert "Traceback" not in run.text and " ERROR " not in run.text, run.text
    assert run.lines[-1].startswith("interrupted: 0 of 2 videos finished"), run.text
    assert not _gone(kids)
    # nothing marked failed that was only interrupted, nothing half-written, the next video not started
    assert not (out / "videos").exists() and not (out / ".staging").exists()
    again = Run(str(long_clip), str(VIDEOS / "single_face.mp4"), "--out", str(out), "--no-report")
    assert again.finish(timeout=300) == 0, again.text
    assert sorted(pd.read_parquet(out / "videos").status) == ["ok", "ok"]


def test_kill_9_leaves_no_process_behind(long_clip, tmp_path):
    out = tmp_path / "out"
    run = Run(str(long_clip), "--out", str(out), "-v")
    kids = _started_analysing(run)
    run.proc.kill()
    assert run.finish() == -signal.SIGKILL
    assert not _gone(kids), [p.cmdline() for p in _gone(kids, 0)]
    again = Run(str(long_clip), "--out", str(out), "--no-report")
    assert again.finish(timeout=300) == 0, again.text
    assert list(pd.read_parquet(out / "videos").status) == ["ok"]


@pytest.fixture()
def small_disk(tmp_path):
    """A 4 MB tmpfs (root only: skipped elsewhere), unmounted afterwards."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("the full-disk test mounts a tmpfs, which needs root")
    mnt = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(mnt: Path, free_kb: int) -> Path:
    filler = mnt / "filler"
    st = os.statvfs(mnt)
    size = st.f_bavail * st.f_frsize - free_kb * 1024
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, size))
    return filler


@pytest.mark.parametrize("free_kb", [0, 100, 1700])  # nothing fits; the tables do not; the tables but not reports
def test_full_disk_gives_one_line_and_a_rerun_completes(small_disk, tmp_path, free_kb):
    clips = [str(VIDEOS / "single_face.mp4"), str(VIDEOS / "face_noface.mov")]
    out = small_disk / "out"
    filler = _fill(small_disk, free_kb)
    run = Run(*clips, "--out", str(out))
    assert run.finish(timeout=300) == 1, run.text
    assert "Traceback" not in run.text and len(run.lines) <= 3, run.text
    assert any(line.startswith(f"error: no space left on device: {out}") for line in run.lines), run.text
    assert not (out / ".staging").exists()
    filler.unlink()
    again = Run(*clips, "--out", str(out))
    assert again.finish(timeout=300) == 0, again.text
    assert sorted(pd.read_parquet(out / "videos").status) == ["ok", "ok"]
    assert (out / "index.html").is_file() and len(list((out / "reports").glob("*.html"))) == 2
