"""Prefect flow ``analyze-folder``: recordings (files or folders) -> Parquet tables and HTML reports.

Thin by design: each task calls one library function. One task per video analyses it (decode ... store); one task
renders the reports of the run. A video that fails is recorded as a ``failed`` row by the library and the others go
on. Runs in Prefect's local ephemeral mode (no server to start). With ``dask_address`` (or ``dask_workers`` > 0) the
videos are spread over a Dask cluster through prefect-dask's ``DaskTaskRunner``.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Callable

from prefect import flow, task
from prefect.cache_policies import NONE as NO_CACHE

from fer_pipeline.config import PipelineConfig
from fer_pipeline.pipeline import Models, analyze_video, list_videos
from fer_pipeline.store import clean_staging

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=2)
def _models(cfg_json: str) -> Models:
    """Models per worker process, built once per configuration (ONNX sessions cannot be pickled to workers)."""
    return Models.load(PipelineConfig.model_validate_json(cfg_json))


@task(name="analyze-video", cache_policy=NO_CACHE, task_run_name="analyze {path}")
def analyze_video_task(path: str, out_dir: str, cfg_json: str, force: bool = False,
                       progress: Callable[[str, float], None] | None = None) -> dict:
    """Analyse one video; returns its ``videos`` row (status ok / failed / skipped)."""
    cfg = PipelineConfig.model_validate_json(cfg_json)
    try:
        models = _models(cfg_json)
    except Exception:  # noqa: BLE001 - analyze_video records the model error as this video's failed row
        models = None
    cb = (lambda t: progress(path, t)) if progress is not None else None
    return analyze_video(path, out_dir, cfg, models=models, force=force, progress=cb)


@task(name="render-reports", cache_policy=NO_CACHE)
def render_reports_task(out_dir: str, model_path: str) -> list[str]:
    """Render every video's report and the index from the Parquet tables."""
    from fer_pipeline.report import render_all

    card_path = Path(model_path).with_suffix(".json")
    card = json.loads(card_path.read_text()) if card_path.is_file() else None
    return [str(p) for p in render_all(Path(out_dir), model_card=card)]


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
                   reports: bool = True, progress: Callable[[str, float], None] | None = None) -> list[dict]:
    """Analyse every recording under ``paths`` into ``out_dir``; returns one summary row per input file."""
    cfg = PipelineConfig.model_validate(config or {})
    cfg_json = cfg.model_dump_json()
    videos = list_videos(paths)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    clean_staging(out_dir)
    futures = [analyze_video_task.submit(str(v), out_dir, cfg_json, force, progress) for v in videos]
    results = [f.result() for f in futures]
    if reports and cfg.output.reports:
        render_reports_task(out_dir, str(cfg.classify.model))
    return results


def run_analyze(paths: list[str], out_dir: str, cfg: PipelineConfig, force: bool = False,
                dask_address: str | None = None, dask_workers: int = 0,
                progress: Callable[[str, float], None] | None = None) -> list[dict]:
    """Run :func:`analyze_folder` with the task runner chosen by the Dask options (library entry for the CLI)."""
    runner = _task_runner(dask_address, dask_workers)
    if dask_address or dask_workers > 0:
        progress = None  # callbacks cannot cross process boundaries
    f = analyze_folder.with_options(task_runner=runner)
    return f(paths=[str(p) for p in paths], out_dir=str(out_dir), config=json.loads(cfg.model_dump_json()),
             force=force, progress=progress)


def serve_folder(folder: str, out_dir: str, cfg: PipelineConfig, interval_s: float | None = None,
                 cron: str | None = None, name: str = "fer-pipeline-watch", limit: int = 1) -> None:
    """Serve a deployment that re-scans ``folder`` on a schedule; already analysed files are skipped.

    Needs a Prefect server (``PREFECT_API_URL`` set before Prefect is imported): Prefect's ephemeral mode runs no
    scheduler. The CLI starts one with :func:`flows.server.start_local_server` when none is configured.
    """
    analyze_folder.serve(name=name, interval=interval_s, cron=cron, limit=limit,
                         parameters={"paths": [str(folder)], "out_dir": str(out_dir),
                                     "config": json.loads(cfg.model_dump_json())})
