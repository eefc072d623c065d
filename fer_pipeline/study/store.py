"""Storage of the study tables: Parquet datasets partitioned by stimulus under the output folder.

Layout: ``OUT/<table>/stimulus=<stimulus>/part-0.parquet`` for tables ``stimulus``, ``respondents``, ``segments``
and ``respondent_seconds``, so ``pandas.read_parquet("OUT/stimulus")`` (or duckdb's ``read_parquet('OUT/stimulus/*/*.
parquet', hive_partitioning = true)``) returns every stimulus with ``stimulus`` as a column. Each file is written
atomically (temp file + rename); a stimulus computed again replaces its own part and leaves the other stimuli of the
folder alone (they make the norms). The study's manifest is kept as ``OUT/studies/manifest.json`` so that
``fer-pipeline study OUT`` and scheduled runs can recompute without it.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd

from fer_pipeline.errors import DamagedOutputError, one_line
from fer_pipeline.fileutil import atomic_write_bytes, atomic_write_text
from fer_pipeline.study.manifest import Manifest
from fer_pipeline.study.tables import StudyTables

STUDY_TABLES = ("stimulus", "respondents", "segments", "respondent_seconds")
MANIFEST_FILE = Path("studies") / "manifest.json"

DESCRIPTIONS = {
    "second": "stimulus second: window [second, second + 1) of stimulus time (s)",
    "respondents": "respondents with a face in this second",
    "valence": "p_happy - (p_angry + p_disgust + p_fear + p_sad + p_contempt where the model has it), mean over "
                "respondents, [-1, 1]",
    "expressiveness": "1 - p_neutral, mean over respondents, [0, 1]",
    "attention": "mean over respondents of their share of samples facing the camera, [0, 1]",
    "delta_valence": "valence minus each respondent's baseline valence, mean over respondents",
    "delta_expressiveness": "expressiveness minus each respondent's baseline, mean over respondents",
}


def _part(out_dir: Path, table: str, stimulus: str) -> Path:
    return out_dir / table / f"stimulus={stimulus}" / "part-0.parquet"


def _parquet_bytes(df: pd.DataFrame, table: str, settings: dict | None = None) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    df = df.reset_index(drop=True)
    # text columns are strings in every part, even where all of them are empty (else a null-typed column in one part
    # and a string column in another would not read as one dataset)
    fields = [pa.field(c, pa.string()) if df[c].dtype == object or pd.api.types.is_string_dtype(df[c].dtype)
              else pa.Schema.from_pandas(df[[c]], preserve_index=False).field(c) for c in df.columns]
    t = pa.Table.from_pandas(df, schema=pa.schema(fields), preserve_index=False)
    meta = {f"description:{k}": v for k, v in DESCRIPTIONS.items() if k in df.columns}
    meta["fer_pipeline.table"] = table
    if settings:
        meta["fer_pipeline.study_settings"] = json.dumps(settings, sort_keys=True)
    t = t.replace_schema_metadata({**(t.schema.metadata or {}), **{k.encode(): v.encode() for k, v in meta.items()}})
    buf = io.BytesIO()
    pq.write_table(t, buf, compression="zstd")
    return buf.getvalue()


def write_study(out_dir: str | Path, tables: StudyTables, manifest: Manifest | None = None,
                settings: dict | None = None) -> list[Path]:
    """Write every stimulus' part of the four study tables (and the manifest, when given, with the study
    ``settings`` that computed them: ``StudyConfig.model_dump()``; also in each file's Parquet metadata).

    Returns:
        The files written.

    Raises:
        OSError: the output folder cannot be written (e.g. full).
    """
    out_dir = Path(out_dir)
    written = []
    frames = {"stimulus": tables.stimulus, "respondents": tables.respondents, "segments": tables.segments,
              "respondent_seconds": tables.respondent_seconds}
    for stim in tables.durations:
        for name, df in frames.items():
            part = df.loc[df["stimulus"] == stim].drop(columns=["stimulus"]) if len(df) else df.drop(
                columns=["stimulus"], errors="ignore")
            if name in ("respondents", "respondent_seconds", "segments"):
                for c in part.columns:  # text columns as strings, whatever pandas inferred
                    if part[c].dtype == object:
                        part = part.assign(**{c: part[c].map(lambda v: None if v is None else str(v))})
            written.append(atomic_write_bytes(_part(out_dir, name, stim), _parquet_bytes(part, name, settings)))
    if manifest is not None:
        doc = {"source": manifest.source, "attributes": manifest.attributes, "settings": settings,
               "rows": manifest.to_records()}
        written.append(atomic_write_text(out_dir / MANIFEST_FILE, json.dumps(doc, indent=1)))
    return written


def read_manifest(out_dir: str | Path) -> Manifest | None:
    """The manifest kept by the last study run in ``out_dir``; ``None`` if there is none."""
    p = Path(out_dir) / MANIFEST_FILE
    if not p.is_file():
        return None
    doc = json.loads(p.read_text())
    return Manifest.from_records(doc["rows"], doc.get("attributes", []), doc.get("source", ""))


def read_study_table(out_dir: str | Path, table: str) -> pd.DataFrame:
    """Every stimulus' part of a study table, with ``stimulus`` as a plain string column (first).

    Raises:
        DamagedOutputError: a part cannot be read (the files are named).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    frames, bad = [], []
    for f in sorted((Path(out_dir) / table).glob("stimulus=*/*.parquet")):
        try:
            df = pq.read_table(f, partitioning=None).to_pandas()
        except (pa.ArrowException, OSError, ValueError) as e:
            bad.append((f, one_line(e, 120)))
            continue
        df.insert(0, "stimulus", f.parent.name.partition("=")[2])
        frames.append(df)
    if bad:
        raise DamagedOutputError([f for f, _ in bad], bad[0][1])
    if not frames:
        return pd.DataFrame()
    frames = [f for f in frames if len(f)] or frames[:1]
    return pd.concat(frames, ignore_index=True)
