"""fer-pipeline: per-viewer, per-second emotion timelines and engagement reports from recordings of audiences.

The Python API, in one call::

    import fer_pipeline

    res = fer_pipeline.analyze("clip.mp4")          # or a list of files and folders; out="OUT" keeps tables + reports
    res.timeline                                     # pandas DataFrames, video_id a column: faces, timeline, audience,
    res.audience.plot(x="second", y="valence")       # videos
    fer_pipeline.read_results("OUT")                 # the same from an existing output folder
    for sec in fer_pipeline.live("udp://127.0.0.1:5000"):   # a camera or a stream: one dict per second, live
        print(sec["second"], sec["viewers"], sec["valence"])

Public names: :func:`analyze`, :func:`read_results`, :class:`Results` (from :mod:`fer_pipeline.api`), :func:`live`
(:mod:`fer_pipeline.live_run`) and
:class:`PipelineConfig` (:mod:`fer_pipeline.config`). They are imported on first use, so ``import fer_pipeline``
loads neither pandas, onnxruntime nor Prefect (nor torch, which only training needs).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

__all__ = ["PipelineConfig", "Results", "__version__", "analyze", "live", "read_results"]

#: Public name -> module that defines it, imported on first access (PEP 562). Deliberately no ``import`` statement of
#: these modules here: the pipeline's modules import ``fer_pipeline`` (for ``__version__``), and the API sits above
#: the pipeline.
_LAZY = {"analyze": "fer_pipeline.api", "read_results": "fer_pipeline.api", "Results": "fer_pipeline.api",
         "PipelineConfig": "fer_pipeline.config", "live": "fer_pipeline.live_run"}


def __getattr__(name: str) -> Any:
    """Import a public name's module on first access (``fer_pipeline.analyze`` imports :mod:`fer_pipeline.api`)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fer_pipeline' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later accesses skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
