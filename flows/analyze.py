"""Prefect flow ``analyze-folder``: recordings (files or folders) -> Parquet tables and HTML reports.

Thin by design: each task calls one library function. One task per video analyses it (decode ... store); with a
study (a manifest, or a folder of subfolders), one task per stimulus computes its study tables once the recordings
it needs are done; one task renders the reports of the run and one the study pages. A video that fails is recorded as a ``failed`` row by the library and the others go
on. Runs in Prefect's local ephemeral mode (no server to start). With ``dask_address`` (or ``dask_workers`` > 0) the
videos are spread over a Dask cluster through prefect-dask's ``DaskTaskRunner``.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any, Callable

from prefect import flow, task
from prefect.cache_policies import NONE as NO_CACHE

from fer_pipeline import interrupt
from fer_pipeline.config import PipelineConfig
from fer_pipeline.errors import OutputError, is_disk_full, one_line
from fer_pipeline.inputs import list_videos
from fer_pipeline.models import Models
from fer_pipeline.pipeline import analyze_video
from fer_pipeline.store import clean_staging

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=2)
def _models(cfg_json: str) -> Models:
    """Models per worker process, built once per configuration (ONNX sessions cannot be pickled to workers)."""
    return Models.load(PipelineConfig.model_validate_json(cfg_json))


@task(name="analyze-video", cache_policy=NO_CACHE, task_run_name="analyze {path}")
def analyze_video_task(path: str, out_dir: str, cfg_json: str, force: bool = False,
                       progress: Callable[[str, float], None] | None = None, prestarted: Any = None) -> dict:
    """Analyse one video; returns its ``videos`` row (status ok / failed / skipped), or a row with status
    ``interrupted`` (a stop was requested: nothing of it written) or ``aborted`` (the output folder cannot be written:
    ``error`` says why; the run stops). ``prestarted``: a :class:`fer_pipeline.decode.Prestarted` for this video, or
    ``None`` (see :func:`fer_pipeline.pipeline.analyze_video`)."""
    cfg = PipelineConfig.model_validate_json(cfg_json)
    try:
        interrupt.check()
        try:
            models = _models(cfg_json)
        except Exception:  # noqa: BLE001 - analyze_video records the model error as this video's failed row
            models = None
        cb = (lambda t: progress(path, t)) if progress is not None else None
        return analyze_video(path, out_dir, cfg, models=models, force=force, progress=cb, prestarted=prestarted)
    except interrupt.Interrupted as e:
        return {"path": path, "video_id": Path(path).name, "status": "interrupted", "error": str(e)}
    except OutputError as e:
        return {"path": path, "video_id": Path(path).name, "status": "aborted", "error": str(e)}


@task(name="render-reports", cache_policy=NO_CACHE)
def render_reports_task(out_dir: str, model_path: str) -> dict:
    """Render every video's report and the index from the Parquet tables.

    Returns:
        ``{"paths": [written files], "error": None}``, or with ``error`` one line: reports that could not be
        rendered (damaged tables), or the output folder full (``"no space left on device: OUT"``).
    """
    from fer_pipeline.report import ReportError, render_all

    card_path = Path(model_path).with_suffix(".json")
    card = json.loads(card_path.read_text()) if card_path.is_file() else None
    try:
        return {"paths": [str(p) for p in render_all(Path(out_dir), model_card=card)], "error": None}
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
    ok = tables.respondents["status"] == "ok" if len(tables.respondents) else []
    return {"stimulus": stimulus, "respondents": int(sum(ok)), "errors": tables.errors, "error": None}


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
        return DaskTaskRunner(cluster_kwargs={"n_workers": dask_workers, "threads_per_worker": 1,
                                              "processes": True, "dashboard_address": None})
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=1)  # one video at a time: each already uses both cores


@flow(name="analyze-folder", log_prints=False)
def analyze_folder(paths: list[str], out_dir: str, config: dict | None = None, force: bool = False,
                   reports: bool = True, progress: Callable[[str, float], None] | None = None,
                   prestarted: Any = None, study: str | None = None) -> list[dict]:
    """Analyse every recording under ``paths`` into ``out_dir``; returns one summary row per input file, then,
    when reports were rendered and some could not be, a last row with ``status`` ``report-failed`` and the reason.
    ``prestarted``: the first video's decode process started ahead (:func:`fer_pipeline.pipeline.start_decoding_ahead`,
    in-process task runners only), handed to that video's task; its owner closes it after the run.

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
    videos = list_videos(paths)
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
    futures = [analyze_video_task.submit(str(v), out_dir, cfg_json, force, progress, prestarted if i == 0 else None)
               for i, v in enumerate(videos)]
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
            r = f.result()
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
    return results


def run_analyze(paths: list[str], out_dir: str, cfg: PipelineConfig, force: bool = False,
                dask_address: str | None = None, dask_workers: int = 0,
                progress: Callable[[str, float], None] | None = None, prestarted: Any = None,
                study: str | None = None) -> list[dict]:
    """Run :func:`analyze_folder` with the task runner chosen by the Dask options (library entry for the CLI);
    ``prestarted``: the first video's decode process started ahead, or ``None`` (the caller owns and closes it)."""
    runner = _task_runner(dask_address, dask_workers)
    if dask_address or dask_workers > 0:
        progress = prestarted = None  # callbacks and decode processes cannot cross process boundaries
    f = analyze_folder.with_options(task_runner=runner)
    return f(paths=[str(p) for p in paths], out_dir=str(out_dir), config=json.loads(cfg.model_dump_json()),
             force=force, progress=progress, prestarted=prestarted, study=study)


def serve_folder(folder: str, out_dir: str, cfg: PipelineConfig, interval_s: float | None = None,
                 cron: str | None = None, name: str = "fer-pipeline-watch", limit: int = 1,
                 study: str | None = None) -> None:
    """Serve a deployment that re-scans ``folder`` on a schedule; already analysed files are skipped.

    Needs a Prefect server (``PREFECT_API_URL`` set before Prefect is imported): Prefect's ephemeral mode runs no
    scheduler. The CLI starts one with :func:`flows.server.start_local_server` when none is configured. With
    ``study`` (a manifest path, read again on every run), the study tables and pages follow new respondents.
    """
    analyze_folder.serve(name=name, interval=interval_s, cron=cron, limit=limit,
                         parameters={"paths": [str(folder)], "out_dir": str(out_dir),
                                     "config": json.loads(cfg.model_dump_json()),
                                     "study": str(Path(study).absolute()) if study else None})
