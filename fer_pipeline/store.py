"""Storage: the four output tables as Hive-partitioned Parquet datasets under the output folder.

Layout: ``OUT/<table>/video_id=<video_id>/part-0.parquet`` for tables ``faces``, ``timeline``, ``audience``,
``videos``, so ``pandas.read_parquet("OUT/timeline")`` returns every video with ``video_id`` as a column. Schemas are
declared up front from the model's labels (ARCHITECTURE.md); a table whose columns differ raises ``ValueError``.

Atomicity: each file is written to a temporary name in a staging folder on the same file system and renamed into
place; a video's ``videos`` row is written last, so a video counts as done only once all its tables are complete.
Readers never see a half-written file.

pandas and pyarrow are imported on first use, not with this module, so that a process can start decoding its first
video without waiting for them (:func:`fer_pipeline.pipeline.analyze_video` imports them in a helper thread meanwhile).
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from fer_pipeline.fileutil import make_video_id

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

logger = logging.getLogger(__name__)

TABLES = ("faces", "timeline", "audience", "videos")


def faces_schema(labels) -> pa.Schema:
    """Schema of ``faces`` (without the ``video_id`` partition column)."""
    import pyarrow as pa

    return pa.schema([("frame_index", pa.int64()), ("timestamp_s", pa.float64()), ("track_id", pa.int64()),
                      ("x1", pa.float32()), ("y1", pa.float32()), ("x2", pa.float32()), ("y2", pa.float32()),
                      ("det_score", pa.float32()), *[(f"p_{lab}", pa.float32()) for lab in labels],
                      ("emotion", pa.string()),
                      # head pose (degrees; fer_pipeline/headpose.py) and facing the camera within the limits
                      ("yaw", pa.float32()), ("pitch", pa.float32()), ("roll", pa.float32()),
                      ("attentive", pa.bool_())])


def timeline_schema(labels) -> pa.Schema:
    """Schema of ``timeline`` (without ``video_id``)."""
    import pyarrow as pa

    return pa.schema([("track_id", pa.int64()), ("second", pa.int64()), ("n_samples", pa.int64()),
                      *[(f"p_{lab}", pa.float32()) for lab in labels], ("emotion", pa.string()),
                      ("valence", pa.float32()), ("expressiveness", pa.float32()), ("attention", pa.float32())])


def audience_schema(labels) -> pa.Schema:
    """Schema of ``audience`` (without ``video_id``)."""
    import pyarrow as pa

    return pa.schema([("second", pa.int64()), ("viewers", pa.int64()),
                      *[(f"p_{lab}", pa.float32()) for lab in labels],
                      *[(f"share_{lab}", pa.float32()) for lab in labels],
                      ("valence", pa.float32()), ("expressiveness", pa.float32()), ("attention", pa.float32())])


def videos_schema() -> pa.Schema:
    """Schema of ``videos`` (without ``video_id``)."""
    import pyarrow as pa

    return pa.schema([
        ("path", pa.string()), ("sha256", pa.string()), ("status", pa.string()), ("error", pa.string()),
        ("duration_s", pa.float64()), ("fps", pa.float64()), ("width", pa.int64()), ("height", pa.int64()),
        ("frames_sampled", pa.int64()), ("faces_detected", pa.int64()), ("tracks", pa.int64()),
        ("processing_s", pa.float64()), ("emotion_model", pa.string()), ("detector", pa.string()),
        ("pipeline_version", pa.string()), ("created_at", pa.timestamp("us", tz="UTC")),
    ])


def to_table(df: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    """Convert a DataFrame to a table of exactly ``schema``.

    Raises:
        ValueError: the DataFrame's columns are not exactly the schema's (missing or extra columns named).
    """
    cols = list(df.columns)
    want = schema.names
    if cols != want:
        missing = [c for c in want if c not in cols]
        extra = [c for c in cols if c not in want]
        if missing or extra:
            raise ValueError(f"columns differ from the declared schema: missing {missing}, unexpected {extra}")
        df = df[want]
    import pyarrow as pa

    return pa.Table.from_pandas(df, schema=schema, preserve_index=False)


class VideoWriter:
    """Writes one video's tables into the output folder atomically.

    Usage::

        w = VideoWriter(out_dir, video_id, labels)
        w.write("faces", faces_df); w.write("timeline", tl); w.write("audience", au)
        w.commit(video_row)      # moves everything into place, ``videos`` last

    ``abort()`` (or an exception before ``commit``) leaves the datasets untouched.

    Args:
        out_dir: the output folder (created if needed).
        video_id: partition value (see :func:`make_video_id`).
        labels: model labels, for the schemas.
        metadata: key/values stored in every file's Parquet metadata (model sha256, pipeline version, ...).
    """

    def __init__(self, out_dir: str | Path, video_id: str, labels, metadata: dict[str, str] | None = None) -> None:
        self.out = Path(out_dir)
        self.video_id = video_id
        self.labels = tuple(labels)
        self.metadata = {k: str(v) for k, v in (metadata or {}).items()}
        self.stage = self.out / ".staging" / f"{video_id}-{uuid.uuid4().hex[:8]}"
        self.stage.mkdir(parents=True, exist_ok=True)
        self._written: list[str] = []

    def _schema(self, table: str) -> pa.Schema:
        if table == "faces":
            return faces_schema(self.labels)
        if table == "timeline":
            return timeline_schema(self.labels)
        if table == "audience":
            return audience_schema(self.labels)
        if table == "videos":
            return videos_schema()
        raise ValueError(f"unknown table {table!r}; expected one of {TABLES}")

    def write(self, table: str, df: pd.DataFrame) -> None:
        """Stage one table of this video (not visible until :meth:`commit`)."""
        import pyarrow.parquet as pq

        schema = self._schema(table)
        t = to_table(df, schema)
        t = t.replace_schema_metadata({**(t.schema.metadata or {}), **{k.encode(): v.encode()
                                                                         for k, v in self.metadata.items()}})
        d = self.stage / table
        d.mkdir(parents=True, exist_ok=True)
        pq.write_table(t, d / "part-0.parquet", compression="zstd")
        self._written.append(table)

    def commit(self, video_row: dict) -> None:
        """Write the ``videos`` row and move every staged table into ``OUT/<table>/video_id=<id>/``, replacing an
        earlier result of the same video. Tables not written this time are removed for this video, so the datasets
        stay consistent with its ``videos`` row."""
        import pandas as pd

        self.write("videos", pd.DataFrame([{k: video_row.get(k) for k in videos_schema().names}]))
        try:
            for table in TABLES:  # "videos" last: marks the video done
                dest = self.out / table / f"video_id={self.video_id}"
                if table not in self._written:
                    shutil.rmtree(dest, ignore_errors=True)
                    continue
                dest.mkdir(parents=True, exist_ok=True)
                os.replace(self.stage / table / "part-0.parquet", dest / "part-0.parquet")
        finally:
            self.abort()

    def abort(self) -> None:
        """Drop everything staged."""
        shutil.rmtree(self.stage, ignore_errors=True)
        try:
            self.stage.parent.rmdir()
        except OSError:
            pass


def read_video_row(out_dir: str | Path, video_id: str) -> dict | None:
    """The stored ``videos`` row of ``video_id``, or None if the video was never committed."""
    f = Path(out_dir) / "videos" / f"video_id={video_id}" / "part-0.parquet"
    if not f.is_file():
        return None
    import pyarrow.parquet as pq

    rows = pq.read_table(f).to_pylist()
    return rows[0] if rows else None


def read_table(out_dir: str | Path, table: str) -> pd.DataFrame:
    """Read a whole dataset (all videos) with ``video_id`` as a plain string column; empty DataFrame if absent."""
    import pandas as pd

    d = Path(out_dir) / table
    if not d.is_dir() or not any(d.glob("video_id=*/*.parquet")):
        return pd.DataFrame()
    df = pd.read_parquet(d)
    df["video_id"] = df["video_id"].astype(str)
    return df


def clean_staging(out_dir: str | Path) -> None:
    """Remove leftovers of interrupted runs (never visible to readers, but they take space)."""
    shutil.rmtree(Path(out_dir) / ".staging", ignore_errors=True)


__all__ = ["TABLES", "VideoWriter", "audience_schema", "clean_staging", "faces_schema", "make_video_id", "read_table",
           "read_video_row", "timeline_schema", "to_table", "videos_schema"]
