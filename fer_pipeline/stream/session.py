"""A live session: a :class:`~fer_pipeline.stream.source.LiveSource` through the batch pipeline's stages
(:class:`~fer_pipeline.stages.FaceStages`: detection, tracking, alignment + classification, head pose; the same
aggregation and the same tables), written as it happens.

Loop: take the samples queued (the newest frames; at most ``decode.batch_size``), run the stages on them, time
each sample from its arrival to its probabilities (latency), hand the seconds that became complete to the caller
(:meth:`LiveSession.seconds` yields one ``audience``-like row per second: the iterator API and the live page), and
every ``flush_s`` seconds write the rows settled so far (:class:`~fer_pipeline.stream.rolling.Rolling`) as new
part files of ``faces``, ``timeline`` and ``audience`` under the session's ``video_id`` and a fresh ``videos`` row
(status ``live``), each file renamed into place whole (:class:`~fer_pipeline.store.VideoWriter`), so a crash loses
at most the rows of the last ``flush_s + lag`` seconds and readers see complete files at any moment.

It ends when the source ends (end of stream, ``idle_timeout_s`` without data, an error after its reconnections),
at ``duration_s`` seconds of stream time, or when a stop is requested (:func:`fer_pipeline.interrupt.request_stop`,
e.g. SIGINT / SIGTERM in the CLI); then every remaining second is settled and written, the report thumbnails are
saved and the ``videos`` row becomes ``ok`` with the latency figures (``latency_p50_s``, ``latency_p95_s``),
``frames_dropped`` and ``gap_s``. Memory stays flat over hours: faces are held only until settled, latencies are a
float32 array (4 bytes a sample), and thumbnails are kept only for the seconds that can still be key moments.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import math
import re
import time
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fer_pipeline import __version__, interrupt
from fer_pipeline.config import PipelineConfig
from fer_pipeline.cuts import CutDetector
from fer_pipeline.reid import TrackSamples
from fer_pipeline.reid.online import OnlineViewers
from fer_pipeline.reuse import settings_fingerprint, settings_json
from fer_pipeline.stages import FaceStages, StageTimes
from fer_pipeline.stream.rolling import Rolling, Window
from fer_pipeline.stream.source import LiveSample, LiveSource, SourceError
from fer_pipeline.thumbnails import Thumbnails
from fer_pipeline.track import build_tracker
from fer_pipeline.types import FrameBatch

if TYPE_CHECKING:
    import pandas as pd

    from fer_pipeline.models import Models

logger = logging.getLogger(__name__)

__all__ = ["LiveSession", "LiveStatus", "live_video_id"]


def live_video_id(source: str, started: dt.datetime) -> str:
    """``live-<source slug>-<UTC start, YYYYmmddTHHMMSSZ>``: ``slug`` is the source lower-cased with every run of
    characters other than ``a-z0-9`` replaced by ``-`` (at most 40; a file's name without its extension), e.g. ``live-udp-127-0-0-1-5000-20261202T
    101500Z``; only ``[a-z0-9-]``, so it is safe in folder names, URLs and HTML like a file's ``video_id``."""
    name = str(source)
    if "://" not in name and not name.startswith("/dev/") and name != "-":
        name = Path(name).stem  # a file: its name, as a batch run's video_id
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40].strip("-") or "stdin"
    return f"live-{slug}-{started.astimezone(dt.timezone.utc).strftime('%Y%m%dT%H%M%SZ').lower()}"


@dataclass
class LiveStatus:
    """Where a session stands (for a live page or a log line).

    Attributes:
        video_id: the session's id.
        source: SOURCE as given.
        stream_s: stream time reached, seconds.
        samples: frames analysed.
        frames_dropped: samples dropped because the pipeline was behind.
        latency_p50_s, latency_p95_s: latency percentiles over the last 200 samples, seconds (NaN before any).
        viewers_now: tracks with a face in the last complete second.
        settled_until: seconds before this are written to the tables.
    """

    video_id: str
    source: str
    stream_s: float
    samples: int
    frames_dropped: int
    latency_p50_s: float
    latency_p95_s: float
    viewers_now: int
    settled_until: int


class LiveSession:
    """One live session (see the module docstring).

    Args:
        source: the source, not started yet (:meth:`seconds` starts and closes it).
        out_dir: where the tables go (as for a batch run), or None to write nothing (the iterator API).
        cfg: settings (defaults when None); ``decode.sample_fps`` should be the source's ``sample_fps``.
        models: loaded models (built from ``cfg`` when None).
        flush_s: seconds of stream time between writes (> 0).
        duration_s: end after this many seconds of stream time (None: until the source ends or a stop).
        video_id: the session's id (:func:`live_video_id` of the source and the start time when None).

    Raises (from :meth:`seconds`):
        SourceError: the source cannot be opened, or ended before its first frame (nothing is written).
        OutputError: ``out_dir`` cannot be written.
    """

    def __init__(self, source: LiveSource, out_dir: str | Path | None = None, cfg: PipelineConfig | None = None,
                 models: Models | None = None, flush_s: float = 10.0, duration_s: float | None = None,
                 video_id: str | None = None) -> None:
        if flush_s <= 0:
            raise ValueError(f"flush_s must be > 0, got {flush_s}")
        self.source = source
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.cfg = cfg or PipelineConfig()
        self._models = models
        self.flush_s = float(flush_s)
        self.duration_s = duration_s
        self.created = dt.datetime.now(dt.timezone.utc)
        self.video_id = video_id or live_video_id(source.name, self.created)
        self.times = StageTimes()
        self.latencies = array("f")
        self.samples = 0
        self.row: dict = {}
        self.ended: str | None = None
        self._windows = 0
        self._viewers_now = 0
        self._t0 = time.perf_counter()

    # -- the loop -------------------------------------------------------------------------------------------------
    def seconds(self) -> Iterator[pd.DataFrame]:
        """Run the session, yielding each second as soon as it is complete: a one-row DataFrame with the
        ``audience`` columns (``second``, ``viewers``, ``p_<label>``..., ``share_<label>``..., ``valence``,
        ``expressiveness``, ``attention``) from the faces as tracked so far (provisional: the settled rows in
        the tables drop short tracks and join viewers). Closing the generator early ends the session cleanly
        (everything so far is written).

        Raises:
            SourceError, OutputError: see the class docstring.
        """
        from fer_pipeline.models import Models

        cfg = self.cfg
        models = self._models or Models.load(cfg)
        labels = models.emotion.labels
        tracker = build_tracker(cfg.track)
        stages = FaceStages(models.detector, tracker, models.emotion, self.times, CutDetector(cfg.track.cut_threshold))
        embedder = models.embedder if cfg.reid.enabled else None
        samples = TrackSamples(embedder, cfg.reid.samples_per_track) if embedder is not None else None
        viewers = OnlineViewers(embedder, cfg.reid.distance_threshold, cfg.reid.min_face_px, cfg.reid.max_yaw_deg)
        rolling = Rolling(tracker, labels, cfg, viewers, samples)
        thumbs = Thumbnails() if cfg.output.thumbnails and self.out_dir is not None else None
        fingerprint = settings_fingerprint(cfg, models)
        self.row = {"path": self.source.name, "sha256": None, "status": "live", "error": None, "duration_s": 0.0,
                    "fps": None, "width": None, "height": None, "frames_sampled": 0, "faces_detected": 0,
                    "tracks": 0, "viewers": 0, "processing_s": 0.0,
                    "emotion_model": f"{models.emotion.spec.name}@{models.emotion.spec.sha256[:12]}",
                    "detector": cfg.detect.backend, "pipeline_version": __version__, "created_at": self.created,
                    "settings": settings_json(fingerprint), "latency_p50_s": float("nan"),
                    "latency_p95_s": float("nan"), "frames_dropped": 0, "gap_s": 0.0}
        self.row["settings_sha256"] = hashlib.sha256(self.row["settings"].encode()).hexdigest()
        self._labels, self._models_used = labels, models
        self._key_hist: list[pd.DataFrame] = []

        src = self.source
        src.start()
        logger.info("live %s: %s %sx%s %s fps -> video_id %s", src.name, src.codec, src.width, src.height,
                    f"{src.fps:.2f}" if src.fps else "?", self.video_id)
        next_flush = self.flush_s
        last_ts = -math.inf
        try:
            while True:
                if interrupt.stop_requested():
                    self.ended = "stopped"
                    break
                got = src.get(cfg.decode.batch_size, timeout_s=0.25)
                if not got:
                    if src.ended is not None and src.queued() == 0:
                        self.ended = src.ended
                        yield from rolling.provisional(final=True)
                        break
                    continue
                for batch, group in _batches(got):
                    per_frame, faces = stages(batch)
                    ready = time.perf_counter()
                    self.latencies.extend(ready - s.arrival for s in group)
                    self.samples += len(group)
                    if thumbs is not None:
                        thumbs.add(batch, per_frame)
                    if samples is not None:
                        samples.add_batch(batch, faces)
                    last_ts = float(batch.timestamp_s[-1])
                    rolling.add(faces, last_ts)
                for row in rolling.provisional():
                    self._viewers_now = int(row["viewers"].iloc[0]) if len(row) else 0
                    yield row
                if self.duration_s is not None and last_ts >= self.duration_s:
                    self.ended = "duration"
                    break
                if last_ts >= next_flush:
                    self._write(rolling.settle(), rolling, thumbs, final=False)
                    next_flush = last_ts + self.flush_s
        finally:
            src.close()
            if self.ended is None:
                self.ended = "closed"  # the caller closed the generator
            if self.samples == 0:
                self.row.update(status="failed", error=src.error or f"nothing received from {src.name}")
                if src.ended in ("idle", "error") or self.ended in ("idle", "error", "eof"):
                    raise SourceError(src.error or f"nothing received from {src.name} in "
                                      f"{src.idle_timeout_s:g} s")
            else:
                self._write(rolling.settle(final=True), rolling, thumbs, final=True)
        if src.ended == "error" and src.error:
            logger.warning("live session %s ended by a source error: %s", self.video_id, src.error)

    def run(self) -> dict:
        """Run the session to its end (see :meth:`seconds`); returns the final ``videos`` row (plus ``video_id``,
        ``ended``: ``eof``, ``idle``, ``error``, ``duration``, ``stopped``)."""
        for _ in self.seconds():
            pass
        return {**self.row, "video_id": self.video_id, "ended": self.ended}

    # -- status and writing ---------------------------------------------------------------------------------------
    def status(self) -> LiveStatus:
        """The session's state now (latency over the last 200 samples)."""
        recent = np.frombuffer(self.latencies, np.float32)[-200:] if len(self.latencies) else None
        p50, p95 = ((float(np.percentile(recent, 50)), float(np.percentile(recent, 95))) if recent is not None
                    else (float("nan"), float("nan")))
        return LiveStatus(self.video_id, self.source.name, float(self.row.get("duration_s") or 0.0), self.samples,
                          self.source.frames_dropped, p50, p95, self._viewers_now,
                          int(getattr(self, "_settled_until", 0)))

    def _update_row(self, rolling: Rolling, final: bool) -> None:
        src = self.source
        lat = np.frombuffer(self.latencies, np.float32) if len(self.latencies) else None
        self.row.update(
            status="ok" if final else "live", duration_s=rolling.duration_s, fps=src.fps,
            width=src.width, height=src.height, frames_sampled=self.samples, faces_detected=rolling.faces_written,
            tracks=rolling.tracks, viewers=rolling.viewers.n_viewers, processing_s=time.perf_counter() - self._t0,
            latency_p50_s=float(np.percentile(lat, 50)) if lat is not None else float("nan"),
            latency_p95_s=float(np.percentile(lat, 95)) if lat is not None else float("nan"),
            frames_dropped=src.frames_dropped, gap_s=float(sum(b - a for a, b in src.gaps)))
        if final and src.ended == "error":
            self.row["error"] = f"stream ended by an error: {src.error}"
        self._settled_until = rolling.settled_until

    def _write(self, window: Window | None, rolling: Rolling, thumbs: Thumbnails | None, final: bool) -> None:
        """Write one window (new part files) and the refreshed ``videos`` row; at the end also the thumbnails."""
        _release_free_memory()
        self._update_row(rolling, final)
        if window is not None and thumbs is not None:
            self._prune_thumbnails(window, thumbs, rolling)
        if self.out_dir is None or (window is None and not final):
            return
        from fer_pipeline.errors import OutputError
        from fer_pipeline.store import VideoWriter

        labels = self._labels
        try:
            w = VideoWriter(self.out_dir, self.video_id, labels, {
                "emotion_model_sha256": self._models_used.emotion.spec.sha256, "pipeline_version": __version__,
                "video_id": self.video_id})
            try:
                if window is not None:
                    w.write("faces", window.faces)
                    w.write("timeline", window.timeline)
                    w.write("audience", window.audience)
                if final and thumbs is not None:
                    from fer_pipeline.metrics import key_moments

                    seconds = key_moments(self._history())["seconds"]
                    for name, jpg in thumbs.files(rolling.final_ids, seconds, rolling.viewers.viewer_of).items():
                        w.add_file(name, jpg)
                self._windows += 1
                w.commit(self.row, part=f"part-{self._windows:06d}.parquet")
            except BaseException:
                w.abort()
                raise
        except OSError as e:
            raise OutputError.from_os_error(e, self.out_dir) from e
        if window is not None:
            logger.info("live %s: wrote seconds %d-%d (%d faces)", self.video_id, window.start_s, window.end_s,
                        len(window.faces))

    def _history(self) -> pd.DataFrame:
        import pandas as pd

        return pd.concat(self._key_hist, ignore_index=True) if self._key_hist else pd.DataFrame(
            columns=["second", "viewers", "valence"])

    def _prune_thumbnails(self, window: Window, thumbs: Thumbnails, rolling: Rolling) -> None:
        """Keep the per-second frames that can still be key moments: the settled seconds the key-moment rule
        picks from the settled audience so far (a few columns per second are kept for it), and every second not
        settled yet."""
        from fer_pipeline.metrics import key_moments

        cols = [c for c in ("second", "viewers", "valence", "p_happy") if c in window.audience.columns]
        self._key_hist.append(window.audience[cols].copy())
        if len(self._key_hist) > 1:
            self._key_hist = [self._history()]
        thumbs.prune_seconds(key_moments(self._key_hist[0])["seconds"], rolling.settled_until)


def _release_free_memory() -> None:
    """Give the C heap's free pages back to the system (glibc ``malloc_trim``; a no-op elsewhere). Frames of a
    stream are allocated and freed for hours; without it the resident size creeps up by fragments of freed frames
    (about +25 MB over 10 minutes of 720p) although the live objects stay the same (``benchmarks/live_memory.py``)."""
    global _libc
    if _libc is None:
        import ctypes
        import ctypes.util

        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _libc.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _libc = False
    if _libc:
        _libc.malloc_trim(0)


_libc = None


def _batches(samples: list[LiveSample]) -> Iterator[tuple[FrameBatch, list[LiveSample]]]:
    """The samples as :class:`FrameBatch` es of frames of one size (a stream may change resolution)."""
    start = 0
    for i in range(1, len(samples) + 1):
        if i == len(samples) or samples[i].frame.shape != samples[start].frame.shape:
            group = samples[start:i]
            yield FrameBatch(np.stack([s.frame for s in group]), np.array([s.index for s in group], np.int64),
                             np.array([s.timestamp_s for s in group], np.float64)), group
            start = i
