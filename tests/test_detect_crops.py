"""Detection on crops around known faces (fer_pipeline.detect.crops, AdaptiveInput(crops=True)): the same faces as a
full-frame pass, in original-frame pixels, on the real group photo and a real clip."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import IMAGES, VIDEOS
from PIL import Image

from fer_pipeline.config import DecodeConfig
from fer_pipeline.decode import iter_batches
from fer_pipeline.detect import build_detector
from fer_pipeline.detect.adaptive import AdaptiveInput
from fer_pipeline.detect.crops import detect_in_crops
from fer_pipeline.types import Faces


@pytest.fixture(scope="module")
def detector():
    return build_detector("centerface", score_threshold=0.5, input_max_side=640, min_face_px=10)


@pytest.fixture(scope="module")
def group():
    return np.asarray(Image.open(IMAGES / "t1.jpg").convert("RGB"))  # 1280x886, 6 faces


def assert_same_faces(ref: Faces, b: Faces, tol: float = 0.04) -> None:
    """Same number of faces; each face of ``ref`` (a full-resolution detection) has one in ``b`` whose landmarks are
    within ``tol`` of its width on average (full-frame passes on a shrunk input are within 0.6-2.6% on these
    inputs; crops within 1.4-3.6%) and whose box overlaps it by IoU >= 0.6 (CenterFace's box height varies by up to
    25% with the input scale on the webcam clip, for full-frame passes as for crops)."""
    assert len(ref) == len(b)
    cb = (b.xyxy[:, :2] + b.xyxy[:, 2:]) / 2
    for k in range(len(ref)):
        ca = (ref.xyxy[k, :2] + ref.xyxy[k, 2:]) / 2
        j = int(np.argmin(np.hypot(*(cb - ca).T)))
        width = float(ref.xyxy[k, 2] - ref.xyxy[k, 0])
        assert np.abs(ref.landmarks[k] - b.landmarks[j]).mean() < tol * width
        (x1, y1), (x2, y2) = np.maximum(ref.xyxy[k, :2], b.xyxy[j, :2]), np.minimum(ref.xyxy[k, 2:], b.xyxy[j, 2:])
        inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
        area = lambda f, i: (f.xyxy[i, 2] - f.xyxy[i, 0]) * (f.xyxy[i, 3] - f.xyxy[i, 1])
        assert inter / (area(ref, k) + area(b, j) - inter) >= 0.6


def full_res(detector, frame: np.ndarray) -> Faces:
    return detector.detect_batch([frame], max_side=0)[0]


def test_crops_find_the_group_faces_again(detector, group):
    full = detector.detect(group)
    assert len(full) == 6
    assert_same_faces(full_res(detector, group), detect_in_crops(detector, group, full))


def test_crops_follow_moved_faces_and_map_back_to_frame_pixels(detector, group):
    full = detector.detect(group)
    moved = np.zeros_like(group)
    moved[12:, 20:] = group[:-12, :-20]  # the picture moves 20 px right, 12 px down
    found = detect_in_crops(detector, moved, full)  # crops placed where the faces were
    assert_same_faces(full_res(detector, moved), found)
    shift = np.sort(found.xyxy[:, 0]) - np.sort(full.xyxy[:, 0])
    assert np.median(shift) == pytest.approx(20, abs=3)


def test_faces_at_the_frame_edge(detector, group):
    full = detector.detect(group)
    k = int(np.argmin(full.xyxy[:, 0]))  # leftmost face
    x_cut = int(full.xyxy[k, 0] + 0.1 * (full.xyxy[k, 2] - full.xyxy[k, 0]))
    edge = np.ascontiguousarray(group[:, x_cut:])  # that face now touches the left edge: its crop leaves the frame
    found = detect_in_crops(detector, edge, detector.detect(edge))
    assert_same_faces(full_res(detector, edge), found)
    assert found.xyxy[:, 0].min() >= 0 and found.xyxy[:, 0].min() < 5


def test_lost_face_is_missing_not_invented(detector, group):
    full = detector.detect(group)
    assert len(detect_in_crops(detector, np.zeros_like(group), full)) == 0
    assert len(detect_in_crops(detector, group, Faces.empty())) == 0


def test_adaptive_with_crops_on_a_real_clip(detector):
    batch = next(iter_batches(VIDEOS / "WolfgangLanger_Pexels.mp4", DecodeConfig(snap_to_anchors=False)))
    ada = AdaptiveInput(detector, target_face_px=64, min_side=256, crops=True, full_every=8)
    out = ada.detect_batch(batch.frames)
    assert ada.n_crop_frames == 14  # frames 1..15 but 8 (a full pass)
    for a, b in zip(detector.detect_batch(batch.frames, max_side=0), out):
        assert_same_faces(a, b)


def test_adaptive_falls_back_to_the_full_frame_when_a_face_is_lost(detector, group):
    frames = np.stack([group, group, np.zeros_like(group), group])
    ada = AdaptiveInput(detector, crops=True)
    out = ada.detect_batch(frames)
    assert [len(f) for f in out] == [6, 6, 0, 6]  # frame 3: no known face, so a full pass finds all again
    assert ada.n_crop_frames == 1


def test_crops_only_when_cheaper(detector, group):
    # 6 faces x 96^2 crop pixels is cheaper than 640 x 448, but 6 x 320^2 is not: full frames then
    ada = AdaptiveInput(detector, crops=True, crop_side=320)
    ada.detect_batch(np.stack([group] * 3))
    assert ada.n_crop_frames == 0


@pytest.mark.parametrize("kw", [{"input_side": 100}, {"input_side": 0}, {"context": 0.5}])
def test_bad_arguments(detector, group, kw):
    with pytest.raises(ValueError):
        detect_in_crops(detector, group, detector.detect(group), **kw)


def test_new_face_is_found_at_the_next_full_pass(detector, group):
    left = group.copy()
    left[:, group.shape[1] // 2:] = 0  # only the faces of the left half
    k = len(detector.detect(left))
    assert 0 < k < 6
    ada = AdaptiveInput(detector, crops=True, full_every=3)
    out = ada.detect_batch(np.stack([left, group, group, group]))
    # frames 1-2 look only around the known faces; frame 3 is a full-size pass and finds all six
    assert [len(f) for f in out] == [k, k, k, 6]
    assert ada.n_crop_frames == 2
