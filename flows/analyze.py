"""Prefect flow ``analyze-folder``: recordings (files or folders) -> Parquet tables and HTML reports.

Thin by design: each task calls one library function. One task per video analyses it (decode ... store); with a
study (a manifest, or a folder of subfolders), one task per stimulus computes its study tables once the recordings
it needs are done; one task renders the reports of the run and one the study pages. With ``dask_address`` (or
``dask_workers`` > 0) the videos are spread over a Dask cluster through prefect-dask's ``DaskTaskRunner``.

States, as Prefect users expect them: a video that fails is recorded as a ``failed`` row by the library and its task
run is **Failed** (the others go on; a transient I/O error, e.g. EIO or ETIMEDOUT on a network share, is retried
twice first); a video whose stored results are reused (same video_id, i.e. file name and content, same settings, model and detector, files intact:
:mod:`fer_pipeline.reuse`) is **Cached**; the flow run is Failed when any video or report failed, its message saying
how many. The pipeline's log records reach the run logs (the CLI sets ``PREFECT_LOGGING_EXTRA_LOGGERS=fer_pipeline``),
and each run leaves a table artifact of its results and link artifacts to the index, the study pages and each
report.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Callable

from prefect import flow, task
from prefect.cache_policies import NONE as NO_CACHE
from prefect.states import Completed, Failed

from fer_pipeline import interrupt
from fer_pipeline.config import PipelineConfig
from fer_pipeline.errors import OutputError, is_disk_full, one_line
from fer_pipeline.inputs import list_videos
from fer_pipeline.models import Models
from fer_pipeline.pipeline import analyze_video
from fer_pipeline.store import clean_staging

logger = logging.getLogger(__name__)


class VideoFailed(Exception):
    """A video could not be analysed: its task run is Failed. ``row`` is its ``videos`` row (``error`` says why;
    ``transient`` is True for an I/O error worth retrying)."""

    def __init__(self, row: dict) -> None:
        super().__init__(f"{row.get('path')}: {row.get('error')}")
        self.row = row

    def __reduce__(self):  # picklable with its row (Dask workers send it back)
        return (VideoFailed, (self.row,))


def _transient(task, task_run, state) -> bool:
    """Retry condition: only a video that failed on a transient I/O error is analysed again."""
    try:
        state.result()
    except VideoFailed as e:
        return bool(e.row.get("transient"))
    except Exception:  # noqa: BLE001 - anything else is not retried
        return False
    return False


@task(name="analyze-video", cache_policy=NO_CACHE, task_run_name="analyze {path}", retries=2,
      retry_delay_seconds=2, retry_condition_fn=_transient)
def analyze_video_task(path: str, out_dir: str, cfg_json: str, force: bool = False,
                       progress: Callable[[str, float], None] | None = None, prestarted: Any = None):
    """Analyse one video; returns its ``videos`` row (status ok), the Cached state with it (status skipped), or a
    row with status ``interrupted`` (a stop was requested: nothing of it written) or ``aborted`` (the output folder
    cannot be written: ``error`` says why; the run stops). ``prestarted``: a :class:`fer_pipeline.decode.Prestarted`
    for this video, or ``None`` (see :func:`fer_pipeline.pipeline.analyze_video`).

    Raises:
        VideoFailed: the video failed (its ``failed`` row is written); the task run is Failed.
    """
    cfg = PipelineConfig.model_validate_json(cfg_json)
    try:
        interrupt.check()
        try:
            models = Models.cached(cfg_json)
        except Exception:  # noqa: BLE001 - analyze_video records the model error as this video's failed row
            models = None
        cb = (lambda t: progress(path, t)) if progress is not None else None
        row = analyze_video(path, out_dir, cfg, models=models, force=force, progress=cb, prestarted=prestarted)
    except interrupt.Interrupted as e:
        return {"path": path, "video_id": Path(path).name, "status": "interrupted", "error": str(e)}
    except OutputError as e:
        return {"path": path, "video_id": Path(path).name, "status": "aborted", "error": str(e)}
    if row["status"] == "failed":
        raise VideoFailed(row)
    if row["status"] == "skipped":
        return Completed(name="Cached", data=row, message="already analysed: same file name and content "
                         "(video_id), settings, model and detector, files intact")
    return row


def _row_of(future) -> dict:
    """A video task's row, whatever its final state (a Failed run's row travels in its VideoFailed)."""
    r = future.result(raise_on_failure=False)
    if isinstance(r, VideoFailed):
        return r.row
    if isinstance(r, BaseException):  # crashed outside the library: a failed row of its own
        return {"path": "", "video_id": "(unknown)", "status": "failed", "error": one_line(r)}
    return r


@task(name="annotate-video", cache_policy=NO_CACHE, task_run_name="annotate {video_id}")
def annotate_video_task(out_dir: str, video_id: str, path: str, force: bool = False) -> dict:
    """Write ``OUT/annotated/<video_id>.mp4`` (:func:`fer_pipeline.annotate.annotate_if_stale`: not again when it is
    newer than the video's tables, unless ``force``). Returns a row: ``status`` ``annotated``; ``report-failed``
    with the reason (unreadable video, damaged tables, OUT not writable); ``aborted`` (disk full) or
    ``interrupted``."""
    from fer_pipeline.annotate import annotate_if_stale, annotated_path

    where = str(annotated_path(out_dir, video_id))
    try:
        annotate_if_stale(out_dir, video_id, path or None, force=force)
    except interrupt.Interrupted as e:
        return {"path": path, "video_id": video_id, "status": "interrupted", "error": str(e)}
    except OSError as e:
        return {"path": where, "video_id": video_id, "status": "aborted" if is_disk_full(e) else "report-failed",
                "error": str(OutputError.from_os_error(e, out_dir))}
    except ValueError as e:  # VideoError (unreadable video), DamagedOutputError, not analysed
        return {"path": where, "video_id": video_id, "status": "report-failed",
                "error": f"cannot annotate {video_id}: {one_line(e)}"}
    return {"path": where, "video_id": video_id, "status": "annotated", "error": None}


@task(name="render-reports", cache_policy=NO_CACHE)
def render_reports_task(out_dir: str, model_path: str) -> dict:
    """Render every video's report and the index from the Parquet tables.

    Returns:
        ``{"paths": [written files], "error": None}``, or with ``error`` one line: reports that could not be
        rendered (damaged tables), or the output folder full (``"no space left on device: OUT"``).
    """
    from fer_pipeline.report import ReportError, model_card, render_all

    try:
        return {"paths": [str(p) for p in render_all(Path(out_dir), model_card=model_card(model_path))],
                "error": None}
    except ReportError as e:
        return {"paths": [], "error": one_line(e)}
    except OSError as e:
        if is_disk_full(e):
            return {"paths": [], "error": str(OutputError.disk_full(out_dir))}
        raise


@task(name="study", cache_policy=NO_CACHE, task_run_name="study {stimulus}")
def study_task(out_dir: str, manifest_json: str, stimulus: str, cfg_json: str) -> dict:
    """Compute and write one stimulus' study tables from the analysed recordings' tables.

    Returns:
        ``{"stimulus", "respondents": int (with a face), "errors": [one line per row that could not be used],
        "error": None | one line (the step failed: damaged tables, full disk)}``.
    """
    from fer_pipeline.study.manifest import Manifest
    from fer_pipeline.study.run import run_study

    if interrupt.stop_requested():  # the run is stopping: its recordings may not all be there
        return {"stimulus": stimulus, "respondents": 0, "errors": [], "error": "interrupted"}
    cfg = PipelineConfig.model_validate_json(cfg_json)
    doc = json.loads(manifest_json)
    manifest = Manifest.from_records(doc["rows"], doc["attributes"], doc["source"])
    try:
        tables = run_study(out_dir, manifest, cfg.study, stimuli=[stimulus])
    except OSError as e:
        return {"stimulus": stimulus, "respondents": 0, "errors": [],
                "error": str(OutputError.from_os_error(e, out_dir))}
    except Exception as e:  # noqa: BLE001 - one stimulus' failure is reported, the others go on
        return {"stimulus": stimulus, "respondents": 0, "errors": [], "error": one_line(e)}
    return {"stimulus": stimulus, "respondents": tables.respondents_with_face(stimulus), "errors": tables.errors,
            "error": None}


@task(name="render-studies", cache_policy=NO_CACHE)
def render_studies_task(out_dir: str, cfg_json: str) -> dict:
    """Render ``OUT/studies/<stimulus>.html`` for every stimulus of the folder and ``OUT/studies/index.html``.

    Returns:
        ``{"paths": [...], "error": None | one line}``.
    """
    from fer_pipeline.report.study import render_studies

    cfg = PipelineConfig.model_validate_json(cfg_json)
    try:
        return {"paths": [str(p) for p in render_studies(Path(out_dir), cfg.study)], "error": None}
    except OSError as e:
        return {"paths": [], "error": str(OutputError.from_os_error(e, out_dir))}
    except Exception as e:  # noqa: BLE001 - the video reports are already written
        return {"paths": [], "error": one_line(e)}


def _task_runner(dask_address: str | None, dask_workers: int):
    if dask_address or dask_workers > 0:
        from prefect_dask import DaskTaskRunner

        if dask_address:
            return DaskTaskRunner(address=dask_address)
        # Local workers are new processes: without PREFECT_API_URL each starts Prefect's ephemeral server, whose 20 s
        # start-up limit a busy 2-core machine exceeded ("Timed out while attempting to connect to ephemeral Prefect
        # API server"); the workers inherit this environment.
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
        return DaskTaskRunner(cluster_kwargs={"n_workers": dask_workers, "threads_per_worker": 1,
                                              "processes": True, "dashboard_address": None})
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=1)  # one video at a time: each already uses both cores


@flow(name="analyze-folder", log_prints=False)
def analyze_folder(paths: list[str], out_dir: str, config: dict | None = None, force: bool = False,
                   reports: bool = True, progress: Callable[[str, float], None] | None = None,
                   prestarted: Any = None, study: str | None = None,
                   on_result: Callable[[dict], None] | None = None):
    """Analyse every recording under ``paths`` into ``out_dir``; returns one summary row per input file, then,
    when reports were rendered and some could not be, a last row with ``status`` ``report-failed`` and the reason.
    When a video or a report failed, the return value is a Failed state (message "N of M videos failed") whose
    data are those rows (:func:`run_analyze` unwraps it). ``prestarted``: a decode process started ahead for one of
    the videos (:func:`fer_pipeline.pipeline.start_decoding_ahead`, in-process task runners only), handed to that
    video's task; its owner closes it after the run. ``on_result``: called with each video's row as it finishes, in
    input order (in-process task runners only).

    A stop request (:mod:`fer_pipeline.interrupt`) ends the run after the current video's step: that video and
    those not started get status ``interrupted`` and no report is rendered. A full output folder stops the run the
    same way (status ``aborted`` on the video that met it; the error says "no space left on device: OUT").

    Study (``study``: a manifest path; or ``paths`` is one folder of subfolders): the manifest is read on every run
    (a scheduled run picks up new respondents), its recordings are analysed with the others, then one ``study`` task
    per stimulus waits for its recordings and writes its tables, and the study pages are rendered. Rows the manifest
    rejects, rows that cannot be used and failed study steps come back as rows with ``status`` ``study-error``
    (``video_id`` names the manifest or the stimulus, ``error`` says why); a study task's summary as ``study``.
    """
    from fer_pipeline.study.manifest import ManifestError, study_for_run

    cfg = PipelineConfig.model_validate(config or {})
    cfg_json = cfg.model_dump_json()
    try:
        manifest, study_errors = study_for_run(paths, study)
    except ManifestError as e:
        manifest, study_errors = None, [one_line(e)]
    annotated = (Path(out_dir) / "annotated").absolute()
    videos = [v for v in list_videos(paths) if not Path(v).absolute().is_relative_to(annotated)]  # OUT inside FOLDER
    if manifest is not None:
        listed = {Path(v).absolute() for v in videos}
        for r in manifest.rows:  # recordings of the manifest outside the folders given
            if r.path is not None and r.path.absolute() not in listed:
                listed.add(r.path.absolute())
                videos.append(r.path)
    try:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        clean_staging(out_dir)
    except OSError as e:
        reason = str(OutputError.from_os_error(e, out_dir))
        return [{"path": str(v), "video_id": Path(v).name, "status": "aborted", "error": reason} for v in videos]
    ahead = Path(str(getattr(prestarted, "path", ""))).absolute() if prestarted is not None else None
    futures = [analyze_video_task.submit(str(v), out_dir, cfg_json, force, progress,
                                         prestarted if Path(v).absolute() == ahead else None) for v in videos]
    study_futures = []
    if manifest is not None and manifest.rows:
        by_path = {Path(v).absolute(): f for v, f in zip(videos, futures)}
        doc = json.dumps({"rows": manifest.to_records(), "attributes": manifest.attributes,
                          "source": manifest.source})
        for stim in manifest.stimuli:
            needs = [by_path[r.path.absolute()] for r in manifest.rows
                     if r.stimulus == stim and r.path is not None and r.path.absolute() in by_path]
            study_futures.append(study_task.submit(out_dir, doc, stim, cfg_json, wait_for=needs))
    results, stopped_here = [], False
    try:
        for f in futures:
            r = _row_of(f)
            if on_result is not None and r["status"] in ("ok", "skipped", "failed"):
                on_result(r)
            if r["status"] == "aborted" and not interrupt.stop_requested():
                interrupt.request_stop(r["error"])  # the videos still queued here are not started
                stopped_here = True
            results.append(r)
    finally:
        if stopped_here:
            interrupt.reset()
    if any(r["status"] in ("interrupted", "aborted") for r in results):
        for f in study_futures:
            f.wait()  # they read tables only; let them end before the caller tears down
        return results
    if cfg.output.annotate:  # after every video: the tables come first, annotated videos are extra
        todo = [r for r in results if r["status"] in ("ok", "skipped")]
        for f in [annotate_video_task.submit(out_dir, r["video_id"], r["path"], force) for r in todo]:
            a = f.result()
            if a["status"] != "annotated":
                results.append(a)
        if any(r["status"] in ("interrupted", "aborted") for r in results):
            return results
    name = Path(manifest.source).name if manifest is not None else "manifest"
    results += [{"path": study or "", "video_id": name, "status": "study-error", "error": e} for e in study_errors]
    for f in study_futures:
        s = f.result()
        if s["error"]:
            results.append({"path": out_dir, "video_id": s["stimulus"], "status": "study-error", "error": s["error"]})
        else:
            results.append({"path": out_dir, "video_id": s["stimulus"], "status": "study",
                            "respondents": s["respondents"]})
        results += [{"path": study or "", "video_id": name, "status": "study-error", "error": e} for e in s["errors"]]
    if reports and cfg.output.reports:
        rendered = render_reports_task(out_dir, str(cfg.classify.model))
        if rendered["error"]:
            status = "aborted" if rendered["error"].startswith("no space left") else "report-failed"
            results.append({"path": str(Path(out_dir) / "index.html"), "video_id": "(reports)", "status": status,
                            "error": rendered["error"]})
        if study_futures:
            pages = render_studies_task(out_dir, cfg_json)
            if pages["error"]:
                results.append({"path": str(Path(out_dir) / "studies"), "video_id": "(study pages)",
                                "status": "report-failed", "error": pages["error"]})
    _artifacts(out_dir, results)
    failed = sum(r["status"] == "failed" for r in results)
    bad = [r for r in results if r["status"] in ("report-failed", "study-error")]
    if failed or bad:
        n = sum(r["status"] in ("ok", "skipped", "failed") for r in results)
        parts = [f"{failed} of {n} videos failed"] if failed else []
        parts += [f"{len(bad)} report or study problem{'s' if len(bad) != 1 else ''}"] if bad else []
        return Failed(message="; ".join(parts), data=results)
    return results


def _artifacts(out_dir: str, results: list[dict]) -> None:
    """A table artifact of the run's results and link artifacts to the index, the study pages and each report
    (Prefect's UI lists them with the flow run). Never fails the run: artifacts are a view."""
    try:
        from prefect.artifacts import create_link_artifact, create_table_artifact

        rows = [{"video_id": r.get("video_id"), "status": r.get("status"), "duration_s": r.get("duration_s"),
                 "viewers": r.get("viewers"), "faces": r.get("faces_detected"),
                 "error": r.get("error") or r.get("note") or ""} for r in results]
        create_table_artifact(table=rows, key="fer-pipeline-results",
                              description=f"fer-pipeline results in {Path(out_dir).absolute()}")
        out = Path(out_dir).absolute()
        links = [("fer-pipeline-index", out / "index.html", "run index"),
                 ("fer-pipeline-studies", out / "studies" / "index.html", "study pages")]
        links += [(f"report-{r['video_id']}"[:100], out / "reports" / f"{r['video_id']}.html", f"report {r['path']}")
                  for r in results if r.get("status") in ("ok", "skipped")][:50]
        for key, target, text in links:
            if target.is_file():
                create_link_artifact(link=target.as_uri(), link_text=text, key=key)
    except Exception:  # noqa: BLE001 - e.g. no API to write to; the results are in the tables
        logger.debug("artifacts not written", exc_info=True)


def run_analyze(paths: list[str], out_dir: str, cfg: PipelineConfig, force: bool = False,
                dask_address: str | None = None, dask_workers: int = 0,
                progress: Callable[[str, float], None] | None = None, prestarted: Any = None,
                study: str | None = None, on_result: Callable[[dict], None] | None = None) -> list[dict]:
    """Run :func:`analyze_folder` with the task runner chosen by the Dask options (library entry for the CLI) and
    return its rows, whatever the flow run's final state; ``prestarted``: a decode process started ahead for one of
    the videos, or ``None`` (the caller owns and closes it)."""
    runner = _task_runner(dask_address, dask_workers)
    if dask_address or dask_workers > 0:
        progress = prestarted = on_result = None  # callbacks and decode processes cannot cross process boundaries
    f = analyze_folder.with_options(task_runner=runner)
    state = f(paths=[str(p) for p in paths], out_dir=str(out_dir), config=json.loads(cfg.model_dump_json()),
              force=force, progress=progress, prestarted=prestarted, study=study, on_result=on_result,
              return_state=True)
    rows = state.result(raise_on_failure=False)
    if isinstance(rows, BaseException):  # the flow itself crashed
        raise rows
    return rows


def serve_folder(folder: str, out_dir: str, cfg: PipelineConfig, interval_s: float | None = None,
                 cron: str | None = None, name: str = "fer-pipeline-watch", limit: int = 1,
                 study: str | None = None) -> None:
    """Serve a deployment that re-scans ``folder`` on a schedule; already analysed files are skipped.

    Needs a Prefect server (``PREFECT_API_URL`` set before Prefect is imported): Prefect's ephemeral mode runs no
    scheduler. The CLI starts one with :func:`fer_pipeline.flows.server.start_local_server` when none is configured.
    With ``study`` (a manifest path, read again on every run), the study tables and pages follow new respondents.

    Serving a deployment name again with other arguments replaces it: the deployment is updated first, then the
    runs it had scheduled with other parameters are deleted, so no run with the old folder, output or settings
    starts later (:func:`drop_stale_runs`).
    """
    from prefect import serve
    from prefect.runner import Runner

    # Prefect's runner answers SIGTERM with sys.exit() inside its event loop, which leaves tracebacks of cancelled
    # tasks on the console; answered as Ctrl-C instead, serve() shuts down as it does on Ctrl-C (quietly)
    Runner.handle_sigterm = _sigterm_as_ctrl_c
    params = {"paths": [str(folder)], "out_dir": str(out_dir), "config": json.loads(cfg.model_dump_json()),
              "study": str(Path(study).absolute()) if study else None}
    deployment = analyze_folder.to_deployment(name=name, interval=interval_s, cron=cron, parameters=params)
    deployment_id = deployment.apply()
    dropped = drop_stale_runs(deployment_id, params)
    if dropped:
        logger.warning("deployment %s: %d run(s) scheduled with earlier arguments deleted", name, dropped)
    serve(deployment, limit=limit)


def _sigterm_as_ctrl_c(self, *args) -> None:
    # the loop's tasks are cancelled while a run's connection to the runner is still open: asyncio logs that
    # cancellation as an error with a traceback; from here on it is the expected end, not an error
    logging.getLogger("asyncio").addFilter(_not_cancelled)
    raise KeyboardInterrupt


def _not_cancelled(record: logging.LogRecord) -> bool:
    import asyncio

    exc = record.exc_info[1] if record.exc_info else None
    return not isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt))


def drop_stale_runs(deployment_id, params: dict) -> int:
    """Delete the deployment's scheduled runs whose parameters are not ``params``; returns how many.

    Prefect's scheduler creates runs ahead of time with the parameters the deployment had then; updating the
    deployment leaves them as they are.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    want = json.loads(json.dumps(params))
    dropped = 0
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(
                type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))), limit=200)
        for run in runs:
            if json.loads(json.dumps(run.parameters, default=str)) != want:
                client.delete_flow_run(run.id)
                dropped += 1
    return dropped
