"""Storage: the four output tables as Hive-partitioned Parquet datasets under the output folder.

Layout: ``OUT/<table>/video_id=<video_id>/part-0.parquet`` for tables ``faces``, ``timeline``, ``audience``,
``videos``, so ``pandas.read_parquet("OUT/timeline")`` returns every video with ``video_id`` as a column. Schemas are
declared up front from the model's labels (ARCHITECTURE.md); a table whose columns differ raises ``ValueError``.

Atomicity: each file is written to a temporary name in a staging folder on the same file system and renamed into
place; a video's ``videos`` row is written last, so a video counts as done only once all its tables are complete.
Readers never see a half-written file. A failed video gets empty (zero-row) parts in the other three tables, so an
output folder of only failures still reads as empty tables with the documented columns.

Concurrency: a run claims a video (:func:`claim`, an exclusive lock on ``OUT/.locks/<video_id>.lock`` holding the
owner's pid) before it checks or analyses it; a second run waits for it. The kernel drops the lock when its owner
dies, so a lock of a killed run is taken over at once.

Damage: every reader here reads part files one by one and raises :class:`~fer_pipeline.errors.DamagedOutputError`
naming the files that cannot be read, instead of failing somewhere inside Arrow or silently skipping them.

pandas and pyarrow are imported on first use, not with this module, so that a process can start decoding its first
video without waiting for them (:func:`fer_pipeline.pipeline.analyze_video` imports them in a helper thread meanwhile).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from fer_pipeline.errors import DamagedOutputError, one_line
from fer_pipeline.fileutil import make_video_id
from fer_pipeline.types import Faces

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

logger = logging.getLogger(__name__)

TABLES = ("faces", "timeline", "audience", "videos")
#: Written only when asked (``output.save_embeddings``); committed with the others, removed when not written.
OPTIONAL_TABLES = ("embeddings",)


def faces_schema(labels) -> pa.Schema:
    """Schema of ``faces`` (without the ``video_id`` partition column)."""
    import pyarrow as pa

    return pa.schema([("frame_index", pa.int64()), ("timestamp_s", pa.float64()), ("track_id", pa.int64()),
                      ("viewer_id", pa.int64()), ("x1", pa.float32()), ("y1", pa.float32()), ("x2", pa.float32()),
                      ("y2", pa.float32()),
                      ("det_score", pa.float32()), *[(f"p_{lab}", pa.float32()) for lab in labels],
                      ("emotion", pa.string()),
                      # head pose (degrees; fer_pipeline/headpose.py) and facing the camera within the limits
                      ("yaw", pa.float32()), ("pitch", pa.float32()), ("roll", pa.float32()),
                      ("attentive", pa.bool_())])


def faces_frame(faces: Faces, labels, attentive: np.ndarray) -> pd.DataFrame:
    """The ``faces`` table's rows (the columns of :func:`faces_schema`, in order) for a video's final
    :class:`~fer_pipeline.types.Faces`: boxes, scores, track ids, frame index, timestamp, ``probs`` ``(N, K)`` over
    ``labels`` and ``pose`` set; ``emotion`` is each row's most probable label; ``attentive`` ``(N,) bool``."""
    import pandas as pd

    cols = {"frame_index": faces.frame_index, "timestamp_s": faces.timestamp_s, "track_id": faces.track_id,
            "viewer_id": faces.viewer_id, "x1": faces.xyxy[:, 0], "y1": faces.xyxy[:, 1], "x2": faces.xyxy[:, 2],
            "y2": faces.xyxy[:, 3],
            "det_score": faces.scores}
    cols.update({f"p_{lab}": faces.probs[:, j] for j, lab in enumerate(labels)})
    cols["emotion"] = np.asarray(labels, dtype=object)[faces.probs.argmax(1)] if len(faces) else \
        np.zeros(0, dtype=object)
    cols.update(yaw=faces.pose[:, 0], pitch=faces.pose[:, 1], roll=faces.pose[:, 2],
                attentive=np.asarray(attentive, bool))
    return pd.DataFrame(cols)


def timeline_schema(labels) -> pa.Schema:
    """Schema of ``timeline`` (without ``video_id``)."""
    import pyarrow as pa

    return pa.schema([("track_id", pa.int64()), ("viewer_id", pa.int64()), ("second", pa.int64()),
                      ("n_samples", pa.int64()),
                      *[(f"p_{lab}", pa.float32()) for lab in labels], ("emotion", pa.string()),
                      ("valence", pa.float32()), ("expressiveness", pa.float32()), ("attention", pa.float32())])


def audience_schema(labels) -> pa.Schema:
    """Schema of ``audience`` (without ``video_id``)."""
    import pyarrow as pa

    return pa.schema([("second", pa.int64()), ("viewers", pa.int64()),
                      *[(f"p_{lab}", pa.float32()) for lab in labels],
                      *[(f"share_{lab}", pa.float32()) for lab in labels],
                      ("valence", pa.float32()), ("expressiveness", pa.float32()), ("attention", pa.float32())])


def embeddings_schema(dim: int) -> pa.Schema:
    """Schema of ``embeddings`` (written only with ``output.save_embeddings``): one row per embedded track, its
    viewer, the embedder and the track's mean face embedding (``dim`` float32, unit L2 norm). Biometric data."""
    import pyarrow as pa

    return pa.schema([("viewer_id", pa.int64()), ("track_id", pa.int64()), ("backend", pa.string()),
                      ("embedding", pa.list_(pa.float32(), dim))])


def embeddings_frame(viewers, backend: str) -> pd.DataFrame:
    """The ``embeddings`` rows of a :class:`~fer_pipeline.reid.ViewerAssignment`: each embedded track's viewer and
    mean embedding."""
    import pandas as pd

    tids = sorted(viewers.embeddings)
    return pd.DataFrame({"viewer_id": [viewers.viewer_of[t] for t in tids], "track_id": tids, "backend": backend,
                         "embedding": [viewers.embeddings[t].astype(np.float32) for t in tids]})


def videos_schema() -> pa.Schema:
    """Schema of ``videos`` (without ``video_id``)."""
    import pyarrow as pa

    return pa.schema([
        ("path", pa.string()), ("sha256", pa.string()), ("status", pa.string()), ("error", pa.string()),
        ("duration_s", pa.float64()), ("fps", pa.float64()), ("width", pa.int64()), ("height", pa.int64()),
        ("frames_sampled", pa.int64()), ("faces_detected", pa.int64()), ("tracks", pa.int64()),
        ("viewers", pa.int64()),
        ("processing_s", pa.float64()), ("emotion_model", pa.string()), ("detector", pa.string()),
        ("pipeline_version", pa.string()), ("created_at", pa.timestamp("us", tz="UTC")),
        # what the results depend on (fer_pipeline.reuse.settings_fingerprint): a re-run with other settings,
        # another model or detector re-analyses the video
        ("settings", pa.string()), ("settings_sha256", pa.string()),
        # live sessions (fer_pipeline.stream): per-sample latency from frame arrival to probabilities ready
        # (seconds; NaN for files), samples dropped because the pipeline was behind (0 for files), seconds of stream
        # time lost to reconnections (0 for files)
        ("latency_p50_s", pa.float64()), ("latency_p95_s", pa.float64()), ("frames_dropped", pa.int64()),
        ("gap_s", pa.float64()),
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


#: What each column means, with units and ranges; stored as the ``description`` of each field of every part file
#: (``pyarrow.parquet.read_schema(f).field("valence").metadata``), so a file passed around explains itself.
DESCRIPTIONS = {
    "video_id": "the recording: file name slug + 10 hex digits of its sha256 (also the partition folder)",
    "frame_index": "index of the frame in the decoded stream (0-based)",
    "timestamp_s": "presentation time of the frame, seconds from the start of the video",
    "track_id": "one continuous run of one face (1-based, per video)",
    "viewer_id": "one person in the video: tracks joined by re-identification (1-based, per video)",
    "x1": "face box left, pixels of the upright frame", "y1": "face box top, pixels of the upright frame",
    "x2": "face box right, pixels of the upright frame", "y2": "face box bottom, pixels of the upright frame",
    "det_score": "face detector confidence, [0, 1]",
    "emotion": "dominant emotion (argmax of the probabilities)",
    "yaw": "head turned left/right, degrees (0 = facing the camera)", "pitch": "head tilted up/down, degrees",
    "roll": "head tilted sideways in the image, degrees",
    "attentive": "facing the camera: |yaw| and |pitch| within the attention limits",
    "second": "window [second, second + 1) of video time, seconds",
    "n_samples": "sampled frames of the track in that second",
    "viewers": "viewers seen in that second",
    "valence": "p_happy - (p_angry + p_disgust + p_fear + p_sad + p_contempt where the model has it), [-1, 1]",
    "expressiveness": "1 - p_neutral, [0, 1]",
    "attention": "share of samples (timeline) or of viewers (audience) facing the camera, [0, 1]",
    "status": "ok, failed or skipped (live: while the session runs)", "error": "why the video failed (one line)",
    "duration_s": "video duration, seconds", "fps": "average frame rate, Hz",
    "processing_s": "wall time of the analysis, seconds",
    "latency_p50_s": "live sessions: median seconds from a frame's arrival to its probabilities (NaN for files)",
    "latency_p95_s": "live sessions: 95th percentile of that latency, seconds (NaN for files)",
    "frames_dropped": "live sessions: sampled frames dropped because the pipeline was behind (0 for files)",
    "gap_s": "live sessions: seconds of stream time without frames while reconnecting (0 for files)",
}


def _description(name: str) -> str | None:
    if name.startswith("p_"):
        return f"probability of {name[2:]}, [0, 1] (rows sum to 1); in timeline/audience a mean"
    if name.startswith("share_"):
        return f"share of viewers whose dominant emotion is {name[6:]}, [0, 1]"
    return DESCRIPTIONS.get(name)


#: Text columns with few distinct values, dictionary-encoded in the files (smaller, and categories in pandas).
DICTIONARY_COLUMNS = ("emotion", "status", "backend")


def file_table(t: pa.Table, video_id: str, table: str) -> pa.Table:
    """What a part file holds: ``t`` with ``video_id`` as its first, real column (so a file copied out of its
    partition folder still says which video it is), ``emotion``/``status`` dictionary-encoded, and each field's
    ``description`` in its metadata. Readers here drop the stored ``video_id`` and take the folder's."""
    import pyarrow as pa

    cols, fields = [], []
    vid = pa.array([video_id] * t.num_rows, pa.string()).dictionary_encode()
    for name, col in [("video_id", vid), *zip(t.column_names, t.columns)]:
        if name in DICTIONARY_COLUMNS and pa.types.is_string(col.type):
            col = col.dictionary_encode() if isinstance(col, pa.Array) else pa.chunked_array(
                [c.dictionary_encode() for c in col.chunks], pa.dictionary(pa.int32(), pa.string()))
        typ = col.type
        desc = _description(name)
        fields.append(pa.field(name, typ, metadata={"description": desc} if desc else None))
        cols.append(col)
    if t.num_rows == 0:  # an empty chunked array has no chunk to take the dictionary type from
        cols = [pa.array([], f.type) if len(c) == 0 else c for c, f in zip(cols, fields)]
    out = pa.Table.from_arrays(cols, schema=pa.schema(fields, metadata=t.schema.metadata))
    return out


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
        self._thumbs = False
        self.embedding_dim = 0

    def _schema(self, table: str) -> pa.Schema:
        if table == "faces":
            return faces_schema(self.labels)
        if table == "timeline":
            return timeline_schema(self.labels)
        if table == "audience":
            return audience_schema(self.labels)
        if table == "videos":
            return videos_schema()
        if table == "embeddings":
            return embeddings_schema(self.embedding_dim)
        raise ValueError(f"unknown table {table!r}; expected one of {TABLES}")

    def write(self, table: str, df: pd.DataFrame) -> None:
        """Stage one table of this video (not visible until :meth:`commit`)."""
        import pyarrow.parquet as pq

        schema = self._schema(table)
        t = file_table(to_table(df, schema), self.video_id, table)
        t = t.replace_schema_metadata({**(t.schema.metadata or {}), **{k.encode(): v.encode()
                                                                         for k, v in self.metadata.items()}})
        d = self.stage / table
        d.mkdir(parents=True, exist_ok=True)
        pq.write_table(t, d / "part-0.parquet", compression="zstd")
        self._written.append(table)

    def add_file(self, name: str, data: bytes) -> None:
        """Stage a file of this video's report thumbnails (``OUT/reports/thumbs/<video_id>/<name>``); on
        :meth:`commit` the staged set replaces the video's earlier thumbnails as a whole."""
        d = self.stage / "thumbs"
        d.mkdir(parents=True, exist_ok=True)
        (d / name).write_bytes(data)
        self._thumbs = True

    def write_empty(self, table: str) -> None:
        """Stage a zero-row part of ``table`` (its declared columns): a failed video's rows of ``faces``,
        ``timeline`` and ``audience``."""
        schema = self._schema(table)
        self.write(table, schema.empty_table().to_pandas())

    def commit(self, video_row: dict, part: str | None = None) -> None:
        """Write the ``videos`` row and move every staged table into ``OUT/<table>/video_id=<id>/``, replacing an
        earlier result of the same video. Tables not written this time are removed for this video, so the datasets
        stay consistent with its ``videos`` row.

        Args:
            video_row: the ``videos`` row (its ``part-0.parquet`` is replaced in any case).
            part: for a live session's window (:mod:`fer_pipeline.stream`): the file name the staged
                ``faces``/``timeline``/``audience`` parts take beside the session's earlier windows (e.g.
                ``part-000003.parquet``); nothing else of the video is removed. None: the whole result of a video.
        """
        import pandas as pd

        self.write("videos", pd.DataFrame([{k: video_row.get(k) for k in videos_schema().names}]))
        try:
            if self._thumbs:  # before the tables: a committed video always has its thumbnails
                dest = self.out / "reports" / "thumbs" / self.video_id
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.rmtree(dest, ignore_errors=True)
                os.replace(self.stage / "thumbs", dest)
            for table in OPTIONAL_TABLES + TABLES:  # "videos" last: marks the video done
                dest = self.out / table / f"video_id={self.video_id}"
                if table not in self._written:
                    if part is None:
                        shutil.rmtree(dest, ignore_errors=True)
                    continue
                dest.mkdir(parents=True, exist_ok=True)
                name = part if part is not None and table != "videos" else "part-0.parquet"
                os.replace(self.stage / table / "part-0.parquet", dest / name)
        finally:
            self.abort()

    def abort(self) -> None:
        """Drop everything staged."""
        shutil.rmtree(self.stage, ignore_errors=True)
        try:
            self.stage.parent.rmdir()
        except OSError:
            pass


def part_path(out_dir: str | Path, table: str, video_id: str) -> Path:
    """Where ``video_id``'s part of ``table`` lives: ``OUT/<table>/video_id=<id>/part-0.parquet``."""
    return Path(out_dir) / table / f"video_id={video_id}" / "part-0.parquet"


def _read_part(f: Path) -> pa.Table:
    """One part file, whole (every page decoded, so damage anywhere in it shows).

    Raises:
        DamagedOutputError: it exists but cannot be read as Parquet.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(f, partitioning=None)
    except (pa.ArrowException, OSError, ValueError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise DamagedOutputError([f], one_line(e, 120)) from e


def read_video_row(out_dir: str | Path, video_id: str) -> dict | None:
    """The stored ``videos`` row of ``video_id``, or None if the video was never committed.

    Raises:
        DamagedOutputError: its ``videos`` part cannot be read.
    """
    f = part_path(out_dir, "videos", video_id)
    if not f.is_file():
        return None
    rows = _read_part(f).to_pylist()
    return rows[0] if rows else None


def check_parts(out_dir: str | Path, video_id: str, faces_rows: int | None = None) -> list[str]:
    """Problems with the committed parts of one ``ok`` video, as one-line strings (empty: all present and readable).

    Reads the ``faces``, ``timeline`` and ``audience`` parts whole; with ``faces_rows`` (the ``videos`` row's
    ``faces_detected``) also checks that ``faces`` holds that many rows.
    """
    problems = []
    for table in ("faces", "timeline", "audience"):
        f = part_path(out_dir, table, video_id)
        if not f.is_file():
            problems.append(f"missing {f}")
            continue
        try:
            t = _read_part(f)
        except DamagedOutputError as e:
            problems.append(f"damaged {f}: {e.reason}")
            continue
        if table == "faces" and faces_rows is not None and t.num_rows != int(faces_rows):
            problems.append(f"{f} holds {t.num_rows} rows, not the {int(faces_rows)} recorded")
    return problems


def read_parts(table_dir: str | Path, video_id: str | None = None, damaged: list[Path] | None = None) -> pd.DataFrame:
    """Read a dataset folder (``OUT/<table>``), or one video's part of it, part file by part file, with
    ``video_id`` (from the folder names) as a plain string column.

    Parts written by older versions may lack later columns: those are NaN/None in their rows.

    Args:
        damaged: when given, unreadable parts are appended to it and left out, instead of raising.

    Returns:
        All rows; an empty DataFrame when the folder does not exist or holds no part.

    Raises:
        DamagedOutputError: any part cannot be read (all such files are named); not with ``damaged``.
    """
    import pandas as pd

    d = Path(table_dir)
    files = sorted(d.glob(f"video_id={video_id if video_id is not None else '*'}/*.parquet"))
    frames, bad = [], []
    for f in files:
        if not f.is_file():
            continue
        try:
            t = _read_part(f)
        except DamagedOutputError as e:
            bad.append((f, e.reason))
            continue
        df = t.to_pandas()
        if "video_id" in df.columns:  # stored in the file too; the folder name is the key
            df = df.drop(columns=["video_id"])
        for c in df.columns:  # dictionary-encoded text comes back as categories: plain strings here
            if isinstance(df[c].dtype, pd.CategoricalDtype):
                df[c] = df[c].astype(object)
        df.insert(0, "video_id", f.parent.name.partition("=")[2])
        frames.append(df)
    if bad and damaged is not None:
        damaged.extend(f for f, _ in bad)
    elif bad:
        raise DamagedOutputError([f for f, _ in bad], bad[0][1])
    if not frames:
        return pd.DataFrame()
    frames = [f for f in frames if len(f)] or frames[:1]  # zero-row parts (failed videos) add no rows
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0].reset_index(drop=True)


def read_table(out_dir: str | Path, table: str) -> pd.DataFrame:
    """Read a whole dataset (all videos) with ``video_id`` as a plain string column; empty DataFrame if absent.

    Raises:
        DamagedOutputError: a part file cannot be read.
    """
    return read_parts(Path(out_dir) / table)


_LOCKS = ".locks"


class Claim:
    """An exclusive claim on one video of an output folder (see :func:`claim`); ``release()`` ends it."""

    def __init__(self, fd: int, path: Path) -> None:
        self.fd, self.path = fd, path

    def release(self) -> None:
        if self.fd < 0:
            return
        try:
            self.path.unlink()  # while still locked: a waiter then sees another inode and retries
        except OSError:
            pass
        os.close(self.fd)  # drops the lock
        self.fd = -1

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _lock_owner(path: Path) -> str:
    try:
        return path.read_text().strip() or "?"
    except OSError:
        return "?"


def claim(out_dir: str | Path, video_id: str, wait: Callable[[str], None] | None = None,
          poll_s: float = 0.25) -> Claim:
    """Claim ``video_id`` in ``out_dir`` for this process, waiting while another process holds it.

    An exclusive ``flock`` on ``OUT/.locks/<video_id>.lock`` (which holds the owner's pid and host for messages).
    The kernel drops the lock when its owner exits or is killed, so a stale lock is taken over at once; the file is
    removed on :meth:`Claim.release`. Where locks are not supported (some network file systems) the claim is
    granted without one, with a warning.

    Args:
        wait: called once with the owner's "pid@host" when this call has to wait; the caller's stop requests are
            honoured while waiting (:func:`fer_pipeline.interrupt.check`).

    Raises:
        Interrupted: a stop was requested while waiting.
        OSError: the lock folder cannot be created.
    """
    import fcntl
    import socket

    from fer_pipeline import interrupt

    d = Path(out_dir) / _LOCKS
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{video_id}.lock"
    told = False
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if not told and wait is not None:
                wait(_lock_owner(path))
                told = True
            interrupt.check()
            time.sleep(poll_s)
            continue
        except OSError as e:  # no locks on this file system
            logger.warning("cannot lock %s (%s); two runs may analyse %s at once", path, e, video_id)
            return Claim(fd, path)
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # released (and removed) between our open and our lock: try the new file
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}@{socket.gethostname()}\n".encode())
        return Claim(fd, path)


def _locked(out_dir: Path, video_id: str) -> bool:
    """Whether another process holds ``video_id``'s claim now."""
    import fcntl

    path = out_dir / _LOCKS / f"{video_id}.lock"
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def clean_staging(out_dir: str | Path) -> None:
    """Remove leftovers of interrupted runs (never visible to readers, but they take space): staged files of videos
    that no running process has claimed (another run's work in progress is left alone)."""
    out_dir = Path(out_dir)
    stage = out_dir / ".staging"
    if not stage.is_dir():
        return
    for d in stage.iterdir():
        video_id = d.name.rsplit("-", 1)[0]
        if not _locked(out_dir, video_id):
            shutil.rmtree(d, ignore_errors=True)
    try:
        stage.rmdir()
    except OSError:
        pass


__all__ = ["TABLES", "Claim", "VideoWriter", "audience_schema", "check_parts", "claim", "clean_staging", "faces_frame",
           "faces_schema",
           "make_video_id", "part_path", "read_parts", "read_table", "read_video_row", "timeline_schema", "to_table",
           "videos_schema"]
