"""Annotated video: the recording re-encoded with each face's box, viewer (or track) id and dominant emotion drawn
on every frame, written to ``OUT/annotated/<video_id>.mp4``.

Every frame of the source is decoded (not only the sampled ones), turned upright as the pipeline turns it (display
rotation, :func:`fer_pipeline.decode.buffers.apply_rotation`), so the boxes of the ``faces`` table (upright
display-frame pixels) land where they belong, drawn with supervision's ``BoxAnnotator`` and ``LabelAnnotator``, and
encoded with PyAV: H.264 (libx264, CRF 20, preset ``veryfast``, yuv420p) with each source frame's own pts in the
source's time base at its frame rate, so frame count, frame rate and duration are those of the source (variable
frame rate included). An odd width or height loses its last pixel column/row (yuv420p needs even sizes). The
output is stored upright (no display matrix). The first audio stream is copied unchanged when MP4 can hold its
codec (AAC, MP3, Opus, AC-3, ...); other audio is dropped (with a log line). The file is written to a hidden
temporary name in the same folder and renamed into place, so a reader never sees half a video.

Drawing rule (which boxes a frame shows). Faces are known only at the sampled frames (``decode.sample_fps``, 5 Hz
by default; interval ``T``). A frame at time ``t`` shows, for each track, that track's latest sample at or before
``t`` (a frame within a quarter of a frame interval before a sample counts as at it), held

* until the track's next sample when that comes within ``1.5 T`` (the usual case: the box moves on at every
  sample; 1.5 leaves room for samples moved onto an anchor frame, ``decode.snap_to_anchors``),
* otherwise for ``T`` only: after a track's last sample, and when the detector missed the face for a sample or
  more, the box disappears one sampling interval after the last detection instead of lingering where the face was.

So a face that leaves the picture loses its box at most one sampling interval (0.2 s at 5 Hz) after its last
detection, and a track never shows more than one box. ``T`` is ``1 / decode.sample_fps`` from the ``videos`` row's
settings (:func:`annotate_from_output`); without it, the median gap between a track's consecutive samples.
The label reads ``viewer 2 | happy 87%`` (``track 5 | ...`` for a face without a viewer id): the dominant emotion
and its probability; box and label are coloured by viewer (supervision's default palette, by viewer id), so
one person keeps one colour across tracks. (OpenCV's fonts, which ``LabelAnnotator`` uses, have ASCII only.)

Cost (``benchmarks/annotate_cost.py``, ``benchmarks/README.md`` "Annotated video (issue #20)"): every frame is
decoded and re-encoded, so it is paid per frame, not per face. On the 1280x720 30 fps one-minute benchmark input,
39-45 CPU seconds per minute of video (x264 about three quarters of it, decoding every frame about a fifth, drawing
a few percent), measured on the 2-core machine while other jobs kept it busy: 42-68 s of wall time per minute
there; idle, the CPU seconds spread over both cores (about 20-22 s per minute, an estimate). 1080p costs about
twice as much (82 CPU s per minute on the 6-face group input). This comes on top of the analysis.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fer_pipeline import interrupt
from fer_pipeline.decode.buffers import quarter_turns
from fer_pipeline.decode.container import (
    check_path,
    open_container,
    probe,
    stream_start_s,
    video_stream,
)
from fer_pipeline.decode.errors import VideoError
from fer_pipeline.errors import OutputError, one_line

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

__all__ = ["ANNOTATED_DIR", "HOLD_FACTOR", "annotate_from_output", "annotate_if_stale", "annotate_video",
           "annotated_path", "face_labels", "hold_spans"]

#: Folder of the annotated videos under the output folder.
ANNOTATED_DIR = "annotated"
#: A sample is held until the track's next sample when that comes within this many sampling intervals.
HOLD_FACTOR = 1.5
#: x264 settings of the annotated video.
CRF = 20
PRESET = "veryfast"

_BOX_COLUMNS = ("timestamp_s", "track_id", "x1", "y1", "x2", "y2")


def annotated_path(out_dir: str | Path, video_id: str) -> Path:
    """Where the annotated video of ``video_id`` goes: ``OUT/annotated/<video_id>.mp4``."""
    return Path(out_dir) / ANNOTATED_DIR / f"{video_id}.mp4"


# ---------------------------------------------------------------------------------------------------------------
# Which rows show when


def _sample_interval(faces: pd.DataFrame) -> float:
    """Median gap (s) between consecutive samples of a track; 0.2 s (5 Hz) when no track has two samples."""
    gaps = []
    for _, ts in faces.groupby("track_id", sort=False)["timestamp_s"]:
        t = np.unique(ts.to_numpy(dtype=np.float64))
        if len(t) > 1:
            gaps.append(np.diff(t))
    if not gaps:
        return 0.2
    g = np.concatenate(gaps)
    g = g[g > 0]
    return float(np.median(g)) if len(g) else 0.2


def hold_spans(faces: pd.DataFrame, interval_s: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """When each row of ``faces`` is on screen, by the drawing rule of this module.

    Args:
        faces: rows of one video with ``track_id`` and ``timestamp_s``.
        interval_s: the sampling interval ``T`` (s); None: estimated (:func:`_sample_interval`).

    Returns:
        ``(start, end)`` float64 arrays aligned with ``faces``' rows: row ``i`` is drawn on frames at ``t`` with
        ``start[i] <= t < end[i]``. A track's spans never overlap.
    """
    n = len(faces)
    start = faces["timestamp_s"].to_numpy(dtype=np.float64, copy=True)
    end = np.empty(n, dtype=np.float64)
    if n == 0:
        return start, end
    T = float(interval_s) if interval_s and interval_s > 0 else _sample_interval(faces)
    tracks = faces["track_id"].to_numpy()
    order = np.lexsort((start, tracks))
    for k, i in enumerate(order):
        j = order[k + 1] if k + 1 < n else None
        if j is not None and tracks[j] == tracks[i] and start[j] - start[i] <= HOLD_FACTOR * T:
            end[i] = start[j]  # a second row of one track at the same time gets an empty span
        else:
            end[i] = start[i] + T
    return start, end


def face_labels(faces: pd.DataFrame, labels: Sequence[str] | None = None) -> tuple[list[str], np.ndarray]:
    """Each row's label (``viewer 2 | happy 87%``) and colour key (viewer id, else track id).

    ``labels``: the emotion labels (``p_<label>`` columns); None: every ``p_*`` column of ``faces``.
    """
    n = len(faces)
    tid = faces["track_id"].to_numpy()
    if "viewer_id" in faces:
        vid = faces["viewer_id"].to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        vid = np.full(n, np.nan)
    has_viewer = np.isfinite(vid)
    key = np.where(has_viewer, np.nan_to_num(vid), tid).astype(np.int64)
    names = list(labels) if labels is not None else [c[2:] for c in faces.columns if c.startswith("p_")]
    if names and n:
        probs = faces[[f"p_{lab}" for lab in names]].to_numpy(dtype=np.float64, na_value=0.0)
        best = probs.argmax(1)
        emo = [f"{names[b]} {round(100 * probs[r, b]):d}%" for r, b in enumerate(best)]
    elif "emotion" in faces:
        emo = [str(e) for e in faces["emotion"]]
    else:
        emo = [""] * n
    who = [f"viewer {int(v)}" if h else f"track {int(t)}" for v, h, t in zip(vid, has_viewer, tid)]
    text = [f"{w} | {e}" if e else w for w, e in zip(who, emo)]
    return text, key


@dataclass
class _Overlay:
    """The faces to draw, with their spans, ready for a sweep over the frames in time order."""

    xyxy: np.ndarray        # (N, 4) float32
    key: np.ndarray         # (N,) int64 colour key
    text: list[str]
    start: np.ndarray       # sorted
    end: np.ndarray
    eps: float

    @classmethod
    def build(cls, faces: pd.DataFrame, labels, interval_s: float | None, eps: float) -> _Overlay:
        missing = [c for c in _BOX_COLUMNS if c not in faces.columns]
        if missing and len(faces):
            raise ValueError(f"faces table lacks the column(s) {missing}")
        if not len(faces):
            z = np.zeros(0)
            return cls(np.zeros((0, 4), np.float32), z.astype(np.int64), [], z, z, eps)
        faces = faces.reset_index(drop=True)
        start, end = hold_spans(faces, interval_s)
        text, key = face_labels(faces, labels)
        order = np.argsort(start, kind="stable")
        xyxy = faces[["x1", "y1", "x2", "y2"]].to_numpy(dtype=np.float32)[order]
        return cls(xyxy, key[order], [text[i] for i in order], start[order], end[order], eps)

    def __post_init__(self) -> None:
        self._next = 0
        self._active: list[int] = []

    def at(self, t: float) -> list[int]:
        """Rows on screen at time ``t``; ``t`` must not decrease from call to call."""
        te = t + self.eps
        while self._next < len(self.start) and self.start[self._next] <= te:
            self._active.append(self._next)
            self._next += 1
        self._active = [i for i in self._active if self.end[i] > te]
        return self._active


class _Painter:
    """supervision's box and label annotators, sized for the frame."""

    def __init__(self, width: int, height: int) -> None:
        import supervision as sv

        self.sv = sv
        s = max(min(width, height) / 720.0, 0.3)
        self.box = sv.BoxAnnotator(color=sv.ColorPalette.DEFAULT, thickness=max(2, round(3 * s)),
                                   color_lookup=sv.ColorLookup.CLASS)
        self.label = sv.LabelAnnotator(color=sv.ColorPalette.DEFAULT, color_lookup=sv.ColorLookup.CLASS,
                                       text_color=sv.Color.WHITE, text_scale=max(0.4, 0.8 * s),
                                       text_thickness=max(1, round(2 * s)), text_padding=max(3, round(8 * s)),
                                       text_position=sv.Position.TOP_LEFT, smart_position=True)

    def draw(self, bgr: np.ndarray, ov: _Overlay, rows: list[int]) -> np.ndarray:
        det = self.sv.Detections(xyxy=ov.xyxy[rows], class_id=ov.key[rows], tracker_id=ov.key[rows])
        bgr = self.box.annotate(scene=bgr, detections=det)
        return self.label.annotate(scene=bgr, detections=det, labels=[ov.text[i] for i in rows])


# ---------------------------------------------------------------------------------------------------------------
# Decode, draw, encode


def _copyable_audio(container: Any, out: Any) -> Any:
    """The input's first audio stream when the output format can hold its codec as it is, else None."""
    for s in container.streams.audio:
        name = s.codec_context.codec.name if s.codec_context.codec is not None else ""
        if name in out.supported_codecs:
            return s
        logger.info("audio (%s) of %s dropped: MP4 cannot hold it", name, container.name)
        return None
    return None


def annotate_video(video_path: str | Path, faces: pd.DataFrame, out_path: str | Path,
                   labels: Sequence[str] | None = None, progress: Callable[[float], None] | None = None, *,
                   interval_s: float | None = None, crf: int = CRF, preset: str = PRESET) -> Path:
    """Write ``video_path`` with ``faces`` drawn on every frame to ``out_path`` (MP4, H.264).

    Args:
        video_path: the source recording.
        faces: its rows of the ``faces`` table (``timestamp_s``, ``track_id``, ``viewer_id``, ``x1..y2`` in upright
            display-frame pixels, ``p_<label>``); may be empty (the video is then re-encoded unchanged).
        out_path: the MP4 to write (its folder is created).
        labels: emotion labels (the ``p_<label>`` columns to take the dominant emotion from); None: all ``p_*``.
        progress: called with the video time reached (seconds) about once per second of video.
        interval_s: the sampling interval of ``faces`` (``1 / decode.sample_fps``); None: estimated from them.
        crf, preset: x264 quality and speed.

    Returns:
        ``out_path``. Same frame count, frame rate, time base and per-frame timestamps as the source; audio copied
        when MP4 can hold it, else dropped (see the module docstring).

    Raises:
        VideoError (a ValueError): the source is missing, not a video or cannot be decoded (one line naming it).
        ValueError: ``faces`` lacks the box columns.
        OutputError (an OSError): ``out_path`` cannot be written, one line (``no space left on device: DIR`` when
            the file system is full); nothing is left behind.
        Interrupted: a stop was requested (:mod:`fer_pipeline.interrupt`); nothing is left at ``out_path``.
    """

    src = check_path(video_path)
    meta = probe(src)
    out_path = Path(out_path)
    fps = meta.fps if meta.fps > 0 else 30.0
    overlay = _Overlay.build(faces, labels, interval_s, eps=0.25 / fps)
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(out_path)
    except OSError as e:
        raise OutputError.from_os_error(e, out_path.parent) from e
    tmp = out_path.with_name(f".{out_path.name}.{_HOST}-{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        _encode(src, meta, overlay, tmp, progress, crf, preset)
        os.replace(tmp, out_path)
    except OSError as e:
        _unlink(tmp)
        if isinstance(e, OutputError):
            raise
        raise OutputError.from_os_error(e, out_path.parent) from e
    except BaseException:
        _unlink(tmp)
        raise
    return out_path


_HOST = "".join(c if c.isalnum() else "-" for c in socket.gethostname()) or "host"


def _unlink(p: Path) -> None:
    try:
        p.unlink()
    except FileNotFoundError:
        pass


def _remove_stale_temps(out_path: Path) -> None:
    """Remove temporary files of ``out_path`` left by a process of this host that died (``kill -9``, power loss);
    those of live writers (another run annotating the same video) are kept."""
    for f in out_path.parent.glob(f".{out_path.name}.{_HOST}-*.tmp"):
        pid = f.name[len(f".{out_path.name}.{_HOST}-"):].partition(".")[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # alive
        except ProcessLookupError:
            pass
        except PermissionError:
            continue  # alive, someone else's
        _unlink(f)


def _encode(src: Path, meta: Any, overlay: _Overlay, tmp: Path, progress: Callable[[float], None] | None,
            crf: int, preset: str) -> None:
    import av

    k = quarter_turns(meta.rotation)
    width, height = meta.width, meta.height  # upright
    sw, sh = (height, width) if k % 2 else (width, height)  # as stored
    ow, oh = width - width % 2, height - height % 2
    if ow <= 0 or oh <= 0:
        raise VideoError(f"cannot annotate {src}: frame of {width}x{height} pixels is too small", src)
    painter = _Painter(ow, oh)
    inp = open_container(src)
    try:
        vin = video_stream(inp, src)
        vin.thread_type = "AUTO"
        tb = vin.time_base
        start_s = stream_start_s(vin)
        rate = vin.average_rate or vin.guessed_rate or vin.base_rate or Fraction(meta.fps).limit_denominator(100000)
        step = max(1, round(1.0 / (float(rate) * float(tb)))) if rate else 1  # one frame in time-base ticks
        try:
            out = av.open(str(tmp), mode="w", format="mp4")
        except (av.error.FFmpegError, OSError) as e:
            raise OutputError.from_os_error(e, tmp.parent) from e
        done = False
        try:
            vout = out.add_stream("libx264", rate=rate)
            vout.width, vout.height, vout.pix_fmt = ow, oh, "yuv420p"
            vout.time_base = tb
            vout.codec_context.time_base = tb
            vout.codec_context.options = {"crf": str(int(crf)), "preset": str(preset)}
            ain = _copyable_audio(inp, out)
            aout = out.add_stream_from_template(ain) if ain is not None else None
            streams = [vin] + ([ain] if ain is not None else [])
            last_pts: int | None = None
            durations: dict[int, int] = {}  # pts -> the source frame's duration, given to its packet
            next_progress = 0.0
            for packet in _demux(inp, streams, src):
                if ain is not None and packet.stream.index == ain.index:
                    if packet.dts is None:
                        continue
                    packet.stream = aout
                    _mux(out, packet, tmp)
                    continue
                for frame in _decode(packet, src):
                    interrupt.check()
                    pts = frame.pts
                    if pts is None or (last_pts is not None and pts <= last_pts):
                        pts = (last_pts + step) if last_pts is not None else 0
                    last_pts = pts
                    t = float(pts * tb) - start_s  # the pipeline's timestamp_s of this frame
                    if frame.width != sw or frame.height != sh:
                        img = frame.to_ndarray(format="bgr24", width=sw, height=sh)
                    else:
                        img = frame.to_ndarray(format="bgr24")
                    if k:
                        img = np.rot90(img, k=-k, axes=(0, 1))
                    if img.shape[0] != oh or img.shape[1] != ow:
                        img = img[:oh, :ow]
                    rows = overlay.at(t)
                    if rows:
                        img = painter.draw(np.ascontiguousarray(img), overlay, rows)
                    vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="bgr24")
                    vf.pts, vf.time_base = pts, tb
                    durations[pts] = frame.duration or step
                    for p in vout.encode(vf):
                        _mux(out, p, tmp, durations)
                    if progress is not None and t >= next_progress:
                        progress(t)
                        next_progress = t + 1.0
            for p in vout.encode(None):
                _mux(out, p, tmp, durations)
            if last_pts is None:
                raise VideoError(f"cannot decode (corrupt or truncated): {src}: no video frame could be decoded", src)
            done = True
        finally:
            try:
                out.close()  # writes the index: the file is complete only after this
            except (av.error.FFmpegError, OSError) as e:
                if done:  # else the error that stopped the work is the one to raise
                    raise OutputError.from_os_error(e, tmp.parent) from e
    finally:
        inp.close()


def _demux(container: Any, streams: list[Any], src: Path):
    import av

    try:
        yield from container.demux(*streams)
    except av.error.FFmpegError as e:
        raise VideoError(f"cannot decode (corrupt or truncated): {src}: {one_line(e)}", src) from e


def _decode(packet: Any, src: Path) -> list[Any]:
    import av

    try:
        return packet.decode()
    except av.error.FFmpegError as e:
        raise VideoError(f"cannot decode (corrupt or truncated): {src}: {one_line(e)}", src) from e


def _mux(out: Any, packet: Any, tmp: Path, durations: dict[int, int] | None = None) -> None:
    """Mux ``packet``; a video packet gets its source frame's duration (``durations``, by pts), which sets the last
    frame's and so the stream's duration as in the source."""
    import av

    if durations is not None and packet.pts is not None:
        d = durations.pop(packet.pts, None)
        if d:
            packet.duration = d
    try:
        out.mux(packet)
    except (av.error.FFmpegError, OSError) as e:
        raise OutputError.from_os_error(e, tmp.parent) from e


# ---------------------------------------------------------------------------------------------------------------
# From an output folder


def _find_video(videos: pd.DataFrame, video: str | Path) -> dict:
    """The ``videos`` row of ``video``: a video_id, the path it was analysed under (compared after resolving, so
    from the same working folder for relative paths), or, failing that, a file whose content and name give a
    stored video_id (:func:`~fer_pipeline.fileutil.make_video_id`)."""
    rows = videos.to_dict("records")
    by_id = [r for r in rows if r.get("video_id") == str(video)]
    if by_id:
        return by_id[0]
    target = Path(video).expanduser().resolve()
    matches = [r for r in rows if r.get("path") and Path(str(r["path"])).expanduser().resolve() == target]
    ok = [r for r in matches if r.get("status") == "ok"]
    if (not matches or len(ok) > 1) and target.is_file():
        # not under that path, or the same path analysed before and after its content changed: by content
        from fer_pipeline.fileutil import make_video_id, sha256_file

        vid = make_video_id(target, sha256_file(target))
        same = [r for r in rows if r.get("video_id") == vid]
        if same:
            return same[0]
    if not matches:
        raise ValueError(f"{video} is not in the output folder's videos table (give its path or video_id)")
    ok.sort(key=lambda r: str(r.get("created_at") or ""))
    return (ok or matches)[-1]


def _interval_from_settings(settings: str | None) -> float | None:
    """``1 / decode.sample_fps`` from a ``videos`` row's settings JSON; None when it does not say (or samples every
    frame, where the faces' own spacing is the interval)."""
    import json

    try:
        fps = float(json.loads(settings or "{}")["config"]["decode"]["sample_fps"])
    except (KeyError, TypeError, ValueError):
        return None
    return 1.0 / fps if fps > 0 else None


def _annotate_row(out_dir: Path, row: dict, src: Path, progress: Callable[[float], None] | None) -> Path:
    """Annotate the video of a stored ``videos`` row from its ``faces`` part."""
    from fer_pipeline.store import read_parts

    vid = row["video_id"]
    if row.get("status") != "ok":
        raise ValueError(f"{vid} was not analysed successfully (status {row.get('status')}: {row.get('error')})")
    faces = read_parts(out_dir / "faces", vid)
    labels = [c[2:] for c in faces.columns if c.startswith("p_")] or None
    return annotate_video(src, faces, annotated_path(out_dir, vid), labels=labels, progress=progress,
                          interval_s=_interval_from_settings(row.get("settings")))


def annotate_from_output(out_dir: str | Path, video: str | Path,
                         progress: Callable[[float], None] | None = None) -> Path:
    """Annotate one analysed video of an output folder: ``OUT/annotated/<video_id>.mp4``.

    Args:
        out_dir: the output folder of ``fer-pipeline analyze``.
        video: the video file (found by the path it was analysed under, else by its content) or its ``video_id``
            (the file is then read from the stored path).
        progress: as :func:`annotate_video`.

    Returns:
        the annotated video's path.

    Raises:
        ValueError: the video is not in ``OUT/videos``, was not analysed successfully, or its file is unreadable
            (:class:`~fer_pipeline.decode.errors.VideoError`); DamagedOutputError (a ValueError): its tables cannot
            be read.
        OutputError (an OSError): the annotated video cannot be written.
        Interrupted: a stop was requested.
    """
    from fer_pipeline.store import read_table

    out_dir = Path(out_dir)
    videos = read_table(out_dir, "videos")
    if videos.empty:
        raise ValueError(f"no analysed video in {out_dir} (no videos table)")
    row = _find_video(videos, video)
    src = Path(video) if Path(video).is_file() else Path(str(row["path"]))
    return _annotate_row(out_dir, row, src, progress)


def annotate_if_stale(out_dir: str | Path, video_id: str, video_path: str | Path | None = None, force: bool = False,
                      progress: Callable[[float], None] | None = None) -> Path | None:
    """:func:`annotate_from_output` unless ``OUT/annotated/<video_id>.mp4`` is newer than the video's ``faces`` and
    ``videos`` parts (what ``analyze --annotate`` runs for each ok or skipped video, so that a re-run annotates only
    what changed). ``video_path``: the file (else the stored path); ``force``: annotate anyway.

    Returns:
        the annotated video's path, or None when the existing one is up to date.

    Raises:
        as :func:`annotate_from_output`.
    """
    from fer_pipeline.store import part_path, read_video_row

    out_dir = Path(out_dir)
    target = annotated_path(out_dir, video_id)
    if not force and target.is_file():
        made = target.stat().st_mtime
        parts = [part_path(out_dir, t, video_id) for t in ("faces", "videos")]
        if all(p.is_file() and p.stat().st_mtime <= made for p in parts):
            return None
    row = read_video_row(out_dir, video_id)
    if row is None:
        raise ValueError(f"{video_id} is not in the output folder's videos table")
    row["video_id"] = video_id
    src = Path(video_path) if video_path is not None else Path(str(row["path"]))
    return _annotate_row(out_dir, row, src, progress)
