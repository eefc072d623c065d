"""The per-batch stage loop: detect -> track -> align + classify -> head pose, over batches of sampled frames.

One function for every source: the batch pipeline (:func:`fer_pipeline.pipeline.analyze_video`) feeds it a file's
batches, a live stream can feed it the newest frames. It knows nothing of where frames come from or where faces go:
:class:`FaceStages` turns a :class:`~fer_pipeline.types.FrameBatch` into :class:`~fer_pipeline.types.Faces` with
every column set (boxes, scores, landmarks, provisional track ids, frame index and timestamp, probabilities, pose),
and the caller's sinks take them from there. Time per stage is summed into a :class:`StageTimes` the caller owns
(the benchmarks read it from the result instead of patching anything).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from fer_pipeline.align import align_faces
from fer_pipeline.classify import EmotionModel
from fer_pipeline.cuts import CutDetector
from fer_pipeline.detect.base import FaceDetector
from fer_pipeline.headpose import head_pose
from fer_pipeline.track import Tracker
from fer_pipeline.types import Faces, FrameBatch

logger = logging.getLogger(__name__)

__all__ = ["FaceStages", "StageTimes", "timed_batches"]


@dataclass
class StageTimes:
    """Seconds spent per stage of one video (wall clock, summed over batches).

    Attributes:
        decode: the decoder's own time producing batches (the decode process's busy time, or the decode thread's).
        decode_wait: time the loop waited for the next batch (decoding that did not overlap the other stages).
        detect, track, classify: the stages of :class:`FaceStages` (classify includes alignment and head pose).
        thumbnails: gathering report thumbnails.
        reid: re-identification: face samples' crops during the loop, their embeddings and the clustering after.
        hash: sha256 of the input file (its ``video_id``).
        aggregate, write: per-second tables; Parquet and thumbnails written.
    """

    decode: float = 0.0
    decode_wait: float = 0.0
    detect: float = 0.0
    track: float = 0.0
    classify: float = 0.0
    thumbnails: float = 0.0
    reid: float = 0.0
    hash: float = 0.0
    aggregate: float = 0.0
    write: float = 0.0

    def as_dict(self) -> dict:
        """``{stage: seconds}`` rounded to ms."""
        return {k: round(v, 3) for k, v in vars(self).items()}


def timed_batches(batches: Iterator[FrameBatch], times: StageTimes) -> Iterator[FrameBatch]:
    """``batches``, with the time spent waiting for each one added to ``times.decode_wait``."""
    while True:
        t = time.perf_counter()
        try:
            batch = next(batches)
        except StopIteration:
            return
        finally:
            times.decode_wait += time.perf_counter() - t
        yield batch
        del batch


class FaceStages:
    """detect -> track -> align + classify -> head pose for consecutive batches of one video (or stream).

    Args:
        detector: any :class:`~fer_pipeline.detect.base.FaceDetector` (``detect_batch``).
        tracker: the video's tracker, or a callable that returns it (called after the first batch's detection, so
            that building it, e.g. in a helper thread, overlaps that detection).
        emotion: the emotion model (its spec gives the alignment template, input size and colour).
        times: where stage times are summed.
        cuts: shot-cut detection before tracking (a cut ends every track); none by default.

    Call it with each batch in time order; :meth:`Tracker.finish` of :attr:`tracker` ends the video.
    """

    def __init__(self, detector: FaceDetector, tracker: Tracker | Callable[[], Tracker], emotion: EmotionModel,
                 times: StageTimes | None = None, cuts: CutDetector | None = None) -> None:
        self.detector = detector
        self._tracker = tracker
        self.emotion = emotion
        self.cuts = cuts if cuts is not None else CutDetector(0)
        self.times = times if times is not None else StageTimes()
        spec = emotion.spec
        self._template, self._hw, self._gray = spec.template, tuple(spec.input_hw), spec.color == "gray"
        self.n_labels = len(emotion.labels)

    @property
    def tracker(self) -> Tracker:
        """The tracker (built on first use when a callable was given)."""
        if not isinstance(self._tracker, Tracker):
            self._tracker = self._tracker()
        return self._tracker

    def __call__(self, batch: FrameBatch) -> tuple[list[Faces], Faces]:
        """One batch through the stages.

        Returns:
            ``(per_frame, faces)``: the tracked faces of each frame (``len(batch)`` items, ids as the tracker gave
            them), and all of them in one container in frame order with ``frame_index``, ``timestamp_s``, ``probs``
            ``(N, K)`` and ``pose`` set.
        """
        times = self.times
        t = time.perf_counter()
        dets = self.detector.detect_batch(batch.frames)
        times.detect += time.perf_counter() - t
        tracker = self.tracker  # after the first batch's detection: see the class docstring

        t = time.perf_counter()
        per_frame = []
        for frame, f, ts in zip(batch.frames, dets, batch.timestamp_s):
            if self.cuts(frame):
                tracker.cut()
            per_frame.append(tracker.update(f, float(ts)))
        times.track += time.perf_counter() - t

        t = time.perf_counter()
        crops, owners = [], []
        for i, faces in enumerate(per_frame):
            if len(faces):
                crops.append(align_faces(batch.frames[i], faces.landmarks, self._template, self._hw, self._gray))
                owners.append(np.full(len(faces), i))
        if crops:
            owner = np.concatenate(owners)
            faces = Faces.concat([f for f in per_frame if len(f)])
            faces = faces.with_columns(frame_index=batch.frame_index[owner], timestamp_s=batch.timestamp_s[owner],
                                       probs=self.emotion.predict(np.concatenate(crops)),
                                       pose=head_pose(faces.landmarks))
        else:
            faces = Faces.empty(self.n_labels)
        times.classify += time.perf_counter() - t
        return per_frame, faces
