"""From the stages' faces to settled rows of the output tables, one window of whole seconds at a time.

A batch run decides track ids at the end (:meth:`fer_pipeline.track.Tracker.finish`: provisional ids resolved,
tracks shorter than ``min_track_s`` dropped, ids renumbered by first appearance) and viewers after that. A live
session cannot wait for the end, so :class:`Rolling` holds the faces back for ``lag_s`` seconds and then settles
them for good: by then every provisional id in them is resolved or dead, and a track with faces that old either
spans ``min_track_s`` already or has ended (a face older than ``min_track_s + max_lost_s`` seconds belongs to a
track that has either been seen for ``min_track_s`` or lost for ``max_lost_s``). So the rules are the batch rules,
applied as soon as their outcome is certain:

- faces of tracks never confirmed, and of tracks that ended shorter than ``min_track_s``, are dropped;
- track ids run 1, 2, ... in order of first appearance;
- each track's viewer is decided once, when its first rows are settled (:class:`fer_pipeline.reid.online.
  OnlineViewers`).

A window covers whole seconds ``[start_s, end_s)`` of stream time; its ``audience`` rows are every second of it,
with or without faces, as in batch. :meth:`Rolling.provisional` gives the per-second figures as soon as a second
is complete, before it is settled (tracks not yet filtered, each track a viewer): what a live page or a program
reacting to emotions can use at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fer_pipeline.headpose import is_attentive
from fer_pipeline.types import Faces

if TYPE_CHECKING:
    import pandas as pd

    from fer_pipeline.config import PipelineConfig
    from fer_pipeline.reid import TrackSamples
    from fer_pipeline.reid.online import OnlineViewers
    from fer_pipeline.track import Tracker

__all__ = ["Rolling", "Window", "settle_lag_s"]


def settle_lag_s(cfg: PipelineConfig) -> int:
    """Whole seconds a face is held back before it is settled: ``ceil(min_track_s + max_lost_s + 1 / sample_fps)
    + 1`` (the last second for a frame that arrives late), e.g. 4 s with the defaults (1.0 + 1.0 + 0.2)."""
    return int(math.ceil(cfg.track.min_track_s + cfg.track.max_lost_s + 1.0 / cfg.decode.sample_fps - 1e-9)) + 1


@dataclass
class Window:
    """Settled rows of seconds ``[start_s, end_s)``.

    Attributes:
        faces, timeline, audience: rows of the three tables (columns as in batch, without ``video_id``);
            ``audience`` has one row per second of the window.
    """

    start_s: int
    end_s: int
    faces: pd.DataFrame
    timeline: pd.DataFrame
    audience: pd.DataFrame


class Rolling:
    """Holds the stages' faces until they can be settled (see the module docstring).

    Args:
        tracker: the session's tracker (its :meth:`~fer_pipeline.track.Tracker.resolve`).
        labels: the emotion model's labels.
        cfg: settings (``track.min_track_s``, ``track.max_lost_s``, ``decode.sample_fps``, ``attention``).
        viewers: decides each track's viewer.
        samples: the session's face samples per raw track id, for re-identification (None without an embedder);
            samples of settled tracks are released here once their viewer is decided.
    """

    def __init__(self, tracker: Tracker, labels, cfg: PipelineConfig, viewers: OnlineViewers,
                 samples: TrackSamples | None = None) -> None:
        self.tracker = tracker
        self.labels = tuple(labels)
        self.cfg = cfg
        self.viewers = viewers
        self.samples = samples
        self.lag_s = settle_lag_s(cfg)
        self.period_s = 1.0 / cfg.decode.sample_fps
        self.settled_until = 0  # seconds before this are written
        self.last_ts = -math.inf  # newest sample seen
        self.faces_written = 0
        self._pending: list[Faces] = []
        self._spans: dict[int, list[float]] = {}  # tracker id -> [first, last] seconds, every face seen
        self._final: dict[int, int] = {}  # tracker id -> final track id
        self._dropped: set[int] = set()  # tracker ids dropped as short tracks
        self._provisional_until = 0

    # -- input ----------------------------------------------------------------------------------------------------
    def add(self, faces: Faces, last_ts: float) -> None:
        """Take one batch's faces (:class:`~fer_pipeline.stages.FaceStages` output, raw tracker ids);
        ``last_ts``: the batch's last sample time (seconds), faces or not."""
        if len(faces):
            self._pending.append(faces)
        self.last_ts = max(self.last_ts, float(last_ts))

    @property
    def duration_s(self) -> float:
        """Stream time covered so far, seconds: the newest sample's time plus one sample period (0 before any)."""
        return max(self.last_ts + self.period_s, 0.0)

    def _end_second(self) -> int:
        """One past the last second the stream covers: ``ceil(duration_s)``, the batch ``audience`` rule (a last
        sample near a second's end covers the start of the next one)."""
        return max(int(math.floor(self.last_ts)) + 1, int(math.ceil(self.duration_s - 1e-9)))

    @property
    def final_ids(self) -> dict[int, int]:
        """``{tracker id: final track id}`` of every track settled so far."""
        return dict(self._final)

    @property
    def tracks(self) -> int:
        """Tracks written so far."""
        return len(self._final)

    # -- provisional seconds --------------------------------------------------------------------------------------
    def provisional(self, final: bool = False) -> list[pd.DataFrame]:
        """Audience rows of the seconds completed since the last call (the newest sample is past their end; with
        ``final`` every second up to ``ceil(duration_s)``: the stream has ended), from the faces as tracked so far
        (each track a viewer; none filtered yet). One-row DataFrames with the ``audience`` columns; the settled rows
        written later may differ (short tracks dropped, viewers joined)."""
        from fer_pipeline.aggregate import audience, timeline

        if self.last_ts == -math.inf:
            return []
        done = self._end_second() if final else int(math.floor(self.last_ts))
        if done <= self._provisional_until:
            return []
        faces = Faces.concat(self._pending, len(self.labels)) if self._pending else Faces.empty(len(self.labels))
        sec = np.floor(faces.timestamp_s).astype(np.int64) if len(faces) else np.zeros(0, np.int64)
        out = []
        for s in range(self._provisional_until, done):
            f = faces[sec == s]
            ids = f.track_id
            if len(f):
                res = self.tracker.resolve(ids)
                ids = np.where(res >= 0, res, ids)  # a track not confirmed yet counts under its provisional id
            df = self._frame(f, ids, None)
            au = audience(timeline(df, self.labels), self.labels, s + 1)
            out.append(au[au["second"] == s].reset_index(drop=True))
        self._provisional_until = done
        return out

    # -- settling -------------------------------------------------------------------------------------------------
    def settle(self, final: bool = False) -> Window | None:
        """Settle the seconds that can be settled now: up to ``floor(newest - lag_s)``, or with ``final`` every
        second the stream covers, ``0 .. ceil(duration_s) - 1`` as in the batch ``audience`` (the session's end:
        nothing more will come).

        Returns:
            The new :class:`Window`, or None when no whole second became settled.
        """
        from fer_pipeline.aggregate import audience, timeline

        if self.last_ts == -math.inf:
            return None
        end = self._end_second() if final else int(math.floor(self.last_ts - self.lag_s))
        if end <= self.settled_until:
            return None
        faces = Faces.concat(self._pending, len(self.labels)) if self._pending else Faces.empty(len(self.labels))
        resolved = self.tracker.resolve(faces.track_id) if len(faces) else np.zeros(0, np.int64)
        for r in np.unique(resolved[resolved >= 0]).tolist():
            ts = faces.timestamp_s[resolved == r]
            span = self._spans.setdefault(int(r), [float(ts.min()), float(ts.max())])
            span[0], span[1] = min(span[0], float(ts.min())), max(span[1], float(ts.max()))
        sel = faces.timestamp_s < end
        self._pending = [faces[~sel]] if (~sel).any() else []
        win, rid = faces[sel], resolved[sel]
        keep = rid >= 0
        for r in np.unique(rid[keep]).tolist():
            if r in self._final or r in self._dropped:
                continue
            first, last = self._spans[r]
            short = last - first + self.period_s < self.cfg.track.min_track_s - 1e-9
            ended = final or last < self.last_ts - self.cfg.track.max_lost_s
            if short and ended:
                self._dropped.add(r)
        keep &= ~np.isin(rid, list(self._dropped))
        win, rid = win[keep], rid[keep]
        # final ids in order of first appearance (ties: the lower tracker id)
        new = sorted({int(r) for r in rid.tolist()} - set(self._final), key=lambda r: (self._spans[r][0], r))
        for r in new:
            self._final[r] = len(self._final) + 1
        track_id = np.array([self._final[int(r)] for r in rid], np.int64)
        self._assign_viewers(new)
        for r, fid in self._final.items():
            if r in self._spans:
                self.viewers.extend(fid, *self._spans[r])
        viewer_id = np.array([self.viewers.viewer_of[int(t)] for t in track_id], np.int64)
        df = self._frame(win.with_track_id(track_id), track_id, viewer_id)
        tl = timeline(df, self.labels)
        au = audience(tl, self.labels, end)
        au = au[au["second"] >= self.settled_until].reset_index(drop=True)
        start = self.settled_until
        self.settled_until = end
        self.faces_written += len(df)
        return Window(start, end, df, tl, au)

    def _assign_viewers(self, new: list[int]) -> None:
        by_track: dict[int, list] = {r: [] for r in new}
        if self.samples is not None and self.samples.samples:
            raws = np.array(list(self.samples.samples), np.int64)
            for raw, r in zip(raws.tolist(), self.tracker.resolve(raws).tolist()):
                if r in by_track:
                    by_track[r].extend(self.samples.samples[raw])
        for r in new:
            kept = sorted(by_track[r], key=lambda s: -s.quality)
            k = self.samples.k if self.samples is not None else 0
            self.viewers.assign(self._final[r], *self._spans[r], kept[:k])
        if self.samples is not None and new:  # decided: these samples are not needed any more
            raws = np.array(list(self.samples.samples), np.int64)
            for raw, r in zip(raws.tolist(), self.tracker.resolve(raws).tolist()):
                if r in self._final or r in self._dropped:
                    self.samples.samples.pop(raw, None)

    def _frame(self, faces: Faces, track_id: np.ndarray, viewer_id: np.ndarray | None) -> pd.DataFrame:
        """``faces`` table rows with the given ids (``viewer_id`` = ``track_id`` when None)."""
        from fer_pipeline.store import faces_frame

        f = faces.with_columns(track_id=np.asarray(track_id, np.int64),
                               viewer_id=np.asarray(viewer_id if viewer_id is not None else track_id, np.int64))
        att = is_attentive(f.pose, self.cfg.attention.max_yaw_deg, self.cfg.attention.max_pitch_deg)
        return faces_frame(f, self.labels, att)
