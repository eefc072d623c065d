"""The Python API: recordings in, pandas DataFrames out, in one call.

::

    import fer_pipeline

    res = fer_pipeline.analyze("recordings/", decode__sample_fps=2)   # in memory: a temporary folder, removed after
    res.audience                                   # one row per second of each video; video_id is a column
    res = fer_pipeline.analyze(["a.mp4", "b.mp4"], out="OUT")          # keeps OUT/ (Parquet tables) and the reports
    res.report_paths                               # OUT/reports/<video_id>.html ..., OUT/index.html last
    res = fer_pipeline.read_results("OUT")         # the tables of an existing output folder

:func:`analyze` runs each video through :func:`fer_pipeline.pipeline.analyze_video` in this process, one after the
other (no Prefect, no server); ``use_prefect=True`` runs the CLI's Prefect flow instead. Both write the same output
folder as ``fer-pipeline analyze`` (same tables, same skip rule), and the DataFrames are read back from it with
:mod:`fer_pipeline.store`'s readers, so they are exactly what ``pd.read_parquet("OUT/<table>")`` gives.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from fer_pipeline.config import PipelineConfig

logger = logging.getLogger(__name__)

__all__ = ["Results", "analyze", "read_results"]

TABLES = ("faces", "timeline", "audience", "videos")
"""The four output tables every video writes (ARCHITECTURE.md, "Output tables")."""

PathLike = str | os.PathLike


@dataclass(frozen=True, repr=False)
class Results:
    """What :func:`analyze` (or :func:`read_results`) gives: the output tables as pandas DataFrames.

    Every table has ``video_id`` as a plain string column (first), so several videos stack in one DataFrame; the
    columns are those of the README's "Outputs" tables (``p_<label>`` from the emotion model's labels, probabilities
    as fractions that sum to 1).

    Attributes:
        faces: one row per face in a sampled frame (``frame_index``, ``timestamp_s`` in seconds, ``track_id``,
            ``viewer_id``, box ``x1, y1, x2, y2`` in pixels of the original frame, ``det_score``, ``p_<label>``...,
            ``emotion``, head pose ``yaw, pitch, roll`` in degrees, ``attentive``).
        timeline: one row per track and second of video (``second`` = window [second, second + 1) of presentation
            time): mean probabilities, dominant ``emotion``, ``valence``, ``expressiveness``, ``attention``.
        audience: one row per second of video: ``viewers``, mean probabilities, ``share_<label>``..., ``valence``,
            ``expressiveness``, ``attention``.
        videos: one row per input file: ``path``, ``sha256``, ``status`` (``ok``/``failed``), ``error``, duration,
            counts, the emotion model, the settings fingerprint.
        report_paths: the HTML files written (each video's report, then ``OUT/index.html`` last); empty when no
            report was rendered.
        out: the output folder holding the Parquet tables, or ``None`` after an in-memory call (``out=None``: the
            temporary folder is gone).
        summary: :func:`analyze` only: one row per input file of the call, in input order: ``video_id``, ``path``,
            ``status`` (``ok``, ``failed``, or ``skipped``: results already in ``out`` were reused), ``error`` and
            ``note`` (why a video was analysed again). ``None`` from :func:`read_results`.
    """

    faces: pd.DataFrame
    timeline: pd.DataFrame
    audience: pd.DataFrame
    videos: pd.DataFrame
    report_paths: list[Path] = field(default_factory=list)
    out: Path | None = None
    summary: pd.DataFrame | None = None

    def __repr__(self) -> str:
        status = self.videos["status"].value_counts().to_dict() if "status" in self.videos else {}
        counts = ", ".join(f"{n} {s}" for s, n in sorted(status.items()))
        rows = ", ".join(f"{t} {len(getattr(self, t)):,} rows" for t in TABLES[:3])
        return (f"Results({len(self.videos)} video{'s' if len(self.videos) != 1 else ''}"
                f"{f' ({counts})' if counts else ''}; {rows}; {len(self.report_paths)} report files; "
                f"out={str(self.out) if self.out is not None else None!r})")


def analyze(paths: PathLike | Iterable[PathLike], out: PathLike | None = None,
            config: PathLike | Mapping[str, Any] | PipelineConfig | None = None, *, force: bool = False,
            reports: bool | None = None, use_prefect: bool = False,
            progress: Callable[[str, float], None] | None = None, **overrides: Any) -> Results:
    """Analyse recordings and return their tables as pandas DataFrames.

    Args:
        paths: a video file or a folder, or a list of them. Folders are scanned recursively for video files (the
            CLI's rule: any-case ``.mp4 .mov .mkv ...``, hidden files skipped); a file named explicitly is analysed
            whatever its extension.
        out: output folder for the Parquet tables (and the reports), kept afterwards; videos already analysed there
            with the same settings are skipped (their stored results are returned). ``None``: a temporary folder,
            read into memory and removed before returning (no reports, no thumbnails).
        config: the settings: a YAML file (as ``--config``, see ``configs/pipeline.yaml``), a mapping of the same
            shape (``{"decode": {"sample_fps": 2}}``), a :class:`~fer_pipeline.config.PipelineConfig`, or ``None``
            for the defaults.
        force: analyse every video again, even when ``out`` holds reusable results.
        reports: render the HTML reports into ``out`` (``OUT/reports/<video_id>.html``, ``OUT/index.html``). Default:
            when ``out`` is given and ``output.reports`` is on.
        use_prefect: run the CLI's Prefect flow (``fer_pipeline.flows.analyze``) instead of the in-process loop;
            Prefect is imported only then, and runs in its ephemeral mode unless ``PREFECT_API_URL`` names a server.
            A folder of subfolders then also gets the flow's study tables.
        progress: called as ``progress(path, seconds_of_video_done)`` after each batch of frames.
        **overrides: single settings on top of ``config``, written ``section__name=value`` (two underscores for the
            dot of ``decode.sample_fps``): ``decode__sample_fps=2``, ``classify__model="my.onnx"``,
            ``reid__enabled=False``. ``None`` values are ignored.

    Returns:
        :class:`Results` with the rows of this call's videos (``summary`` says which were analysed, reused or failed).

    Raises:
        FileNotFoundError: no video file found under ``paths``, or the ``config`` file is missing.
        TypeError: a keyword that is not ``section__name``.
        pydantic.ValidationError: an unknown setting or a bad value (the message names it).
        fer_pipeline.classify.ModelError, fer_pipeline.detect.DetectorError: a model cannot be loaded (raised before
            any video is analysed; with ``use_prefect`` each video gets a ``failed`` row instead).
        ValueError: ``reports=True`` without ``out``.
        fer_pipeline.errors.OutputError: ``out`` cannot be written (e.g. the disk is full); videos finished before
            stay there.
        fer_pipeline.interrupt.Interrupted: a stop was requested (:func:`fer_pipeline.interrupt.request_stop`);
            finished videos are kept in ``out``.

    A file that cannot be analysed (not a video, truncated, missing) does not raise: it gets a ``failed`` row in
    ``videos`` (and ``summary``) with a one-line ``error``, and the other files go on.
    """
    from fer_pipeline import interrupt
    from fer_pipeline.inputs import list_videos

    cfg = _config(config, overrides)
    if reports and out is None:
        raise ValueError("reports=True needs out=FOLDER: an in-memory call (out=None) removes its folder")
    do_reports = cfg.output.reports if reports is None else bool(reports)
    do_reports = do_reports and out is not None
    output = {"reports": do_reports}
    if out is None:
        output["thumbnails"] = False  # only reports use them
    cfg = cfg.model_copy(update={"output": cfg.output.model_copy(update=output)})

    given = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    videos = list_videos(given)
    if not videos:
        raise FileNotFoundError(f"no video files found in {', '.join(map(str, given)) or '(nothing given)'}")

    interrupt.reset()  # a stop requested for an earlier run does not stop this one
    tmp = tempfile.mkdtemp(prefix="fer-pipeline-") if out is None else None
    out_dir = Path(tmp) if tmp is not None else Path(out)
    try:
        if use_prefect:
            rows, report_paths = _run_flow(given, out_dir, cfg, force, progress)
        else:
            rows = _run_in_process(videos, out_dir, cfg, force, progress)
            report_paths = _render(out_dir, cfg) if do_reports else []
        ids = list(dict.fromkeys(r["video_id"] for r in rows))
        tables = {t: _read_videos(out_dir, t, ids) for t in TABLES}
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return Results(**tables, report_paths=report_paths, out=None if tmp is not None else out_dir,
                   summary=_summary(rows))


def read_results(out: PathLike) -> Results:
    """The tables of an existing output folder (of ``fer-pipeline analyze`` or :func:`analyze`), every video in it.

    Args:
        out: the output folder.

    Returns:
        :class:`Results` with every video of ``out``; ``report_paths`` lists the reports found there
        (``OUT/reports/*.html`` by name, then ``OUT/index.html``); ``summary`` is ``None``.

    Raises:
        FileNotFoundError: ``out`` is not an output folder (no ``out/videos``).
        fer_pipeline.errors.DamagedOutputError: a Parquet part cannot be read (the message names the files).
    """
    from fer_pipeline.store import read_table

    out_dir = Path(out)
    if not (out_dir / "videos").is_dir():
        raise FileNotFoundError(f"{out_dir / 'videos'} not found: {out_dir} is not a pipeline output folder")
    tables = {t: _with_video_id(read_table(out_dir, t)) for t in TABLES}
    found = sorted((out_dir / "reports").glob("*.html")) + [p for p in [out_dir / "index.html"] if p.is_file()]
    return Results(**tables, report_paths=found, out=out_dir)


# --------------------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------------------


def _config(config: PathLike | Mapping[str, Any] | PipelineConfig | None, overrides: Mapping[str, Any]
            ) -> PipelineConfig:
    """The settings: ``config`` (file, mapping, object or defaults) with the ``section__name=value`` overrides."""
    from fer_pipeline.config import PipelineConfig

    dotted: dict[str, Any] = {}
    for key, value in overrides.items():
        section, sep, name = key.partition("__")
        if not sep or not section or not name:
            raise TypeError(f"analyze() got an unexpected keyword argument {key!r}: settings are given as "
                            "section__name=value, e.g. decode__sample_fps=2")
        if value is not None:
            dotted[f"{section}.{name.replace('__', '.')}"] = value
    if config is None or isinstance(config, (str, os.PathLike)):
        return PipelineConfig.load(config, dotted)
    if isinstance(config, PipelineConfig):
        raw = config.model_dump()
    elif isinstance(config, Mapping):
        raw = json.loads(json.dumps(config, default=str))  # a deep copy the overrides can change
    else:
        raise TypeError(f"config must be a YAML path, a mapping or a PipelineConfig, not {type(config).__name__}")
    for key, value in dotted.items():
        node = raw
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return PipelineConfig.model_validate(raw)


def _run_in_process(videos: list[Path], out_dir: Path, cfg: PipelineConfig, force: bool,
                    progress: Callable[[str, float], None] | None) -> list[dict]:
    """Every video through :func:`fer_pipeline.pipeline.analyze_video`, one after the other, with the models loaded
    once (the first video decodes while they load)."""
    from fer_pipeline.errors import OutputError
    from fer_pipeline.models import Models
    from fer_pipeline.pipeline import analyze_video, start_decoding_ahead
    from fer_pipeline.store import clean_staging

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        clean_staging(out_dir)
    except OSError as e:
        raise OutputError.from_os_error(e, out_dir) from e
    prestarted = start_decoding_ahead(videos[0], cfg)
    try:
        models = Models.load(cfg)
        rows = []
        for i, path in enumerate(videos):
            cb = (lambda t, p=str(path): progress(p, t)) if progress is not None else None
            row = analyze_video(path, out_dir, cfg, models=models, force=force, progress=cb,
                                prestarted=prestarted if i == 0 else None)
            rows.append({**row, "path": str(path)})  # a reused row holds the path it was analysed under
        return rows
    finally:
        if prestarted is not None:
            prestarted.close()  # a no-op once the first video took it over


def _run_flow(paths: list, out_dir: Path, cfg: PipelineConfig, force: bool,
              progress: Callable[[str, float], None] | None) -> tuple[list[dict], list[Path]]:
    """The Prefect flow ``analyze-folder`` over ``paths``: its video rows and the report files it wrote."""
    from fer_pipeline import interrupt
    from fer_pipeline.errors import OutputError
    from fer_pipeline.flows.analyze import run_analyze

    rows = run_analyze([str(p) for p in paths], str(out_dir), cfg, force=force, progress=progress)
    for r in rows:
        if r["status"] == "aborted":
            raise OutputError(r["error"], out_dir)
        if r["status"] == "interrupted":
            raise interrupt.Interrupted(r.get("error") or "interrupted")
        if r["status"] in ("report-failed", "study-error"):
            logger.warning("%s: %s", r["video_id"], r["error"])
    report_paths = []
    if cfg.output.reports:
        report_paths = sorted((out_dir / "reports").glob("*.html"))
        report_paths += [p for p in [out_dir / "index.html"] if p.is_file()]
    return [r for r in rows if r["status"] in ("ok", "failed", "skipped")], report_paths


def _render(out_dir: Path, cfg: PipelineConfig) -> list[Path]:
    """Render every report of ``out_dir`` and its index (the model card summarised in them); reports that cannot be
    rendered are logged and left out."""
    from fer_pipeline.report import ReportError, model_card, render_all

    try:
        return render_all(out_dir, model_card=model_card(cfg.classify.model))
    except ReportError as e:
        logger.warning("%s", e)
        found = sorted((out_dir / "reports").glob("*.html"))
        return found + [p for p in [out_dir / "index.html"] if p.is_file()]


def _with_video_id(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with a ``video_id`` column even when it is empty (a folder of failed videos only)."""
    if "video_id" not in df.columns:
        import pandas as pd

        df = df.assign(video_id=pd.Series(dtype=object))
    return df


def _read_videos(out_dir: Path, table: str, video_ids: list[str]) -> pd.DataFrame:
    """The rows of ``video_ids`` in ``out_dir/table``, video by video (other videos of the folder are not read)."""
    import pandas as pd

    from fer_pipeline.store import read_parts

    frames = [read_parts(out_dir / table, vid) for vid in video_ids]
    frames = [f for f in frames if len(f)] or [f for f in frames if len(f.columns)][:1]
    if not frames:
        return _with_video_id(pd.DataFrame())
    return _with_video_id(pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0])


def _summary(rows: list[dict]) -> pd.DataFrame:
    """One row per input file of the call: ``video_id, path, status, error, note``."""
    import pandas as pd

    cols = ["video_id", "path", "status", "error", "note"]
    return pd.DataFrame([{c: r.get(c) for c in cols} for r in rows], columns=cols)
