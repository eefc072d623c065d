"""Head pose and attention: exact on projected model points, plausible on real faces, end to end on real crops."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import IMAGES, VIDEOS, write_video
from PIL import Image

from fer_pipeline.headpose import FACE_MODEL_3D, head_pose, is_attentive

LIMITS = {"max_yaw_deg": 30.0, "max_pitch_deg": 25.0}  # the documented defaults (fer_pipeline/config.py)


def _rot(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Camera-axes rotation Rz(roll) Ry(-yaw) Rx(-pitch): the sign conventions head_pose documents."""
    b, a, c = np.radians([-yaw, -pitch, roll])
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


@pytest.fixture(scope="module")
def detector():
    from fer_pipeline.detect import build_detector

    return build_detector("centerface", score_threshold=0.35, nms_iou=0.4, min_face_px=20, input_max_side=640,
                          intra_op_num_threads=1)


def _image(name: str) -> np.ndarray:
    return np.asarray(Image.open(IMAGES / name).convert("RGB"))


def test_recovers_known_rotations_of_the_model():
    rng = np.random.default_rng(0)
    truth = np.column_stack([rng.uniform(-60, 60, 200), rng.uniform(-40, 40, 200), rng.uniform(-45, 45, 200)])
    pts = np.stack([FACE_MODEL_3D @ _rot(*t).T for t in truth])          # (N,5,3)
    scale = rng.uniform(20, 300, (200, 1, 1))
    lm = (pts[:, :, :2] * scale + rng.uniform(0, 1000, (200, 1, 2))).astype(np.float32)  # orthographic projection
    np.testing.assert_allclose(head_pose(lm), truth, atol=0.05)


def test_sign_conventions_as_seen_in_the_image():
    yaw = head_pose(((FACE_MODEL_3D @ _rot(20, 0, 0).T)[:, :2] * 100)[None])[0, 0]
    nose_right = (FACE_MODEL_3D @ _rot(20, 0, 0).T)[2, 0] > 0
    assert yaw == pytest.approx(20, abs=0.01) and nose_right
    lm = (FACE_MODEL_3D @ _rot(0, 0, 10).T)[:, :2] * 100
    assert lm[1, 1] > lm[0, 1] and head_pose(lm[None])[0, 2] == pytest.approx(10, abs=0.01)  # image-right eye lower


def test_shapes_and_bad_input():
    assert head_pose(np.zeros((0, 5, 2), np.float32)).shape == (0, 3)
    out = head_pose(np.zeros((1, 5, 2), np.float32))  # all landmarks on one point
    assert np.isnan(out).all() and not is_attentive(out, **LIMITS)[0]
    with pytest.raises(ValueError, match=r"\(N,5,2\)"):
        head_pose(np.zeros((3, 4, 2)))
    with pytest.raises(ValueError, match="> 0"):
        is_attentive(np.zeros((1, 3)), 0, 25)


def test_frontal_photo_is_attentive(detector):
    faces = detector.detect_batch(_image("single_face.jpg")[None])[0]
    assert len(faces) == 1
    pose = head_pose(faces.landmarks)
    assert np.abs(pose[0, :2]).max() < 15, pose
    assert is_attentive(pose, **LIMITS).all()


def _match(xyxy_a: np.ndarray, xyxy_b_mirrored: np.ndarray, width: int) -> np.ndarray:
    """Index into b of the face nearest each face of a, b having been detected in the mirrored image."""
    ca = (xyxy_a[:, :2] + xyxy_a[:, 2:]) / 2
    cb = (xyxy_b_mirrored[:, :2] + xyxy_b_mirrored[:, 2:]) / 2
    cb[:, 0] = width - cb[:, 0]
    return np.linalg.norm(ca[:, None] - cb[None], axis=2).argmin(1)


@pytest.mark.parametrize("name", ["t1.jpg", "multi_face.jpg"])
def test_mirrored_faces_turn_the_other_way(detector, name):
    img = _image(name)
    a = detector.detect_batch(img[None])[0]
    b = detector.detect_batch(np.ascontiguousarray(img[:, ::-1])[None])[0]
    assert len(a) >= 5 and len(b) == len(a)
    pa, pb = head_pose(a.landmarks), head_pose(b.landmarks)[_match(a.xyxy, b.xyxy, img.shape[1])]
    turned = np.abs(pa[:, 0]) > 8
    assert turned.sum() >= 2, pa
    assert (np.sign(pa[turned, 0]) == -np.sign(pb[turned, 0])).all(), (pa[:, 0], pb[:, 0])
    np.testing.assert_allclose(pa[:, 0], -pb[:, 0], atol=12)   # same magnitude, opposite sign (detector noise)
    np.testing.assert_allclose(pa[:, 1], pb[:, 1], atol=8)     # pitch unchanged by a mirror
    np.testing.assert_allclose(pa[:, 2], -pb[:, 2], atol=8)    # roll flips


def test_group_photo_turned_away_face_is_not_attentive(detector):
    """t1.jpg: the man standing top right looks far to the image left; the woman at the far left faces the lens."""
    img = _image("t1.jpg")
    faces = detector.detect_batch(img[None])[0]
    pose = head_pose(faces.landmarks)
    att = is_attentive(pose, **LIMITS)
    cx = (faces.xyxy[:, 0] + faces.xyxy[:, 2]) / 2
    top_right = int(np.argmin(faces.xyxy[:, 1]))          # highest face in the picture
    far_left = int(np.argmin(cx))
    assert cx[top_right] > img.shape[1] * 0.6
    assert pose[top_right, 0] < -LIMITS["max_yaw_deg"] and not att[top_right], pose[top_right]
    assert att[far_left] and abs(pose[far_left, 0]) < 15, pose[far_left]
    assert 0 < att.sum() < len(faces)


def test_webcam_clip_viewer_is_attentive(detector):
    """single_face.mp4: a viewer looking into the webcam the whole time."""
    from fer_pipeline.config import DecodeConfig
    from fer_pipeline.decode import iter_batches

    poses = []
    for batch in iter_batches(VIDEOS / "single_face.mp4", DecodeConfig(snap_to_anchors=False)):
        for faces in detector.detect_batch(batch.frames):
            poses.append(head_pose(faces.landmarks))
    pose = np.concatenate(poses)
    assert len(pose) >= 10
    assert is_attentive(pose, **LIMITS).mean() >= 0.9, pose


@pytest.mark.slow
def test_pipeline_attention_on_real_crops(tmp_path, detector):
    """End to end: a clip of t1.jpg's turned-away face has attention 0, one of its frontal face attention 1."""
    from fer_pipeline.config import PipelineConfig
    from fer_pipeline.pipeline import analyze_video

    img = _image("t1.jpg")
    faces = detector.detect_batch(img[None])[0]
    cx = (faces.xyxy[:, 0] + faces.xyxy[:, 2]) / 2
    picks = {"turned": int(np.argmin(faces.xyxy[:, 1])), "frontal": int(np.argmin(cx))}
    cfg = PipelineConfig.load(None, {"output.reports": False, "output.thumbnails": False})
    got = {}
    for kind, i in picks.items():
        x1, y1, x2, y2 = faces.xyxy[i]
        w, h = x2 - x1, y2 - y1
        crop = img[int(max(0, y1 - h)):int(y2 + h), int(max(0, x1 - w)):int(x2 + w)]
        crop = np.asarray(Image.fromarray(crop).resize((320, 320 * crop.shape[0] // crop.shape[1] // 2 * 2)))
        frames = np.stack([np.roll(crop, k % 4, axis=1) for k in range(30)])  # 3 s, slight jitter
        r = analyze_video(write_video(tmp_path / f"{kind}.mp4", frames, fps=10), tmp_path / "out", cfg)
        assert r["status"] == "ok", r
        f = pd.read_parquet(tmp_path / "out" / "faces", filters=[("video_id", "==", r["video_id"])])
        au = pd.read_parquet(tmp_path / "out" / "audience", filters=[("video_id", "==", r["video_id"])])
        assert {"yaw", "pitch", "roll", "attentive"} <= set(f.columns) and len(f) >= 10
        got[kind] = (f["yaw"].median(), au.loc[au.viewers > 0, "attention"].mean())
    assert got["turned"][0] < -LIMITS["max_yaw_deg"] and got["turned"][1] <= 0.2, got
    assert abs(got["frontal"][0]) < 15 and got["frontal"][1] >= 0.8, got
