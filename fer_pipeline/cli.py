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
    paths: list[Path] = typer.Argument(..., help=_SCAN_HELP),
    out: Path = typer.Option(Path("out"), "--out", "-o", help="output folder for Parquet tables and reports"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="pipeline YAML (see configs/pipeline.yaml)"),
    sample_fps: Optional[float] = typer.Option(None, help="frames analysed per second of video [default: 5]"),
    model: Optional[Path] = typer.Option(None, help="emotion model .onnx (card beside it)"),
    detector: Optional[str] = typer.Option(None, help="centerface (default) or insightface"),
    force: bool = typer.Option(False, "--force", help="re-analyse videos already done"),
    no_report: bool = typer.Option(False, "--no-report", help="skip HTML reports"),
    save_embeddings: bool = typer.Option(False, "--save-embeddings",
                                         help="also write each viewer's face embeddings to OUT/embeddings/ "
                                              "(biometric data, for matching people across recordings; off by "
                                              "default, never in reports)"),
    study: Optional[Path] = typer.Option(None, "--study", metavar="MANIFEST",
                                         help="study manifest (CSV or YAML): recording, stimulus, offset_s "
                                              "[, duration_s, respondent, attributes...]; recordings relative to "
                                              "FOLDER. Writes OUT/{stimulus,respondents,segments} and "
                                              "OUT/studies/*.html. Without it, one FOLDER of subfolders is a study "
                                              "with a stimulus per subfolder and offset 0"),
    dask_address: Optional[str] = typer.Option(None, help="run on an existing Dask cluster (tcp://host:8786)"),
    dask_workers: int = typer.Option(0, help="start a local Dask cluster with this many workers (0 = no Dask)"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Analyse recordings into OUT/{faces,timeline,audience,videos} (Parquet) and OUT/reports/*.html.

    Studies (--study): every respondent's rows are put on stimulus time (second = floor(timestamp_s - offset_s)
    inside [offset_s, offset_s + duration_s)) and aggregated per stimulus second over respondents with bootstrap
    confidence intervals; OUT/studies/index.html compares the stimuli. A manifest row that cannot be used gets a
    one-line error naming it; the others run.

    A video already analysed (same content) is skipped when its results were made with the same settings, model and
    detector and its files are intact; otherwise it is analysed again and the summary says why. --force re-analyses
    everything. A second run on the same OUT waits for the videos the first is analysing.

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
                               "output.save_embeddings": True if save_embeddings else None})
    from fer_pipeline.inputs import list_videos
    from fer_pipeline.pipeline import start_decoding_ahead

    if study is not None:
        _check_manifest(study, paths)
    videos = list_videos(paths)
    if not videos:
        console.print(f"[red]error:[/red] no video files found in {', '.join(map(str, paths))}")
        raise typer.Exit(2)
    prestarted = None  # the first video's decode process, decoding while Prefect is imported and the models load
    if not (dask_address or dask_workers > 0):  # Dask workers are other processes: nothing to take over there
        prestarted = start_decoding_ahead(videos[0], cfg)
    server = None
    if not os.environ.get("PREFECT_API_URL"):
        if "prefect" in sys.modules:  # settings are read at import: the URL must be set first
            console.print("[red]error:[/red] internal: prefect imported before the server URL was set")
            raise typer.Exit(2)
        from flows.server import TemporaryServer

        server = TemporaryServer()  # starts while Prefect is imported; waited for just before the flow
    try:
        _analyze(videos, out, cfg, force, dask_address, dask_workers, server, prestarted, study, paths)
    finally:
        if prestarted is not None:
            prestarted.close()  # ends it if nothing took it over
        if server is not None:
            server.stop()


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


def _analyze(videos, out: Path, cfg, force: bool, dask_address, dask_workers: int, server, prestarted=None,
             study: Optional[Path] = None, paths: Optional[list[Path]] = None) -> None:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from fer_pipeline.interrupt import run_interruptible
    from flows.analyze import run_analyze

    progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[t]}"),
                        TimeElapsedColumn(), console=console, transient=False, disable=not console.is_terminal)
    bars: dict[str, int] = {}

    def on_progress(path: str, t: float) -> None:
        if path not in bars:
            from fer_pipeline.decode import probe

            try:
                total = probe(path).duration_s
            except Exception:  # noqa: BLE001 - only for the bar's length
                total = None
            bars[path] = progress.add_task(Path(path).name[:40], total=total, t="")
        progress.update(bars[path], completed=t, t=f"{t:.0f} s")

    def run() -> list[dict]:
        if server is not None:
            server.wait_ready()
        return run_analyze([str(p) for p in paths] if paths else [str(v) for v in videos], str(out), cfg,
                           force=force, dask_address=dask_address, dask_workers=dask_workers, progress=on_progress,
                           prestarted=prestarted, study=str(study) if study else None)

    def on_signal(signum: int) -> None:
        console.print("interrupted: stopping (press Ctrl-C again to quit at once)")

    with progress:
        results, signum = run_interruptible(run, on_signal=on_signal)
        for tid in bars.values():
            task = progress.tasks[tid]
            progress.update(tid, completed=task.total or task.completed)
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
    Console(width=max(Console().width, 140)).print(_summary([r for r in results if r["status"] != "report-failed"]))
    failed = [r for r in results if r["status"] == "failed"]
    report_failed = [r for r in results if r["status"] == "report-failed"]
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
                  f"({len(done) - len(failed)} ok/skipped, {len(failed)} failed)")
    raise typer.Exit(1 if failed or report_failed or study_errors else 0)


@app.command("study")
def study_cmd(
    out: Path = typer.Argument(..., help="output folder of an earlier `analyze` run"),
    study: Optional[Path] = typer.Option(None, "--study", metavar="MANIFEST",
                                         help="study manifest (CSV or YAML) [default: the one kept in "
                                              "OUT/studies/manifest.json by the last study run]"),
    folder: Optional[Path] = typer.Option(None, "--folder", help="folder the manifest's recordings are relative "
                                          "to [default: match them to the analysed videos by file name]"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="pipeline YAML (its `study` section)"),
    baseline: Optional[str] = typer.Option(None, help="none | lead_in | resting [default: none]"),
    smoothing_s: Optional[float] = typer.Option(None, help="Gaussian smoothing sigma, seconds (0 = off)"),
    no_report: bool = typer.Option(False, "--no-report", help="skip the study pages"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
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
    resp = tables.respondents
    for stim in tables.durations:
        n = int(((resp["stimulus"] == stim) & (resp["status"] == "ok")).sum()) if len(resp) else 0
        console.print(f"study {stim}: {n} respondent{'s' if n != 1 else ''} with a face, "
                      f"{tables.durations[stim]:.1f} s")
    console.print(f"tables: {out.resolve()}/{{stimulus,respondents,segments,respondent_seconds}}")
    if pages:
        console.print(f"study pages: {(out / 'studies' / 'index.html').resolve()}")
    raise typer.Exit(1 if tables.errors else 0)


@app.command()
def export(
    out: Path = typer.Argument(..., help="output folder of an earlier `analyze` run"),
    fmt: str = typer.Option("csv", "--format", "-f", metavar="csv|xlsx", help="csv: one file per table; xlsx: one "
                            "Excel workbook with a sheet per table"),
    to: Path = typer.Option(..., "--to", help="folder to write into (created)"),
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
def serve(
    folder: Path = typer.Argument(..., help="folder to watch for new recordings"),
    out: Path = typer.Option(Path("out"), "--out", "-o"),
    interval: Optional[float] = typer.Option(None, help="re-scan every this many seconds"),
    cron: Optional[str] = typer.Option(None, help="re-scan on this cron schedule, e.g. '*/15 * * * *'"),
    config: Optional[Path] = typer.Option(None, "--config", "-c"),
    name: str = typer.Option("fer-pipeline-watch", help="deployment name"),
    study: Optional[Path] = typer.Option(None, "--study", metavar="MANIFEST",
                                         help="study manifest, read again on every run: the study pages follow "
                                              "new respondents"),
    port: int = typer.Option(4200, help="port of the local Prefect server started when PREFECT_API_URL is unset"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Serve a Prefect deployment that re-scans FOLDER on a schedule and analyses only new recordings.

    Starts a local Prefect server (UI on http://127.0.0.1:PORT) unless PREFECT_API_URL points at one. Ctrl-C stops.
    """
    _setup_logging(verbose)
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
        from flows.server import start_local_server

        console.print(f"starting a local Prefect server on http://127.0.0.1:{port} ...")
        server = start_local_server(port)
    from flows.analyze import serve_folder

    try:
        serve_folder(str(folder), str(out), cfg, interval_s=interval, cron=cron, name=name,
                     study=str(study) if study else None)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)


@app.command()
def report(out: Path = typer.Argument(..., help="output folder of an earlier `analyze` run"),
           model: Optional[Path] = typer.Option(None, help="model card source (.onnx) [default: configured model]"),
           verbose: bool = typer.Option(False, "--verbose", "-v")) -> None:
    """Re-render every report and the index from the Parquet tables alone (no video needed)."""
    _setup_logging(verbose)
    from fer_pipeline.config import PipelineConfig
    from fer_pipeline.report import render_all

    if not (out / "videos").is_dir():
        console.print(f"[red]error:[/red] no `videos` table in {out}: run `fer-pipeline analyze` first")
        raise typer.Exit(2)
    from fer_pipeline.errors import OutputError, is_disk_full
    from fer_pipeline.report import ReportError

    card_path = Path(model or PipelineConfig().classify.model).with_suffix(".json")
    card = json.loads(card_path.read_text()) if card_path.is_file() else None
    try:
        paths = render_all(out, model_card=card)
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
def train(config: Path = typer.Option(..., "--config", "-c", help="recipe, e.g. configs/train/fer2013_vgg.yaml"),
          set_: list[str] = typer.Option([], "--set", help="override a recipe key, e.g. --set optim.epochs=5"),
          verbose: bool = typer.Option(True, "--verbose/--quiet")) -> None:
    """Train an emotion model (PyTorch Lightning; needs the `train` extra). Resumes from OUT_DIR/last.ckpt."""
    _setup_logging(verbose)
    try:
        from fer_pipeline.training.train import TrainConfig, train as run_train
    except ImportError as e:
        console.print(f"[red]error:[/red] training needs the `train` extra (pip install -e '.[train]'): {e}")
        raise typer.Exit(2) from e
    import yaml

    overrides = {}
    for s in set_:
        k, _, v = s.partition("=")
        overrides[k] = yaml.safe_load(v)
    cfg = TrainConfig.from_yaml(config, overrides)
    metrics = run_train(cfg)
    Console().print_json(json.dumps({"val": _brief(metrics["val"]), "test": _brief(metrics["test"])}))


def _brief(m: dict) -> dict:
    return {"accuracy": round(m["accuracy"], 4), "macro_f1": round(m["macro_f1"], 4), "n": m["n"]}


@app.command()
def evaluate(
    path: Path = typer.Argument(..., help="FER2013 zip/folder, FER+ zip/folder, or an ImageFolder of photos"),
    model: Optional[Path] = typer.Option(None, help="emotion model .onnx [default: the shipped model]"),
    split: Optional[str] = typer.Option(None, help="FER2013: train|public-test|private-test; FER+: "
                                                   "train|valid|test"),
    detect: bool = typer.Option(False, "--detect", help="photos: detect and align the face first"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
    out: Optional[Path] = typer.Option(None, help="write confusion.png and metrics.json here"),
) -> None:
    """Accuracy, macro-F1, per-class precision/recall/F1 and confusion matrix of the emotion model."""
    _setup_logging(False)
    from fer_pipeline.config import PipelineConfig
    from fer_pipeline.evaluate import confusion_png, evaluate_path

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
    if as_json:
        sys.stdout.write(json.dumps({k: res[k] for k in ("accuracy", "macro_f1", "n", "labels", "per_class",
                                                         "confusion")}) + "\n")
        return
    c = Console()
    c.print(f"{res['dataset']} {res['split'] or ''}  n={res['n']}  accuracy {res['accuracy']:.4f}  "
            f"macro-F1 {res['macro_f1']:.4f}" + (f"  (no face found: {res['n_no_face']})" if res["n_no_face"] else ""))
    t = Table("label", "precision", "recall", "F1", "support")
    for lab, m in res["per_class"].items():
        t.add_row(lab, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", str(m["support"]))
    c.print(t)
    cm = Table("true \\ pred", *[lab[:5] for lab in res["labels"]])
    for lab, row in zip(res["labels"], res["confusion"]):
        cm.add_row(lab, *map(str, row))
    c.print(cm)


def main() -> None:  # pragma: no cover - console entry
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no network here; avoids telemetry errors
    try:
        app()
    finally:
        # The interpreter's last garbage collection at exit walks every object of every imported module (scipy,
        # pandas, pyarrow, Prefect...): 0.2 s of a one-minute video's run. Frozen objects are skipped by it; atexit
        # handlers, flushing and module teardown still run. (`benchmarks/README.md`, "Issue #4, fifth round".)
        gc.freeze()


if __name__ == "__main__":  # pragma: no cover
    main()
