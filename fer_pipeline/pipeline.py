"""One video through every stage: decode -> detect -> track -> align + classify -> aggregate -> store.

:func:`analyze_video` is the library entry point the Prefect flow and the CLI call. It never lets one bad file stop a
batch: any failure becomes a ``failed`` row in ``videos`` with a one-line reason, and nothing else of that video is
written. Memory is bounded by the batch of sampled frames plus the (small) per-face rows, not by the video length.

Decoding runs ahead in a child process (:mod:`fer_pipeline.decode.process`: its own interpreter, so its decoder threads
never wait for this process's GIL), or with ``decode.process: false`` in a background thread one batch ahead
(decoders and onnxruntime release the GIL), so decode overlaps detection and classification on a 2-core CPU.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from fer_pipeline import __version__, interrupt
from fer_pipeline.config import PipelineConfig
from fer_pipeline.errors import OutputError, is_disk_full, is_transient, one_line
from fer_pipeline.fileutil import make_video_id, sha256_file
from fer_pipeline.cuts import CutDetector
from fer_pipeline.decode import decode_ahead
from fer_pipeline.headpose import is_attentive
from fer_pipeline.models import Models
from fer_pipeline.reid import TrackSamples, viewers_of_tracks
from fer_pipeline.reuse import reuse, settings_fingerprint, settings_json
from fer_pipeline.stages import FaceStages, StageTimes, timed_batches
from fer_pipeline.store import VideoWriter, claim, embeddings_frame, faces_frame
from fer_pipeline.thumbnails import Thumbnails
from fer_pipeline.track import build_tracker
from fer_pipeline.types import Faces

if TYPE_CHECKING:
    import pandas as pd

    from fer_pipeline.decode import Prestarted

logger = logging.getLogger(__name__)

#: Python's thread switch interval while a video is analysed (seconds; CPython's default is 0.005). The decoder
#: threads need the GIL briefly for every packet; while the main thread (or the helper importing the tracker) runs
#: Python code, each of them waits up to one interval for it, and a core idles. 1 ms: median 5.31-5.37 s against
#: 5.65-5.85 s for the 1-minute 720p input (interleaved runs; 0.3 ms: 5.49 s), `benchmarks/README.md`, "Issue #4,
#: fifth round".
SWITCH_INTERVAL_S = 0.001

_switch_lock = threading.Lock()
_switch_users = 0
_switch_saved = 0.005


@contextmanager
def _switch_interval(seconds: float):
    """Set ``sys.setswitchinterval(seconds)`` while at least one analysis runs in this process; the previous value
    comes back when the last one ends (videos analysed in parallel threads share the setting)."""
    global _switch_users, _switch_saved
    with _switch_lock:
        if _switch_users == 0:
            _switch_saved = sys.getswitchinterval()
            sys.setswitchinterval(seconds)
        _switch_users += 1
    try:
        yield
    finally:
        with _switch_lock:
            _switch_users -= 1
            if _switch_users == 0:
                sys.setswitchinterval(_switch_saved)


def start_decoding_ahead(path: str | Path, cfg: PipelineConfig) -> Prestarted | None:
    """Start ``path``'s decode process now (:func:`fer_pipeline.decode.prestart`), e.g. before the models load, so
    that it decodes meanwhile. Returns it (the caller owns it: :func:`analyze_video` of ``path`` with the same
    ``cfg`` and ``prestarted=`` it takes it over, or ends it when the video is skipped; the caller closes it in any
    case once the run is over), or ``None``: never with ``decode.process: false`` or where no child process can be
    used, nor for a file that cannot be probed (the analysis reports it)."""
    if not cfg.decode.process:
        return None
    from fer_pipeline.decode import prestart

    return prestart(path, cfg.decode)


def _import_output_modules() -> None:
    """Import the modules that only aggregation and storage use (see :func:`_run`); errors surface there."""
    try:
        import pyarrow.parquet  # noqa: F401

        import fer_pipeline.aggregate  # noqa: F401  (pandas)
    except ImportError:
        pass


def moment_seconds(au: pd.DataFrame, k: int = 3) -> list[int]:
    """Seconds worth a thumbnail in the report: ``seconds`` of :func:`fer_pipeline.metrics.key_moments`, the rule the
    report's key moments follow (second 0, the ``k`` highest and ``k`` lowest audience valence among seconds with
    viewers, and the report's headline moments), so every moment a report shows has its frame."""
    from fer_pipeline.metrics import key_moments

    return key_moments(au, k)["seconds"]


def analyze_video(path: str | Path, out_dir: str | Path, cfg: PipelineConfig | None = None,
                  models: Models | None = None, force: bool = False,
                  progress: Callable[[float], None] | None = None, prestarted: Prestarted | None = None) -> dict:
    """Analyse one recording and write its rows into the four datasets under ``out_dir``.

    The video is claimed first (:func:`fer_pipeline.store.claim`: another run analysing it is waited for). Its
    stored results are reused (status ``skipped``) only when they are ``ok``, were made with the same settings,
    model and detector (:func:`settings_fingerprint`) and their files are all readable; otherwise it is analysed
    and the returned ``note`` says why ("settings changed: sample_fps 5.0 -> 2.0", "damaged output ...").

    Args:
        path: the video file.
        out_dir: output folder (see :mod:`fer_pipeline.store`).
        cfg: settings (defaults when None).
        models: loaded models to reuse (built from ``cfg`` when None).
        force: re-analyse even when the stored results could be reused.
        progress: called with the video time reached (seconds) after each batch.
        prestarted: a decode process started ahead (:func:`start_decoding_ahead`): taken over when it was started
            for ``path`` with these decode settings, closed when the video is skipped; the caller still owns it
            (and closes it after the run: a no-op once taken over).

    Returns:
        The ``videos`` row written (dict; ``status`` is ``ok``, ``failed`` or ``skipped``) plus ``stage_s`` (seconds
        per stage), ``video_id`` and ``note`` (why it was re-analysed, or None); a failed row also has ``transient``
        (True when an I/O error that may go away caused it: worth a retry). Never raises for a bad input file: the
        reason is in ``error``.

    Raises:
        Interrupted: a stop was requested (:mod:`fer_pipeline.interrupt`) before or while it was analysed; nothing
            of it was written (an earlier result stays).
        OutputError: ``out_dir`` cannot be written (e.g. "no space left on device: OUT"); nothing of this video was
            written, nothing staged is left.
    """
    interrupt.check()
    cfg = cfg or PipelineConfig()
    out_dir = Path(out_dir)
    path = Path(path)
    t0 = time.perf_counter()
    created = dt.datetime.now(dt.timezone.utc)
    times = StageTimes()
    try:
        sha = sha256_file(path) if path.is_file() else None
    except OSError:
        sha = None
    times.hash = time.perf_counter() - t0
    video_id = make_video_id(path, sha)
    row = {"path": str(path), "sha256": sha, "status": "failed", "error": None, "duration_s": None, "fps": None,
           "width": None, "height": None, "frames_sampled": 0, "faces_detected": 0, "tracks": 0, "viewers": 0,
           "processing_s": None, "emotion_model": None, "detector": cfg.detect.backend,
           "pipeline_version": __version__, "created_at": created, "settings": None, "settings_sha256": None,
           "latency_p50_s": float("nan"), "latency_p95_s": float("nan"), "frames_dropped": 0, "gap_s": 0.0}
    try:
        lock = claim(out_dir, video_id, wait=lambda owner: logger.warning(
            "waiting for %s: another run (%s) is analysing it", path, owner))
    except OSError as e:
        raise OutputError.from_os_error(e, out_dir) from e
    with lock:
        try:
            models = models or Models.load(cfg)
            row["emotion_model"] = f"{models.emotion.spec.name}@{models.emotion.spec.sha256[:12]}"
            fingerprint = settings_fingerprint(cfg, models)
            row["settings"] = settings_json(fingerprint)
            row["settings_sha256"] = hashlib.sha256(row["settings"].encode()).hexdigest()
            prev, why = (None, None) if force else reuse(out_dir, video_id, row["settings"], fingerprint)
            if prev is not None:
                logger.info("skip %s: already analysed with these settings (video_id %s)", path, video_id)
                if prestarted is not None:
                    prestarted.close()  # a decode process started ahead for it is not needed
                return {**prev, "status": "skipped", "video_id": video_id, "stage_s": times.as_dict(), "note": None}
            if why:
                logger.info("analysing %s again: %s", path, why)
            with _switch_interval(SWITCH_INTERVAL_S):
                result = _run(path, out_dir, video_id, cfg, models, row, times, progress, prestarted=prestarted)
            return {**result, "note": f"re-analysed: {why}" if why else None}
        except (interrupt.Interrupted, OutputError):
            raise
        except Exception as e:  # noqa: BLE001 - every failure of one file becomes its failed row
            if is_disk_full(e):
                raise OutputError.disk_full(out_dir) from e
            from fer_pipeline.decode import VideoError

            if not isinstance(e, (VideoError, OSError, ValueError)):
                logger.exception("unexpected error on %s", path)
            else:
                logger.warning("failed %s: %s", path, one_line(e))
            row.update(status="failed", error=one_line(e), processing_s=time.perf_counter() - t0)
            _commit_failed(out_dir, video_id, row, models)
            return {**row, "video_id": video_id, "stage_s": times.as_dict(), "note": None,
                    "transient": is_transient(e)}


def _commit_failed(out_dir: Path, video_id: str, row: dict, models: Models | None) -> None:
    """Write a failed video's ``videos`` row, with empty parts of the other tables (so that an output folder of
    only failures reads as empty tables with their columns; not possible when the model, hence its labels, could
    not be loaded)."""
    labels = models.emotion.labels if models is not None else ()
    try:
        w = VideoWriter(out_dir, video_id, labels, {"pipeline_version": __version__})
        try:
            if labels:
                for table in ("faces", "timeline", "audience"):
                    w.write_empty(table)
            w.commit(row)
        except BaseException:
            w.abort()
            raise
    except OSError as e:
        raise OutputError.from_os_error(e, out_dir) from e


def _run(path: Path, out_dir: Path, video_id: str, cfg: PipelineConfig, models: Models, row: dict,
         times: StageTimes, progress, prestarted: Prestarted | None = None) -> dict:
    from fer_pipeline.decode import VideoError, probe

    t_start = time.perf_counter()
    meta = probe(path)
    row.update(duration_s=meta.duration_s, fps=meta.fps, width=meta.width, height=meta.height)
    labels = models.emotion.labels
    # The tracker is built in a helper thread while the first batch decodes: its first import (trackers ->
    # supervision -> scipy, ~0.7 s) then overlaps the wait for that batch instead of following it. The same thread
    # then imports what only the end of the video needs (pandas, pyarrow: ~0.3 s), while the decoders run.
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="build-tracker")
    pending_tracker = pool.submit(build_tracker, cfg.track)
    pool.submit(_import_output_modules)
    pool.shutdown(wait=False)
    stages = FaceStages(models.detector, pending_tracker.result, models.emotion, times,
                        CutDetector(cfg.track.cut_threshold))
    thumbs = Thumbnails() if cfg.output.thumbnails else None
    moment_crops = None
    if thumbs is not None and cfg.report.explain:
        from fer_pipeline.explain.moments import MomentCrops

        spec = models.emotion.spec
        moment_crops = MomentCrops(spec.template, spec.input_hw, spec.color)
    samples = TrackSamples(models.embedder, cfg.reid.samples_per_track) if models.embedder is not None else None

    decode_stats: dict = {}
    found: list[Faces] = []
    frames_sampled = 0
    for batch in timed_batches(decode_ahead(path, cfg.decode, meta, decode_stats, prestarted), times):
        interrupt.check()
        frames_sampled += len(batch)
        per_frame, faces = stages(batch)
        found.append(faces)
        if thumbs is not None:
            t = time.perf_counter()
            thumbs.add(batch, per_frame)
            if moment_crops is not None:
                moment_crops.add(batch, per_frame)
            times.thumbnails += time.perf_counter() - t
        if samples is not None:
            t = time.perf_counter()
            samples.add_batch(batch, faces)
            times.reid += time.perf_counter() - t
        if progress is not None:
            progress(float(batch.timestamp_s[-1]))
    if frames_sampled == 0:
        raise VideoError(f"no frames could be decoded: {path}")
    times.decode += decode_stats.get("decode_s", 0.0)

    t = time.perf_counter()
    from fer_pipeline.aggregate import audience, timeline

    tracked = stages.tracker.finish(Faces.concat(found, len(labels)), cfg.track.min_track_s,
                                    1.0 / cfg.decode.sample_fps)
    t_reid = time.perf_counter()
    viewers = viewers_of_tracks(tracked, samples, models.embedder, cfg.reid)
    times.reid += time.perf_counter() - t_reid
    viewer_id = np.array([viewers.viewer_of[int(t)] for t in tracked.faces.track_id], np.int64)
    final = tracked.faces.with_columns(viewer_id=viewer_id)
    attentive = is_attentive(final.pose, cfg.attention.max_yaw_deg, cfg.attention.max_pitch_deg)
    faces_df = faces_frame(final, labels, attentive)
    tl = timeline(faces_df, labels)
    au = audience(tl, labels, meta.duration_s)
    times.aggregate += time.perf_counter() - t

    t = time.perf_counter()
    writer = VideoWriter(out_dir, video_id, labels, {
        "emotion_model_sha256": models.emotion.spec.sha256, "pipeline_version": __version__, "video_id": video_id})
    try:
        writer.write("faces", faces_df)
        writer.write("timeline", tl)
        writer.write("audience", au)
        if cfg.output.save_embeddings and viewers.embeddings:
            writer.embedding_dim = models.embedder.dim
            writer.write("embeddings", embeddings_frame(viewers, models.embedder.name))
        if thumbs is not None:
            for name, jpg in thumbs.files(tracked.ids, moment_seconds(au), viewers.viewer_of).items():
                writer.add_file(name, jpg)
        if moment_crops is not None:
            t_explain = time.perf_counter()
            from fer_pipeline.explain.moments import explain_moments
            from fer_pipeline.metrics import headline_seconds, key_moments

            cards = headline_seconds(key_moments(au))  # the report's cards: valence peak and trough, smile peak
            for name, data in explain_moments(moment_crops, cards, tracked.ids, viewers.viewer_of,
                                              models.emotion).items():
                writer.add_file(name, data)
            logger.info("%s: key-moment faces explained in %.1f s", path.name, time.perf_counter() - t_explain)
        row.update(status="ok", error=None, frames_sampled=frames_sampled, faces_detected=int(len(faces_df)),
                   tracks=int(faces_df["track_id"].nunique()), viewers=int(faces_df["viewer_id"].nunique()),
                   processing_s=time.perf_counter() - t_start)
        writer.commit(row)
    except BaseException:
        writer.abort()
        raise
    times.write += time.perf_counter() - t
    logger.info("%s: %d frames, %d faces, %d tracks, %d viewers in %.1f s", path.name, frames_sampled,
                len(faces_df), row["tracks"], row["viewers"], row["processing_s"])
    out = {**row, "video_id": video_id, "stage_s": times.as_dict()}
    if "decoder_peak_rss_mb" in decode_stats:
        out["decoder_peak_rss_mb"] = decode_stats["decoder_peak_rss_mb"]
    return out
