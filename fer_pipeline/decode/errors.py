"""The decode stage's error, :class:`VideoError` (a bad input fails its own video, never the run), and the check that
a stream was not silently truncated (:func:`check_complete`, run by every backend)."""

from __future__ import annotations

import logging
from pathlib import Path

from fer_pipeline.types import VideoMeta

logger = logging.getLogger(__name__)

__all__ = ["VideoError", "check_complete"]


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

    @classmethod
    def stalled(cls, timeout_s: float, last_ts: float, path: str | Path) -> VideoError:
        """The watchdog's error (decode process or decode thread): nothing decoded for ``timeout_s`` seconds after
        ``last_ts`` seconds of video."""
        return cls(f"decoder stalled: nothing decoded for {timeout_s:g} s after {last_ts:.1f} s of video "
                   f"(decode.stall_timeout_s): {path}", path)


def check_complete(meta: VideoMeta, last_ts: float | None, declared_s: float) -> None:
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
