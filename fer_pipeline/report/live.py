"""The live page of a live session: ``OUT/live.html`` and the data file it reloads, ``OUT/live-data.js``.

A live session hands :class:`LivePage` one provisional ``audience`` row per second of stream time (a one-row
DataFrame: ``second``, ``viewers``, ``p_<label>``..., ``share_<label>``..., ``valence`` in [-1, 1],
``expressiveness`` in [0, 1], ``attention`` in [0, 1] or NaN) and the session's status (a plain mapping: this module
knows nothing of :mod:`fer_pipeline.stream`). The page shows the last ``window_s`` seconds as they happen.

Two files, both in ``OUT``::

    OUT/live.html       the page: written once by :meth:`LivePage.start` (``reports/templates/live.html.j2``: inline
                        CSS and vanilla JavaScript drawing inline SVG; no library, no network reference)
    OUT/live-data.js    the data: ``window.FER_LIVE = {...};``, rewritten whole at every :meth:`LivePage.update`

A page opened from ``file://`` cannot fetch JSON (Chromium blocks file:// fetch/XHR), but it can load a classic
script: every ``refresh_s`` seconds the page removes its previous ``<script src="live-data.js?n=<counter>">`` and
adds a new one (the counter defeats caching), and redraws when the data changed. The same works when ``OUT`` is
served over http (``fer-pipeline live --serve-port``). A load that fails (the file is being replaced, a server
hiccup) keeps the last data on screen and is tried again at the next refresh.

The data file is written to a temporary file in ``OUT`` and renamed over the old one (:func:`os.replace`), so the
page reads the old file or the new one, never a part; it is not fsynced (it is rewritten every second and a lost
update does not matter; the Parquet tables are what lasts). Its JSON is :func:`~fer_pipeline.report.html.
json_for_script` output: NaN becomes ``null``, and ``<``, ``>``, ``&`` and ``'`` are ``\\uXXXX`` escapes, so hostile
text (a source URL, a video id, a label) stays data; the page puts all of it on screen with ``textContent``.

Layout of ``FER_LIVE`` (format 1)::

    format, generator, seq (writes so far, from 1), written_at (UTC ISO time), video_id, source, labels, colors
    (a CSS colour per label), window_s, refresh_s, state ("live" | "ended"), ended (the end reason or null),
    report_href (relative to OUT, or null), status {stream_s, samples, frames_dropped, latency_p50_s, latency_p95_s,
    viewers_now, settled_until, error}: null where unknown, columns (the fields of a row), rows: one array per
    second, oldest first: [second, viewers, valence, attention, expressiveness, [share per label], [p per label]]
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import tempfile
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fer_pipeline import __version__
from fer_pipeline.fileutil import atomic_write_text
from fer_pipeline.report.context import label_colors
from fer_pipeline.report.html import json_for_script, relative_ref, render_template

logger = logging.getLogger(__name__)

__all__ = ["LIVE_DATA_NAME", "LIVE_HTML_NAME", "ROW_FIELDS", "LivePage"]

LIVE_HTML_NAME = "live.html"
"""File name of the live page in ``OUT``."""
LIVE_DATA_NAME = "live-data.js"
"""File name of the page's data script in ``OUT``."""
DATA_PREFIX = "window.FER_LIVE = "
"""What the data file starts with; the JSON follows, then ``";\\n"``."""
ROW_FIELDS = ("second", "viewers", "valence", "attention", "expressiveness", "shares", "p")
"""Fields of one row of ``FER_LIVE.rows`` (``shares``, ``p``: one value per label, in label order)."""
FORMAT = 1
"""Version of the ``FER_LIVE`` layout."""

_FLOAT_STATUS = ("stream_s", "latency_p50_s", "latency_p95_s")
_INT_STATUS = ("samples", "frames_dropped", "viewers_now", "settled_until")
_MAX_ERROR_CHARS = 2000
_DIGITS = 4  # decimals kept per figure in the data file (the page shows at most 2 of valence, 0 of percentages)


class LivePage:
    """The live page of one session: ``OUT/live.html`` and ``OUT/live-data.js`` (see the module docstring).

    Call :meth:`start` once, :meth:`update` every second (or whenever rows come), :meth:`finish` at the end. Only
    the last ``window_s`` seconds are kept (a deque: memory stays bounded over hours of stream), and an update only
    serialises the new rows (each row's JSON is kept) and rewrites one small file: well under a few milliseconds.

    Args:
        out_dir: the session's output folder ``OUT`` (created if missing).
        video_id: the session's id, shown in the header.
        source: the source as given (a camera, a stream URL), shown in the header as text.
        labels: the emotion model's labels, in the order of its ``p_<label>`` / ``share_<label>`` columns.
        window_s: seconds of stream time kept and drawn (>= 1).
        refresh_s: seconds between two reloads of the data file by the page (> 0).

    Raises:
        ValueError: ``window_s < 1``, ``refresh_s <= 0`` or no labels.
    """

    def __init__(self, out_dir: str | Path, video_id: str, source: str, labels: Sequence[str], window_s: int = 300,
                 refresh_s: float = 1.0) -> None:
        if int(window_s) < 1:
            raise ValueError(f"window_s must be >= 1 second, got {window_s}")
        if not (float(refresh_s) > 0 and math.isfinite(float(refresh_s))):
            raise ValueError(f"refresh_s must be > 0 seconds, got {refresh_s}")
        self.labels: tuple[str, ...] = tuple(str(x) for x in labels)
        if not self.labels:
            raise ValueError("labels must not be empty")
        self.out_dir = Path(out_dir)
        self.video_id = str(video_id)
        self.source = str(source)
        self.window_s = int(window_s)
        self.refresh_s = float(refresh_s)
        self.colors = label_colors(self.labels)
        self._rows: deque[tuple[int, str]] = deque(maxlen=self.window_s)  # (second, the row's JSON)
        self._index: dict[tuple, tuple] = {}  # DataFrame columns -> positions of the fields (cached)
        self._seq = 0

    @property
    def html_path(self) -> Path:
        """``OUT/live.html``."""
        return self.out_dir / LIVE_HTML_NAME

    @property
    def data_path(self) -> Path:
        """``OUT/live-data.js``."""
        return self.out_dir / LIVE_DATA_NAME

    @property
    def seconds(self) -> list[int]:
        """The seconds held now (oldest first): at most ``window_s``, all within ``window_s`` of the newest."""
        return [s for s, _ in self._rows]

    # -- the three calls ------------------------------------------------------------------------------------------
    def start(self) -> Path:
        """Write ``OUT/live.html`` (the static page, written once) and a first ``OUT/live-data.js`` (state
        ``live``, the rows held so far: none for a new page).

        Returns:
            The path of ``live.html``.

        Raises:
            OSError: ``OUT`` cannot be created or written.
        """
        self.out_dir.mkdir(parents=True, exist_ok=True)
        html = render_template("live.html.j2", {
            "title": self.video_id, "data_src": LIVE_DATA_NAME, "version": __version__,
            "config_json": json_for_script({"data": LIVE_DATA_NAME, "refresh_s": self.refresh_s,
                                            "window_s": self.window_s}),
        }, safe=["config_json"])
        atomic_write_text(self.html_path, html)
        self._write({"state": "live"}, None, state="live")
        logger.info("live page: %s", self.html_path)
        return self.html_path

    def update(self, rows: list[pd.DataFrame] | pd.DataFrame, status: Mapping[str, Any]) -> None:
        """Add ``rows`` (audience rows of new seconds, oldest first) and rewrite ``OUT/live-data.js`` with them and
        ``status``.

        Args:
            rows: one-row DataFrames (or one DataFrame of several rows, or an empty list for a status-only update)
                with the ``audience`` columns; ``second`` (int, seconds of stream time) and ``viewers`` are needed,
                a missing ``p_<label>``, ``share_<label>``, ``valence``, ``attention`` or ``expressiveness`` column
                counts as NaN. A row for the newest second held replaces it; a row older than that is ignored. Rows
                more than ``window_s`` seconds before the newest are dropped.
            status: the session's state (keys of the module docstring's ``status`` plus ``state``, ``ended``;
                missing or unparsable values count as unknown). ``video_id`` and ``source`` are the page's own.

        Raises:
            ValueError: a row without ``second`` or ``viewers``, or a ``second`` that is not a number.
            OSError: the data file cannot be written (the previous one stays whole).
        """
        for frame in _frames(rows):
            self._add(frame)
        self._write(status, None, state=str(status.get("state") or "live") if status else "live")

    def finish(self, status: Mapping[str, Any], report_href: str | None = None) -> None:
        """Write the final ``OUT/live-data.js``: state ``ended``, the end reason (``status["ended"]``: ``eof``,
        ``idle``, ``error``, ``duration``, ``stopped``, or None when unknown), the rows held, and a link to the
        session's batch-style report, which the page shows prominently.

        Args:
            status: the session's final state (as for :meth:`update`).
            report_href: the report's path relative to ``OUT`` (e.g. ``"reports/<name>.html"``), or None when there
                is none.

        Raises:
            ValueError: ``report_href`` is not a relative path (absolute, or with a scheme such as ``https:``).
            OSError: the data file cannot be written.
        """
        href = None
        if report_href is not None:
            href = relative_ref(report_href)
            if href is None:
                raise ValueError(f"report_href must be a path relative to OUT, got {report_href!r}")
        self._write(status, href, state="ended")

    # -- rows -----------------------------------------------------------------------------------------------------
    def _positions(self, columns: tuple) -> tuple:
        """Positions in ``columns`` of second, viewers, valence, attention, expressiveness, the shares and the p
        (-1: missing)."""
        pos = self._index.get(columns)
        if pos is None:
            where = {str(c): i for i, c in enumerate(columns)}
            for need in ("second", "viewers"):
                if need not in where:
                    raise ValueError(f"live rows need a {need!r} column, got {list(map(str, columns))}")
            pos = (where["second"], where["viewers"], where.get("valence", -1), where.get("attention", -1),
                   where.get("expressiveness", -1), tuple(where.get(f"share_{x}", -1) for x in self.labels),
                   tuple(where.get(f"p_{x}", -1) for x in self.labels))
            if len(self._index) > 16:
                self._index.clear()
            self._index[columns] = pos
        return pos

    def _add(self, frame: pd.DataFrame) -> None:
        if not len(frame):
            return
        i_s, i_v, i_val, i_att, i_exp, i_sh, i_p = self._positions(tuple(frame.columns))
        try:
            values = frame.to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError):  # a column that is not a number (text): read only the figures' columns
            used = [i for i in (i_s, i_v, i_val, i_att, i_exp, *i_sh, *i_p) if i >= 0]
            values = np.full(frame.shape, np.nan)
            values[:, used] = frame.iloc[:, used].to_numpy(dtype=np.float64, na_value=np.nan)
        for row in values:
            sec = row[i_s]
            if not math.isfinite(sec):
                raise ValueError(f"live row with second {sec!r}")
            sec = int(sec)
            viewers = row[i_v]
            viewers = int(viewers) if math.isfinite(viewers) else 0
            text = json_for_script([sec, viewers, _figure(row, i_val), _figure(row, i_att), _figure(row, i_exp),
                                    [_figure(row, i) for i in i_sh], [_figure(row, i) for i in i_p]])
            if self._rows and sec <= self._rows[-1][0]:
                if sec == self._rows[-1][0]:
                    self._rows[-1] = (sec, text)
                else:
                    logger.debug("live page: row for second %d after second %d ignored", sec, self._rows[-1][0])
                continue
            self._rows.append((sec, text))
            while self._rows[0][0] <= sec - self.window_s:
                self._rows.popleft()

    # -- the data file --------------------------------------------------------------------------------------------
    def _write(self, status: Mapping[str, Any] | None, href: str | None, state: str) -> None:
        """Rewrite ``OUT/live-data.js`` atomically (temp file in ``OUT``, then :func:`os.replace`)."""
        status = status or {}
        self._seq += 1
        ended = status.get("ended")
        head = {
            "format": FORMAT, "generator": f"fer-pipeline {__version__}", "seq": self._seq,
            "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "video_id": self.video_id, "source": self.source, "labels": list(self.labels),
            "colors": [self.colors[x] for x in self.labels], "window_s": self.window_s, "refresh_s": self.refresh_s,
            "state": state, "ended": None if ended is None else str(ended), "report_href": href,
            "status": _status(status), "columns": list(ROW_FIELDS),
        }
        head_json = json_for_script(head)
        text = f'{DATA_PREFIX}{head_json[:-1]},"rows":[{",".join(t for _, t in self._rows)}]}};\n'
        _replace(self.data_path, text.encode("utf-8"))


def _frames(rows: Iterable[pd.DataFrame] | pd.DataFrame | None) -> list[pd.DataFrame]:
    if rows is None:
        return []
    if isinstance(rows, pd.DataFrame):
        return [rows]
    return list(rows)


def _figure(row: np.ndarray, i: int) -> float | None:
    """``row[i]`` rounded to :data:`_DIGITS` decimals; None for a missing column (``i < 0``) or NaN."""
    if i < 0:
        return None
    x = float(row[i])
    return round(x, _DIGITS) if math.isfinite(x) else None


def _status(status: Mapping[str, Any]) -> dict[str, Any]:
    """The status figures of the data file: floats and ints where they parse, else None (unknown)."""
    out: dict[str, Any] = {}
    for key in _FLOAT_STATUS + _INT_STATUS:
        v = status.get(key)
        try:
            x = float(v) if v is not None else math.nan
        except (TypeError, ValueError):
            x = math.nan
        if not math.isfinite(x):
            out[key] = None
        else:
            out[key] = int(x) if key in _INT_STATUS else x
    err = status.get("error")
    if isinstance(err, float) and math.isnan(err):
        err = None
    out["error"] = None if err is None else str(err)[:_MAX_ERROR_CHARS]
    return out


def _replace(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it over ``path`` (no fsync: see the module
    docstring).

    Raises:
        OSError: the folder cannot be written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o644)  # mkstemp creates 0600; a local http server or another user reads it
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
