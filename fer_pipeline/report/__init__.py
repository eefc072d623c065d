"""Report stage: the Parquet tables of a run -> one self-contained HTML report per video and an index of the run.

Reads only the output tables of ARCHITECTURE.md (``videos``, ``timeline``, ``audience``) and the thumbnails saved
beside the reports, so ``fer-pipeline report OUT`` can re-render a run long after it was analysed. Layout of what is
written::

    OUT/index.html                  every video of the run, sortable, failed/skipped files with their reasons
    OUT/reports/<video_id>.html     one report per ``ok`` video
    OUT/reports/plotly.min.js       plotly.js (cartesian bundle, fer_pipeline/static/), copied once

The reports make no network request: plotly.js is referenced by a relative ``<script src>``, the data is inline JSON,
CSS is inline, and there are no external fonts or images (thumbnails, when given, are relative paths).

Modules: :mod:`~fer_pipeline.report.render` (writing files, :func:`render_all`), :mod:`~fer_pipeline.report.context`
(what a page shows, from the tables and :mod:`fer_pipeline.metrics`), :mod:`~fer_pipeline.report.html` (Jinja2
environment and filters, safe JSON, references and file names, plotly.js). The figures themselves are computed in
:mod:`fer_pipeline.aggregate` (per second) and :mod:`fer_pipeline.metrics` (summaries); no stage module imports this
package.
"""

from fer_pipeline.report.html import (
    PLOTLY_JS_NAME,
    TEMPLATES_DIR,
    ensure_plotly_js,
    json_for_script,
    safe_filename,
)
from fer_pipeline.report.render import (
    ReportError,
    model_card,
    render_all,
    render_index,
    render_video_report,
    saved_thumbnails,
)

__all__ = [
    "PLOTLY_JS_NAME",
    "TEMPLATES_DIR",
    "ReportError",
    "ensure_plotly_js",
    "json_for_script",
    "model_card",
    "render_all",
    "render_index",
    "render_video_report",
    "safe_filename",
    "saved_thumbnails",
]
