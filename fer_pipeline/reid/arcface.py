"""ArcFace face embeddings from the recognition model of a user's InsightFace model pack, run with ONNX Runtime.

Licence: InsightFace's model packs (``buffalo_l``, ``buffalo_s``, ``antelopev2``...) are released for
**non-commercial research use only**. This pipeline neither ships nor downloads them: the user brings their own,
unpacked under ``root/pack/`` (InsightFace's own layout, default ``~/.insightface/models``), or points at the
recognition ``.onnx`` file. The ``insightface`` package is not needed.

The model (Deng et al., "ArcFace: Additive Angular Margin Loss for Deep Face Recognition", CVPR 2019) sees faces
exactly as InsightFace's ``FaceAnalysis`` feeds it, so embeddings match InsightFace's own:

* :meth:`ArcFaceEmbedder.crops`: the 5 detector landmarks are mapped onto InsightFace's 112x112 template
  (``insightface.utils.face_align.arcface_dst``) by a least-squares similarity transform (Umeyama 1991, what
  ``skimage``'s ``SimilarityTransform.estimate`` computes for ``face_align.estimate_norm``), and the frame is warped
  with ``cv2.warpAffine`` (bilinear, black outside the frame), as ``face_align.norm_crop`` does.
* :meth:`ArcFaceEmbedder.embed`: ``ArcFaceONNX.get_feat`` runs ``cv2.dnn.blobFromImages(bgr, 1/127.5, (112, 112),
  (127.5,) * 3, swapRB=True)``, i.e. the network gets **RGB**, ``(x - 127.5) / 127.5`` in [-1, 1], NCHW float32.
  Our crops are RGB already, so only the scaling and the transpose are done. Models converted from MXNet that
  normalise inside the graph (a ``Sub`` and a ``Mul`` among their first 8 nodes, InsightFace's own test) get raw
  0-255 pixels instead, as InsightFace gives them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from fer_pipeline import onnx as onnx_rt
from fer_pipeline.align import similarity_transform
from fer_pipeline.errors import one_line
from fer_pipeline.fileutil import model_or_pack, sha256_file
from fer_pipeline.reid.base import EmbedderError, FaceEmbedder, l2_normalise, register
from fer_pipeline.types import Faces

if TYPE_CHECKING:
    import onnxruntime as ort

logger = logging.getLogger(__name__)

__all__ = ["ARCFACE_TEMPLATE", "CROP_SIZE", "DEFAULT_ROOT", "ArcFaceEmbedder", "arcface_matrix",
           "find_recognition_model"]

DEFAULT_ROOT = "~/.insightface/models"
#: Side of the square crops the recognition models take, pixels.
CROP_SIZE = 112
#: (x, y) pixels in the 112x112 crop of left eye, right eye, nose, left mouth corner, right mouth corner (image-left
#: first): InsightFace's ``face_align.arcface_dst`` (the alignment ArcFace, Deng et al. CVPR 2019, was trained with).
ARCFACE_TEMPLATE: np.ndarray = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32)
#: Crops per ``session.run`` (models with a dynamic batch axis).
BATCH = 32


def arcface_matrix(landmarks: np.ndarray) -> np.ndarray:
    """The similarity transform that puts one face's 5 landmarks onto :data:`ARCFACE_TEMPLATE`.

    Args:
        landmarks: ``(5, 2)`` (x, y) frame pixels: left eye, right eye, nose, left / right mouth corner (image-left
            first), as in :attr:`fer_pipeline.types.Faces.landmarks`.

    Returns:
        ``(2, 3) float64`` ``M`` with ``template ~= M[:, :2] @ p + M[:, 2]`` (rotation, uniform scale, translation;
        least squares): the matrix ``cv2.warpAffine`` takes to make the crop.

    Raises:
        ValueError: not ``(5, 2)``, not finite (a detector without landmarks gives NaN), or degenerate (all equal).
    """
    lm = np.asarray(landmarks, np.float64)
    if lm.shape != (5, 2):
        raise ValueError(f"landmarks must be (5, 2), got {lm.shape}")
    if not np.isfinite(lm).all():
        raise ValueError("ArcFace alignment needs the 5 landmarks; this face has none (NaN)")
    return similarity_transform(lm, ARCFACE_TEMPLATE)


# --------------------------------------------------------------------------------------------------------------------
# finding the model
# --------------------------------------------------------------------------------------------------------------------

def _static(d: Any) -> int | None:
    """An ONNX Runtime shape entry as an int, or None when symbolic / unknown."""
    return d if isinstance(d, int) and d > 0 else None


def _io_reason(n_in: int, n_out: int, shape_in: list[Any], shape_out: list[Any]) -> str | None:
    """Why a model with these inputs / outputs is not a face-recognition model (None when it is one): one input
    ``(B|N, 3, 112, 112)`` and one output ``(B|N, D)``."""
    if n_in != 1 or n_out != 1:
        return f"{n_in} inputs and {n_out} outputs (want 1 and 1)"
    if len(shape_in) != 4 or list(shape_in[1:]) != [3, CROP_SIZE, CROP_SIZE]:
        return f"input {list(shape_in)} (want [N, 3, {CROP_SIZE}, {CROP_SIZE}])"
    if len(shape_out) != 2:
        return f"output {list(shape_out)} (want [N, D])"
    return None


def _session_reason(sess: ort.InferenceSession) -> str | None:
    """:func:`_io_reason` of a loaded session, which must also take float32."""
    ins, outs = sess.get_inputs(), sess.get_outputs()
    why = _io_reason(len(ins), len(outs), ins[0].shape if ins else [], outs[0].shape if outs else [])
    if why is None and ins[0].type != "tensor(float)":
        why = f"input type {ins[0].type} (want tensor(float))"
    return why


def _graph_reason(path: Path) -> str | None:
    """:func:`_io_reason` of an ``.onnx`` file's graph, read with the ``onnx`` package (a protobuf parse, about
    0.15 s for a 170 MB model, several times quicker than building an ONNX Runtime session)."""
    import onnx

    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as e:  # protobuf DecodeError, OSError
        return f"unreadable ({one_line(e)})"
    inits = {t.name for t in graph.initializer}  # old IR versions list the weights among the inputs
    ins = [v for v in graph.input if v.name not in inits]

    def shape(vs: list[Any]) -> list[Any]:
        return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                for d in vs[0].type.tensor_type.shape.dim] if vs else []

    return _io_reason(len(ins), len(graph.output), shape(ins), shape(list(graph.output)))


def find_recognition_model(model_path: str | Path | None = None, pack: str | None = None,
                           root: str | Path = DEFAULT_ROOT) -> Path:
    """Resolve the ArcFace recognition ONNX file to load (as :func:`fer_pipeline.detect.insightface_backend.
    find_detection_model` does for the detector).

    Args:
        model_path: a recognition ``.onnx`` file; wins over ``pack``. Its shapes are checked by the embedder.
        pack: a model-pack folder name under ``root`` (e.g. ``"buffalo_l"``). The recognition model is the
            ``.onnx`` there with one input ``(N or 1, 3, 112, 112)`` and one output ``(N, D)`` (``w600k_r50.onnx`` in
            ``buffalo_l``, ``w600k_mbf.onnx`` in ``buffalo_s``, ``glintr100.onnx`` in ``antelopev2``), which leaves
            out the detector (``det_*``: other input size, several outputs), the landmark models (192x192 input) and
            ``genderage`` (96x96 input). Each candidate's graph is read with the ``onnx`` package for its shapes
            (unreadable files are skipped); with several matches the first in sorted order is used (with a
            warning).
        root: folder holding unpacked packs (default ``~/.insightface/models``; ``~`` is expanded).

    Returns:
        the path of an existing ``.onnx`` file.

    Raises:
        EmbedderError: nothing found (the message names the path looked at), or neither ``model_path`` nor ``pack``
            given.
    """
    model, folder = model_or_pack(model_path, pack, root, "ArcFace recognition model", EmbedderError,
                                  "an .onnx file")
    if model is not None:
        return model
    found = []
    for p in sorted(folder.glob("*.onnx")):
        why = _graph_reason(p)
        if why is None:
            found.append(p)
        else:
            logger.debug("%s is not a recognition model: %s", p, why)
    if not found:
        raise EmbedderError(f"no ArcFace recognition model (an .onnx with input [N, 3, 112, 112] and output [N, D]) "
                            f"in {folder}")
    if len(found) > 1:
        logger.warning("several recognition models in %s (%s); using %s", folder, ", ".join(p.name for p in found),
                       found[0].name)
    return found[0]


def _normalises_inside(path: Path) -> bool:
    """InsightFace's test for MXNet-converted models that subtract and scale inside the graph: node names starting
    with ``Sub``/``_minus`` and ``Mul``/``_mul`` among the first 8 nodes (``ArcFaceONNX.__init__``)."""
    import onnx

    try:
        nodes = onnx.load(str(path), load_external_data=False).graph.node[:8]
    except Exception as e:  # protobuf DecodeError etc.; ONNX Runtime has loaded it, so keep the usual scaling
        logger.warning("cannot read the graph of %s (%s); assuming it expects (x - 127.5) / 127.5", path, one_line(e))
        return False
    sub = any(n.name.startswith(("Sub", "_minus")) for n in nodes)
    mul = any(n.name.startswith(("Mul", "_mul")) for n in nodes)
    return sub and mul


# --------------------------------------------------------------------------------------------------------------------
# the embedder
# --------------------------------------------------------------------------------------------------------------------

@register
class ArcFaceEmbedder(FaceEmbedder):
    """ArcFace embeddings (``dim`` = the model's output size, 512 for the InsightFace packs) of 112x112 crops
    aligned on InsightFace's template.

    Args:
        model_path: the recognition ``.onnx`` file, or
        pack, root: a pack folder name and the folder holding packs; see :func:`find_recognition_model`.
        device: ``"auto"`` (CUDA when this ONNX Runtime has it), ``"cpu"`` or ``"cuda"``; see
            :func:`fer_pipeline.onnx.session`.
        threads: ONNX Runtime intra-op threads, 0 = its default.

    Attributes:
        model_path: the loaded file; sha256: its sha256 (hex); dim: embedding size; session: the ONNX Runtime
        session; input_mean, input_std: the pixel scaling (127.5, 127.5, or 0, 1 for models that normalise inside).

    Raises:
        EmbedderError: no model given, file or pack not found (the message names the path), the file cannot be
            loaded, or it is not a recognition model (wrong input/output shapes).
        ValueError: bad ``device`` or ``threads``; ``device="cuda"`` without CUDA.
    """

    name = "arcface"

    def __init__(self, model_path: str | Path | None = None, pack: str | None = None,
                 root: str | Path = DEFAULT_ROOT, device: str = "auto", threads: int = 0) -> None:
        path = find_recognition_model(model_path, pack, root)
        try:
            sess = onnx_rt.session(path, device=device, threads=threads)
        except onnx_rt.SessionError as e:
            raise EmbedderError(f"cannot load ArcFace model: {e}") from e
        why = _session_reason(sess)
        if why is not None:
            raise EmbedderError(f"not a face-recognition model: {path}: {why}")
        self.model_path = path
        self.session = sess
        self._input = sess.get_inputs()[0].name
        self._output = sess.get_outputs()[0].name
        self._batch = _static(sess.get_inputs()[0].shape[0])  # None: any batch size
        inside = _normalises_inside(path)
        self.input_mean, self.input_std = (0.0, 1.0) if inside else (127.5, 127.5)
        dim = _static(sess.get_outputs()[0].shape[1])
        if dim is None:  # symbolic output size: run once on a black crop to learn it
            dim = int(self._run(np.zeros((1, CROP_SIZE, CROP_SIZE, 3), np.uint8)).shape[1])
        self.dim = int(dim)
        try:
            self.sha256 = sha256_file(path)
        except OSError as e:
            raise EmbedderError(f"cannot read ArcFace model {path}: {one_line(e)}") from e
        logger.info("ArcFace embedder %s (sha256 %s, dim %d, input %s) on %s", path, self.sha256[:12], self.dim,
                    "0..255" if inside else "(x-127.5)/127.5", sess.get_providers()[0])

    def crops(self, frame: np.ndarray, faces: Faces) -> np.ndarray:
        """Aligned crops of ``faces``, as InsightFace's ``face_align.norm_crop`` makes them.

        Args:
            frame: ``(H, W, 3) uint8`` RGB image.
            faces: the faces of ``frame``; only ``landmarks`` (``(N, 5, 2)`` pixels of ``frame``) are used.

        Returns:
            ``(N, 112, 112, 3) uint8`` RGB crops, the landmarks on :data:`ARCFACE_TEMPLATE` (see
            :func:`arcface_matrix`); bilinear sampling, black where the crop reaches outside the frame.

        Raises:
            ValueError: ``frame`` is not ``(H, W, 3) uint8``, or a face has no (NaN) or degenerate landmarks.
        """
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8 or 0 in frame.shape:
            raise ValueError(f"frame must be (H,W,3) uint8 RGB, got {frame.shape} {frame.dtype}")
        landmarks = np.asarray(faces.landmarks, np.float32).reshape(-1, 5, 2)
        out = np.empty((len(landmarks), CROP_SIZE, CROP_SIZE, 3), np.uint8)
        for i, lm in enumerate(landmarks):
            try:
                m = arcface_matrix(lm)
            except ValueError as e:
                raise ValueError(f"face {i}: {e}") from None
            out[i] = cv2.warpAffine(frame, m, (CROP_SIZE, CROP_SIZE), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return out

    def preprocess(self, crops: np.ndarray) -> np.ndarray:
        """The network input for ``(N, 112, 112, 3) uint8`` RGB crops: ``(N, 3, 112, 112) float32`` RGB NCHW,
        ``(x - input_mean) / input_std`` (in [-1, 1] for the InsightFace packs)."""
        x = np.asarray(crops, np.float32)
        x = (x - np.float32(self.input_mean)) * np.float32(1.0 / self.input_std)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    def _run(self, crops: np.ndarray) -> np.ndarray:
        """Raw ``(N, dim)`` model outputs (not normalised), in batches of :data:`BATCH` (or the model's fixed batch
        size, the last one padded)."""
        step = self._batch or BATCH
        outs = []
        for s in range(0, len(crops), step):
            x = self.preprocess(crops[s:s + step])
            k = len(x)
            if self._batch is not None and k < self._batch:
                x = np.concatenate([x, np.zeros((self._batch - k, *x.shape[1:]), np.float32)])
            try:
                y = self.session.run([self._output], {self._input: x})[0]
            except Exception as e:  # onnxruntime's own exception types
                raise EmbedderError(f"ArcFace model {self.model_path} failed on {k} crops: {one_line(e)}") from e
            outs.append(np.asarray(y, np.float32).reshape(len(x), -1)[:k])
        return np.concatenate(outs)

    def embed(self, crops: np.ndarray) -> np.ndarray:
        """Embeddings of crops from :meth:`crops`.

        Args:
            crops: ``(N, 112, 112, 3) uint8`` RGB; N may be 0.

        Returns:
            ``(N, dim) float32``, each row of unit L2 norm (``(0, dim)`` for N = 0).

        Raises:
            ValueError: ``crops`` is not ``(N, 112, 112, 3) uint8``.
            EmbedderError: ONNX Runtime fails.
        """
        crops = np.asarray(crops)
        if crops.ndim != 4 or crops.shape[1:] != (CROP_SIZE, CROP_SIZE, 3) or crops.dtype != np.uint8:
            raise ValueError(f"crops must be (N,{CROP_SIZE},{CROP_SIZE},3) uint8, got {crops.shape} {crops.dtype}")
        if len(crops) == 0:
            return np.zeros((0, self.dim), np.float32)
        return l2_normalise(self._run(crops))

    def __repr__(self) -> str:
        return f"ArcFaceEmbedder(model_path={str(self.model_path)!r}, dim={self.dim})"
