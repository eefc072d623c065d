"""One study step: the analysed recordings' Parquet tables -> the study tables (no video is read).

Called by the flow after the recordings a stimulus needs, and by ``fer-pipeline study OUT`` on its own.
"""

from __future__ import annotations

from pathlib import Path


from fer_pipeline.aggregate import emotion_labels
from fer_pipeline.config import StudyConfig
from fer_pipeline.store import read_parts, read_table
from fer_pipeline.study.manifest import Manifest
from fer_pipeline.study.store import write_study
from fer_pipeline.study.tables import StudyTables, build_study

DEFAULT_LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def _labels(out_dir: Path) -> list[str]:
    """The emotion model's labels, from the ``p_<label>`` columns of a ``faces`` part's schema (no rows read);
    FER2013's seven when the folder has no faces part."""
    import pyarrow.parquet as pq

    for f in sorted((out_dir / "faces").glob("video_id=*/*.parquet")):
        try:
            found = emotion_labels(pq.read_schema(f).names)
        except (OSError, ValueError):  # damaged: build_study names it when it reads the rows
            continue
        if found:
            return found
    return list(DEFAULT_LABELS)


def run_study(out_dir: str | Path, manifest: Manifest, cfg: StudyConfig | None = None,
              known: dict[str, str] | None = None, stimuli: list[str] | None = None,
              write: bool = True) -> StudyTables:
    """Compute (and write) the study tables of ``manifest`` from ``out_dir``'s ``videos`` and ``faces`` tables.

    Args:
        out_dir: an output folder of ``fer-pipeline analyze``.
        manifest: the checked manifest.
        cfg: study settings.
        known: resolved recording path -> video id of the run that just analysed them (optional).
        stimuli: only these stimuli (default: all of the manifest's).
        write: also write the tables and keep the manifest (:func:`fer_pipeline.study.store.write_study`).

    Returns:
        The :class:`~fer_pipeline.study.tables.StudyTables`, ``errors`` included.

    Raises:
        DamagedOutputError: a table part cannot be read.
        OSError: the tables cannot be written.
    """
    out_dir = Path(out_dir)
    whole = manifest
    if stimuli is not None:
        keep = set(stimuli)
        manifest = Manifest([r for r in manifest.rows if r.stimulus in keep], list(manifest.errors),
                            manifest.attributes, manifest.source)
    videos = read_table(out_dir, "videos")
    tables = build_study(manifest, videos, lambda vid: read_parts(out_dir / "faces", vid), _labels(out_dir), cfg,
                         known)
    if write:
        settings = (cfg or StudyConfig()).model_dump(mode="json")
        write_study(out_dir, tables, whole, settings)  # the whole manifest is kept, whichever stimuli were computed
    return tables
