"""Adaptive detector input: smaller input for big faces, full size for small ones, same faces found."""
import numpy as np
import pytest
from PIL import Image

from conftest import IMAGES, VIDEOS
from fer_pipeline.config import DecodeConfig
from fer_pipeline.decode import iter_batches
from fer_pipeline.detect import build_detector
from fer_pipeline.detect.adaptive import AdaptiveInput


@pytest.fixture(scope="module")
def detector():
    return build_detector("centerface", score_threshold=0.5, input_max_side=640)


def test_big_face_gets_a_smaller_input_and_same_detections(detector):
    batch = next(iter_batches(VIDEOS / "WolfgangLanger_Pexels.mp4", DecodeConfig(backend="decord")))
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


def test_build_detector_from_config_wraps_centerface():
    """The registry builds the pipeline's full detector from the config: CenterFace in AdaptiveInput (with face
    crops) by default, the bare CenterFace with adaptive_input off; both expose the weights' sha256."""
    from fer_pipeline.config import DetectConfig
    from fer_pipeline.detect import CenterFaceDetector, FaceDetector
    from fer_pipeline.detect.centerface import CENTERFACE_SHA256

    cfg = DetectConfig()
    det = build_detector(cfg, threads=1, device="cpu")
    assert isinstance(det, AdaptiveInput) and isinstance(det, FaceDetector)
    assert isinstance(det.detector, CenterFaceDetector)
    assert det.crops == cfg.face_crops and det.crop_side == cfg.crop_input_side
    assert det.full_every == cfg.full_frame_every and det.min_side == cfg.min_input_side
    assert det.target_face_px == cfg.target_face_px and det.full_side == cfg.input_max_side
    assert det.sha256 == det.detector.sha256 == CENTERFACE_SHA256
    assert det.score_threshold == cfg.score_threshold and det.detector.score_threshold == cfg.score_threshold
    assert det.detector.min_face_px == cfg.min_face_px and det.detector.input_max_side == cfg.input_max_side
    assert det.provider == "CPUExecutionProvider"

    plain = build_detector(cfg.model_copy(update={"adaptive_input": False}), threads=1, device="cpu")
    assert type(plain) is CenterFaceDetector and plain.sha256 == CENTERFACE_SHA256
    assert plain.session.get_session_options().intra_op_num_threads == 1

    with pytest.raises(TypeError, match="threads= and device="):
        build_detector(cfg, score_threshold=0.9)


def test_adaptive_wrapper_detect_and_batch_agree(detector):
    img = np.asarray(Image.open(IMAGES / "t1.jpg").convert("RGB"))
    ada = AdaptiveInput(detector)
    one = ada.detect(img)
    assert len(one) == 6
    np.testing.assert_allclose(one.xyxy, detector.detect(img).xyxy)
    with pytest.raises(ValueError):
        ada.detect(np.zeros((10, 10), np.uint8))
