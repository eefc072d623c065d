"""Writing the report files: one video's report, the run index, and :func:`render_all` over a whole output folder.

Reads only the output tables (``videos``, ``timeline``, ``audience``, with :func:`fer_pipeline.store.read_parts`) and
the thumbnails the pipeline saved, so a run can be re-rendered long after it was analysed. Every file is written
atomically (:mod:`fer_pipeline.fileutil`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from fer_pipeline.errors import DamagedOutputError, is_disk_full, one_line
from fer_pipeline.fileutil import atomic_write_text
from fer_pipeline.report.context import index_context, video_context
from fer_pipeline.report.html import ensure_plotly_js, render_template, safe_filename
from fer_pipeline.store import read_parts

logger = logging.getLogger(__name__)


class ReportError(Exception):
    """Some reports could not be rendered (the others and the index were written).

    Attributes:
        errors: ``{video_id: one-line reason}``.
        damaged: the unreadable Parquet files behind them.
    """

    def __init__(self, errors: dict[str, str], damaged: list[Path]) -> None:
        self.errors, self.damaged = dict(errors), list(damaged)
        first = next(iter(self.errors.items()), None)
        head = f"{first[0]}: {first[1]}" if first else ", ".join(map(str, damaged[:3]))
        n = max(len(self.errors), len(self.damaged))
        super().__init__(f"{n} report{'s' if n != 1 else ''} not rendered ({head}"
                         + (f"; and {n - 1} more" if n > 1 else "") + ")")


def _render_video(video: Mapping[str, Any], timeline: pd.DataFrame | None, audience: pd.DataFrame | None,
                  out_path: Path, model_card: Mapping[str, Any] | None = None,
                  thumbnails: Mapping[str, Any] | None = None) -> tuple[Path, dict[str, Any]]:
    """:func:`render_video_report`, also returning the headline figures (for the index)."""
    out_path = Path(out_path)
    ctx, head = video_context(video, timeline, audience, model_card, thumbnails)
    html = render_template("video.html.j2", ctx, safe=("chart_json",))
    ensure_plotly_js(out_path.parent)
    atomic_write_text(out_path, html)
    logger.info("wrote report %s", out_path)
    return out_path, head


def render_video_report(video: dict, timeline: pd.DataFrame, audience: pd.DataFrame, out_path: Path,
                        model_card: dict | None = None, thumbnails: dict | None = None) -> Path:
    """Render one video's self-contained HTML report.

    Writes ``out_path`` atomically and, next to it, ``plotly.min.js`` (once). The page opens offline and makes no
    network request.

    Args:
        video: one row of the ``videos`` table as a dict (``video_id``, ``path``, ``status``, ``duration_s`` in
            seconds, ``fps`` in Hz, ``width``/``height`` in pixels, ``processing_s`` in seconds, ``tracks`` and
            ``viewers`` (distinct track and viewer ids; ``viewers`` absent before re-identification), ...). Missing
            keys are shown as "—".
        timeline: the video's ``timeline`` rows (track x second, with ``viewer_id``: every per-viewer figure is per
            viewer; tables without it, written before re-identification, count each track as a viewer); may be empty
            (no faces).
        audience: the video's ``audience`` rows (per second); may be empty (then rebuilt from ``timeline``).
        out_path: the HTML file to write, e.g. ``OUT/reports/<video_id>.html``.
        model_card: the emotion model's card (name, labels, metrics); a summary is shown when given.
        thumbnails: ``{"viewers": {viewer_id: "rel/path.jpg"}, "tracks": {track_id: "rel/path.jpg"},
            "moments": {second: "rel/path.jpg"}, "explain": {second: [{"viewer_id", "ref", "label", "p",
            "regions"}]}}`` (as :func:`saved_thumbnails` returns), paths relative to
            ``out_path``'s folder; absolute paths and URLs are ignored (they would break the offline guarantee). A
            viewer without a thumbnail of its own shows that of one of its tracks (old output folders).
            The key moments (:func:`fer_pipeline.metrics.key_moments`) show their second's frame; the other
            moment frames are shown in a gallery under them.

    Returns:
        ``out_path``.

    Raises:
        OSError: the report or plotly.min.js cannot be written.
        jinja2.TemplateError: a template is missing or broken.
    """
    return _render_video(video, timeline, audience, out_path, model_card, thumbnails)[0]


def render_index(videos: pd.DataFrame, out_path: Path, reports: dict[str, str],
                 headlines: dict[str, dict] | None = None, report_errors: dict[str, str] | None = None,
                 studies_href: str | None = None) -> Path:
    """Render the run index: every video with its headline figures, sortable, plus failed/skipped files.

    Args:
        videos: the ``videos`` table (one row per input file; ``video_id`` as str).
        out_path: the HTML file to write, normally ``OUT/index.html``.
        reports: ``{video_id: href}`` of the rendered reports, relative to ``out_path``'s folder
            (e.g. ``"reports/<video_id>.html"``). Videos without an entry are listed without a link.
        headlines: ``{video_id: headline_figures(...)}``; when absent, only the ``videos`` columns are shown
            (``viewers``, or ``tracks`` in tables written before re-identification, and duration).
        report_errors: ``{video_id: message}`` for ok videos whose report could not be rendered.
        studies_href: link to the study pages' index (``"studies/index.html"``) when the folder holds a study.

    Returns:
        ``out_path``.

    Raises:
        OSError: the file cannot be written.
        jinja2.TemplateError: a template is missing or broken.
    """
    out_path = Path(out_path)
    ctx = index_context(videos, reports, headlines, report_errors)
    ctx["studies_href"] = studies_href
    html = render_template("index.html.j2", ctx)
    atomic_write_text(out_path, html)
    logger.info("wrote index %s (%d videos)", out_path, len(videos))
    return out_path


def saved_thumbnails(reports_dir: Path, video_id: str) -> dict[str, dict]:
    """Thumbnails the pipeline saved for a video: ``reports/thumbs/<video_id>/viewer-<id>.jpg`` (a viewer's best
    face), ``second-<s>.jpg`` (key-moment frames), with ``report.explain`` the key-moment faces' occlusion maps
    (``explain.json`` and its ``explain-<s>-<viewer>.png``, :mod:`fer_pipeline.explain.moments`) and, in output
    folders written before re-identification, ``track-<id>.jpg`` (a track's best face; the report then shows it for
    the viewer of that track).

    Args:
        reports_dir: the run's ``reports`` folder.
        video_id: the video.

    Returns:
        ``{"viewers": {viewer_id: ref}, "tracks": {track_id: ref}, "moments": {second: ref}, "explain": {second:
        [{"viewer_id", "ref", "label", "p", "regions"}, ...]}}``, refs relative to ``reports_dir`` (all empty when
        the video has no thumbnail folder; maps whose PNG is missing are left out, an unreadable ``explain.json`` is
        logged and ignored), in the form :func:`render_video_report` takes.
    """
    from fer_pipeline.explain.moments import EXPLAIN_INDEX

    folder = reports_dir / "thumbs" / video_id
    thumbs: dict[str, dict] = {"viewers": {}, "tracks": {}, "moments": {}, "explain": {}}
    if not folder.is_dir():
        return thumbs
    kinds = {"viewer": "viewers", "track": "tracks", "second": "moments"}
    for f in sorted(folder.glob("*.jpg")):
        kind, _, num = f.stem.partition("-")
        if not num.isdigit() or kind not in kinds:
            continue
        thumbs[kinds[kind]][int(num)] = f"thumbs/{video_id}/{f.name}"
    index = folder / EXPLAIN_INDEX
    if index.is_file():
        try:
            entries = json.loads(index.read_text())
            for e in entries:
                if (folder / e["file"]).is_file():
                    thumbs["explain"].setdefault(int(e["second"]), []).append({
                        "viewer_id": int(e["viewer_id"]), "ref": f"thumbs/{video_id}/{e['file']}",
                        "label": e.get("label"), "p": e.get("p"), "regions": e.get("regions")})
        except (ValueError, KeyError, TypeError) as err:
            logger.warning("%s: ignoring unreadable %s (%s)", video_id, index, one_line(err))
    return thumbs


def model_card(model_path: str | Path) -> dict | None:
    """The card (``.json`` beside the ``.onnx``) of an emotion model, to summarise in the reports; ``None`` when the
    model has no card there (the reports then leave the model card section out).

    Raises:
        ValueError: the card is not valid JSON.
    """
    card_path = Path(model_path).with_suffix(".json")
    return json.loads(card_path.read_text()) if card_path.is_file() else None


def render_all(out_dir: Path, model_card: dict | None = None) -> list[Path]:
    """Re-render every report of a run from its Parquet tables alone.

    Reads ``out_dir/videos`` (required) and, per ``ok`` video, its rows of ``out_dir/timeline`` and
    ``out_dir/audience`` (either may be missing, e.g. when every video failed or no face was seen). Writes
    ``out_dir/reports/<video_id>.html`` per ok video, ``out_dir/reports/plotly.min.js`` and ``out_dir/index.html``.
    A video whose report fails to render (e.g. its Parquet part is damaged) loses its old report, is listed in the
    index with the error, and the others go on; :class:`ReportError` then says so at the end.

    Args:
        out_dir: the run's output folder.
        model_card: the emotion model's card, summarised in each report when given.

    Returns:
        The paths written: the reports (in index order of the ``videos`` table), then the index last.

    Raises:
        FileNotFoundError: ``out_dir/videos`` does not exist (not an output folder).
        OSError: a file cannot be written (a full disk stops the run at once).
        ReportError: after writing the rest, when any report could not be rendered or a ``videos`` part could not be
            read.
    """
    out_dir = Path(out_dir)
    videos_dir = out_dir / "videos"
    if not videos_dir.exists():
        raise FileNotFoundError(f"{videos_dir} not found: {out_dir} is not a pipeline output folder")
    damaged: list[Path] = []
    videos = read_parts(videos_dir, damaged=damaged)
    if "video_id" not in videos.columns:
        videos = videos.assign(video_id=pd.Series(dtype=str))
    if "created_at" in videos.columns:
        videos = videos.sort_values("created_at", kind="stable")
    videos = videos.drop_duplicates("video_id", keep="last").reset_index(drop=True)

    reports_dir = out_dir / "reports"
    written: list[Path] = []
    hrefs: dict[str, str] = {}
    headlines: dict[str, dict] = {}
    errors: dict[str, str] = {}
    used_names: set[str] = set()
    for video in videos.to_dict("records"):
        if str(video.get("status")) != "ok":
            continue
        vid = str(video["video_id"])
        stem = safe_filename(vid)
        while stem in used_names:  # two ids that sanitise to the same name
            stem += "_"
        used_names.add(stem)
        target = reports_dir / f"{stem}.html"
        try:
            timeline = read_parts(out_dir / "timeline", vid)
            audience = read_parts(out_dir / "audience", vid)
            path, head = _render_video(video, timeline, audience, target, model_card,
                                       saved_thumbnails(reports_dir, vid))
        except Exception as e:  # one video's report must not stop the run's index
            if isinstance(e, OSError) and is_disk_full(e):
                raise
            if isinstance(e, DamagedOutputError):
                logger.warning("report for video %s not rendered: %s", vid, one_line(e))
                damaged += e.paths
                errors[vid] = one_line(e)
            else:
                logger.exception("report for video %s (%s) failed", vid, video.get("path"))
                errors[vid] = f"{type(e).__name__}: {e}"
            target.unlink(missing_ok=True)  # an older report of it would show results that may no longer hold
            continue
        written.append(path)
        headlines[vid] = head
        hrefs[vid] = f"reports/{stem}.html"
    studies = "studies/index.html" if (out_dir / "stimulus").is_dir() else None  # pages rendered with the study
    written.append(render_index(videos, out_dir / "index.html", hrefs, headlines, errors, studies))
    if errors or damaged:
        for f in damaged:
            if f.parent.parent.name == "videos":
                errors.setdefault(f.parent.name.partition("=")[2], f"damaged output file {f}")
        raise ReportError(errors, damaged)
    return written
