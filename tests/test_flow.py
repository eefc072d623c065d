"""The Prefect flow end to end (ephemeral mode), the CLI's exit codes, a 2-worker Dask run, and `serve`."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO, VIDEOS
from fer_pipeline.config import PipelineConfig
from fer_pipeline.store import read_table

pytestmark = pytest.mark.slow
CLI = [sys.executable, "-m", "fer_pipeline.cli"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory, bad_inputs):
    d = tmp_path_factory.mktemp("recordings")
    shutil.copy(VIDEOS / "single_face.mp4", d / "viewer one.mp4")
    shutil.copy(VIDEOS / "face_noface.mov", d / "viewer two.mov")
    shutil.copy(bad_inputs["truncated"], d / "broken.mp4")
    return d


def test_flow_runs_folder_and_records_failures(folder, tmp_path):
    from flows.analyze import run_analyze

    out = tmp_path / "out"
    results = run_analyze([str(folder)], str(out), PipelineConfig())
    status = {Path(r["path"]).name: r["status"] for r in results}
    assert status == {"viewer one.mp4": "ok", "viewer two.mov": "ok", "broken.mp4": "failed"}
    vids = read_table(out, "videos")
    assert sorted(vids.status) == ["failed", "ok", "ok"]
    assert vids.loc[vids.status == "failed", "error"].iloc[0]
    ok_ids = set(vids.loc[vids.status == "ok", "video_id"])
    assert set(pd.read_parquet(out / "timeline").video_id.astype(str)) == ok_ids
    for vid in ok_ids:
        assert (out / "reports" / f"{vid}.html").is_file()
    index = (out / "index.html").read_text()
    assert "broken.mp4" in index
    # a second run over the same folder skips what is done
    again = run_analyze([str(folder)], str(out), PipelineConfig())
    assert sorted(r["status"] for r in again) == ["failed", "skipped", "skipped"]


def test_dask_two_workers_same_tables_as_sequential(folder, tmp_path):
    from flows.analyze import run_analyze

    seq, par = tmp_path / "seq", tmp_path / "dask"
    cfg = PipelineConfig.load(None, {"output.reports": False})
    good = [str(folder / "viewer one.mp4"), str(folder / "viewer two.mov")]
    run_analyze(good, str(seq), cfg)
    res = run_analyze(good, str(par), cfg, dask_workers=2)
    assert sorted(r["status"] for r in res) == ["ok", "ok"]
    for table in ("faces", "timeline", "audience"):
        a = read_table(seq, table).sort_values(list(read_table(seq, table).columns[:3])).reset_index(drop=True)
        b = read_table(par, table).sort_values(list(a.columns[:3])).reset_index(drop=True)
        pd.testing.assert_frame_equal(a[sorted(a.columns)], b[sorted(b.columns)], check_exact=False, rtol=1e-5)


def test_cli_help_and_exit_codes(tmp_path, bad_inputs):
    h = subprocess.run([*CLI, "analyze", "--help"], capture_output=True, text=True, cwd=REPO)
    assert h.returncode == 0 and "--out" in h.stdout and "sample-fps" in h.stdout
    r = subprocess.run([*CLI, "analyze", str(VIDEOS / "single_face.mp4"), str(bad_inputs["zero_length"]),
                        "--out", str(tmp_path / "o"), "--no-report"], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 1, r.stderr[-2000:]
    assert "failed" in r.stdout and "ok" in r.stdout
    r = subprocess.run([*CLI, "analyze", str(tmp_path / "empty-folder-that-does-not-exist")],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode != 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_picks_up_new_recordings(tmp_path):
    watch, out = tmp_path / "watch", tmp_path / "out"
    watch.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    # a deployment name of its own: runs scheduled earlier for another deployment keep that one's parameters
    name = f"fer-pipeline-test-{os.getpid()}-{time.monotonic_ns()}"
    proc = subprocess.Popen([*CLI, "serve", str(watch), "--out", str(out), "--interval", "5", "--port",
                             str(_free_port()), "--name", name], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        shutil.copy(VIDEOS / "single_face.mp4", watch / "new.mp4")
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            vids = read_table(out, "videos") if (out / "videos").is_dir() else pd.DataFrame()
            if len(vids) and (vids.status == "ok").any():
                break
            time.sleep(3)
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        vids = read_table(out, "videos")
        assert list(vids.status) == ["ok"]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
