"""A live video source: a camera, a network stream, stdin, or a file played at its real pace, decoded in a thread
that always keeps the newest sampled frames and drops what the pipeline cannot keep up with.

What SOURCE may be (:func:`resolve_source`):

- a camera: ``0`` (or any number N: ``/dev/videoN``) or a ``/dev/video*`` path, opened with FFmpeg's ``v4l2``
  input;
- any URL FFmpeg reads: ``rtsp://``, ``udp://``, ``srt://``, ``rtmp://``, ``http(s)://`` (HLS, MJPEG), ...;
- ``-``: a stream on standard input (any container FFmpeg can probe from a pipe, e.g. MPEG-TS);
- a video file: decoded as fast as it decodes and nothing dropped, or with ``realtime=True`` paced on its
  presentation times like a camera (for demos and tests).

Decoding runs in a daemon thread (PyAV releases the GIL while it decodes). Every decoded frame is timed on
arrival; the frames the sampler keeps (``sample_fps``, the batch pipeline's :class:`~fer_pipeline.decode.sampling.
Sampler`) are converted to RGB and put in a queue of at most ``queue_frames`` samples. When the queue is full the
oldest sample is dropped and counted (``frames_dropped``): memory never grows with a slow consumer, and the
pipeline always gets the newest frames. A file read without ``realtime`` waits instead of dropping.

Timestamps are stream time from the first frame: the frame's pts where the stream has one, its arrival time where
it has none; a jump of the pts (a stream restart, a wrap) and a reconnection continue from the arrival time, so
``timestamp_s`` keeps increasing and ``second`` means what it means in a batch run.

Ends: the source's end (``eof``), nothing received for ``idle_timeout_s`` (``idle``; FFmpeg's own interrupt
callback, so a blocked read returns), :meth:`LiveSource.close` (``closed``), or an error after ``reconnect``
retries (``error``). A dropped connection (a read error, or a network peer that closed the connection) is reopened
up to ``reconnect`` times, at once and then once a second; each gap (stream seconds without frames) is recorded in
:attr:`LiveSource.gaps`, and time goes on from the arrival of the first frame after it.
"""

from __future__ import annotations

import logging
import math
import os
import re
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fer_pipeline.decode.buffers import apply_rotation
from fer_pipeline.decode.sampling import Sampler
from fer_pipeline.errors import one_line

logger = logging.getLogger(__name__)

__all__ = ["LiveSample", "LiveSource", "SourceError", "SourceSpec", "resolve_source"]

_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
#: A live stream's pts that goes backwards, or forward by more than this (seconds) beyond the time that passed since
#: the previous frame, has jumped (a restart, a wrap): time then goes on by the arrival times instead. A slow or fast
#: sender clock is no jump: stream time follows the pts.
PTS_JUMP_S = 5.0


#: Seconds a source that is received rather than fetched (UDP, RTP, an SRT listener) waits for its first data by
#: default: its sender may well start after the command.
LISTEN_OPEN_TIMEOUT_S = 60.0


def _listens(spec: SourceSpec) -> bool:
    """Whether the source waits for a sender (nothing to connect to): ``udp://``, ``rtp://``, ``srt://`` in listener
    mode, or any URL with ``listen=1``."""
    t = (spec.target or "").lower()
    return spec.kind == "url" and (t.startswith(("udp://", "rtp://")) or "mode=listener" in t or "listen=1" in t)


class SourceError(ValueError):
    """A live source cannot be opened or read; one line naming the source."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


@dataclass(frozen=True)
class SourceSpec:
    """What :func:`resolve_source` made of a SOURCE argument.

    Attributes:
        name: the source as the user gave it (for messages and the ``videos`` row's ``path``).
        target: what PyAV opens: a path, a URL, or ``None`` for standard input.
        format: the FFmpeg input format to force (``v4l2`` for cameras), or None to probe.
        kind: ``camera``, ``url``, ``stdin`` or ``file``.
    """

    name: str
    target: str | None
    format: str | None
    kind: str


def resolve_source(source: str | os.PathLike) -> SourceSpec:
    """Classify a SOURCE argument (see the module docstring).

    Raises:
        SourceError: a path that does not exist (a camera device or a file).
    """
    s = str(source)
    if s == "-":
        return SourceSpec(s, None, None, "stdin")
    if s.isdigit():
        dev = f"/dev/video{int(s)}"
        if not Path(dev).exists():
            raise SourceError(f"camera {s} not found: {dev} does not exist")
        return SourceSpec(s, dev, "v4l2", "camera")
    if s.startswith("/dev/video"):
        if not Path(s).exists():
            raise SourceError(f"camera not found: {s} does not exist")
        return SourceSpec(s, s, "v4l2", "camera")
    if _URL.match(s):
        return SourceSpec(s, s, None, "url")
    p = Path(s)
    if not p.exists():
        raise SourceError(f"source not found: {s} (not a file, a camera number or /dev/video*, a URL, or -)")
    if not p.is_file():
        raise SourceError(f"not a video file: {s}")
    return SourceSpec(s, str(p), None, "file")


@dataclass
class LiveSample:
    """One sampled frame of a live source.

    Attributes:
        frame: ``(H, W, 3) uint8`` RGB, upright.
        timestamp_s: stream time in seconds from the first frame (increasing).
        index: the frame's index among the frames decoded since the start (0-based).
        arrival: ``time.perf_counter()`` when the frame was decoded (the start of its latency).
    """

    frame: np.ndarray
    timestamp_s: float
    index: int
    arrival: float


@dataclass
class _State:
    ended: str | None = None
    error: str | None = None
    frames_decoded: int = 0
    frames_sampled: int = 0
    frames_dropped: int = 0
    gaps: list[tuple[float, float]] = field(default_factory=list)


class LiveSource:
    """Decode a live source in a thread, handing out the newest sampled frames (see the module docstring).

    Args:
        source: SOURCE as the user gave it (:func:`resolve_source`).
        sample_fps: samples per second of stream time, Hz (> 0).
        realtime: a file source is paced on its presentation times (a live source always is).
        idle_timeout_s: end when nothing has been received for this long, seconds (> 0).
        open_timeout_s: time allowed to open the source and receive its first data, seconds; None: 60 s for
            sources that are received rather than fetched (``udp://``, ``rtp://``, ``srt://`` ... ``mode=listener``:
            the sender may start after this command), else ``idle_timeout_s``.
        reconnect: times a dropped connection is reopened before the source ends with an error (>= 0).
        queue_frames: samples kept waiting for the pipeline; when full the oldest is dropped (>= 1).
        stdin: the binary stream read for SOURCE ``-`` (standard input by default).

    Raises (from :meth:`start`):
        SourceError: the source does not exist or cannot be opened (one line; raised at once, nothing started).
    """

    def __init__(self, source: str | os.PathLike, sample_fps: float, *, realtime: bool = False,
                 idle_timeout_s: float = 10.0, reconnect: int = 0, queue_frames: int = 8, stdin: Any = None,
                 open_timeout_s: float | None = None) -> None:
        if sample_fps <= 0:
            raise ValueError(f"sample_fps must be > 0, got {sample_fps}")
        if idle_timeout_s <= 0:
            raise ValueError(f"idle_timeout_s must be > 0, got {idle_timeout_s}")
        self.spec = resolve_source(source)
        self.sample_fps = float(sample_fps)
        self.realtime = realtime or self.spec.kind != "file"
        self.idle_timeout_s = float(idle_timeout_s)
        if open_timeout_s is None:
            open_timeout_s = LISTEN_OPEN_TIMEOUT_S if _listens(self.spec) else self.idle_timeout_s
        if open_timeout_s <= 0:
            raise ValueError(f"open_timeout_s must be > 0, got {open_timeout_s}")
        self.open_timeout_s = float(open_timeout_s)
        self.reconnect = max(0, int(reconnect))
        self.queue_frames = max(1, int(queue_frames))
        self._stdin = stdin
        self._queue: deque[LiveSample] = deque()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._state = _State()
        self._thread: threading.Thread | None = None
        self._container: Any = None
        self.fps: float | None = None
        self.width: int | None = None
        self.height: int | None = None
        self.codec: str | None = None
        self.started_at: float | None = None  # perf_counter of the first frame

    # -- public state ---------------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The source as the user gave it."""
        return self.spec.name

    @property
    def ended(self) -> str | None:
        """Why the source ended (``eof``, ``idle``, ``closed``, ``error``), or None while it runs. Samples still
        queued can be taken after the end."""
        return self._state.ended

    @property
    def error(self) -> str | None:
        """The one-line error that ended the source (``ended == "error"``), else None."""
        return self._state.error

    @property
    def frames_dropped(self) -> int:
        """Samples dropped because the queue was full (the pipeline was behind)."""
        return self._state.frames_dropped

    @property
    def frames_decoded(self) -> int:
        """Frames decoded so far (sampled or not)."""
        return self._state.frames_decoded

    @property
    def gaps(self) -> list[tuple[float, float]]:
        """``(start_s, end_s)`` stream-time intervals without frames, one per reconnection."""
        return list(self._state.gaps)

    def queued(self) -> int:
        """Samples waiting in the queue (at most ``queue_frames``)."""
        with self._cond:
            return len(self._queue)

    # -- opening --------------------------------------------------------------------------------------------------
    def _open(self) -> Any:
        import av

        spec = self.spec
        timeout = (self.open_timeout_s, self.idle_timeout_s)
        options = {}
        if spec.kind == "url" and spec.target.startswith("udp://") and "fifo_size" not in spec.target:
            options = {"overrun_nonfatal": "1", "fifo_size": "50000"}  # a busy reader loses packets, not the stream
        try:
            if spec.kind == "stdin":
                target = self._stdin if self._stdin is not None else sys.stdin.buffer
                container = av.open(target, "r", timeout=timeout)
            else:
                container = av.open(spec.target, "r", format=spec.format, options=options, timeout=timeout)
        except av.error.ExitError as e:
            raise SourceError(f"cannot open {spec.name}: nothing received in {self.open_timeout_s:g} s") from e
        except (av.error.FFmpegError, OSError, ValueError) as e:
            raise SourceError(f"cannot open {spec.name}: {one_line(e)}") from e
        if not container.streams.video:
            container.close()
            raise SourceError(f"cannot open {spec.name}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        self.fps = float(rate) if rate else None
        self.width, self.height = stream.codec_context.width or None, stream.codec_context.height or None
        self.codec = stream.codec_context.name
        return container

    def start(self) -> LiveSource:
        """Open the source (in the calling thread, so a bad source fails here) and start decoding.

        Returns:
            ``self``.

        Raises:
            SourceError: see the class docstring.
        """
        self._container = self._open()
        self._thread = threading.Thread(target=self._run, name="live-decode", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop decoding (the thread ends at its next frame, or within ``idle_timeout_s`` on a silent stream);
        samples still queued stay available. Idempotent."""
        self._stop.set()
        with self._cond:
            if self._state.ended is None:
                self._state.ended = "closed"
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)

    def __enter__(self) -> LiveSource:
        return self.start() if self._thread is None else self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- consuming ------------------------------------------------------------------------------------------------
    def get(self, max_n: int, timeout_s: float) -> list[LiveSample]:
        """The samples queued, oldest first (at most ``max_n``), waiting up to ``timeout_s`` seconds for the first.

        Returns:
            a list of 0..``max_n`` samples; empty on timeout or once the source has ended and the queue is empty.
        """
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not self._queue and self._state.ended is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            out = []
            while self._queue and len(out) < max_n:
                out.append(self._queue.popleft())
            self._cond.notify_all()
            return out

    def _put(self, sample: LiveSample) -> None:
        with self._cond:
            if self.spec.kind == "file" and not self.realtime:  # a file as fast as it decodes: wait, drop nothing
                while len(self._queue) >= self.queue_frames and not self._stop.is_set():
                    self._cond.wait(0.1)
            elif len(self._queue) >= self.queue_frames:
                self._queue.popleft()
                self._state.frames_dropped += 1
            self._queue.append(sample)
            self._state.frames_sampled += 1
            self._cond.notify_all()

    # -- the decode thread ----------------------------------------------------------------------------------------
    def _run(self) -> None:
        import av

        st = self._state
        sampler = Sampler(self.sample_fps)
        offset: float | None = None  # stream time = pts seconds + offset
        t0: float | None = None  # perf_counter at stream time 0
        last_ts = -math.inf
        gap_start: float | None = None  # set while reconnecting: where the gap began (stream seconds)
        prev: tuple[float, float] | None = None  # (pts seconds, arrival seconds) of the previous frame
        retries = 0
        container = self._container
        why, error = "eof", None
        while True:
            try:
                stream = container.streams.video[0]
                tb = float(stream.time_base) if stream.time_base else None
                rotation: int | None = None
                for frame in container.decode(stream):
                    arrival = time.perf_counter()
                    if self._stop.is_set():
                        break
                    if t0 is None:
                        t0, self.started_at = arrival, arrival
                    pts_s = frame.pts * tb if (frame.pts is not None and tb) else None
                    wall = arrival - t0
                    if gap_start is not None:  # the first frame after a reconnection: time goes on from now
                        resume = max(wall, last_ts + self._period())
                        st.gaps.append((gap_start, resume))
                        offset = None if pts_s is None else resume - pts_s
                        last_ts, gap_start, prev = resume - self._period(), None, None
                    if pts_s is None:
                        ts = max(wall, last_ts + 1e-3)
                    else:
                        if offset is None:
                            offset = -pts_s
                        ts = pts_s + offset
                        if (self.spec.kind != "file" and prev is not None
                                and not 0 < pts_s - prev[0] <= PTS_JUMP_S + (wall - prev[1])):
                            # a jump of the pts (backwards, or further than the time that passed): go on from
                            # the previous frame by the time that passed since it
                            offset = last_ts + max(wall - prev[1], self._period()) - pts_s
                            ts = pts_s + offset
                        elif ts <= last_ts:
                            continue
                        prev = (pts_s, wall)
                    if self.spec.kind == "file" and self.realtime:  # paced on the file's own clock
                        delay = t0 + ts - time.perf_counter()
                        if delay > 0 and self._stop.wait(delay):
                            break
                        arrival = time.perf_counter()
                    index = st.frames_decoded
                    st.frames_decoded += 1
                    last_ts = max(last_ts, ts)
                    if not sampler.keep(ts):
                        continue
                    img = frame.to_ndarray(format="rgb24")
                    if rotation is None:
                        rotation = _rotation(frame, stream, self.spec.name)
                    if rotation:
                        img = apply_rotation(img, rotation)
                    self._put(LiveSample(img, float(ts), index, arrival))
                why = "closed" if self._stop.is_set() else "eof"
            except av.error.ExitError:
                why = "closed" if self._stop.is_set() else "idle"
            except (av.error.FFmpegError, OSError) as e:
                why, error = "error", f"{self.spec.name}: {one_line(e)}"
            dropped = why == "error" or why == "eof" and self.spec.kind == "url"  # a network peer that hung up
            if not dropped or retries >= self.reconnect or self._stop.is_set():
                break
            retries += 1
            if last_ts > -math.inf:
                gap_start = last_ts
            logger.warning("live source %s dropped (%s); reconnecting (%d of %d)", self.spec.name,
                           error or "connection closed", retries, self.reconnect)
            try:
                container.close()
            except Exception:  # noqa: BLE001 - a broken container may fail to close; it is dropped anyway
                pass
            container = None
            while container is None and not self._stop.is_set():
                try:
                    container = self._open()
                except SourceError as e:
                    logger.warning("reconnect to %s failed: %s", self.spec.name, e)
                    if retries >= self.reconnect:
                        break
                    retries += 1
                    self._stop.wait(1.0)
            if container is None:
                break
            offset = None  # the new connection's pts start anew (see the first frame after a gap above)
            why, error = "eof", None
        try:
            if container is not None:
                container.close()
        except Exception:  # noqa: BLE001
            pass
        with self._cond:
            if st.ended is None or st.ended == "closed" and why == "error":
                st.ended = why
            st.error = error if why == "error" else None
            self._cond.notify_all()
        if why == "error":
            logger.warning("live source ended with an error: %s", error)

    def _period(self) -> float:
        return 1.0 / self.fps if self.fps else 1.0 / 30.0


def _rotation(frame: Any, stream: Any, name: str) -> int:
    """Clockwise display rotation of the stream in degrees (0 where it carries none, as cameras and most network
    streams), read from its first kept frame as for files."""
    from fer_pipeline.decode.container import _rotation_cw

    try:
        return _rotation_cw(frame, stream, Path(name))
    except Exception:  # noqa: BLE001 - a frame without side data
        return 0
