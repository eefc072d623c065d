"""Which frames are kept: the sampling rule (see "Sampling rule" in :mod:`fer_pipeline.decode`), the same for every
backend, as a stateful predicate (:class:`Sampler`) and over a whole timestamp list (:func:`select_sample_indices`);
presentation-order frame indices from packet pts for decoders that skip frames (:class:`PtsIndex`); the window after
each tick whose frames a skipping decoder must still decode (:func:`in_sample_window`); and the move of samples to
anchor frames (:func:`snap_to_anchors`, see "Anchor frames" in :mod:`fer_pipeline.decode`).

Pure computations on timestamps: nothing here opens a file.
"""

from __future__ import annotations

import heapq
import logging
import math

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["TICK_EPS_S", "PtsIndex", "Sampler", "check_sample_fps", "in_sample_window", "select_sample_indices",
           "snap_to_anchors"]

#: Tolerance in seconds when comparing a frame timestamp with a sampling tick (far below any frame interval).
TICK_EPS_S = 1e-4


def check_sample_fps(sample_fps: float | None) -> float:
    """``sample_fps`` as a float in Hz, 0.0 meaning every frame (``None`` or ``<= 0``).

    Raises:
        ValueError: ``sample_fps`` is not finite.
    """
    if sample_fps is None:
        return 0.0
    fps = float(sample_fps)
    if not math.isfinite(fps):
        raise ValueError(f"sample_fps must be finite, got {sample_fps!r}")
    return max(fps, 0.0)


class Sampler:
    """The sampling rule as a stateful predicate over timestamps in presentation order.

    Keep a frame when its timestamp reaches the next tick ``k / sample_fps`` (with ``TICK_EPS_S`` slack); after a
    kept frame the tick advances to the first one strictly after its timestamp. ``sample_fps <= 0`` keeps every frame
    (but never a repeated or earlier timestamp).

    Attributes:
        sample_fps: sampling rate in Hz (``<= 0``: every frame).
        next_tick: ``k`` of the next tick.
        last_ts: timestamp in seconds of the last kept frame (``-inf`` before the first).
    """

    def __init__(self, sample_fps: float) -> None:
        self.sample_fps = sample_fps
        self.next_tick = 0  # k of the next tick
        self.last_ts = -math.inf

    def keep(self, ts: float) -> bool:
        """Whether the frame at ``ts`` seconds is kept; updates the state when it is."""
        if ts <= self.last_ts:  # duplicate or out-of-order timestamp: never yields a strictly increasing series
            return False
        if self.sample_fps > 0:
            if ts < self.next_tick / self.sample_fps - TICK_EPS_S:
                return False
            self.next_tick = math.floor((ts + TICK_EPS_S) * self.sample_fps) + 1
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
    sampler = Sampler(0.0 if sample_fps is None else max(float(sample_fps), 0.0))
    if sampler.sample_fps <= 0 or len(ts) == 0:
        return np.array([i for i, t in enumerate(ts) if sampler.keep(float(t))], dtype=np.int64)
    # Jump from tick to tick with a binary search when timestamps are sorted (the normal case): O(K log N).
    if np.all(np.diff(ts) > 0):
        out: list[int] = []
        pos = 0
        while pos < len(ts):
            tick = sampler.next_tick / sampler.sample_fps - TICK_EPS_S
            pos = int(np.searchsorted(ts, tick, side="left")) if ts[pos] < tick else pos
            if pos >= len(ts):
                break
            sampler.keep(float(ts[pos]))
            out.append(pos)
            pos += 1
        return np.asarray(out, dtype=np.int64)
    return np.array([i for i, t in enumerate(ts) if sampler.keep(float(t))], dtype=np.int64)


class PtsIndex:
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


def in_sample_window(t: float, sample_fps: float, window_s: float) -> bool:
    """Whether a frame at ``t`` seconds lies in ``[k / sample_fps, k / sample_fps + window_s)`` for some tick ``k``
    (with ``TICK_EPS_S`` slack): the frame the sampler keeps for tick ``k`` is then decoded even if it is not a
    reference frame."""
    k = math.floor((t + TICK_EPS_S) * sample_fps)
    return t - k / sample_fps < window_s - TICK_EPS_S


def snap_to_anchors(stamps: np.ndarray, anchor: np.ndarray, kept: np.ndarray, ticks: np.ndarray,
                    sample_fps: float) -> np.ndarray | None:
    """Move each sample that falls on a reordered frame to the nearest anchor frame.

    An *anchor* is a frame that no frame before it in decode order is shown after (an I- or P-frame of a stream with
    B-frames): decoding anchors never needs a reordered frame on the usual encoder settings, so a decoder that only
    has to deliver anchors can skip every B-frame (about a third less decode CPU on the x264 720p30 benchmark file
    than skipping only non-reference B-frames, ``benchmarks/README.md``).

    Args:
        stamps: ``(N,) float64`` timestamps in seconds of all frames, presentation order, increasing.
        anchor: ``(N,) bool``, whether each frame is an anchor.
        kept: ``(K,) int`` positions the exact sampling rule keeps, increasing.
        ticks: ``(K,) float64`` the sampling tick (seconds) each kept frame answers.
        sample_fps: sampling rate in Hz (> 0).

    Returns:
        ``(K,) int64`` positions, increasing: the exact rule's frame where it is an anchor, else the anchor nearest
        its tick within half a sampling interval (``[tick - 0.5 / sample_fps, tick + 0.5 / sample_fps)``) and after
        the previous sample; ``None`` when some tick has no such anchor (the caller keeps the exact frames).
    """
    half = 0.5 / sample_fps
    pos = np.flatnonzero(anchor)
    ats = stamps[pos]
    out = np.empty(len(kept), dtype=np.int64)
    last = -np.inf
    for k, (i, tick) in enumerate(zip(kept.tolist(), ticks.tolist())):
        if not anchor[i]:
            j = int(np.searchsorted(ats, tick))
            best = None
            for c in (j - 1, j):
                if (0 <= c < len(ats) and ats[c] > last and tick - half <= ats[c] < tick + half
                        and (best is None or abs(ats[c] - tick) < abs(ats[best] - tick))):
                    best = c
            if best is None:
                return None
            i = int(pos[best])
        out[k] = i
        last = stamps[i]
    return out
