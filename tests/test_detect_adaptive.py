"""Adaptive detector input: smaller input for big faces, full size for small ones, same faces found."""
import numpy as np
import pytest
from PIL import Image

from conftest import IMAGES, VIDEOS
from fer_pipeline.decode import iter_batches
from fer_pipeline.detect import build_detector
from fer_pipeline.detect.adaptive import AdaptiveInput


@pytest.fixture(scope="module")
def detector():
    return build_detector("centerface", score_threshold=0.5, input_max_side=640)


def test_big_face_gets_a_smaller_input_and_same_detections(detector):
    batch = next(iter_batches(VIDEOS / "WolfgangLanger_Pexels.mp4", sample_fps=5, batch_size=16))
    ada = AdaptiveInput(detector, target_face_px=64, min_side=256)
    small = ada.detect_batch(batch.frames)
    assert ada.last_side < 640
    full = detector.detect_batch(batch.frames)
    assert [len(f) for f in small] == [len(f) for f in full] == [1] * len(batch)
    for a, b in zip(small, full):  # same face; landmarks (what alignment uses) within 5% of the face width
        width = float(b.xyxy[0, 2] - b.xyxy[0, 0])
        assert np.abs(a.landmarks - b.landmarks).max() < 0.05 * width


def test_small_faces_keep_full_input(detector):
    img = np.asarray(Image.open(IMAGES / "t1.jpg").convert("RGB"))
    frames = np.stack([img, img])
    ada = AdaptiveInput(detector, target_face_px=64, min_side=256)
    out = ada.detect_batch(frames)
    assert ada.last_side == 640 and [len(f) for f in out] == [6, 6]


def test_no_face_means_full_size(detector):
    ada = AdaptiveInput(detector)
    out = ada.detect_batch(np.zeros((3, 360, 640, 3), np.uint8))
    assert ada.last_side == 640 and all(len(f) == 0 for f in out)
    assert ada.detect_batch(np.zeros((0, 360, 640, 3), np.uint8)) == []
