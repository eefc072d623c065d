"""Alignment: the similarity transform is exact on known transforms, and crops land on the template."""
import numpy as np
import pytest

from fer_pipeline.align import FER2013_TEMPLATE, align_faces, similarity_transform


def _apply(m, pts):
    return pts @ m[:, :2].T + m[:, 2]


@pytest.mark.parametrize("angle,scale,shift", [(0.0, 1.0, (0, 0)), (20.0, 3.5, (100, 40)), (-35.0, 0.4, (-5, 7))])
def test_similarity_recovers_known_transform(angle, scale, shift):
    a = np.deg2rad(angle)
    r = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    src = FER2013_TEMPLATE.astype(np.float64)
    dst = src @ r.T + np.array(shift)
    m = similarity_transform(src, dst)
    np.testing.assert_allclose(m[:, :2], r, atol=1e-9)
    np.testing.assert_allclose(_apply(m, src), dst, atol=1e-9)


@pytest.mark.parametrize("src,dst", [(np.zeros((5, 2)), FER2013_TEMPLATE), (np.zeros((1, 2)), np.zeros((1, 2))),
                                     (np.zeros((5, 3)), np.zeros((5, 3)))])
def test_similarity_rejects_bad_points(src, dst):
    with pytest.raises(ValueError):
        similarity_transform(src, dst)


def test_align_puts_marked_landmarks_on_template():
    # a synthetic frame: a big white dot at each landmark of a face 6x the template size, rotated 15 degrees
    frame = np.zeros((600, 800, 3), np.uint8)
    a = np.deg2rad(15)
    r = 6 * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    lms = FER2013_TEMPLATE @ r.T + np.array([300, 120])
    import cv2
    for x, y in lms:
        cv2.circle(frame, (int(round(x)), int(round(y))), 9, (255, 255, 255), -1)
    crop = align_faces(frame, lms[None].astype(np.float32))[0]
    assert crop.shape == (48, 48) and crop.dtype == np.uint8
    for x, y in FER2013_TEMPLATE:
        assert crop[int(round(y)), int(round(x))] > 150, (x, y)
    assert crop[2, 2] < 30  # background stays dark


def test_align_empty_and_bad_inputs():
    frame = np.zeros((100, 100, 3), np.uint8)
    assert align_faces(frame, np.zeros((0, 5, 2), np.float32)).shape == (0, 48, 48)
    assert align_faces(frame, np.zeros((0, 5, 2), np.float32), gray=False).shape == (0, 48, 48, 3)
    with pytest.raises(ValueError):
        align_faces(frame[..., 0], np.zeros((0, 5, 2), np.float32))
    with pytest.raises(ValueError):
        align_faces(frame, np.zeros((3, 4, 2), np.float32))
