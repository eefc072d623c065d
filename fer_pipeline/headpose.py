"""Head pose from the detector's 5 landmarks, and whether each face looks at the camera (attention).

Method: weak-perspective ("scaled orthographic") pose fit of a generic 3-D 5-point face, i.e. the first step of
POSIT (DeMenthon & Davis, "Model-based object pose in 25 lines of code", IJCV 1995). The 2-D landmarks ``x_i`` of one
face are fitted by least squares as ``x_i ~= M @ X_i + t`` (``M`` 2x3, ``t`` 2) over the model points ``X_i``; the
rows of ``M`` are a scaled copy of the first two rows of the head's rotation matrix. They are normalised, completed
with their cross product and projected onto the nearest rotation (SVD), and read as Euler angles. Because the model
is the same for every face, the least-squares solve is one precomputed pseudo-inverse applied to all N faces at once
(a single ``einsum``; no per-face loop, no solver).

3-D model (:data:`FACE_MODEL_3D`), in units of the inter-ocular distance, head frame x to the image right, y down,
z away from the camera (the camera's own axes, so a face looking into the lens has the identity rotation):

* x, y: the pipeline's frontal landmark template (:data:`fer_pipeline.align.FER2013_TEMPLATE`, medians of this
  detector's landmarks on 1,355 FER2013 faces, made symmetric), so a frontal face as this detector sees it comes out
  at yaw = pitch = 0;
* z (depth): from the generic 3-D head model of S. Mallick, "Head Pose Estimation using OpenCV and Dlib" (LearnOpenCV,
  2016): nose tip 135 units in front of the eye corners and the mouth corners 10 units in front of them, on a face
  whose eye-to-mouth height is 320 units; rescaled to our template's eye-to-mouth height (0.97 inter-ocular
  distances), the nose tip is 0.41 and the mouth corners 0.03 inter-ocular distances nearer the camera than the eyes.

Limits: a 5-point weak-perspective fit is coarse (roughly +-5-10 degrees on real faces; individual faces differ in
nose depth and in where the detector puts the landmarks); beyond about 60 degrees of yaw the detector's landmarks
themselves become unreliable. It is meant for "facing the camera or not", not for gaze.
"""

from __future__ import annotations

import logging

import numpy as np

from fer_pipeline.align import FER2013_TEMPLATE

logger = logging.getLogger(__name__)


def _face_model() -> np.ndarray:
    t = FER2013_TEMPLATE.astype(np.float64)
    iod = t[1, 0] - t[0, 0]                     # inter-ocular distance, template pixels
    eyes_y = t[:2, 1].mean()
    xy = (t - [t[:, 0].mean(), eyes_y]) / iod   # centred between the eyes, units of the inter-ocular distance
    eye_mouth = t[3:, 1].mean() - eyes_y        # 16.64 px = 0.97 inter-ocular distances
    depth_unit = (eye_mouth / iod) / 320.0      # LearnOpenCV units -> inter-ocular distances
    z = np.array([0.0, 0.0, -135.0, -10.0, -10.0]) * depth_unit   # negative = nearer the camera
    return np.column_stack([xy, z])


FACE_MODEL_3D: np.ndarray = _face_model()
"""``(5, 3) float64``: left eye, right eye, nose tip, left and right mouth corner (image-left first), in inter-ocular
distances; x right, y down, z away from the camera; origin between the eyes."""

# Least-squares solve for [M | t] of every face: params (4, 2) = PINV (4, 5) @ landmarks (5, 2).
_PINV: np.ndarray = np.linalg.pinv(np.column_stack([FACE_MODEL_3D, np.ones(5)]))


def head_pose(landmarks: np.ndarray) -> np.ndarray:
    """Yaw, pitch and roll of every face from its 5 landmarks.

    Args:
        landmarks: ``(N, 5, 2) float`` pixel (x, y) of left eye, right eye, nose tip, left mouth corner, right mouth
            corner, image-left first (the detector's order, see :class:`fer_pipeline.types.Faces`). N may be 0.

    Returns:
        ``(N, 3) float32`` ``yaw, pitch, roll`` in degrees, each in [-90, 90] (roll in [-180, 180]); all 0 for a face
        looking straight into the camera with level eyes. Signs, as seen in the image:

        * yaw > 0: the face turns towards the image's right (the nose points right; the subject's own left);
        * pitch > 0: the face tilts up (chin up, nose points up);
        * roll > 0: the head tilts clockwise in the image (the eye on the image right is lower).

        Rows whose landmarks are degenerate (all on one point or line) or not finite are NaN.

    Raises:
        ValueError: ``landmarks`` is not ``(N, 5, 2)``.
    """
    lm = np.asarray(landmarks, np.float64)
    if lm.ndim != 3 or lm.shape[1:] != (5, 2):
        raise ValueError(f"landmarks must be (N,5,2) pixels, got shape {lm.shape}")
    n = len(lm)
    if n == 0:
        return np.zeros((0, 3), np.float32)
    params = np.einsum("kp,npc->nkc", _PINV, lm)          # (N, 4, 2): rows 0-2 = M^T, row 3 = t
    m = np.swapaxes(params[:, :3, :], 1, 2)                # (N, 2, 3)
    norms = np.linalg.norm(m, axis=2, keepdims=True)       # (N, 2, 1): the two scale estimates
    bad = ~np.isfinite(norms).all(axis=(1, 2)) | (norms.min(axis=(1, 2)) <= 1e-9)
    r12 = m / np.where(norms > 1e-9, norms, 1.0)
    r3 = np.cross(r12[:, 0], r12[:, 1])
    rot = np.concatenate([r12, r3[:, None, :]], axis=1)    # (N, 3, 3), nearly orthonormal
    rot = np.where(np.isfinite(rot), rot, 0.0)
    u, _, vt = np.linalg.svd(rot)
    d = np.sign(np.linalg.det(u @ vt))
    d = np.where(d == 0, 1.0, d)
    u[:, :, 2] *= d[:, None]
    rot = u @ vt                                           # nearest proper rotation
    # rot = Rz(roll) @ Ry(b) @ Rx(a) in camera axes (x right, y down, z forward).
    b = np.arcsin(np.clip(-rot[:, 2, 0], -1.0, 1.0))
    a = np.arctan2(rot[:, 2, 1], rot[:, 2, 2])
    c = np.arctan2(rot[:, 1, 0], rot[:, 0, 0])
    # Ry(b) with b > 0 moves the nose (z < 0) to the image left; Rx(a) with a > 0 moves it down: flip both so that
    # yaw > 0 = nose to the image right and pitch > 0 = nose up. Rz(c) > 0 is clockwise on screen (y points down).
    out = np.degrees(np.column_stack([-b, -a, c]))
    out[bad] = np.nan
    return out.astype(np.float32)


def is_attentive(pose: np.ndarray, max_yaw_deg: float, max_pitch_deg: float) -> np.ndarray:
    """Whether each face faces the camera: ``|yaw| <= max_yaw_deg`` and ``|pitch| <= max_pitch_deg``.

    Args:
        pose: ``(N, 3)`` yaw, pitch, roll in degrees from :func:`head_pose` (roll is ignored: a tilted head still
            faces the screen).
        max_yaw_deg: largest absolute yaw still counted as attentive, degrees (> 0).
        max_pitch_deg: largest absolute pitch still counted as attentive, degrees (> 0).

    Returns:
        ``(N,) bool``; NaN poses are not attentive.

    Raises:
        ValueError: ``pose`` is not ``(N, 3)`` or a limit is not positive.
    """
    pose = np.asarray(pose, np.float64)
    if pose.ndim != 2 or pose.shape[1] != 3:
        raise ValueError(f"pose must be (N,3) degrees, got shape {pose.shape}")
    if not (max_yaw_deg > 0 and max_pitch_deg > 0):
        raise ValueError(f"attention limits must be > 0 degrees, got yaw {max_yaw_deg}, pitch {max_pitch_deg}")
    with np.errstate(invalid="ignore"):
        return (np.abs(pose[:, 0]) <= max_yaw_deg) & (np.abs(pose[:, 1]) <= max_pitch_deg)
