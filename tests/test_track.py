"""The tracker's id lifecycle: provisional ids while a track is unconfirmed, then finish(): resolved ids, short
tracks dropped, the rest renumbered 1..K in order of first appearance (ByteTrack from roboflow's trackers)."""
from __future__ import annotations

import numpy as np
import pytest

from fer_pipeline.track import ByteTrack, build_tracker, short_tracks
from fer_pipeline.types import Faces


def _faces(boxes: list[tuple[float, float, float, float]], score: float = 0.9) -> Faces:
    xyxy = np.array(boxes, np.float32).reshape(-1, 4)
    lms = np.repeat(((xyxy[:, None, :2] + xyxy[:, None, 2:]) / 2), 5, axis=1)
    return Faces(xyxy, np.full(len(xyxy), score, np.float32), lms)


def _run(tracker, frames: list[list[tuple]], fps: float = 5.0) -> Faces:
    out = []
    for i, boxes in enumerate(frames):
        f = tracker.update(_faces(boxes), i / fps)
        out.append(f.with_columns(timestamp_s=np.full(len(f), i / fps), frame_index=np.full(len(f), i)))
    return Faces.concat(out)


def test_two_people_keep_their_ids_and_are_numbered_by_first_appearance():
    t = ByteTrack()
    right = [(400 + 2 * i, 100, 480 + 2 * i, 200) for i in range(15)]
    left = [None] * 5 + [(50, 100, 130, 200)] * 10  # appears a second later
    frames = [[b for b in (left[i], right[i]) if b is not None] for i in range(15)]
    raw = _run(t, frames)
    assert (raw.track_id != -1).all()
    assert (raw.track_id[:1] <= -2).all()  # the first face of a track has a provisional id until it is confirmed
    res = t.finish(raw, min_track_s=1.0, sample_period_s=0.2)
    ids = res.faces.track_id
    assert set(ids.tolist()) == {1, 2}
    first_right = res.faces.xyxy[:, 0] >= 400
    assert (ids[first_right] == 1).all() and (ids[~first_right] == 2).all()  # right came first
    assert len(res.faces) == 25  # every face kept, provisional ones included
    assert set(res.ids.values()) == {1, 2} and set(res.ids) == set(np.unique(raw.track_id).tolist())


def test_short_tracks_are_dropped_and_ids_stay_dense():
    t = ByteTrack()
    steady = [[(100, 100, 200, 200)]] * 10
    stray = [[(100, 100, 200, 200), (500, 300, 560, 360)] if i in (3, 4) else [(100, 100, 200, 200)]
             for i in range(10)]
    raw = _run(t, [*steady[:2], *stray[2:]])
    res = t.finish(raw, min_track_s=1.0, sample_period_s=0.2)
    assert set(res.faces.track_id.tolist()) == {1}  # the 2-sample stray (0.4 s) is gone
    assert len(res.faces) == 10
    kept_all = ByteTrack()
    res0 = kept_all.finish(_run(kept_all, [*steady[:2], *stray[2:]]), min_track_s=0.0, sample_period_s=0.2)
    assert set(res0.faces.track_id.tolist()) == {1, 2}


def test_finish_of_nothing_and_reset():
    t = build_tracker("bytetrack")
    res = t.finish(Faces.empty(7), 1.0, 0.2)
    assert len(res.faces) == 0 and res.faces.probs.shape == (0, 7) and res.ids == {}
    _run(t, [[(0, 0, 50, 50)]] * 3)
    t.reset()
    assert len(t.update(Faces.empty(), 0.0)) == 0
    with pytest.raises(ValueError, match="unknown tracker"):
        build_tracker("sort")


def test_short_tracks_span_counts_one_sampling_period():
    ids = np.array([1, 1, 1, 2, 2, 3])
    ts = np.array([0.0, 0.2, 0.4, 1.0, 1.2, 2.0])
    assert short_tracks(ids, ts, 0.6, 0.2).tolist() == [2, 3]  # 1 spans 0.6 s: kept
    assert short_tracks(np.zeros(0, np.int64), np.zeros(0), 1.0, 0.2).tolist() == []


def test_built_from_its_config_section():
    from fer_pipeline.config import TrackConfig

    t = build_tracker(TrackConfig(max_lost_s=2.0, min_iou=0.3))
    assert isinstance(t, ByteTrack)
    assert t._kwargs["lost_track_buffer"] == 60 and t._kwargs["minimum_iou_threshold"] == 0.3


def test_a_cut_ends_every_track_and_ids_keep_counting():
    t = ByteTrack()
    before = _run(t, [[(100, 100, 200, 200)]] * 6)
    t.cut()
    after = [t.update(_faces([(100, 100, 200, 200)]), 2.0 + i / 5) for i in range(6)]
    after = Faces.concat([f.with_columns(timestamp_s=np.full(len(f), 2.0 + i / 5)) for i, f in enumerate(after)])
    res = t.finish(Faces.concat([before, after]), min_track_s=0.5, sample_period_s=0.2)
    assert set(res.faces.track_id.tolist()) == {1, 2}  # the same place, but a new track after the cut
    assert (res.faces.track_id[res.faces.timestamp_s >= 2.0] == 2).all()
