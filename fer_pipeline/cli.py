"""``fer-pipeline``: the command line. Thin: it parses options, configures logging and calls the flow or library."""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from fer_pipeline.errors import one_line

def _plain_argument_help() -> None:
    """Typer's plain help prints an argument's Python type beside its name (``PATH <list[Path]>``); an argument
    given a metavar shows just that, as options do."""
    from typer.core import TyperArgument

    shown = getattr(TyperArgument, "display_type_rich", None)
    if shown is not None and not getattr(shown, "_metavar_only", False):
        def display_type_rich(self, ctx):
            return None if self.metavar else shown(self, ctx)

        display_type_rich._metavar_only = True
        TyperArgument.display_type_rich = display_type_rich


_plain_argument_help()
app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Per-viewer, per-second emotion timelines and engagement reports from recordings of "
                       "audiences (webcam viewers or a room camera).")
console = Console(stderr=True, soft_wrap=True)  # one-line messages stay one line (no wrapping)
logger = logging.getLogger("fer_pipeline.cli")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("prefect", "distributed", "httpx", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING if not verbose else logging.INFO)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_not_a_failed_video_again)


def _not_a_failed_video_again(record: logging.LogRecord) -> bool:
    """Prefect logs a failed video's task run as an error; the pipeline's warning and the summary already say it
    (the record still reaches the run's logs in Prefect)."""
    return not (record.name.startswith("prefect") and "VideoFailed" in record.getMessage())


def _load_cfg(config: Optional[Path], **overrides):
    from fer_pipeline.config import PipelineConfig

    try:
        return PipelineConfig.load(config, {k: v for k, v in overrides.items() if v is not None})
    except Exception as e:  # noqa: BLE001 - a bad config is a one-line error for the user
        console.print(f"[red]error:[/red] invalid configuration: {one_line(e, 500)}")
        raise typer.Exit(2) from e


def _summary(results: list[dict]) -> Table:
    t = Table(title="fer-pipeline run")
    for c in ("video_id", "status", "duration s", "viewers", "tracks", "faces", "x real time", "error / note"):
        t.add_column(c, overflow="fold")
    for r in results:
        dur, proc = r.get("duration_s"), r.get("processing_s")
        speed = f"{dur / proc:.1f}" if dur and proc and r["status"] == "ok" else ""
        color = {"ok": "green", "failed": "red", "skipped": "yellow"}.get(r["status"], "red")
        t.add_row(r["video_id"], f"[{color}]{r['status']}[/{color}]", f"{dur:.1f}" if dur else "",
                  str(r.get("viewers") or 0), str(r.get("tracks") or 0), str(r.get("faces_detected") or 0), speed,
                  r.get("error") or r.get("note") or "")
    return t


_SCAN_HELP = ("video files and/or folders. Folders are scanned recursively for files ending in "
              ".mp4 .mov .m4v .mkv .avi .webm .mpg .mpeg .wmv .flv .3gp .ts (any case), following symbolic links; "
              "hidden files and folders (names starting with '.') are skipped, a broken link gets a failed row. A "
              "file named here is analysed whatever its extension.")


@app.command()
def analyze(
    paths: list[Path] = typer.Argument(..., metavar="PATH", help=_SCAN_HELP),
    out: Path = typer.Option(Path("out"), "--out", "-o", metavar="OUT",
                             help="output folder for Parquet tables and reports"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", metavar="YAML",
                                          help="pipeline settings (see configs/pipeline.yaml) [default: built-in]"),
    sample_fps: Optional[float] = typer.Option(None, metavar="HZ",
                                               help="frames analysed per second of video [default: 5]"),
    model: Optional[Path] = typer.Option(None, metavar="ONNX",
                                         help="emotion model .onnx with its .json card beside it [default: the "
                                              "shipped FER2013 model]"),
    detector: Optional[str] = typer.Option(None, metavar="NAME",
                                           help="face detector: centerface or insightface [default: centerface]"),
    force: bool = typer.Option(False, "--force", help="re-analyse videos already done"),
    no_report: bool = typer.Option(False, "--no-report", help="skip HTML reports"),
    save_embeddings: bool = typer.Option(False, "--save-embeddings",
                                         help="also write each viewer's face embeddings to OUT/embeddings/ "
                                              "(biometric data, for matching people across recordings; off by "
                                              "default, never in reports)"),
    annotate: bool = typer.Option(False, "--annotate", help="also write OUT/annotated/<video_id>.mp4: every face's "
                                  "box, viewer id and dominant emotion drawn on the recording (H.264; about 40 CPU s "
                                  "per minute of 720p video)"),
    study: Optional[Path] = typer.Option(None, "--study", metavar="MANIFEST",
                                         help="study manifest (CSV or YAML): recording, stimulus, offset_s "
                                              "[, duration_s, respondent, attributes...]; recordings relative to "
                                              "FOLDER. Writes OUT/{stimulus,respondents,segments} and "
                                              "OUT/studies/*.html. Without it, one FOLDER of subfolders is a study "
                                              "with a stimulus per subfolder and offset 0"),
    dask_address: Optional[str] = typer.Option(None, metavar="URL",
                                               help="run on an existing Dask cluster, e.g. tcp://host:8786"),
    dask_workers: int = typer.Option(0, metavar="N",
                                     help="start a local Dask cluster with this many workers (0 = no Dask)"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="log what each stage does"),
) -> None:
    """Analyse recordings into OUT/{faces,timeline,audience,videos} (Parquet) and OUT/reports/*.html.

    Studies (--study): every respondent's rows are put on stimulus time (second = floor(timestamp_s - offset_s)
    inside [offset_s, offset_s + duration_s)) and aggregated per stimulus second over respondents with bootstrap
    confidence intervals; OUT/studies/index.html compares the stimuli. A manifest row that cannot be used gets a
    one-line error naming it; the others run.

    A video already analysed (same video_id: same file name and content; a renamed copy is another video) is skipped when its results were made with the same settings, model and
    detector and its files are intact; otherwise it is analysed again and the summary says why. --force re-analyses
    everything. When every video is done already, the command finishes without starting Prefect (no flow run is
    recorded). A second run on the same OUT waits for the videos the first is analysing.

    Progress: on a terminal, a bar per video and one for the run (videos done, video seconds, time left); otherwise
    one line per finished video on stderr.

    Ctrl-C (or SIGTERM) stops within seconds: finished videos are kept, the one in progress is left as it was, and
    the same command later goes on where it stopped; a second Ctrl-C quits at once.

    Exit codes: 0 all ok or skipped; 1 a file failed, a report could not be rendered, or the output folder cannot be
    written (e.g. full); 2 bad arguments; 130 / 143 interrupted by SIGINT / SIGTERM.
    """
    _setup_logging(verbose)
    from fer_pipeline import interrupt

    interrupt.reset()
    cfg = _load_cfg(config, **{"decode.sample_fps": sample_fps, "classify.model": model,
                               "detect.backend": detector, "output.reports": False if no_report else None,
                               "output.save_embeddings": True if save_embeddings else None,
                               "output.annotate": True if annotate else None})
    from fer_pipeline.inputs import list_videos

    if study is not None:
        _check_manifest(study, paths)
    annotated = (out / "annotated").absolute()  # OUT inside a scanned folder: its annotated videos are no input
    videos = [v for v in list_videos(paths) if not Path(v).absolute().is_relative_to(annotated)]
    if not videos:
        console.print(f"[red]error:[/red] no video files found in {', '.join(map(str, paths))}")
        raise typer.Exit(2)
    if not force and not (dask_address or dask_workers > 0) and _finish_if_all_done(videos, out, cfg, study, paths):
        return
    from fer_pipeline.pipeline import start_decoding_ahead

    prestarted = None  # the first video's decode process, decoding while Prefect is imported and the models load
    if not (dask_address or dask_workers > 0):  # Dask workers are other processes: nothing to take over there
        prestarted = start_decoding_ahead(videos[0], cfg)
    server = None
    if not os.environ.get("PREFECT_API_URL"):
        if "prefect" in sys.modules:  # settings are read at import: the URL must be set first
            console.print("[red]error:[/red] internal: prefect imported before the server URL was set")
            raise typer.Exit(2)
        from fer_pipeline.flows.server import TemporaryServer

        server = TemporaryServer()  # starts while Prefect is imported; waited for just before the flow
    try:
        _analyze(videos, out, cfg, force, dask_address, dask_workers, server, prestarted, study, paths)
    finally:
        if prestarted is not None:
            prestarted.close()  # ends it if nothing took it over
        if server is not None:
            _flush_run_logs()
            server.stop()
            # records a flow thread still ending sends after this fail to reach the stopped server; Prefect's log
            # worker reports each failure on stderr only while logging.raiseExceptions is set
            logging.raiseExceptions = False


def _flush_run_logs() -> None:
    """Before the temporary Prefect server stops: stop sending log records to it (a flow thread still ending after
    an interrupt logs on) and send those already queued, so that Prefect does not print "Error logging to API" at
    exit."""
    if "prefect" not in sys.modules:
        return
    try:
        from prefect.logging.handlers import APILogHandler

        for lg in [logging.getLogger(), *[v for v in logging.root.manager.loggerDict.values()
                                          if isinstance(v, logging.Logger)]]:
            for h in [h for h in lg.handlers if isinstance(h, APILogHandler)]:
                lg.removeHandler(h)
        APILogHandler.flush()
    except Exception:  # noqa: BLE001 - logs are a view; the run's outcome is already known
        logger.debug("run logs not flushed", exc_info=True)


def _finish_if_all_done(videos, out: Path, cfg, study: Optional[Path], paths: list[Path]) -> bool:
    """When every video's stored results can be reused, finish here without Prefect: the study step and pages (if
    any) and the index (only when missing or older than the tables) are made in this process, the summary printed,
    and the command exits 0. Returns False (nothing done) when any video needs analysing, or a model cannot load."""
    if not (out / "videos").is_dir():
        return False
    from fer_pipeline.models import Models
    from fer_pipeline.reuse import stored_results

    try:
        rows = stored_results(videos, out, cfg, Models.cached(cfg.model_dump_json()))
    except Exception:  # noqa: BLE001 - the flow reports model errors per video
        return False
    if rows is None:
        return False
    from fer_pipeline.study.manifest import ManifestError, study_for_run

    studies: list[dict] = []
    try:
        manifest, errors = study_for_run([str(p) for p in paths], str(study) if study else None)
    except ManifestError as e:
        manifest, errors = None, [one_line(e)]
    name = Path(manifest.source).name if manifest is not None else "manifest"
    studies += [{"video_id": name, "status": "study-error", "error": e} for e in errors]
    report_errors: list[str] = []
    try:
        if manifest is not None and manifest.rows:
            from fer_pipeline.study.run import run_study

            tables = run_study(out, manifest, cfg.study)
            for stim in tables.durations:
                studies.append({"video_id": stim, "status": "study",
                                "respondents": tables.respondents_with_face(stim)})
            studies += [{"video_id": name, "status": "study-error", "error": e} for e in tables.errors]
        if cfg.output.reports:
            report_errors = _refresh_reports(out, cfg, manifest is not None and bool(manifest.rows))
    except OSError as e:
        from fer_pipeline.errors import OutputError

        console.print(f"[red]error:[/red] {OutputError.from_os_error(e, out)}")
        raise typer.Exit(1) from None
    if cfg.output.annotate:
        report_errors += _annotate_done(rows, out)
    _report_run(rows, studies, [{"status": "report-failed", "error": e} for e in report_errors], out)
    return True


def _annotate_done(rows: list[dict], out: Path) -> list[str]:
    """``--annotate`` when every video was done already (no flow run): OUT/annotated/<video_id>.mp4 for each ok or
    skipped row whose annotated video is missing or older than its tables. Returns one line per problem; exits
    130 / 143 when interrupted."""
    from fer_pipeline import interrupt
    from fer_pipeline.annotate import annotate_if_stale
    from fer_pipeline.errors import OutputError

    errors: list[str] = []

    def run() -> None:
        for r in rows:
            if r["status"] not in ("ok", "skipped"):
                continue
            try:
                annotate_if_stale(out, r["video_id"], r.get("path") or None)
            except interrupt.Interrupted:
                return
            except OSError as e:
                errors.append(str(OutputError.from_os_error(e, out)))
                return
            except ValueError as e:
                errors.append(f"cannot annotate {r['video_id']}: {one_line(e)}")

    _, signum = interrupt.run_interruptible(
        run, on_signal=lambda s: console.print("interrupted: stopping (press Ctrl-C again to quit at once)"))
    if signum is not None:
        console.print(f"interrupted: the annotated videos written so far are kept in {out / 'annotated'}; run the "
                      "same command again for the rest")
        raise typer.Exit(128 + signum)
    return errors


def _refresh_reports(out: Path, cfg, with_study: bool) -> list[str]:
    """Re-render the reports and the index when the index is missing or older than a ``videos`` part; the study
    pages when the run has a study. Returns one line per problem."""
    from fer_pipeline.report import ReportError, model_card, render_all

    errors = []
    index = out / "index.html"
    parts = list((out / "videos").glob("video_id=*/*.parquet"))
    newest = max((p.stat().st_mtime for p in parts), default=0.0)
    if not index.is_file() or index.stat().st_mtime < newest or with_study:
        try:
            render_all(out, model_card=model_card(cfg.classify.model))
        except ReportError as e:
            errors.append(one_line(e))
    if with_study:
        from fer_pipeline.report.study import render_studies

        try:
            render_studies(out, cfg.study)
        except (ValueError, FileNotFoundError) as e:
            errors.append(one_line(e))
    return errors


def _check_manifest(study: Path, paths: list[Path]) -> None:
    """Exit 2 with one line when the manifest cannot be used at all (the flow reports bad rows itself)."""
    from fer_pipeline.study.manifest import ManifestError, study_for_run

    if not study.is_file():
        console.print(f"[red]error:[/red] study manifest not found: {study}")
        raise typer.Exit(2)
    try:
        study_for_run([str(p) for p in paths], str(study))
    except ManifestError as e:
        console.print(f"[red]error:[/red] {one_line(e, 500)}")
        raise typer.Exit(2) from None


class _RunProgress:
    """What a run shows while it works: on a terminal, a bar per video and one for the run (videos done, video
    seconds done of the total, time left from the pace so far); otherwise one line per finished video on stderr."""

    def __init__(self, videos) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.videos = [str(v) for v in videos]
        self.tty = console.is_terminal
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[t]}"),
                                 TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(), console=console,
                                 transient=False, disable=not self.tty)
        self.bars: dict[str, int] = {}
        self.durations: dict[str, float | None] = {}
        self.done = 0
        self.seconds_done = 0.0
        self.total_s = None
        self.run_bar = self.progress.add_task(f"{len(self.videos)} videos", total=None,
                                              t=f"0/{len(self.videos)}") if self.tty else None
        if self.tty:  # the run's length in video seconds, probed in the background (cheap, but not free on 1000s)
            import threading

            threading.Thread(target=self._probe_all, daemon=True, name="probe-durations").start()

    def _duration(self, path: str) -> float | None:
        if path not in self.durations:
            from fer_pipeline.decode import probe

            try:
                self.durations[path] = probe(path).duration_s
            except Exception:  # noqa: BLE001 - only for the bars' lengths
                self.durations[path] = None
        return self.durations[path]

    def _probe_all(self) -> None:
        total = sum(d for d in (self._duration(p) for p in self.videos) if d)
        self.total_s = total or None
        self.progress.update(self.run_bar, total=self.total_s)

    def on_progress(self, path: str, t: float) -> None:
        if not self.tty:
            return
        if path not in self.bars:
            self.bars[path] = self.progress.add_task(Path(path).name[:40], total=self._duration(path), t="")
        self.progress.update(self.bars[path], completed=t, t=f"{t:.0f} s")
        self.progress.update(self.run_bar, completed=self.seconds_done + t)

    def on_result(self, row: dict) -> None:
        self.done += 1
        dur = row.get("duration_s") or self._duration(str(row.get("path"))) or 0.0
        self.seconds_done += float(dur or 0.0)
        n = len(self.videos)
        if self.tty:
            self.progress.update(self.run_bar, completed=self.seconds_done,
                                 t=f"{self.done}/{n} · {self.seconds_done:.0f} s of video")
            return
        proc = row.get("processing_s")
        speed = f", {dur / proc:.1f}x real time" if row["status"] == "ok" and dur and proc else ""
        why = f": {row.get('error') or row.get('note')}" if (row.get("error") or row.get("note")) else ""
        console.print(f"[{self.done}/{n}] {row['status']} {row.get('path')} ({float(dur or 0):.1f} s{speed}){why}")

    def finish(self) -> None:
        for tid in self.bars.values():
            task = self.progress.tasks[tid]
            self.progress.update(tid, completed=task.total or task.completed)


def _analyze(videos, out: Path, cfg, force: bool, dask_address, dask_workers: int, server, prestarted=None,
             study: Optional[Path] = None, paths: Optional[list[Path]] = None) -> None:
    from fer_pipeline.flows.analyze import run_analyze
    from fer_pipeline.interrupt import run_interruptible

    shown = _RunProgress(videos)

    def run() -> list[dict]:
        if server is not None:
            server.wait_ready()
        return run_analyze([str(p) for p in paths] if paths else [str(v) for v in videos], str(out), cfg,
                           force=force, dask_address=dask_address, dask_workers=dask_workers,
                           progress=shown.on_progress, prestarted=prestarted, study=str(study) if study else None,
                           on_result=shown.on_result)

    def on_signal(signum: int) -> None:
        console.print("interrupted: stopping (press Ctrl-C again to quit at once)")

    with shown.progress:
        results, signum = run_interruptible(run, on_signal=on_signal)
        shown.finish()
    studies = [r for r in results if r["status"] in ("study", "study-error")]
    results = [r for r in results if r not in studies]
    done = [r for r in results if r["status"] in ("ok", "skipped", "failed")]
    aborted = [r for r in results if r["status"] == "aborted"]
    if aborted and signum is None:
        console.print(f"[red]error:[/red] {aborted[0]['error']} ({len(done)} of {len(videos)} videos finished and "
                      "kept; free space and run the same command again)")
        raise typer.Exit(1)
    if signum is not None or any(r["status"] == "interrupted" for r in results):
        rest = ("run the same command again to analyse the rest" if len(done) < len(videos) else
                f"`fer-pipeline report {out}` renders the reports")
        console.print(f"interrupted: {len(done)} of {len(videos)} videos finished and kept in {out}; {rest}")
        raise typer.Exit(128 + (signum or signal.SIGINT))
    _report_run([r for r in results if r["status"] != "report-failed"], studies,
                [r for r in results if r["status"] == "report-failed"], out)


def _report_run(rows: list[dict], studies: list[dict], report_failed: list[dict], out: Path) -> None:
    """Print the summary, the problems and where the outputs are; exit 1 when anything failed, else 0."""
    Console(width=max(Console().width, 140)).print(_summary(rows))
    failed = [r for r in rows if r["status"] == "failed"]
    for r in report_failed:
        console.print(f"[red]error:[/red] {r['error']}")
    study_errors = [r for r in studies if r["status"] == "study-error"]
    for r in study_errors:  # manifest rows name themselves ("study.csv line 4: ..."); a failed step its stimulus
        where = "" if r["error"].startswith(r["video_id"]) or r["video_id"] in r["error"] else f"{r['video_id']}: "
        console.print(f"[red]error:[/red] {where}{r['error']}")
    for r in studies:
        if r["status"] == "study":
            n = r["respondents"]
            console.print(f"study {r['video_id']}: {n} respondent{'s' if n != 1 else ''} with a face")
    index = out / "index.html"
    if index.is_file():
        console.print(f"reports: {index.resolve()}")
    if (out / "studies" / "index.html").is_file() and studies:
        console.print(f"study pages: {(out / 'studies' / 'index.html').resolve()}")
    console.print(f"tables: {out.resolve()}/{{faces,timeline,audience,videos}} "
                  f"({len(rows) - len(failed)} ok/skipped, {len(failed)} failed)")
    raise typer.Exit(1 if failed or report_failed or study_errors else 0)


@app.command("study")
def study_cmd(
    out: Path = typer.Argument(..., metavar="OUT", help="output folder of an earlier `analyze` run"),
    study: Optional[Path] = typer.Option(None, "--study", metavar="MANIFEST",
                                         help="study manifest (CSV or YAML) [default: the one kept in "
                                              "OUT/studies/manifest.json by the last study run]"),
    folder: Optional[Path] = typer.Option(None, "--folder", metavar="FOLDER", help="folder the manifest's recordings are relative "
                                          "to [default: match them to the analysed videos by file name]"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", metavar="YAML",
                                          help="pipeline YAML (its `study` section)"),
    baseline: Optional[str] = typer.Option(None, metavar="METHOD", help="none | lead_in | resting [default: none]"),
    smoothing_s: Optional[float] = typer.Option(None, metavar="SECONDS",
                                                help="Gaussian smoothing sigma, seconds (0 = off) [default: 0.3]"),
    no_report: bool = typer.Option(False, "--no-report", help="skip the study pages"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="log what each step does"),
) -> None:
    """Recompute the study tables OUT/{stimulus,respondents,segments,respondent_seconds} and the pages
    OUT/studies/*.html from the Parquet tables alone (no video is read).

    Exit codes: 0 done; 1 some manifest rows could not be used (each named on one line) or a page failed; 2 bad
    arguments or no manifest.
    """
    _setup_logging(verbose)
    cfg = _load_cfg(config, **{"study.baseline": baseline, "study.smoothing_s": smoothing_s})
    from fer_pipeline.errors import DamagedOutputError, OutputError
    from fer_pipeline.study.manifest import ManifestError, load_manifest
    from fer_pipeline.study.run import run_study
    from fer_pipeline.study.store import read_manifest

    if not (out / "videos").is_dir():
        console.print(f"[red]error:[/red] no `videos` table in {out}: run `fer-pipeline analyze` first")
        raise typer.Exit(2)
    try:
        manifest = load_manifest(study, folder) if study is not None else read_manifest(out)
    except (ManifestError, OSError) as e:
        console.print(f"[red]error:[/red] {one_line(e, 500)}")
        raise typer.Exit(2) from None
    if manifest is None:
        console.print(f"[red]error:[/red] no study manifest kept in {out}: give one with --study MANIFEST")
        raise typer.Exit(2)
    try:
        tables = run_study(out, manifest, cfg.study)
        pages = []
        if not no_report:
            from fer_pipeline.report.study import render_studies

            pages = render_studies(out, cfg.study)
    except DamagedOutputError as e:
        console.print(f"[red]error:[/red] {one_line(e)}")
        raise typer.Exit(1) from None
    except OSError as e:
        console.print(f"[red]error:[/red] {OutputError.from_os_error(e, out)}")
        raise typer.Exit(1) from None
    for line in tables.errors:
        console.print(f"[red]error:[/red] {line}")
    for stim in tables.durations:
        n = tables.respondents_with_face(stim)
        console.print(f"study {stim}: {n} respondent{'s' if n != 1 else ''} with a face, "
                      f"{tables.durations[stim]:.1f} s")
    console.print(f"tables: {out.resolve()}/{{stimulus,respondents,segments,respondent_seconds}}")
    if pages:
        console.print(f"study pages: {(out / 'studies' / 'index.html').resolve()}")
    raise typer.Exit(1 if tables.errors else 0)


@app.command()
def export(
    out: Path = typer.Argument(..., metavar="OUT", help="output folder of an earlier `analyze` run"),
    fmt: str = typer.Option("csv", "--format", "-f", metavar="csv|xlsx", help="csv: one file per table; xlsx: one "
                            "Excel workbook with a sheet per table"),
    to: Path = typer.Option(..., "--to", metavar="DIR", help="folder to write into (created)"),
) -> None:
    """Export the tables (videos, audience, timeline, faces and the study tables) as CSV files or one Excel
    workbook, with the same column names as the Parquet tables."""
    _setup_logging(False)
    from fer_pipeline.errors import DamagedOutputError
    from fer_pipeline.export import export_tables

    if fmt not in ("csv", "xlsx"):
        console.print(f"[red]error:[/red] --format must be csv or xlsx, not {fmt!r}")
        raise typer.Exit(2)
    if not (out / "videos").is_dir():
        console.print(f"[red]error:[/red] no `videos` table in {out}: run `fer-pipeline analyze` first")
        raise typer.Exit(2)
    try:
        paths = export_tables(out, fmt, to)
    except (DamagedOutputError, ValueError) as e:
        console.print(f"[red]error:[/red] {one_line(e)}")
        raise typer.Exit(1) from None
    except OSError as e:
        from fer_pipeline.errors import OutputError

        console.print(f"[red]error:[/red] {OutputError.from_os_error(e, to)}")
        raise typer.Exit(1) from None
    for p in paths:
        console.print(f"wrote {p}")


@app.command()
def annotate(
    out: Path = typer.Argument(..., metavar="OUT", help="output folder of an earlier `analyze` run"),
    videos: list[str] = typer.Argument(..., metavar="VIDEO", help="analysed video files (any path to the same "
                                       "content), or their video_ids"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="log what each step does"),
) -> None:
    """Write OUT/annotated/<video_id>.mp4 for each VIDEO: the recording with every face's box, viewer id and
    dominant emotion with its probability drawn on every frame, coloured by viewer (H.264, upright, same frames,
    frame rate and duration as the source; audio copied when MP4 can hold it). A box is held until its track's next
    sample, at most one sampling interval after the face was last seen. About 40 CPU seconds per minute of 720p
    30 fps video.

    Exit codes: 0 all written; 1 a video could not be annotated (one line each) or OUT cannot be written; 2 no
    analysed videos in OUT; 130 / 143 interrupted (the videos written so far are kept).
    """
    _setup_logging(verbose)
    from fer_pipeline import interrupt
    from fer_pipeline.annotate import annotate_from_output
    from fer_pipeline.errors import OutputError

    interrupt.reset()
    if not (out / "videos").is_dir():
        console.print(f"[red]error:[/red] no `videos` table in {out}: run `fer-pipeline analyze` first")
        raise typer.Exit(2)
    errors: list[str] = []

    def run() -> None:
        for v in videos:
            try:
                console.print(f"wrote {annotate_from_output(out, v)}")
            except interrupt.Interrupted:
                return
            except OSError as e:  # OUT cannot be written: the others would fail the same way
                errors.append(str(OutputError.from_os_error(e, out)))
                return
            except ValueError as e:  # not analysed, unreadable video, damaged tables
                errors.append(one_line(e))

    _, signum = interrupt.run_interruptible(
        run, on_signal=lambda s: console.print("interrupted: stopping (press Ctrl-C again to quit at once)"))
    for e in errors:
        console.print(f"[red]error:[/red] {e}")
    if signum is not None:
        console.print(f"interrupted: the annotated videos written so far are kept in {out / 'annotated'}")
        raise typer.Exit(128 + signum)
    raise typer.Exit(1 if errors else 0)


@app.command()
def serve(
    folder: Path = typer.Argument(..., metavar="FOLDER", help="folder to watch for new recordings"),
    out: Path = typer.Option(Path("out"), "--out", "-o", metavar="OUT", help="output folder"),
    interval: Optional[float] = typer.Option(None, metavar="SECONDS",
                                             help="re-scan every this many seconds (this or --cron is required)"),
    cron: Optional[str] = typer.Option(None, metavar="EXPR",
                                       help="re-scan on this cron schedule, e.g. '*/15 * * * *' (this or "
                                            "--interval is required)"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", metavar="YAML",
                                          help="pipeline settings [default: built-in]"),
    name: str = typer.Option("fer-pipeline-watch", metavar="NAME",
                             help="deployment name; serving the same name again replaces its schedule, arguments "
                                  "and the runs it had scheduled"),
    study: Optional[Path] = typer.Option(None, "--study", metavar="MANIFEST",
                                         help="study manifest, read again on every run: the study pages follow "
                                              "new respondents"),
    port: int = typer.Option(4200, metavar="PORT",
                             help="port of the local Prefect server started when PREFECT_API_URL is unset"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="log what each stage does"),
) -> None:
    """Serve a Prefect deployment that re-scans FOLDER on a schedule and analyses only new recordings.

    Needs exactly one of --interval or --cron. Starts a local Prefect server (UI on http://127.0.0.1:PORT) unless
    PREFECT_API_URL points at one. Ctrl-C or SIGTERM stops: a run in progress is ended (its video is left as it was
    and analysed on the next run), then the server stops.
    """
    _setup_logging(verbose)
    signal.signal(signal.SIGTERM, _sigterm_as_ctrl_c)  # until Prefect's runner takes over (it is told the same)
    try:
        _serve(folder, out, interval, cron, config, name, study, port)
    except KeyboardInterrupt:
        console.print("stopped")


def _sigterm_as_ctrl_c(signum, frame) -> None:
    raise KeyboardInterrupt


def _serve(folder: Path, out: Path, interval, cron, config, name: str, study, port: int) -> None:
    if (interval is None) == (cron is None):
        console.print("[red]error:[/red] give exactly one of --interval SECONDS or --cron EXPR")
        raise typer.Exit(2)
    if not folder.is_dir():
        console.print(f"[red]error:[/red] not a folder: {folder}")
        raise typer.Exit(2)
    cfg = _load_cfg(config)
    server = None
    if not os.environ.get("PREFECT_API_URL"):
        if "prefect" in sys.modules:  # settings are read at import: the URL must be set first
            console.print("[red]error:[/red] internal: prefect imported before the server URL was set")
            raise typer.Exit(2)
        from fer_pipeline.flows.server import start_local_server

        console.print(f"starting a local Prefect server on http://127.0.0.1:{port} ...")
        server = start_local_server(port)
    import warnings

    from fer_pipeline.flows.analyze import serve_folder
    from fer_pipeline.interrupt import stop_children

    # Prefect's runner stops on SIGTERM by calling its async stop without awaiting it: a harmless warning
    warnings.filterwarnings("ignore", message="coroutine 'Runner.astop' was never awaited")
    try:
        serve_folder(str(folder), str(out), cfg, interval_s=interval, cron=cron, name=name,
                     study=str(study) if study else None)
    except KeyboardInterrupt:
        pass
    finally:
        # a flow run still going (a child process) ends first, while the server can still record its state
        stopped = stop_children(exclude={server.pid} if server is not None else set(), timeout_s=60)
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        console.print(f"stopped{f' ({stopped} run(s) in progress ended)' if stopped else ''}")


@app.command()
def ui(port: int = typer.Option(4200, metavar="PORT", help="port of the Prefect server and its UI")) -> None:
    """Open Prefect's UI over the recorded runs of `analyze` and `serve` (their flow runs, task runs with their
    states, logs and artifacts), on http://127.0.0.1:PORT, until Ctrl-C.

    `analyze`'s temporary servers and this one share Prefect's database (PREFECT_HOME, ~/.prefect by default), so
    every run is there. With PREFECT_API_URL set, open that server's UI instead.
    """
    _setup_logging(False)
    if os.environ.get("PREFECT_API_URL"):
        console.print(f"PREFECT_API_URL is set: open that server's UI ({os.environ['PREFECT_API_URL']})")
        raise typer.Exit(2)
    from fer_pipeline.flows.server import start_local_server

    console.print(f"starting Prefect's server and UI on http://127.0.0.1:{port} ...")
    try:
        server = start_local_server(port, ui=True)
    except RuntimeError as e:
        console.print(f"[red]error:[/red] {one_line(e)}")
        raise typer.Exit(1) from None
    console.print(f"Prefect UI: http://127.0.0.1:{port}  (Ctrl-C stops)")
    try:
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.terminate()
        server.wait(timeout=30)


@app.command()
def live(
    source: str = typer.Argument(..., metavar="SOURCE",
                                 help="camera (0 or /dev/video0), stream URL (rtsp://, udp://, srt://, http(s):// "
                                      "HLS or MJPEG), - for a stream on stdin, or a video file (see --realtime)"),
    out: Path = typer.Option(Path("out"), "--out", "-o", metavar="OUT",
                             help="output folder for the Parquet tables, live.html and the report"),
    duration: Optional[float] = typer.Option(None, "--duration", metavar="S",
                                             help="end after this many seconds of stream time [default: none]"),
    idle_timeout: float = typer.Option(10.0, "--idle-timeout", metavar="S", min=0.1,
                                       help="end when the source has sent nothing for this long"),
    open_timeout: Optional[float] = typer.Option(None, "--open-timeout", metavar="S", min=0.1,
                                                 help="time allowed to open the source and get its first data "
                                                      "[default: 60 for udp:// and rtp:// (the sender may start "
                                                      "later), else the idle timeout]"),
    reconnect: int = typer.Option(0, "--reconnect", metavar="N", min=0,
                                  help="reopen a dropped connection up to N times (gaps recorded in videos.gap_s)"),
    flush_s: float = typer.Option(10.0, "--flush-s", metavar="S", min=0.1,
                                  help="seconds of stream time between writes of the tables (a crash loses at "
                                       "most this plus a few seconds)"),
    realtime: bool = typer.Option(False, "--realtime", help="play a file source at its real pace, like a camera "
                                  "(demos, tests); without it a file is read as fast as it decodes"),
    serve_port: Optional[int] = typer.Option(None, "--serve-port", metavar="PORT",
                                             help="also serve OUT on http://127.0.0.1:PORT/live.html"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", metavar="YAML",
                                          help="pipeline settings (see configs/pipeline.yaml) [default: built-in]"),
    sample_fps: Optional[float] = typer.Option(None, metavar="HZ", help="frames analysed per second [default: 5]"),
    model: Optional[Path] = typer.Option(None, metavar="ONNX", help="emotion model .onnx with its .json card"),
    detector: Optional[str] = typer.Option(None, metavar="NAME", help="face detector: centerface or insightface"),
    no_report: bool = typer.Option(False, "--no-report", help="skip the report and index at the end"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="log what each stage does"),
) -> None:
    """Analyse a camera or a network stream as it happens, into the same tables and report as a batch run.

    Decoding runs ahead in a thread and hands the pipeline the newest frames at sample_fps, dropping what it cannot
    keep up with (videos.frames_dropped); each sample's latency from arrival to probabilities is measured
    (videos.latency_p50_s, latency_p95_s). Every --flush-s seconds the settled rows are written as new Parquet part
    files under one video_id per session (live-<source>-<UTC start>); OUT/live.html shows the last minutes,
    refreshed every second. At the end (--duration, --idle-timeout, the end of the stream, Ctrl-C or SIGTERM) the
    rest is written and the session's report and OUT/index.html are rendered.

    Exit codes: 0 the session ended (including Ctrl-C / SIGTERM: everything is kept); 1 the stream ended by an
    error after its reconnections (what came is kept), or OUT cannot be written; 2 the source does not exist or
    cannot be opened, or bad arguments.
    """
    _setup_logging(verbose)
    cfg = _load_cfg(config, **{"decode.sample_fps": sample_fps, "classify.model": model,
                               "detect.backend": detector, "output.reports": False if no_report else None})
    from fer_pipeline.errors import OutputError
    from fer_pipeline.interrupt import run_interruptible
    from fer_pipeline.live_run import LiveRun
    from fer_pipeline.stream.source import SourceError

    try:
        run = LiveRun(source, out, cfg, realtime=realtime, duration_s=duration, idle_timeout_s=idle_timeout,
                      reconnect=reconnect, flush_s=flush_s, open_timeout_s=open_timeout)
    except SourceError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None
    server = _serve_out(out, serve_port) if serve_port else None
    console.print(f"live: {source} -> {out} (video_id {run.session.video_id}); page: "
                  + (f"http://127.0.0.1:{serve_port}/live.html" if server else f"{(out / 'live.html').absolute()}"))

    def go() -> None:
        every = 5.0 if not sys.stderr.isatty() else 1.0
        shown = -every
        for sec in run:
            if sec["second"] - shown >= every:
                shown = sec["second"]
                st = run.status()
                val = sec.get("valence")
                console.print(f"  {sec['second']:>6d} s  viewers {sec['viewers']}  valence "
                              f"{'-' if val is None or val != val else f'{val:+.2f}'}  latency p95 "
                              f"{st['latency_p95_s']:.2f} s  dropped {st['frames_dropped']}", highlight=False)

    try:
        _, signum = run_interruptible(go, on_signal=lambda s: console.print("stopping: writing the rest"))
    except SourceError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None
    except OutputError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(1) from None
    finally:
        if server is not None:
            server.shutdown()
    r = run.result or {}
    lat = r.get("latency_p95_s")
    console.print(f"live session {r.get('video_id')} ended ({r.get('ended')}): {r.get('duration_s') or 0:.1f} s, "
                  f"{r.get('frames_sampled', 0)} samples, {r.get('viewers', 0)} viewers, latency p50 "
                  f"{r.get('latency_p50_s', float('nan')):.3f} s / p95 {lat if lat is not None else float('nan'):.3f}"
                  f" s, {r.get('frames_dropped', 0)} dropped", highlight=False)
    for p in run.report_paths:
        if p.name != "index.html" and run.session.video_id in p.stem:
            console.print(f"report: {p.resolve()}")
    if run.report_paths:
        console.print(f"index: {(out / 'index.html').resolve()}")
    if r.get("ended") == "error":
        console.print(f"[red]error:[/red] {r.get('error')}")
        raise typer.Exit(1)


def _serve_out(out: Path, port: int):
    """Serve OUT read-only on http://127.0.0.1:PORT in a daemon thread (the standard library's HTTP server: local
    only, no directory outside OUT). Returns the server (``shutdown()`` stops it)."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:  # the page polls every second: no line per request
            pass

    out.mkdir(parents=True, exist_ok=True)
    try:
        server = ThreadingHTTPServer(("127.0.0.1", port), functools.partial(Quiet, directory=str(out)))
    except OSError as e:
        console.print(f"[red]error:[/red] cannot serve on 127.0.0.1:{port}: {one_line(e)}")
        raise typer.Exit(2) from None
    threading.Thread(target=server.serve_forever, name="live-http", daemon=True).start()
    return server


@app.command()
def report(out: Path = typer.Argument(..., metavar="OUT", help="output folder of an earlier `analyze` run"),
           model: Optional[Path] = typer.Option(None, metavar="ONNX",
                                                help="model card source (.onnx) [default: configured model]"),
           verbose: bool = typer.Option(False, "--verbose", "-v", help="log what each step does")) -> None:
    """Re-render every report and the index from the Parquet tables alone (no video needed)."""
    _setup_logging(verbose)
    from fer_pipeline.config import PipelineConfig
    from fer_pipeline.report import render_all

    if not (out / "videos").is_dir():
        console.print(f"[red]error:[/red] no `videos` table in {out}: run `fer-pipeline analyze` first")
        raise typer.Exit(2)
    from fer_pipeline.errors import OutputError, is_disk_full
    from fer_pipeline.report import ReportError, model_card

    try:
        paths = render_all(out, model_card=model_card(model or PipelineConfig().classify.model))
    except ReportError as e:
        for vid, why in e.errors.items():
            console.print(f"[red]error:[/red] {vid}: {why}")
        console.print(f"{one_line(e)}; index: {(out / 'index.html').resolve()}")
        raise typer.Exit(1) from None
    except OSError as e:
        console.print(f"[red]error:[/red] {OutputError.disk_full(out) if is_disk_full(e) else one_line(e)}")
        raise typer.Exit(1) from None
    console.print(f"rendered {len(paths)} files; index: {(out / 'index.html').resolve()}")


@app.command()
def train(config: Path = typer.Option(..., "--config", "-c", metavar="YAML",
                                      help="recipe, e.g. configs/train/fer2013_vgg.yaml"),
          set_: list[str] = typer.Option([], "--set", metavar="KEY=VALUE",
                                         help="override a recipe key, e.g. --set optim.epochs=5 (repeatable)"),
          verbose: bool = typer.Option(True, "--verbose/--quiet", help="log each epoch (default) or only errors"),
          smoke: bool = typer.Option(False, "--smoke", help="check the recipe runs: 2 training and 2 validation "
                                     "batches of <= 16 images; writes nothing (no checkpoint, ONNX or log)")) -> None:
    """Train an emotion model (PyTorch Lightning; needs the `train` extra). Resumes from OUT_DIR/last.ckpt."""
    _setup_logging(verbose and not smoke)
    try:
        from fer_pipeline.training.train import TrainConfig, smoke as run_smoke, train as run_train
    except ImportError as e:
        console.print(f"[red]error:[/red] training needs the `train` extra (pip install -e '.[train]'): {e}")
        raise typer.Exit(2) from e
    import yaml

    overrides = {}
    for s in set_:
        k, _, v = s.partition("=")
        overrides[k] = yaml.safe_load(v)
    cfg = TrainConfig.from_yaml(config, overrides)
    if smoke:
        try:
            r = run_smoke(cfg)
        except (FileNotFoundError, ValueError) as e:
            console.print(f"[red]error:[/red] {config}: {one_line(e, 1000)}")
            raise typer.Exit(2) from e
        sys.stdout.write(f"recipe ok: {config} ({r['backbone']}, {r['parameters']:,} parameters): {r['train_batches']} "
                         f"training + {r['val_batches']} validation batches of {r['batch_size']}, loss "
                         f"{r['train_loss']:.3f}, {r['seconds']:.1f} s; nothing written\n")
        return
    metrics = run_train(cfg)
    Console().print_json(json.dumps({k: _brief(metrics[k]) for k in ("val", "test") if k in metrics}))


def _brief(m: dict) -> dict:
    return {"accuracy": round(m["accuracy"], 4), "macro_f1": round(m["macro_f1"], 4), "n": m["n"]}


@app.command()
def evaluate(
    path: Path = typer.Argument(..., metavar="PATH", help="FER2013 zip/folder, FER+ zip/folder, or an ImageFolder of photos"),
    model: Optional[Path] = typer.Option(None, metavar="ONNX", help="emotion model .onnx [default: the shipped model]"),
    split: Optional[str] = typer.Option(None, metavar="SPLIT", help="FER2013: train|public-test|private-test; FER+: "
                                                   "train|valid|test"),
    detect: bool = typer.Option(False, "--detect", help="photos: detect and align the face first"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
    out: Optional[Path] = typer.Option(None, metavar="DIR", help="write confusion.png, reliability.png and metrics.json here"),
) -> None:
    """Accuracy, macro-F1, calibration (ECE of the top-1 probability in 15 bins, NLL), per-class
    precision/recall/F1 and confusion matrix of the emotion model."""
    _setup_logging(False)
    from fer_pipeline.config import PipelineConfig
    from fer_pipeline.evaluate import confusion_png, evaluate_path, reliability_png

    if not path.exists():
        console.print(f"[red]error:[/red] not found: {path}")
        raise typer.Exit(2)
    try:
        res = evaluate_path(path, model or PipelineConfig().classify.model, split, detect)
    except (ValueError, OSError) as e:
        console.print(f"[red]error:[/red] {one_line(e, 1000)}")
        raise typer.Exit(2) from e
    if out:
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(res, indent=2))
        confusion_png(res, out / "confusion.png")
        reliability_png(res, out / "reliability.png")
    if as_json:
        sys.stdout.write(json.dumps({k: res[k] for k in ("accuracy", "macro_f1", "ece", "nll", "n", "labels",
                                                         "per_class", "confusion")}) + "\n")
        return
    c = Console()
    c.print(f"{res['dataset']} {res['split'] or ''}  n={res['n']}  accuracy {res['accuracy']:.4f}  "
            f"macro-F1 {res['macro_f1']:.4f}  ECE {res['ece']:.4f}  NLL {res['nll']:.4f}"
            + (f"  (no face found: {res['n_no_face']})" if res["n_no_face"] else ""))
    t = Table("label", "precision", "recall", "F1", "support")
    for lab, m in res["per_class"].items():
        t.add_row(lab, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", str(m["support"]))
    c.print(t)
    cm = Table("true \\ pred", *[lab[:5] for lab in res["labels"]])
    for lab, row in zip(res["labels"], res["confusion"]):
        cm.add_row(lab, *map(str, row))
    c.print(cm)


@app.command()
def explain(
    path: Path = typer.Argument(..., metavar="PATH", help="an image (a face crop; a photo with --detect), an "
                                "ImageFolder (<class>/<image>, as for `evaluate`), a FER2013/FER+ zip or folder, "
                                "or a video (the faces of its key moments)"),
    out: Path = typer.Option(..., "--out", "-o", metavar="DIR", help="write the heatmaps, mean maps, explain.json, "
                             "explain.csv and maps.npz here"),
    method: str = typer.Option("occlusion", "--method", metavar="METHOD",
                               help="occlusion (any ONNX model, onnxruntime only) or gradcam (a torch .ckpt "
                                    "training checkpoint; needs the train extra)"),
    model: Optional[Path] = typer.Option(None, "--model", metavar="FILE",
                                         help="the model: .onnx with its card for occlusion [default: the shipped "
                                              "model], a .ckpt for gradcam (required)"),
    detect: bool = typer.Option(False, "--detect", help="photos: detect and align the faces first (an image: every "
                                "face; a folder: the largest face per photo)"),
    split: Optional[str] = typer.Option(None, metavar="SPLIT", help="FER2013: train|public-test|private-test "
                                        "[default: private-test]; FER+: train|valid|test [default: test]"),
    limit: Optional[int] = typer.Option(None, metavar="N", help="a folder: at most N faces per class (the first "
                                        "by file name) [default: all]"),
    target: str = typer.Option("auto", metavar="CLASS", help="class whose evidence is mapped: auto (the true "
                               "class where known, else the predicted one), true or predicted"),
    patch: int = typer.Option(8, metavar="PX", help="occlusion: side of the grey patch, pixels of the aligned crop"),
    stride: int = typer.Option(4, metavar="PX", help="occlusion: step between patch positions, pixels"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object (the summary) on stdout"),
) -> None:
    """Where the emotion network looks: a heatmap per face over its aligned crop, and the share of positive
    importance in the upper (forehead, brows), middle (eyes, nose, cheeks) and lower (mouth, chin) thirds of the
    crop, per class.

    Occlusion (Zeiler & Fergus 2014): importance = p_class(crop) - p_class(crop with a grey patch there). Grad-CAM
    (Selvaraju et al. 2017): the last conv block's activations weighted by the class score's gradient.

    Exit codes: 0 done; 1 DIR or a file cannot be written or read; 2 bad arguments or input (a corrupt image is
    named), or Grad-CAM given an ONNX model.
    """
    _setup_logging(False)
    from fer_pipeline.explain import explain_path

    try:
        res = explain_path(path, out, method=method, model=model, detect=detect, split=split, limit=limit,
                           target=target, patch_px=patch, stride_px=stride)
    except (ValueError, FileNotFoundError, RuntimeError) as e:  # RuntimeError: a detector's weights are missing
        console.print(f"[red]error:[/red] {one_line(e, 1000)}")
        raise typer.Exit(2) from None
    except OSError as e:
        console.print(f"[red]error:[/red] {one_line(e, 1000)}")
        raise typer.Exit(1) from None
    if as_json:
        sys.stdout.write(json.dumps(res) + "\n")
        return
    c = Console()
    c.print(f"{res['method']} on {res['n']} face(s) of {res['path']}"
            + (f" (no face found: {res['n_no_face']})" if res["n_no_face"] else "")
            + f"; maps of the {res['target']} class")
    t = Table(res["group_by"], "n", "upper", "middle", "lower", "mean p(target)")
    for lab, m in res["per_class"].items():
        r = m["regions"] or {}
        t.add_row(lab, str(m["n"]), *[f"{r[k]:.3f}" if k in r else "-" for k in ("upper", "middle", "lower")],
                  f"{m['mean_p_target']:.3f}")
    c.print(t)
    c.print(f"wrote {res['heatmaps']} heatmaps to {res['out']}"
            + (f"; mean maps: {res['mean_maps']}" if res["mean_maps"] else ""))


def prefect_defaults() -> None:
    """Prefect settings for every command, unless the user set them: warnings only on the console, the pipeline's
    own log records in the flow runs' logs (``PREFECT_LOGGING_EXTRA_LOGGERS``; silently dropped outside a run),
    and no telemetry (``DO_NOT_TRACK`` and Prefect's server analytics off: nothing is sent, and no error offline).
    Must run before Prefect is imported (it reads its settings then)."""
    for key, value in (("PREFECT_LOGGING_LEVEL", "WARNING"), ("PREFECT_SERVER_ANALYTICS_ENABLED", "false"),
                       ("DO_NOT_TRACK", "1"), ("PREFECT_LOGGING_EXTRA_LOGGERS", "fer_pipeline"),
                       ("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")):
        os.environ.setdefault(key, value)


def main() -> None:  # pragma: no cover - console entry
    prefect_defaults()
    try:
        app()
    finally:
        # The interpreter's last garbage collection at exit walks every object of every imported module (scipy,
        # pandas, pyarrow, Prefect...): 0.2 s of a one-minute video's run. Frozen objects are skipped by it; atexit
        # handlers, flushing and module teardown still run. (`benchmarks/README.md`, "Issue #4, fifth round".)
        gc.freeze()


if __name__ == "__main__":  # pragma: no cover
    main()
