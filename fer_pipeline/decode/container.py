"""Opening and validating a video file with PyAV, and what it says about itself: :func:`probe` (the public
:class:`~fer_pipeline.types.VideoMeta`), the checks that turn every kind of bad input into a one-line
:class:`~fer_pipeline.decode.errors.VideoError` (see "Errors" in :mod:`fer_pipeline.decode`), the video stream to
decode, its start time and its display rotation."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import av

from fer_pipeline.decode.decord_backend import decord_meta, open_decord
from fer_pipeline.decode.errors import VideoError
from fer_pipeline.errors import one_line
from fer_pipeline.types import VideoMeta

logger = logging.getLogger(__name__)

__all__ = ["BACKENDS", "check_backend", "check_path", "open_container", "probe", "probe_pyav", "stream_start_s",
           "video_stream"]

#: Decode backends (``decode.backend``).
BACKENDS: tuple[str, ...] = ("decord", "pyav")

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


def check_backend(backend: str) -> None:
    """Raises ValueError when ``backend`` is not one of :data:`BACKENDS`."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown decode backend {backend!r}; expected one of {BACKENDS}")


def check_path(path: str | Path) -> Path:
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
        raise VideoError(f"cannot read file: {p}: {one_line(e)}", p) from e
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


def open_container(p: Path) -> Any:
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
            raise VideoError(f"cannot decode (corrupt or truncated): {p}: {one_line(e)}", p) from e
        raise VideoError(f"not a video file: {p}", p) from e
    except OSError as e:
        raise VideoError(f"cannot read file: {p}: {one_line(e)}", p) from e


def video_stream(container: Any, p: Path) -> Any:
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


def stream_start_s(stream: Any) -> float:
    """The video stream's start time in seconds (0.0 when the container does not say)."""
    if stream.start_time is None or stream.time_base is None:
        return 0.0
    return float(stream.start_time * stream.time_base)


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
    check_backend(backend)
    meta, _ = probe_pyav(check_path(path))
    if backend == "decord":
        vr = open_decord(meta.path)
        if vr is None:
            logger.warning("decord cannot open %s; metadata from PyAV only", meta.path)
        else:
            meta = decord_meta(vr, meta)
    return meta


def probe_pyav(p: Path) -> tuple[VideoMeta, float]:
    """PyAV probe of an existing, non-empty file (:func:`check_path`).

    Returns:
        the metadata, and the video stream's own declared duration in seconds (0.0 when the container gives only a
        container-level duration), used to detect truncated streams.

    Raises:
        VideoError: as :func:`probe`.
    """
    container = open_container(p)
    try:
        stream = video_stream(container, p)
        try:
            first = next(iter(container.decode(stream)), None)
        except av.error.FFmpegError as e:
            raise VideoError(f"cannot decode (corrupt or truncated): {p}: {one_line(e)}", p) from e
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
