"""Decode stage: a video file -> metadata and a stream of batches of sampled, upright RGB frames.

Contract
--------
``probe(path)`` returns a :class:`~fer_pipeline.types.VideoMeta` (duration in seconds, average frame rate in Hz,
width/height of the frames *as delivered*, i.e. after rotation, the container's clockwise rotation, frame count).

``iter_batches(path, sample_fps, batch_size, backend)`` yields :class:`~fer_pipeline.types.FrameBatch` objects:

* ``frames``: ``(B, H, W, 3) uint8`` **RGB**, upright (the container's display rotation is applied, so ``H, W`` are
  ``meta.height, meta.width``), with ``1 <= B <= batch_size``. Memory is bounded by ``batch_size`` frames, never by
  the video length: frames are decoded as a stream.
* ``frame_index``: ``(B,) int64``, 0-based index of the frame in the decoded stream (presentation order), increasing.
* ``timestamp_s``: ``(B,) float64``, presentation time in seconds taken from the container's pts (not
  ``index / fps``, so variable frame rate is handled), relative to the video stream's start time (the first frame of
  a normal file is at 0.0), strictly increasing.

Sampling rule (identical for both backends): walk the frames in presentation order and keep a frame when its
timestamp reaches the next tick ``k / sample_fps`` (``k = 0, 1, 2, ...``); after keeping a frame the tick advances to
the first one strictly after that frame's timestamp. The output rate is therefore at most ``sample_fps`` and is
correct for variable frame rate. ``sample_fps=None`` or ``<= 0`` keeps every frame. Comparisons use a tolerance of
``_TICK_EPS_S`` (0.1 ms) so float rounding of timestamps (decord reports float32) cannot change which frame is kept.

Skipping (PyAV, ``skip_nonref=True``, the default): H.264/HEVC must decode every *reference* frame to reach the
sampled ones, but a non-reference frame (most B-frames) is needed by no other frame. The decoder is therefore told,
packet by packet, to skip non-reference frames except those whose pts lies within one nominal frame interval
(``1 / meta.fps``) after a sampling tick, which are the only frames the rule above can keep on a constant-rate
stream: the kept frames, indices and timestamps are exactly those of a full decode, for 22-37% less decode CPU on
720p30 and 1080p30 x264 files at 5 Hz (``benchmarks/README.md``). On variable frame rate, a tick whose first frame
lies beyond that window gets the next decoded frame instead (a few frames later at most); its timestamp is still
its own pts. ``frame_index`` is then derived from pts: the number of the stream's packets (all of them, decoded or
skipped, but not those the demuxer marks discard) whose pts is lower than the frame's, i.e. its rank in
presentation order. Skipping is off when ``sample_fps`` keeps every frame or is not below the stream's frame rate,
and for decord.

Threads and deblocking (PyAV): with ``threads=0`` (the pipeline's default) a file of closed GOPs is split at
keyframes into chunks of at least 1 s that single-threaded decoders, one per core, decode side by side
(:mod:`fer_pipeline.decode_chunks`): the kept frames are planned from the packets' pts with the rule above, so
frames, indices, timestamps and pixels are exactly those of a sequential decode (and on variable frame rate exactly
the rule's frames, where sequential skipping may deliver a later one). Decode-only of the 10-minute 720p30 benchmark
file: 41.7 s in chunks on 2 cores against 78.1 s on one thread (`benchmarks/README.md`). Files that cannot be split
(open GOPs, a single keyframe, packets without pts) are decoded sequentially with FFmpeg's frame threads;
``threads=1`` decodes sequentially on the calling thread. ``skip_loop_filter`` trades exactness for decode CPU
(22% less decode-only CPU with ``"all"``; 43-60 dB PSNR against the exact frames, 95-100% of the faces' emotions
unchanged); off by default because the whole pipeline was not measurably faster with it.

Anchor frames (PyAV, chunked decoding, ``snap_to_anchors=True``, the pipeline's default ``decode.snap_to_anchors``):
most H.264/HEVC files from x264/x265 and phones reorder frames: B-frames are shown before a P-frame that is decoded
first. About three frames in four of the 720p30 benchmark file are B-frames, and skipping only the non-reference ones
still leaves the reference B-frames to decode. With snapping, a sample that the rule puts on a reordered frame takes
the nearest *anchor* (a frame no earlier-decoded frame is shown after: an I- or P-frame) within half a sampling
interval of its tick instead (at 30 fps and 5 Hz with x264's usual three B-frames: at most two frames away), so the
chunk decoders can skip every B-frame (``skip_frame="BIDIR"`` on their packets). Timestamps and indices stay those of
the frames delivered. Whether that is safe depends on the encoder: if an I/P-frame is predicted from a B-frame,
skipping B-frames corrupts it. So before any frame is delivered, two threads decode the first chunk's first 16
anchors both ways and compare their pixels (luma digests); only if every one is bit-identical are B-frames skipped
and the snapped samples delivered, otherwise the file is decoded exactly and delivers the exact rule's samples. Of the
shared clips, the iPhone HEVC ones pass and the Pexels x264 one (B-pyramid, several references) does not; the
benchmark files (x264 veryfast, OBS's default preset) pass: decode-only of the 1-minute 720p file takes 30% less CPU
(``benchmarks/README.md``). Sequential decoding (``threads=1``, files that cannot be split) never snaps. Without
reordered frames (most webcam and real-time encoders) there is nothing to skip and nothing moves.

Backends: ``"pyav"`` (the pipeline's default: decodes the frames as above, converts only kept frames to RGB) and
``"decord"`` (indexes the file, picks the kept indices from ``get_frame_timestamp`` and decodes them per chunk with
``get_batch``). Measured on a 10-minute 720p30 file at 5 Hz (2-core CPU, the other core busy): PyAV decoded 387 s
of video in 47 s at 198 MB peak RSS, decord in 83 s at 748 MB, so the pipeline defaults to PyAV and keeps decord
selectable. The rotation always comes from :func:`probe` (PyAV reads the display matrix) and is applied as the
frames are stacked into their batch (the same pixels as :func:`apply_rotation`). :func:`iter_batches` logs a warning
and uses PyAV instead of decord when decord cannot open a file that PyAV can, and for every rotated file: decord 0.6
mishandles display matrices (it flips 180-degree files itself and returns 4-channel buffers of the wrong size, turned
the same way, for both 90 and 270).

Errors: every problem with the input raises :class:`VideoError` (a ``ValueError``) with a one-line reason naming the
path, e.g. ``"file not found: x.mp4"``, ``"empty file (0 bytes): z.mp4"``, ``"not a video file: x.txt"``,
``"no video stream (audio-only): a.m4a"``, ``"cannot decode (corrupt or truncated): y.mp4: <cause>"``. Decode
errors in the middle of a stream raise as well; a stream is never silently truncated.
"""

from __future__ import annotations

import heapq
import logging
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np

from fer_pipeline.types import FrameBatch, VideoMeta

logger = logging.getLogger(__name__)

__all__ = ["BACKENDS", "VideoError", "apply_rotation", "iter_batches", "probe", "select_sample_indices"]

BACKENDS: tuple[str, ...] = ("decord", "pyav")

# Tolerance in seconds when comparing a frame timestamp with a sampling tick (far below any frame interval).
_TICK_EPS_S = 1e-4

# skip_loop_filter values -> FFmpeg's AVDiscard option names.
_LOOP_FILTER = {"default": "default", "nonref": "noref", "all": "all"}

# Demuxers that FFmpeg exposes as "video" but that are not recordings: still images, image pipes, ANSI text.
_NON_VIDEO_FORMATS = {"tty", "image2", "image2pipe"}

# Leading bytes of common video containers, used only to word the error for a file FFmpeg cannot open.
_CONTAINER_MAGIC: tuple[tuple[int, bytes], ...] = (
    (4, b"ftyp"), (4, b"moov"), (4, b"mdat"), (4, b"free"), (4, b"wide"), (4, b"skip"),  # ISO BMFF / QuickTime
    (0, b"\x1a\x45\xdf\xa3"),  # Matroska / WebM
    (0, b"RIFF"),  # AVI
    (0, b"FLV"),
    (0, b"OggS"),
    (0, b"\x00\x00\x01\xba"),  # MPEG program stream
    (0, b"\x30\x26\xb2\x75"),  # ASF / WMV
)


class VideoError(ValueError):
    """A video file cannot be read; the message is one human-readable line that names the path.

    Attributes:
        path: the offending file, or ``None`` when unknown.
    """

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        super().__init__(" ".join(str(message).split()))  # one line, whatever the cause's text holds
        self.path = Path(path) if path is not None else None

    def __reduce__(self):  # pickled with its path (raised in the decode process, re-raised in the pipeline)
        return (type(self), (self.args[0] if self.args else "", self.path))


# --------------------------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------------------------

def _one_line(exc: BaseException) -> str:
    """``exc`` as a short single line: its message, or its type name when it has none."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _check_path(path: str | Path) -> Path:
    """Check that ``path`` is an existing, non-empty regular file.

    Raises:
        VideoError: missing path, a directory, or a 0-byte file.
    """
    p = Path(path)
    if not p.exists():
        raise VideoError(f"file not found: {p}", p)
    if not p.is_file():
        raise VideoError(f"not a regular file: {p}", p)
    try:
        size = p.stat().st_size
    except OSError as e:
        raise VideoError(f"cannot read file: {p}: {_one_line(e)}", p) from e
    if size == 0:
        raise VideoError(f"empty file (0 bytes): {p}", p)
    return p


def _looks_like_container(p: Path) -> bool:
    """True when the first bytes of ``p`` carry the signature of a known video container."""
    try:
        with p.open("rb") as fh:
            head = fh.read(16)
    except OSError:
        return False
    if len(head) >= 1 and head[0] == 0x47 and p.suffix.lower() in {".ts", ".mts", ".m2ts"}:
        return True  # MPEG transport stream sync byte
    return any(head[off:off + len(magic)] == magic for off, magic in _CONTAINER_MAGIC)


def _open_container(p: Path) -> Any:
    """Open ``p`` with PyAV for reading.

    Returns:
        an ``av.container.InputContainer`` (the caller closes it).

    Raises:
        VideoError: the file is not a media file FFmpeg recognises ("not a video file"), or a video container
            FFmpeg cannot parse ("cannot decode (corrupt or truncated)").
    """
    try:
        return av.open(str(p), mode="r")
    except FileNotFoundError as e:  # av.error.FileNotFoundError subclasses the builtin
        raise VideoError(f"file not found: {p}", p) from e
    except PermissionError as e:
        raise VideoError(f"cannot read file (permission denied): {p}", p) from e
    except av.error.FFmpegError as e:
        if _looks_like_container(p):
            raise VideoError(f"cannot decode (corrupt or truncated): {p}: {_one_line(e)}", p) from e
        raise VideoError(f"not a video file: {p}", p) from e
    except OSError as e:
        raise VideoError(f"cannot read file: {p}: {_one_line(e)}", p) from e


def _video_stream(container: Any, p: Path) -> Any:
    """The video stream to decode (the first that is not cover art).

    Raises:
        VideoError: no video stream (audio-only files say so), or a still-image / text "video".
    """
    fmt = container.format.name
    if fmt in _NON_VIDEO_FORMATS or fmt.endswith("_pipe"):
        raise VideoError(f"not a video file: {p} (FFmpeg reads it as {fmt!r})", p)
    attached = av.stream.Disposition.attached_pic
    streams = [s for s in container.streams.video if not (s.disposition & attached)]
    if not streams:
        if container.streams.audio:
            raise VideoError(f"no video stream (audio-only): {p}", p)
        raise VideoError(f"no video stream: {p}", p)
    return streams[0]


def _rotation_cw(frame: Any, stream: Any, p: Path) -> int:
    """Clockwise display rotation in degrees (0, 90, 180 or 270) for ``stream``.

    PyAV's ``VideoFrame.rotation`` reads the display-matrix side data and is counter-clockwise in [-180, 180]; the
    legacy ``rotate`` stream tag is clockwise. Angles that are not multiples of 90 are rounded (with a warning).
    """
    ccw = int(frame.rotation or 0)
    cw = (-ccw) % 360
    if cw == 0:
        tag = stream.metadata.get("rotate")
        if tag:
            try:
                cw = int(float(tag)) % 360
            except ValueError:
                logger.warning("ignoring unreadable rotate tag %r in %s", tag, p)
    snapped = (int(round(cw / 90.0)) % 4) * 90
    if snapped != cw:
        logger.warning("rotation of %d degrees in %s is not a multiple of 90; using %d", cw, p, snapped)
    return snapped


def _quarter_turns(rotation: int) -> int:
    """Clockwise quarter turns (0-3) of ``rotation`` degrees; ValueError when it is not a multiple of 90."""
    if rotation % 90 != 0:
        raise ValueError(f"rotation must be a multiple of 90 degrees, got {rotation}")
    return (rotation // 90) % 4


def apply_rotation(frames: np.ndarray, rotation: int) -> np.ndarray:
    """Rotate frames clockwise by ``rotation`` degrees so they come out upright.

    Args:
        frames: ``(H, W, C)`` or ``(B, H, W, C)`` array (any dtype).
        rotation: clockwise degrees, one of 0, 90, 180, 270 (as in ``VideoMeta.rotation``).

    Returns:
        the rotated array, C-contiguous; ``(W, H, C)`` / ``(B, W, H, C)`` for 90 and 270. The input is returned
        unchanged for 0.

    Raises:
        ValueError: ``rotation`` is not a multiple of 90, or ``frames`` has fewer than 3 dimensions.
    """
    if frames.ndim < 3:
        raise ValueError(f"frames must be (H,W,C) or (B,H,W,C), got shape {frames.shape}")
    k = _quarter_turns(rotation)
    if k == 0:
        return frames
    # np.rot90 with positive k turns counter-clockwise (first axis towards second); clockwise is -k.
    return np.ascontiguousarray(np.rot90(frames, k=-k, axes=(frames.ndim - 3, frames.ndim - 2)))


def _check_sampling_args(sample_fps: float | None, batch_size: int, backend: str) -> float:
    """Validate the arguments of :func:`iter_batches`; returns ``sample_fps`` as a float (0.0 = every frame)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown decode backend {backend!r}; expected one of {BACKENDS}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if sample_fps is None:
        return 0.0
    fps = float(sample_fps)
    if not math.isfinite(fps):
        raise ValueError(f"sample_fps must be finite, got {sample_fps!r}")
    return max(fps, 0.0)


class _Sampler:
    """The sampling rule as a stateful predicate over timestamps in presentation order (see the module docstring)."""

    def __init__(self, sample_fps: float) -> None:
        self.sample_fps = sample_fps
        self.next_tick = 0  # k of the next tick
        self.last_ts = -math.inf

    def keep(self, ts: float) -> bool:
        """Whether the frame at ``ts`` seconds is kept; updates the state when it is."""
        if ts <= self.last_ts:  # duplicate or out-of-order timestamp: never yields a strictly increasing series
            return False
        if self.sample_fps > 0:
            if ts < self.next_tick / self.sample_fps - _TICK_EPS_S:
                return False
            self.next_tick = math.floor((ts + _TICK_EPS_S) * self.sample_fps) + 1
        self.last_ts = ts
        return True


def select_sample_indices(timestamps_s: np.ndarray, sample_fps: float | None) -> np.ndarray:
    """Indices of the frames the sampling rule keeps, given every frame's timestamp.

    Args:
        timestamps_s: ``(N,)`` presentation times in seconds of all frames, in presentation order.
        sample_fps: sampling rate in Hz; ``None`` or ``<= 0`` keeps every frame (except repeated timestamps).

    Returns:
        ``(K,) int64`` increasing indices into ``timestamps_s``, ``K <= N``.
    """
    ts = np.asarray(timestamps_s, dtype=np.float64).reshape(-1)
    sampler = _Sampler(0.0 if sample_fps is None else max(float(sample_fps), 0.0))
    if sampler.sample_fps <= 0 or len(ts) == 0:
        return np.array([i for i, t in enumerate(ts) if sampler.keep(float(t))], dtype=np.int64)
    # Jump from tick to tick with a binary search when timestamps are sorted (the normal case): O(K log N).
    if np.all(np.diff(ts) > 0):
        out: list[int] = []
        pos = 0
        while pos < len(ts):
            tick = sampler.next_tick / sampler.sample_fps - _TICK_EPS_S
            pos = int(np.searchsorted(ts, tick, side="left")) if ts[pos] < tick else pos
            if pos >= len(ts):
                break
            sampler.keep(float(ts[pos]))
            out.append(pos)
            pos += 1
        return np.asarray(out, dtype=np.int64)
    return np.array([i for i, t in enumerate(ts) if sampler.keep(float(t))], dtype=np.int64)


def _stream_start_s(stream: Any) -> float:
    """The video stream's start time in seconds (0.0 when the container does not say)."""
    if stream.start_time is None or stream.time_base is None:
        return 0.0
    return float(stream.start_time * stream.time_base)


# --------------------------------------------------------------------------------------------------------------------
# probe
# --------------------------------------------------------------------------------------------------------------------

def probe(path: str | Path, backend: str = "pyav") -> VideoMeta:
    """Read a video's metadata without decoding more than its first frame.

    Args:
        path: a video file.
        backend: ``"pyav"`` (container metadata; ``n_frames`` may be an estimate for some containers) or
            ``"decord"`` (frame count and duration from decord's packet index, exact but it reads the whole index;
            rotation still comes from PyAV, as decord does not expose it).

    Returns:
        ``VideoMeta`` with ``duration_s`` in seconds, ``fps`` in Hz (float, e.g. 23.976), ``width``/``height`` in
        pixels after rotation, ``rotation`` in clockwise degrees (0/90/180/270) and ``n_frames``.

    Raises:
        VideoError: missing/empty/unreadable file, not a video, no video stream, or the first frame cannot be
            decoded.
        ValueError: unknown ``backend``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown decode backend {backend!r}; expected one of {BACKENDS}")
    meta, _ = _probe_pyav(_check_path(path))
    if backend == "decord":
        vr = _open_decord(meta.path)
        if vr is None:
            logger.warning("decord cannot open %s; metadata from PyAV only", meta.path)
        elif len(vr) > 0:
            n = len(vr)
            fps = float(vr.get_avg_fps()) or meta.fps
            duration_s = float(vr.get_frame_timestamp(n - 1)[1])
            meta = VideoMeta(path=meta.path, duration_s=duration_s, fps=fps, width=meta.width, height=meta.height,
                             rotation=meta.rotation, n_frames=n)
    return meta


def _probe_pyav(p: Path) -> tuple[VideoMeta, float]:
    """PyAV probe of an existing, non-empty file.

    Returns:
        the metadata, and the video stream's own declared duration in seconds (0.0 when the container gives only a
        container-level duration), used to detect truncated streams.

    Raises:
        VideoError: as :func:`probe`.
    """
    container = _open_container(p)
    try:
        stream = _video_stream(container, p)
        try:
            first = next(iter(container.decode(stream)), None)
        except av.error.FFmpegError as e:
            raise VideoError(f"cannot decode (corrupt or truncated): {p}: {_one_line(e)}", p) from e
        if first is None:
            raise VideoError(f"cannot decode (corrupt or truncated): {p}: no video frame could be decoded", p)
        rotation = _rotation_cw(first, stream, p)
        width = int(stream.codec_context.width or first.width)
        height = int(stream.codec_context.height or first.height)

        tb = stream.time_base
        stream_s = float(stream.duration * tb) if stream.duration and tb else 0.0
        duration_s = stream_s
        if duration_s <= 0 and container.duration:
            duration_s = container.duration / av.time_base
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        n_frames = int(stream.frames or 0)
        if fps <= 0 and n_frames > 0 and duration_s > 0:
            fps = n_frames / duration_s
        if n_frames <= 0 and fps > 0 and duration_s > 0:
            n_frames = int(round(duration_s * fps))
        if duration_s <= 0 and fps > 0 and n_frames > 0:
            duration_s = n_frames / fps
    finally:
        container.close()
    if duration_s <= 0 or fps <= 0:
        logger.warning("incomplete metadata for %s: duration_s=%.3f fps=%.3f", p, duration_s, fps)
    if rotation in (90, 270):
        width, height = height, width
    meta = VideoMeta(path=p, duration_s=duration_s, fps=fps, width=width, height=height, rotation=rotation,
                     n_frames=n_frames)
    return meta, stream_s


# --------------------------------------------------------------------------------------------------------------------
# iter_batches
# --------------------------------------------------------------------------------------------------------------------

def iter_batches(path: str | Path, sample_fps: float | None = 5.0, batch_size: int = 16,
                 backend: str = "decord", skip_nonref: bool = True, threads: int = 0,
                 skip_loop_filter: str = "default", snap_to_anchors: bool = False,
                 buffers: BatchBuffers | None = None) -> Iterator[FrameBatch]:
    """Stream a video as batches of sampled, upright RGB frames (see the module docstring for the sampling rule).

    The file is probed (and validated) before the first batch is produced, so a bad file raises on the first
    ``next()``.

    Args:
        path: a video file.
        sample_fps: target sampling rate in Hz (frames per second of video time); ``None`` or ``<= 0`` keeps every
            frame. The output rate is at most this.
        batch_size: maximum number of frames per batch (>= 1); bounds memory to ``batch_size * H * W * 3`` bytes
            of kept frames.
        backend: ``"decord"`` (falls back to PyAV with a warning when decord cannot open the file, and for rotated
            files) or ``"pyav"``.
        skip_nonref: PyAV: skip decoding non-reference frames that the sampler cannot keep (see "Skipping" in the
            module docstring); ``False`` decodes every frame. Ignored by decord and when ``sample_fps`` keeps every
            frame.
        threads: PyAV: ``0`` one chunk decoder per core (at most 4), ``N > 1`` N chunk decoders, side by side on
            chunks of GOPs; files that cannot be split fall back to FFmpeg's frame threads; ``1`` decodes
            sequentially on the calling thread (see "Threads and deblocking" in the module docstring).
        skip_loop_filter: PyAV: frames decoded without the in-loop deblocking filter: ``"default"`` none (exact
            decode), ``"nonref"`` only non-reference frames (no other frame depends on them, so only those samples
            change), ``"all"`` every frame (errors then accumulate until the next keyframe).
        snap_to_anchors: PyAV, chunked decoding only: a sample that the rule puts on a reordered frame (a B-frame)
            takes the nearest anchor frame (I/P) within half a sampling interval instead, so that B-frames need not
            be decoded (see "Anchor frames" in the module docstring). Timestamps and indices stay those of the frames
            delivered; samples move by at most half a sampling interval (two frames at 30 fps and 5 Hz on x264's
            usual three B-frames).
        buffers: PyAV: where batches are stacked (anything with :meth:`BatchBuffers.stack`; the decode process
            passes its shared slots); a new :class:`BatchBuffers` when ``None``. decord batches are its own arrays.

    Yields:
        ``FrameBatch`` with ``frames`` ``(B, H, W, 3) uint8`` RGB upright (``H, W`` as in :func:`probe`),
        ``frame_index`` ``(B,) int64`` increasing, ``timestamp_s`` ``(B,) float64`` seconds, strictly increasing
        across the whole iteration; ``1 <= B <= batch_size``.

    Raises:
        VideoError: the file cannot be opened or decoded, including decode errors mid-stream.
        ValueError: bad ``sample_fps``, ``batch_size``, ``backend``, ``threads`` or ``skip_loop_filter``.
    """
    fps = _check_sampling_args(sample_fps, batch_size, backend)
    if skip_loop_filter not in _LOOP_FILTER:
        raise ValueError(f"skip_loop_filter must be one of {sorted(_LOOP_FILTER)}, got {skip_loop_filter!r}")
    if int(threads) < 0:
        raise ValueError(f"threads must be >= 0, got {threads!r}")
    meta, declared_s = _probe_pyav(_check_path(path))
    if backend == "decord" and meta.rotation != 0:
        # decord 0.6 half-applies display matrices: 180 is flipped for us, +-90 come out as 4-channel buffers of the
        # wrong size and both turn the same way. Rotated files therefore always go through PyAV.
        logger.warning("%s is rotated by %d degrees, which decord mishandles; decoding it with PyAV instead",
                       meta.path, meta.rotation)
        backend = "pyav"
    if backend == "decord":
        vr = _open_decord(meta.path)
        if vr is not None:
            yield from _iter_decord(vr, meta, declared_s, fps, int(batch_size))
            return
        logger.warning("decord cannot open %s; decoding it with PyAV instead", meta.path)
    loop_filter = _LOOP_FILTER[skip_loop_filter]
    if int(threads) != 1:
        from fer_pipeline.decode_chunks import default_workers, iter_chunk_batches, plan_chunks

        workers = int(threads) or default_workers()
        plan = plan_chunks(meta.path, fps, snap=bool(snap_to_anchors)) if workers > 1 else None
        if plan is not None:
            _check_complete(meta, plan.last_ts, declared_s)
            logger.debug("decoding %s in %d chunks on %d threads", meta.path, len(plan.chunks), workers)
            yield from iter_chunk_batches(meta, plan, int(batch_size), workers, bool(skip_nonref), loop_filter,
                                          buffers=buffers)
            return
    yield from _iter_pyav(meta, declared_s, fps, int(batch_size), bool(skip_nonref), int(threads), loop_filter,
                          buffers)


def _check_complete(meta: VideoMeta, last_ts: float | None, declared_s: float) -> None:
    """Catch silent truncation: decoding that stopped well before the end the file declares.

    FFmpeg's demuxers end a truncated file with a plain end-of-file (and frame-threaded decoders swallow the error on
    the last partial packet), so the end of the stream is compared with the declared duration.

    Args:
        meta: the probed metadata (``meta.duration_s`` may be the container's duration, all streams included).
        last_ts: timestamp in seconds of the last decoded frame, ``None`` when no frame was decoded.
        declared_s: the video stream's own declared duration in seconds (0.0 when the container does not give one).

    Raises:
        VideoError: no frame decoded, or the last frame lies more than 10% + 1 s before the video stream's declared
            end. When only the container's duration is known the same shortfall is logged as a warning instead
            (another stream, e.g. audio, may legitimately run longer than the video).
    """
    if last_ts is None:
        raise VideoError(f"cannot decode (corrupt or truncated): {meta.path}: no video frame could be decoded",
                         meta.path)
    if declared_s > 0 and last_ts < 0.9 * declared_s - 1.0:
        raise VideoError(f"cannot decode (corrupt or truncated): {meta.path}: stream ended at {last_ts:.2f} s of "
                         f"{declared_s:.2f} s", meta.path)
    if declared_s <= 0 and meta.duration_s > 0 and last_ts < 0.9 * meta.duration_s - 1.0:
        logger.warning("video of %s ended at %.2f s but the file declares %.2f s: truncated?", meta.path, last_ts,
                       meta.duration_s)


class _PtsIndex:
    """Presentation-order frame index from packet pts, for a decoder that skips some frames.

    Every demuxed packet's pts is recorded (a min-heap); a decoded frame's index is the number of recorded pts
    smaller than its own, i.e. its rank among *all* frames of the stream in presentation order, whether or not the
    others were decoded. The heap holds only pts not yet passed by a decoded frame (the decoder's reorder depth plus
    the skipped frames since the last decoded one), so memory does not grow with the video.
    """

    def __init__(self) -> None:
        self._pending: list[int] = []
        self._passed = 0  # recorded pts already below the last decoded frame's pts
        self.last = -1

    def add(self, pts: int) -> None:
        """Record one packet's pts (stream time-base units)."""
        heapq.heappush(self._pending, pts)

    def index_of(self, pts: int | None) -> int:
        """Index of the decoded frame with ``pts``; a frame without pts follows the previous one."""
        if pts is None:
            self.last += 1
            return self.last
        while self._pending and self._pending[0] < pts:
            heapq.heappop(self._pending)
            self._passed += 1
        index = self._passed
        if self._pending and self._pending[0] == pts:
            heapq.heappop(self._pending)
            self._passed += 1
        self.last = max(index, self.last + 1)  # never repeat or go back, even for a pts no packet carried
        return self.last


def _in_sample_window(t: float, sample_fps: float, window_s: float) -> bool:
    """Whether a frame at ``t`` seconds lies in ``[k / sample_fps, k / sample_fps + window_s)`` for some tick ``k``
    (with ``_TICK_EPS_S`` slack): the frame the sampler keeps for tick ``k`` is then decoded even if it is not a
    reference frame."""
    k = math.floor((t + _TICK_EPS_S) * sample_fps)
    return t - k / sample_fps < window_s - _TICK_EPS_S


def _iter_pyav(meta: VideoMeta, declared_s: float, sample_fps: float, batch_size: int,
               skip_nonref: bool = True, threads: int = 0, loop_filter: str = "default",
               buffers: BatchBuffers | None = None) -> Iterator[FrameBatch]:
    """PyAV backend: decode the frames in order, convert to RGB only the frames the sampler keeps (stacked by
    ``buffers``, a new :class:`BatchBuffers` when ``None``).

    With ``skip_nonref`` (and ``0 < sample_fps`` below the stream's frame rate) the decoder is told, packet by
    packet, to skip non-reference frames (``skip_frame="NONREF"``: no other frame is predicted from them, so nothing
    else changes) unless the packet's pts lies within one nominal frame interval after a sampling tick. Those are the
    only frames the sampler can keep on a constant-rate stream, so the kept frames are the same as with every frame
    decoded; on variable frame rate a tick whose first frame comes later than that window gets the next decoded
    frame instead (at most a few frames later). ``frame_index`` is then the frame's rank among all packets' pts
    (:class:`_PtsIndex`), and ``timestamp_s`` stays the decoded frame's own pts.
    """
    p = meta.path
    sampler = _Sampler(sample_fps)
    frames: list[np.ndarray] = []
    idx: list[int] = []
    stamps: list[float] = []
    last_ts: float | None = None
    n_corrupt = 0
    container = _open_container(p)
    try:
        stream = _video_stream(container, p)
        _configure_decoder(stream, threads, loop_filter)
        tb = float(stream.time_base)
        start_s = _stream_start_s(stream)
        nominal_dt = 1.0 / meta.fps if meta.fps > 0 else 0.0
        skip = skip_nonref and sample_fps > 0 and 0 < sample_fps < meta.fps
        packets = _skipping_packets(container, stream, sample_fps, nominal_dt, start_s) if skip else None
        pts_index = _PtsIndex()
        buffers = buffers if buffers is not None else BatchBuffers()
        index = -1
        try:
            for frame in _decode(container, stream, packets, pts_index):
                index = pts_index.index_of(frame.pts) if skip else index + 1
                if frame.pts is not None:
                    ts = frame.pts * tb - start_s
                else:  # no pts: continue from the previous frame at the nominal rate
                    ts = (last_ts if last_ts is not None else -nominal_dt) + nominal_dt
                    logger.debug("frame %d of %s has no pts; using %.4f s", index, p, ts)
                last_ts = ts
                if frame.is_corrupt:
                    n_corrupt += 1
                if not sampler.keep(ts):
                    continue
                frames.append(frame.to_ndarray(format="rgb24"))
                idx.append(index)
                stamps.append(ts)
                if len(frames) == batch_size:
                    yield _make_batch(frames, idx, stamps, meta.rotation, buffers)
                    frames, idx, stamps = [], [], []
        except av.error.FFmpegError as e:
            raise VideoError(f"cannot decode (corrupt or truncated): {p}: {_one_line(e)} (after frame {index})",
                             p) from e
    finally:
        container.close()
    if n_corrupt:
        logger.warning("%d frame(s) of %s were flagged corrupt by the decoder", n_corrupt, p)
    _check_complete(meta, last_ts, declared_s)
    if frames:
        yield _make_batch(frames, idx, stamps, meta.rotation, buffers)


def _configure_decoder(stream: Any, threads: int, loop_filter: str) -> None:
    """Set a PyAV video stream's decoder up before its first packet: ``threads`` 1 = decode on the calling thread
    only, otherwise FFmpeg's frame threads (``0`` = FFmpeg's choice); ``loop_filter`` is an FFmpeg
    ``skip_loop_filter`` value (``"default"`` leaves deblocking on)."""
    if threads == 1:
        stream.thread_type = "NONE"
        stream.thread_count = 1
    else:
        stream.thread_type = "AUTO"
        stream.thread_count = threads
    if loop_filter != "default":
        stream.codec_context.options = {"skip_loop_filter": loop_filter}


def _skipping_packets(container: Any, stream: Any, sample_fps: float, window_s: float,
                      start_s: float) -> Iterator[tuple[Any, int | None]]:
    """Demux ``stream``, setting the decoder's ``skip_frame`` before each packet (see :func:`_iter_pyav`).

    Yields:
        ``(packet, pts)``: ``pts`` is the packet's pts in stream time-base units, or ``None`` for the end-of-stream
        flush packet and for packets without pts or marked discard (those are not counted as frames).
    """
    ctx = stream.codec_context
    tb = float(stream.time_base)
    skipping: bool | None = None
    for packet in container.demux(stream):
        pts = packet.pts
        if packet.size == 0 or pts is None or packet.is_discard:
            want = False  # decode it normally; it counts as no frame of the stream
            pts = None
        else:
            want = not _in_sample_window(pts * tb - start_s, sample_fps, window_s)
        if want is not skipping:
            ctx.skip_frame = "NONREF" if want else "DEFAULT"
            skipping = want
        yield packet, pts


def _decode(container: Any, stream: Any, packets: Iterator[tuple[Any, int | None]] | None,
            pts_index: _PtsIndex) -> Iterator[Any]:
    """Decoded frames of ``stream``: every frame (``packets`` None) or those the skipping demuxer lets through, with
    every counted packet's pts recorded in ``pts_index``."""
    if packets is None:
        yield from container.decode(stream)
        return
    for packet, pts in packets:
        if pts is not None:
            pts_index.add(pts)
        yield from packet.decode()


def _open_decord(p: Path) -> Any | None:
    """A ``decord.VideoReader`` for ``p``, or ``None`` (logged) when decord is missing or cannot open the file."""
    try:
        import decord
    except ImportError as e:
        logger.warning("decord is not installed (%s)", _one_line(e))
        return None
    try:
        return decord.VideoReader(str(p), ctx=decord.cpu(0))
    except (RuntimeError, decord.DECORDError) as e:
        logger.debug("decord cannot open %s: %s", p, _one_line(e))
        return None


def _iter_decord(vr: Any, meta: VideoMeta, declared_s: float, sample_fps: float,
                 batch_size: int) -> Iterator[FrameBatch]:
    """Decord backend: choose kept indices from decord's timestamps, decode them ``batch_size`` at a time.

    Only unrotated files come here (see :func:`iter_batches`), so decord's frames are already upright.
    """
    import decord

    p = meta.path
    if meta.rotation != 0:
        raise ValueError(f"the decord path handles unrotated files only; {p} is rotated by {meta.rotation}")
    n = len(vr)
    if n == 0:
        _check_complete(meta, None, declared_s)
    # (N, 2) float32 [start, end] seconds, relative to the stream start (decord subtracts it, as the PyAV path does).
    stamps = np.asarray(vr.get_frame_timestamp(np.arange(n)), dtype=np.float64)[:, 0]
    _check_complete(meta, float(stamps[-1]), declared_s)
    keep = select_sample_indices(stamps, sample_fps)
    logger.debug("decord: %s has %d frames; keeping %d at %.3g Hz", p, n, len(keep), sample_fps)
    for start in range(0, len(keep), batch_size):
        chunk = keep[start:start + batch_size]
        try:
            arr = vr.get_batch(chunk.tolist()).asnumpy()
        except (RuntimeError, decord.DECORDError) as e:
            raise VideoError(f"cannot decode (corrupt or truncated): {p}: {_one_line(e)} "
                             f"(frames {int(chunk[0])}..{int(chunk[-1])})", p) from e
        if arr.dtype != np.uint8 or arr.shape != (len(chunk), meta.height, meta.width, 3):
            raise VideoError(f"cannot decode (corrupt or truncated): {p}: decord returned {arr.shape} {arr.dtype} "
                             f"for {len(chunk)} frames", p)
        yield FrameBatch(frames=arr, frame_index=chunk.astype(np.int64), timestamp_s=stamps[chunk])


class BatchBuffers:
    """Reuses the ``(B, H, W, 3)`` arrays of earlier batches that nothing references any more.

    A fresh array per batch (44 MB for 16 frames of 720p) is paid again in page faults on its first touch: stacking
    the batches took 0.55-0.65 CPU s per minute of 720p video in the pipeline against 0.21-0.36 s with reused arrays
    (``benchmarks/README.md``, "Issue #4, fifth round"). An array is reused only while this pool holds its one
    reference (CPython's reference count), so a batch that a consumer keeps, or a view of it, is never overwritten;
    such a batch just costs a new array. At most ``keep`` arrays are pooled; they are freed with the pool.

    Args:
        keep: most arrays held (a pipeline with one batch prefetched has 4-5 alive at once).
    """

    def __init__(self, keep: int = 6) -> None:
        self.keep = int(keep)
        self._arrays: list[np.ndarray] = []

    def stack(self, frames: list[np.ndarray]) -> np.ndarray:
        """``np.stack(frames)``, into a pooled array of that shape and dtype when one is free."""
        shape, dtype = (len(frames),) + frames[0].shape, frames[0].dtype
        for arr in self._arrays:
            # three references when free: the pool's list, this loop's variable and getrefcount's argument
            if arr.shape == shape and arr.dtype == dtype and sys.getrefcount(arr) <= 3:
                return np.stack(frames, out=arr)
        arr = np.stack(frames, out=np.empty(shape, dtype))  # C order also for rotated views (np.stack keeps theirs)
        if len(self._arrays) < self.keep:
            self._arrays.append(arr)
        return arr


def _make_batch(frames: list[np.ndarray], idx: list[int], stamps: list[float], rotation: int,
                buffers: BatchBuffers) -> FrameBatch:
    """Stack kept frames, turned upright, into a ``FrameBatch`` (into a pooled array of ``buffers`` when one is
    free).

    A rotated file's frames are stacked through rotated views, so the batch is written once, straight into its
    buffer: the decode process's shared slots (``buffers`` there) then hold one slot per batch whatever the rotation.
    Turning the stacked batch afterwards needed a second buffer while the first was still full, and with the
    pipeline holding the others the decode process waited for a slot that never came (rotated phone recordings
    hung the run).
    """
    k = _quarter_turns(rotation)
    if k:
        # np.rot90 with positive k turns counter-clockwise (first axis towards second); clockwise is -k.
        frames = [np.rot90(f, k=-k, axes=(0, 1)) for f in frames]
    arr = buffers.stack(frames)
    return FrameBatch(frames=arr, frame_index=np.asarray(idx, dtype=np.int64),
                      timestamp_s=np.asarray(stamps, dtype=np.float64))
