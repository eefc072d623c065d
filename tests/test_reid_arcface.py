"""ArcFace embedder (fer_pipeline.reid.arcface) on tiny ONNX models built here: no InsightFace pack needed.

The fake recognition model is spatially sensitive (16x16 average pooling, then a dense layer with a bias), so the
numpy re-implementation it is compared with checks the preprocessing for real: RGB order, (x - 127.5) / 127.5 (the
bias makes the scale survive the L2 normalisation) and the NCHW layout.
"""
from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import VIDEOS
from fer_pipeline.fileutil import sha256_file
from fer_pipeline.reid.arcface import (
    ARCFACE_TEMPLATE,
    ArcFaceEmbedder,
    arcface_matrix,
    find_recognition_model,
)
from fer_pipeline.reid.base import EMBEDDERS, EmbedderError
from fer_pipeline.types import Faces

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

DIM = 512
POOL = 16  # 112 / 16 = 7: a 3x7x7 grid of block means feeds the dense layer
FEAT = 3 * 7 * 7
RNG = np.random.default_rng(20240611)
W = RNG.normal(0, 1, (FEAT, DIM)).astype(np.float32)
B = RNG.normal(0, 1, DIM).astype(np.float32)


def _save(graph, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def build_recognition(path: Path, batch: int | str = "N", normalise_inside: bool = False) -> Path:
    """input.1 [batch,3,112,112] -> AveragePool 16x16 -> Flatten -> MatMul W -> Add B -> [batch,512].

    ``normalise_inside``: the graph starts with Sub 127.5 and Mul 1/127.5 (nodes named as MXNet exports name them),
    so it wants raw 0-255 pixels and computes the same function of them as the plain model.
    """
    nodes, inits, x = [], [numpy_helper.from_array(W, "W"), numpy_helper.from_array(B, "B")], "input.1"
    if normalise_inside:
        inits += [numpy_helper.from_array(np.array(127.5, np.float32), "mean"),
                  numpy_helper.from_array(np.array(1 / 127.5, np.float32), "scale")]
        nodes += [helper.make_node("Sub", [x, "mean"], ["centred"], name="_minus0"),
                  helper.make_node("Mul", ["centred", "scale"], ["scaled"], name="_mul0")]
        x = "scaled"
    nodes += [helper.make_node("AveragePool", [x], ["pooled"], kernel_shape=[POOL, POOL], strides=[POOL, POOL]),
              helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
              helper.make_node("MatMul", ["flat", "W"], ["mm"]),
              helper.make_node("Add", ["mm", "B"], ["683"])]
    g = helper.make_graph(nodes, "fake_arcface",
                          [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [batch, 3, 112, 112])],
                          [helper.make_tensor_value_info("683", TensorProto.FLOAT, [batch, DIM])], inits)
    return _save(g, path)


def build_detector_model(path: Path) -> Path:
    """Looks like det_10g to the shape check: input [1,3,640,640], two outputs."""
    g = helper.make_graph([helper.make_node("Identity", ["input.1"], ["maps"]),
                           helper.make_node("ReduceMean", ["input.1"], ["score"], axes=[2, 3], keepdims=0)],
                          "fake_det",
                          [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, 640, 640])],
                          [helper.make_tensor_value_info("maps", TensorProto.FLOAT, [1, 3, 640, 640]),
                           helper.make_tensor_value_info("score", TensorProto.FLOAT, [1, 3])])
    return _save(g, path)


def build_genderage(path: Path) -> Path:
    """Looks like genderage.onnx: input [N,3,96,96], output [N,3] (one output, but not 112x112)."""
    g = helper.make_graph([helper.make_node("GlobalAveragePool", ["data"], ["p"]),
                           helper.make_node("Flatten", ["p"], ["fc1"], axis=1)], "fake_ga",
                          [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", 3, 96, 96])],
                          [helper.make_tensor_value_info("fc1", TensorProto.FLOAT, ["N", 3])])
    return _save(g, path)


def reference(crops: np.ndarray) -> np.ndarray:
    """The fake network in numpy on InsightFace's preprocessing: RGB, (x - 127.5) / 127.5, NCHW."""
    x = (crops.astype(np.float64) - 127.5) / 127.5
    x = x.transpose(0, 3, 1, 2)  # NCHW, channels R, G, B
    pooled = x.reshape(len(x), 3, 7, POOL, 7, POOL).mean(axis=(3, 5))
    y = pooled.reshape(len(x), FEAT) @ W.astype(np.float64) + B
    return (y / np.linalg.norm(y, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def packs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("insightface") / "packs"
    pack = root / "buffalo_t"
    build_detector_model(pack / "det_10g.onnx")
    build_genderage(pack / "genderage.onnx")
    build_recognition(pack / "w600k_r50.onnx")
    (pack / "broken.onnx").write_bytes(b"not an onnx file")
    return root


@pytest.fixture(scope="module")
def embedder(packs) -> ArcFaceEmbedder:
    return ArcFaceEmbedder(pack="buffalo_t", root=packs, device="cpu", threads=1)


@pytest.fixture(scope="module")
def face_frame() -> tuple[np.ndarray, Faces]:
    """The first frame of single_face.mp4 (RGB) and its one face, found by the pipeline's default detector."""
    import av

    from fer_pipeline.config import DetectConfig
    from fer_pipeline.detect import build_detector

    with av.open(str(VIDEOS / "single_face.mp4")) as c:
        frame = next(c.decode(video=0)).to_ndarray(format="rgb24")
    faces = build_detector(DetectConfig(), threads=1, device="cpu").detect(frame)
    assert len(faces) == 1
    return frame, faces


# --------------------------------------------------------------------------------------------------------------------
# finding and loading the model
# --------------------------------------------------------------------------------------------------------------------

def test_found_in_pack(embedder, packs):
    path = packs / "buffalo_t" / "w600k_r50.onnx"
    assert EMBEDDERS["arcface"] is ArcFaceEmbedder and embedder.name == "arcface"
    assert embedder.model_path == path  # not det_10g, genderage or the unreadable file
    assert embedder.dim == DIM
    assert embedder.sha256 == sha256_file(path)
    assert (embedder.input_mean, embedder.input_std) == (127.5, 127.5)
    assert find_recognition_model(pack="buffalo_t", root=packs) == path


def test_found_by_model_path_which_wins(packs, tmp_path):
    path = build_recognition(tmp_path / "elsewhere" / "glintr100.onnx")
    e = ArcFaceEmbedder(model_path=path, pack="no_such_pack", root=tmp_path, device="cpu", threads=1)
    assert e.model_path == path and e.dim == DIM and e.sha256 == sha256_file(path)
    assert "glintr100.onnx" in repr(e)
    with pytest.raises(ValueError, match="device"):
        ArcFaceEmbedder(model_path=path, device="tpu")


def test_pack_lookup_takes_a_renamed_model(tmp_path):
    pack = tmp_path / "buffalo_s"
    build_detector_model(pack / "det_500m.onnx")
    build_recognition(pack / "w600k_mbf.onnx")
    assert find_recognition_model(pack="buffalo_s", root=tmp_path) == pack / "w600k_mbf.onnx"


def test_missing_pack_or_file(packs, tmp_path):
    with pytest.raises(EmbedderError) as ei:
        ArcFaceEmbedder(pack="buffalo_l", root=tmp_path / "models")
    assert str(tmp_path / "models" / "buffalo_l") in str(ei.value)
    missing = tmp_path / "nowhere" / "w600k_r50.onnx"
    with pytest.raises(EmbedderError, match="not found") as ei:
        ArcFaceEmbedder(model_path=missing)
    assert str(missing) in str(ei.value) and "\n" not in str(ei.value)
    with pytest.raises(EmbedderError, match="model_path="):
        ArcFaceEmbedder()
    (tmp_path / "w600k_r50.bin").write_bytes(b"weights")
    with pytest.raises(EmbedderError, match=r"\.onnx file"):
        ArcFaceEmbedder(model_path=tmp_path / "w600k_r50.bin")
    only_det = tmp_path / "models" / "detonly"
    build_detector_model(only_det / "det_10g.onnx")
    with pytest.raises(EmbedderError, match="no ArcFace recognition model") as ei:
        ArcFaceEmbedder(pack="detonly", root=tmp_path / "models")
    assert str(only_det) in str(ei.value)


def test_rejects_models_that_are_not_recognition(packs):
    with pytest.raises(EmbedderError, match="not a face-recognition model"):
        ArcFaceEmbedder(model_path=packs / "buffalo_t" / "det_10g.onnx", device="cpu")
    with pytest.raises(EmbedderError, match="not a face-recognition model"):
        ArcFaceEmbedder(model_path=packs / "buffalo_t" / "genderage.onnx", device="cpu")
    with pytest.raises(EmbedderError, match="cannot load"):
        ArcFaceEmbedder(model_path=packs / "buffalo_t" / "broken.onnx", device="cpu")


def test_several_matches_warn_and_take_the_first(tmp_path, caplog):
    pack = tmp_path / "two"
    build_recognition(pack / "a_r100.onnx")
    build_recognition(pack / "b_mbf.onnx")
    with caplog.at_level(logging.WARNING, logger="fer_pipeline.reid.arcface"):
        assert find_recognition_model(pack="two", root=tmp_path) == pack / "a_r100.onnx"
    assert "several recognition models" in caplog.text


# --------------------------------------------------------------------------------------------------------------------
# alignment
# --------------------------------------------------------------------------------------------------------------------

def test_real_face_crop_is_aligned(embedder, face_frame):
    frame, faces = face_frame
    crops = embedder.crops(frame, faces)
    assert crops.shape == (1, 112, 112, 3) and crops.dtype == np.uint8
    m = arcface_matrix(faces.landmarks[0])
    assert m.shape == (2, 3)
    mapped = faces.landmarks[0].astype(np.float64) @ m[:, :2].T + m[:, 2]
    assert np.abs(mapped - ARCFACE_TEMPLATE).max() < 3.0  # a frontal face fits the template to within 3 px
    # The crop is the frame warped with that matrix, bilinear, black outside (InsightFace's norm_crop).
    np.testing.assert_array_equal(crops[0], cv2.warpAffine(frame, m, (112, 112), borderValue=0.0))
    assert crops[0].std() > 20  # a face, not an empty border


def test_matrix_matches_insightface_estimate_norm(face_frame):
    transform = pytest.importorskip("skimage.transform")
    lm = face_frame[1].landmarks[0]
    # what insightface.utils.face_align.estimate_norm does (skimage >= 0.26 names it from_estimate)
    if hasattr(transform.SimilarityTransform, "from_estimate"):
        t = transform.SimilarityTransform.from_estimate(lm, ARCFACE_TEMPLATE)
    else:
        t = transform.SimilarityTransform()
        t.estimate(lm, ARCFACE_TEMPLATE)
    np.testing.assert_allclose(arcface_matrix(lm), t.params[:2], atol=1e-4)


def test_crops_put_landmarks_on_the_template(embedder):
    # Five dots at the template's positions, put into a frame rotated by 25 degrees, scaled 2.7x and moved: the crop
    # must bring each dot back to its template position.
    ang, s, t = np.deg2rad(25), 2.7, np.array([310.0, 95.0])
    rot = s * np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    pts = ARCFACE_TEMPLATE.astype(np.float64) @ rot.T + t
    frame = np.zeros((480, 640, 3), np.uint8)
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]
    for (x, y), c in zip(pts, colours):
        cv2.circle(frame, (int(round(x)), int(round(y))), 6, c, -1)
    faces = Faces(np.array([[0, 0, 640, 480]], np.float32), np.ones(1, np.float32), pts[None].astype(np.float32))
    crop = embedder.crops(frame, faces)[0]
    for (x, y), c in zip(ARCFACE_TEMPLATE, colours):
        np.testing.assert_array_equal(crop[int(round(y)), int(round(x))], c)  # RGB kept, dot where it belongs


def test_crops_edge_cases(embedder, face_frame):
    frame, faces = face_frame
    assert embedder.crops(frame, Faces.empty()).shape == (0, 112, 112, 3)
    # a face half outside the frame: black there
    shifted = Faces(faces.xyxy - [300, 0, 300, 0], faces.scores, faces.landmarks - [300, 0])
    crop = embedder.crops(frame, shifted)[0]
    assert (crop[:, :20] == 0).all()
    two = Faces(np.concatenate([faces.xyxy] * 2), np.ones(2, np.float32),
                np.concatenate([faces.landmarks, np.full((1, 5, 2), np.nan, np.float32)]))
    with pytest.raises(ValueError, match="face 1"):
        embedder.crops(frame, two)
    with pytest.raises(ValueError, match="uint8"):
        embedder.crops(frame.astype(np.float32), faces)


# --------------------------------------------------------------------------------------------------------------------
# embeddings
# --------------------------------------------------------------------------------------------------------------------

def test_embed_matches_numpy_reference(embedder, face_frame):
    frame, faces = face_frame
    crop = embedder.crops(frame, faces)
    crops = np.concatenate([crop, crop[:, :, ::-1], crop[:, ::-1], np.roll(crop, 1, axis=-1)])  # + flips, BGR
    e = embedder.embed(crops)
    assert e.shape == (4, DIM) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(e, reference(crops), atol=1e-5)
    np.testing.assert_array_equal(e, embedder.embed(crops))  # deterministic
    # different crops (mirrored, channels rotated) give clearly different embeddings
    d = np.linalg.norm(e[0] - e[1:], axis=1)
    assert (d > 1e-2).all()


def test_preprocessing_is_rgb_scaled_nchw(embedder):
    crop = np.zeros((1, 112, 112, 3), np.uint8)
    crop[..., 0] = 255  # red
    crop[0, :16, :16, 1] = 51  # a green block in the top-left pooling cell
    x = embedder.preprocess(crop)
    assert x.shape == (1, 3, 112, 112) and x.dtype == np.float32 and x.flags.c_contiguous
    assert x[0, 0].min() == x[0, 0].max() == 1.0  # channel 0 is R, 255 -> 1
    assert x[0, 2].min() == x[0, 2].max() == -1.0  # B, 0 -> -1
    np.testing.assert_allclose(x[0, 1, :16, :16], (51 - 127.5) / 127.5)
    assert x[0, 1, 16:, :].max() == -1.0
    # red is not blue: had the channels been swapped the reference would not match
    np.testing.assert_allclose(embedder.embed(crop), reference(crop), atol=1e-5)
    assert not np.allclose(embedder.embed(crop[..., ::-1].copy()), reference(crop), atol=1e-2)


def test_same_crop_same_embedding_in_any_batch(embedder, face_frame):
    frame, faces = face_frame
    crop = embedder.crops(frame, faces)
    other = embedder.crops(frame, Faces(faces.xyxy, faces.scores, faces.landmarks + [40, 10]))
    batch = np.concatenate([crop, other] * 20)  # 40 crops: two runs of the session (32 + 8)
    e = embedder.embed(batch)
    assert e.shape == (40, DIM)
    np.testing.assert_allclose(e[::2], np.repeat(embedder.embed(crop), 20, axis=0), atol=1e-6)
    np.testing.assert_allclose(e[1::2], np.repeat(embedder.embed(other), 20, axis=0), atol=1e-6)
    assert np.linalg.norm(e[0] - e[1]) > 1e-2


def test_embed_empty_and_bad_input(embedder):
    e = embedder.embed(np.zeros((0, 112, 112, 3), np.uint8))
    assert e.shape == (0, DIM) and e.dtype == np.float32
    with pytest.raises(ValueError, match="crops must be"):
        embedder.embed(np.zeros((2, 96, 96, 3), np.uint8))
    with pytest.raises(ValueError, match="crops must be"):
        embedder.embed(np.zeros((2, 112, 112, 3), np.float32))


def test_fixed_batch_and_inside_normalisation_models(embedder, face_frame, tmp_path):
    frame, faces = face_frame
    crops = np.concatenate([embedder.crops(frame, faces)] * 2 + [np.full((1, 112, 112, 3), 200, np.uint8)])
    want = reference(crops)
    fixed = ArcFaceEmbedder(model_path=build_recognition(tmp_path / "fixed.onnx", batch=1), device="cpu")
    assert fixed.dim == DIM
    np.testing.assert_allclose(fixed.embed(crops), want, atol=1e-5)
    # an MXNet-style model normalises inside: it must get raw pixels, as InsightFace gives it
    mx = ArcFaceEmbedder(model_path=build_recognition(tmp_path / "mx.onnx", normalise_inside=True), device="cpu")
    assert (mx.input_mean, mx.input_std) == (0.0, 1.0)
    np.testing.assert_allclose(mx.embed(crops), want, atol=1e-5)
