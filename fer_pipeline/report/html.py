"""HTML plumbing of the reports: the Jinja2 environment and its filters, JSON safe inside ``<script>``, safe relative
references and file names, and the vendored plotly.js bundle.

Nothing here knows what a report shows (that is :mod:`fer_pipeline.report.context`); everything here keeps the pages
self-contained and offline: no absolute path or URL gets into ``src``/``href``, and plotly.js is a file next to the
reports.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd

from fer_pipeline import resources
from fer_pipeline.fileutil import atomic_write_bytes

logger = logging.getLogger(__name__)

TEMPLATES_DIR = resources.templates_dir()
"""Folder of the Jinja2 templates (``video.html.j2``, ``index.html.j2``, ``base.html.j2``, ...): ``reports/templates/``
of the repository, installed as ``fer_pipeline/_templates/`` (:func:`fer_pipeline.resources.templates_dir`)."""

PLOTLY_JS_NAME = "plotly.min.js"
"""File name of plotly.js next to the reports (``<script src="plotly.min.js">``)."""

PLOTLY_BUNDLE = resources.plotly_bundle()
"""plotly.js's "cartesian" partial bundle (1.5 MB; every trace type the reports use), vendored from npm
(``fer_pipeline/static/README.md``). It parses in about half the time of the full 4.8 MB bundle."""

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


# --------------------------------------------------------------------------------------------------------------------
# Templates and filters
# --------------------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def environment(templates_dir: str = str(TEMPLATES_DIR)):
    """The Jinja2 environment (cached per folder): autoescape on, ``StrictUndefined``, templates from
    ``templates_dir``, and the filters ``pct``, ``signed``, ``num``, ``clock``, ``duration`` and ``when``.

    Returns:
        A ``jinja2.Environment``.
    """
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    env = Environment(loader=FileSystemLoader(templates_dir), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["pct"] = fmt_pct
    env.filters["signed"] = fmt_signed
    env.filters["num"] = fmt_num
    env.filters["clock"] = format_clock
    env.filters["duration"] = fmt_duration
    env.filters["when"] = format_when
    return env


def render_template(name: str, context: Mapping[str, Any], safe: Sequence[str] = ()) -> str:
    """Render template ``name`` of :data:`TEMPLATES_DIR` with ``context``.

    Args:
        name: template file name, e.g. ``"video.html.j2"``.
        context: the template variables.
        safe: keys of ``context`` whose (already escaped) text is inserted as is, e.g. the output of
            :func:`json_for_script`.

    Returns:
        The HTML text.

    Raises:
        jinja2.TemplateError: the template is missing or broken, or uses a variable ``context`` lacks.
    """
    ctx = dict(context)
    if safe:
        from markupsafe import Markup

        for key in safe:
            ctx[key] = Markup(ctx[key])
    return environment().get_template(name).render(**ctx)


def format_clock(seconds: float | None) -> str:
    """Video time as ``m:ss`` (or ``h:mm:ss`` from one hour); ``"—"`` for ``None``/NaN. Fractions are truncated."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "—"
    s = int(seconds)
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def format_when(value: Any) -> str:
    """A timestamp (``created_at``) as ``YYYY-MM-DD HH:MM`` plus the zone name when known; ``"—"`` for None.

    Strings that do not parse as a timestamp are returned unchanged.
    """
    if value is None or value is pd.NaT:
        return "—"
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError):
        return str(value)
    if ts is pd.NaT:
        return "—"
    return ts.strftime("%Y-%m-%d %H:%M %Z").strip()


def fmt_pct(x: Any, digits: int = 0) -> str:
    """0.1234 -> '12%'; None/NaN -> '—'."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{100.0 * float(x):.{digits}f}%"


def fmt_signed(x: Any, digits: int = 2) -> str:
    """0.1234 -> '+0.12', -0.5 -> '−0.50' (typographic minus); None/NaN -> '—'."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    v = round(float(x), digits)
    if v == 0:
        return f"{0:.{digits}f}"
    return f"+{v:.{digits}f}" if v > 0 else f"\u2212{abs(v):.{digits}f}"


def fmt_num(x: Any, digits: int = 0) -> str:
    """Thousands-separated number; None/NaN -> '—'; text that is not a number is returned as is."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    try:
        return f"{float(x):,.{digits}f}"
    except (TypeError, ValueError):
        return str(x)


def fmt_duration(x: Any) -> str:
    """Seconds as '1:05' (m:ss) or '12.4 s' under a minute; None/NaN -> '—'."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    x = float(x)
    return f"{x:.1f} s" if x < 60 else format_clock(x)


# --------------------------------------------------------------------------------------------------------------------
# Safe text for pages: JSON in <script>, relative references, file names
# --------------------------------------------------------------------------------------------------------------------


def json_for_script(obj: Any) -> str:
    """Serialise ``obj`` as JSON that is safe inside an HTML ``<script type="application/json">`` element.

    NaN/inf become ``null`` (JSON has no NaN); numpy scalars and arrays are converted; ``<``, ``>``, ``&``, ``'``,
    U+2028 and U+2029 are written as ``\\uXXXX`` escapes, so the text can contain neither ``</script>`` nor ``<!--``.

    Raises:
        TypeError: ``obj`` holds something JSON cannot represent.
    """
    text = json.dumps(_jsonable(obj), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    for ch, esc in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"), ("'", "\\u0027"),
                    ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text


def _jsonable(obj: Any) -> Any:
    """Plain Python types for :func:`json.dumps`: NaN/inf -> None, numpy -> Python, tuples -> lists."""
    if obj is None or isinstance(obj, (str, bool)):
        return obj
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return [_jsonable(v) for v in obj.tolist()]
    if isinstance(obj, (list, tuple, pd.Series)):
        return [_jsonable(v) for v in obj]
    if obj is pd.NA or obj is pd.NaT:
        return None
    if isinstance(obj, (pd.Timestamp, datetime)):
        return obj.isoformat()
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


def relative_ref(ref: Any) -> str | None:
    """``ref`` URL-quoted if it is a relative path usable in ``src``/``href`` without any network access, else
    ``None`` (``None``, empty, absolute paths, and anything with a scheme such as ``https:`` or ``javascript:``)."""
    if ref is None:
        return None
    s = str(ref).strip()
    if not s or s.startswith(("/", "\\")) or re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", s):
        return None
    return quote(s.replace("\\", "/"), safe="/._-~")


def safe_filename(video_id: str) -> str:
    """A file-name stem for ``video_id``: characters other than ``A-Za-z0-9._-`` become ``_``; never empty/dotted."""
    name = _SAFE_NAME.sub("_", str(video_id)).strip(".")
    return name or "video"


# --------------------------------------------------------------------------------------------------------------------
# plotly.js
# --------------------------------------------------------------------------------------------------------------------


def plotly_js_source() -> bytes:
    """The minified plotly.js the reports load: the vendored cartesian bundle (:data:`PLOTLY_BUNDLE`), else the full
    bundle of the installed ``plotly`` package (no network either way).

    Raises:
        OSError: neither bundle is available.
    """
    if PLOTLY_BUNDLE.is_file():
        return PLOTLY_BUNDLE.read_bytes()
    try:
        from importlib.resources import files

        return files("plotly").joinpath("package_data", PLOTLY_JS_NAME).read_bytes()
    except (ModuleNotFoundError, FileNotFoundError, OSError) as e:
        try:
            from plotly.offline import get_plotlyjs
        except ImportError as e2:
            raise OSError("plotly is not installed: cannot write plotly.min.js for the reports") from e2
        logger.debug("packaged plotly.min.js not found (%s); using plotly.offline.get_plotlyjs()", e)
        return get_plotlyjs().encode("utf-8")


def ensure_plotly_js(folder: Path) -> Path:
    """Write ``folder/plotly.min.js`` once (rewritten only if missing or of a different size).

    Returns:
        The path of ``plotly.min.js``.

    Raises:
        OSError: the file cannot be written, or plotly is not installed.
    """
    target = Path(folder) / PLOTLY_JS_NAME
    data = plotly_js_source()
    if target.is_file() and target.stat().st_size == len(data):
        return target
    logger.info("writing %s (%d bytes)", target, len(data))
    return atomic_write_bytes(target, data)
