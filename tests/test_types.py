"""The Faces container (columns filled stage by stage) and FrameBatch: shapes validated, rows selected and
stacked consistently across every column."""
from __future__ import annotations

import numpy as np
import pytest

from fer_pipeline.types import FACE_COLUMNS, Faces, FrameBatch


def _two() -> Faces:
    return Faces(np.array([[0, 0, 10, 10], [5, 5, 20, 20]]), np.array([0.9, 0.5]), np.zeros((2, 5, 2)))


def test_unset_columns_are_filled_with_their_not_set_value():
    f = _two()
    assert f.xyxy.dtype == np.float32 and f.track_id.tolist() == [-1, -1] and f.frame_index.tolist() == [-1, -1]
    assert np.isnan(f.timestamp_s).all() and np.isnan(f.pose).all() and f.probs.shape == (2, 0)
    assert set(f.columns()) == set(FACE_COLUMNS)


@pytest.mark.parametrize("column,value", [("scores", np.ones(3)), ("landmarks", np.zeros((2, 4, 2))),
                                          ("probs", np.ones((3, 7))), ("pose", np.zeros((2, 2))),
                                          ("track_id", np.zeros(1))])
def test_wrong_shapes_are_refused_with_the_column_named(column, value):
    with pytest.raises(ValueError, match=column):
        _two().with_columns(**{column: value})


def test_selection_and_concat_keep_every_column_aligned():
    f = _two().with_columns(track_id=[3, 4], probs=np.array([[0.2, 0.8], [0.6, 0.4]]), timestamp_s=[1.0, 2.0])
    one = f[np.array([False, True])]
    assert one.track_id.tolist() == [4] and one.probs.tolist() == [[pytest.approx(0.6), pytest.approx(0.4)]]
    assert one.timestamp_s.tolist() == [2.0] and f[0].xyxy.tolist() == [[0, 0, 10, 10]]
    both = Faces.concat([one, f])
    assert both.track_id.tolist() == [4, 3, 4] and both.probs.shape == (3, 2)
    assert len(Faces.concat([], n_labels=7)) == 0 and Faces.concat([], n_labels=7).probs.shape == (0, 7)
    with pytest.raises(ValueError, match="widths"):
        Faces.concat([f, _two()])
    with pytest.raises(ValueError, match="unknown Faces column"):
        f.with_columns(viewer=[1, 2])


def test_frame_batch_validates_its_arrays():
    frames = np.zeros((2, 4, 4, 3), np.uint8)
    assert len(FrameBatch(frames, np.arange(2), np.array([0.0, 0.2]))) == 2
    with pytest.raises(ValueError, match="uint8"):
        FrameBatch(frames.astype(np.float32), np.arange(2), np.zeros(2))
    with pytest.raises(ValueError, match="frame_index"):
        FrameBatch(frames, np.arange(3), np.zeros(2))
