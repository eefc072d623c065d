"""Live mode end to end: a source through a :class:`~fer_pipeline.stream.session.LiveSession`, the live page
updated every second, and at the end the session's report and the index rendered like a batch run's.

The Python iterator API, for programs that react to emotions as they happen::

    import fer_pipeline

    for sec in fer_pipeline.live("udp://127.0.0.1:5000", idle_timeout_s=5):   # or 0 (a camera), rtsp://..., a file
        if sec["viewers"] and sec["valence"] < -0.3:
            ...                                                                   # one dict per second of stream

``fer-pipeline live SOURCE --out OUT`` is the same loop (:class:`LiveRun`) with a status line.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fer_pipeline.config import PipelineConfig
    from fer_pipeline.stream.session import LiveSession

logger = logging.getLogger(__name__)

__all__ = ["LiveRun", "live"]

PathLike = str | os.PathLike


class LiveRun:
    """One live session with its outputs; iterate it to run it (see :func:`live` for the arguments).

    Attributes:
        session: the :class:`~fer_pipeline.stream.session.LiveSession`.
        result: after the end: the final ``videos`` row plus ``video_id`` and ``ended`` (``eof``, ``idle``,
            ``error``, ``duration``, ``stopped``); None before.
        report_paths: after the end, with ``out``: the HTML files rendered (the reports, then ``OUT/index.html``).
        page: ``OUT/live.html`` while and after the session runs (None without ``out`` or with ``page=False``).
    """

    def __init__(self, source: PathLike | int, out: PathLike | None = None,
                 config: PathLike | Mapping[str, Any] | PipelineConfig | None = None, *, realtime: bool = False,
                 duration_s: float | None = None, idle_timeout_s: float = 10.0, reconnect: int = 0,
                 flush_s: float = 10.0, page: bool = True, reports: bool | None = None,
                 open_timeout_s: float | None = None, **overrides: Any) -> None:
        from fer_pipeline.api import _config
        from fer_pipeline.stream.session import LiveSession
        from fer_pipeline.stream.source import LiveSource

        cfg = _config(config, overrides)
        self.cfg = cfg
        self.out = Path(out) if out is not None else None
        if self.out is None:
            cfg = cfg.model_copy(update={"output": cfg.output.model_copy(update={"thumbnails": False})})
        self.do_reports = (cfg.output.reports if reports is None else bool(reports)) and self.out is not None
        src = LiveSource(str(source), cfg.decode.sample_fps, realtime=realtime, idle_timeout_s=idle_timeout_s,
                         reconnect=reconnect, queue_frames=max(2, 2 * cfg.decode.batch_size),
                         open_timeout_s=open_timeout_s)
        self.session: LiveSession = LiveSession(src, self.out, cfg, flush_s=flush_s, duration_s=duration_s)
        self._page_on = page and self.out is not None
        self.page: Path | None = None
        self._page = None
        self.result: dict | None = None
        self.report_paths: list[Path] = []
        self._labels: tuple[str, ...] = ()

    def __iter__(self) -> Iterator[dict]:
        """Run the session, yielding one dict per second of stream time as it completes (the ``audience``
        columns: ``second``, ``viewers``, ``p_<label>``..., ``share_<label>``..., ``valence``,
        ``expressiveness``, ``attention``; NaN where no viewer was seen). Breaking out of the loop ends the
        session cleanly (everything so far is written and the report rendered).

        Raises:
            fer_pipeline.stream.source.SourceError: the source cannot be opened, or sent nothing (one line).
            fer_pipeline.errors.OutputError: ``out`` cannot be written.
        """
        from fer_pipeline import interrupt

        interrupt.reset()  # a stop requested for an earlier run does not stop this one
        gen = self.session.seconds()
        try:
            for row in gen:
                rec = {k: _plain(v) for k, v in row.to_dict("records")[0].items()}
                if self._page_on:
                    self._update_page(row)
                yield rec
        finally:
            gen.close()  # writes the rest (a no-op once the generator has finished)
            self._finish()

    def run(self) -> dict:
        """Run to the end without looking at the seconds; returns :attr:`result`."""
        for _ in self:
            pass
        return self.result or {}

    def status(self) -> dict:
        """The session's state now, as a dict (:class:`~fer_pipeline.stream.session.LiveStatus` fields)."""
        from dataclasses import asdict

        return asdict(self.session.status())

    # -- the page and the end -------------------------------------------------------------------------------------
    def _update_page(self, row) -> None:
        from fer_pipeline.report.live import LivePage

        try:
            if self._page is None:
                labels = [c[2:] for c in row.columns if c.startswith("p_")]
                self._page = LivePage(self.out, self.session.video_id, self.session.source.name, labels)
                self.page = self._page.start()
            self._page.update([row], {**self.status(), "state": "live"})
        except OSError as e:  # the page is a convenience: the tables matter
            logger.warning("live page not updated: %s", e)

    def _finish(self) -> None:
        s = self.session
        self.result = {**s.row, "video_id": s.video_id, "ended": s.ended}
        if self.out is None or s.samples == 0:
            return
        href = None
        if self.do_reports:
            from fer_pipeline.api import _render
            from fer_pipeline.report.html import safe_filename

            self.report_paths = _render(self.out, self.cfg)
            href = f"reports/{safe_filename(s.video_id)}.html"
            if not (self.out / href).is_file():
                href = None
        if self._page is not None:
            try:
                self._page.finish({**self.status(), "state": "ended", "ended": s.ended,
                                   "error": s.row.get("error")}, href)
            except OSError as e:
                logger.warning("live page not finished: %s", e)


def live(source: PathLike | int, out: PathLike | None = None,
         config: PathLike | Mapping[str, Any] | PipelineConfig | None = None, *, realtime: bool = False,
         duration_s: float | None = None, idle_timeout_s: float = 10.0, reconnect: int = 0, flush_s: float = 10.0,
         page: bool = True, reports: bool | None = None, open_timeout_s: float | None = None,
         **overrides: Any) -> LiveRun:
    """Analyse a live source; iterate the result to get one dict per second as it happens.

    Args:
        source: a camera (``0`` or ``/dev/video0``), an FFmpeg URL (``rtsp://``, ``udp://``, ``srt://``,
            ``http(s)://``), ``"-"`` for standard input, or a video file (played at its real pace with
            ``realtime=True``, else as fast as it decodes).
        out: output folder: the four tables (written every ``flush_s`` seconds as new part files, one ``video_id``
            per session: ``live-<source>-<UTC start>``), ``OUT/live.html`` (refreshed every second) and, at the end,
            the session's report and the index. None: nothing is written (the seconds are only yielded).
        config, **overrides: settings as for :func:`fer_pipeline.analyze` (``decode__sample_fps=5``, ...).
        realtime: pace a file source on its timestamps like a camera.
        duration_s: end after this many seconds of stream time (None: at the end of the source or a stop).
        idle_timeout_s: end when nothing has been received for this many seconds.
        open_timeout_s: seconds allowed to open the source and get its first data (default: 60 for ``udp://`` and
            ``rtp://`` sources, whose sender may start later, else ``idle_timeout_s``).
        reconnect: times a dropped connection is reopened (each gap is recorded in ``videos.gap_s``).
        flush_s: seconds of stream time between writes of the tables.
        page: keep ``OUT/live.html`` (with ``out``).
        reports: render the session's report and the index at the end (default: with ``out``, when
            ``output.reports`` is on).

    Returns:
        A :class:`LiveRun` (an iterable of dicts; nothing starts until it is iterated).

    Raises:
        fer_pipeline.stream.source.SourceError: at once, a file or camera that does not exist; while iterating, a
            source that cannot be opened or sent nothing.
        fer_pipeline.errors.OutputError: while iterating, ``out`` cannot be written.
    """
    return LiveRun(source, out, config, realtime=realtime, duration_s=duration_s, idle_timeout_s=idle_timeout_s,
                   reconnect=reconnect, flush_s=flush_s, page=page, reports=reports, open_timeout_s=open_timeout_s,
                   **overrides)


def _plain(v: Any) -> Any:
    """numpy scalars as Python numbers (NaN stays NaN)."""
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and math.isnan(v):
        return float("nan")
    return v
