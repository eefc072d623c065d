"""The Prefect flow end to end (ephemeral mode), the CLI's exit codes, a 2-worker Dask run, and `serve`."""
from __future__ import annotations

import os
import re
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
    from fer_pipeline.flows.analyze import run_analyze

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


def _runs_of(out: Path) -> list:
    """The flow runs (newest first) whose ``out_dir`` is ``out``, with their task runs, logs and artifacts."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterState,
        FlowRunFilterStateType,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.client.schemas.sorting import FlowRunSort

    found = []
    with get_client(sync_client=True) as client:
        finished = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=["COMPLETED", "FAILED"])))
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["analyze-folder"])),
                                     flow_run_filter=finished, sort=FlowRunSort.START_TIME_DESC, limit=50)
        for run in runs:
            if run.parameters.get("out_dir") != str(out):
                continue
            tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))
            arts = client.read_artifacts(artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])))
            found.append({"state": run.state, "tasks": {t.name: t.state.name for t in tasks},
                          "logs": [(lg.name, lg.message) for lg in logs], "artifacts": {a.key for a in arts}})
    return found


def test_prefect_states_logs_and_artifacts(folder, tmp_path):
    """A failed video is a Failed task run (the others Completed) and the flow run says how many failed; a video
    done already is Cached; the pipeline's log records are in the run's logs; the run leaves its artifacts."""
    from fer_pipeline.flows.analyze import run_analyze

    out = tmp_path / "out"
    run_analyze([str(folder)], str(out), PipelineConfig())
    run_analyze([str(folder)], str(out), PipelineConfig())
    deadline = time.monotonic() + 30
    while True:  # log records reach the API in batches, shortly after the run
        runs = _runs_of(out)
        if len(runs) == 2 and any(n.startswith("fer_pipeline") for n, _ in runs[1]["logs"]):
            break
        assert time.monotonic() < deadline, runs
        time.sleep(1)
    second, first = runs
    assert first["state"].is_failed() and "1 of 3 videos failed" in first["state"].message
    by_file = {Path(name.removeprefix("analyze ")).name: st for name, st in first["tasks"].items()
               if name.startswith("analyze ")}
    assert by_file == {"viewer one.mp4": "Completed", "viewer two.mov": "Completed", "broken.mp4": "Failed"}
    again = {Path(name.removeprefix("analyze ")).name: st for name, st in second["tasks"].items()
             if name.startswith("analyze ")}
    assert again == {"viewer one.mp4": "Cached", "viewer two.mov": "Cached", "broken.mp4": "Failed"}
    assert any(n.startswith("fer_pipeline") and "broken.mp4" in m for n, m in first["logs"])
    assert {"fer-pipeline-results", "fer-pipeline-index"} <= first["artifacts"]
    assert any(a.startswith("report-") for a in first["artifacts"])
    # and Prefect's own CLI lists them (FastAPI 0.151-0.154 made its list commands answer 422)
    prefect = str(Path(sys.executable).with_name("prefect"))
    for args in (["flow-run", "ls", "--limit", "5"], ["deployment", "ls"]):
        r = subprocess.run([prefect, *args], capture_output=True, text=True, timeout=300,
                           env={**os.environ, "COLUMNS": "200"})
        assert r.returncode == 0 and "Unprocessable" not in r.stdout + r.stderr, (args, r.stdout[-2000:],
                                                                                   r.stderr[-2000:])
        assert "analyze-folder" in r.stdout or args[0] == "deployment", r.stdout[-2000:]


def test_dask_two_workers_same_tables_as_sequential(folder, tmp_path):
    from fer_pipeline.flows.analyze import run_analyze

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


def test_every_command_help_reads_plainly():
    """Every option has a line, metavars are words (no Python types such as <list[Path]>), and serve says which
    options it needs."""
    for cmd in ("analyze", "annotate", "serve", "report", "study", "export", "evaluate", "train", "ui"):
        r = subprocess.run([*CLI, cmd, "--help"], capture_output=True, text=True, cwd=REPO,
                           env={**os.environ, "COLUMNS": "200"})
        assert r.returncode == 0, (cmd, r.stderr)
        types = re.findall(r"<(?:list\[|path>|float>|int>|str>|bool>)", r.stdout)  # Python types as metavars
        assert not types, (cmd, [ln for ln in r.stdout.splitlines() if "<" in ln])
    from fer_pipeline.cli import app
    from typer.main import get_command

    for name, command in get_command(app).commands.items():
        for param in command.params:
            assert param.help or param.name == "help", f"{name} --{param.name} has no help line"
    r = subprocess.run([*CLI, "serve", "--help"], capture_output=True, text=True, cwd=REPO,
                       env={**os.environ, "COLUMNS": "200"})
    text = " ".join(r.stdout.split())
    assert "this or --cron is required" in text and "exactly one of --interval or --cron" in text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _scheduled_parameters(port: int, name: str) -> list[dict]:
    """The parameters of the runs that deployment ``analyze-folder/<name>`` has scheduled (Prefect's REST API)."""
    import json
    import urllib.request

    def post(path: str, body: dict):
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    deps = post("/deployments/filter", {"deployments": {"name": {"any_": [name]}}, "limit": 10})
    runs = post("/flow_runs/filter", {"deployments": {"id": {"any_": [d["id"] for d in deps]}},
                                      "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}}, "limit": 200})
    return [r["parameters"] for r in runs]


def _serve(watch: Path, out: Path, port: int, name: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    return subprocess.Popen([*CLI, "serve", str(watch), "--out", str(out), "--interval", "5", "--port", str(port),
                             "--name", name], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _stop(proc: subprocess.Popen) -> tuple[int, str]:
    proc.terminate()  # SIGTERM
    try:
        output, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
    return proc.returncode, output


def test_serve_picks_up_new_recordings_stops_cleanly_and_replaces_its_runs(tmp_path):
    """serve analyses a recording dropped into the folder; SIGTERM ends it with exit 0 and no traceback; serving
    the same deployment name again with another output folder leaves no run scheduled with the old one."""
    watch, out, out2 = tmp_path / "watch", tmp_path / "out", tmp_path / "out2"
    watch.mkdir()
    # a deployment name of its own: runs scheduled earlier for another deployment keep that one's parameters
    name = f"fer-pipeline-test-{os.getpid()}-{time.monotonic_ns()}"
    port = _free_port()
    proc = _serve(watch, out, port, name)
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
        code, output = _stop(proc)
    assert code == 0, output[-3000:]
    assert "Traceback" not in output, output[-5000:]
    proc = _serve(watch, out2, port, name)  # same name (and database), other output folder
    try:
        deadline = time.monotonic() + 300
        params: list[dict] = []
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                params = _scheduled_parameters(port, name)
            except OSError:  # the server is still starting
                params = []
            if params and {p["out_dir"] for p in params} == {str(out2)}:
                break  # the runs scheduled with the old output folder went when the deployment was served again
            time.sleep(2)
        assert params, "no scheduled run"
        assert {p["out_dir"] for p in params} == {str(out2)}
    finally:
        code, output = _stop(proc)
    assert code == 0 and "Traceback" not in output, output[-5000:]
