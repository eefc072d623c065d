"""Emotion classification of aligned face crops with an ONNX model and its card.

The model file carries its own description in ONNX ``metadata_props`` (labels, input size, colour, alignment
template), and a JSON card beside it records the file's sha256; both are checked at load time, nothing is guessed from
file names. One ``InferenceSession`` is built per model and reused; inference is one ``run()`` per batch of faces.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)


class ModelError(ValueError):
    """The emotion model file or its card is missing, altered or inconsistent."""


@dataclass(frozen=True)
class ModelSpec:
    """What the runtime needs to know about an emotion model.

    Attributes:
        path: the ``.onnx`` file.
        sha256: hex digest of the file (from the card, verified at load).
        name: model name (e.g. ``fer2013-vgg``).
        labels: class names in output order.
        input_hw: crop ``(height, width)`` in pixels.
        color: ``"gray"`` (luminance) or ``"rgb"``.
        template: ``(5, 2) float32`` landmark positions (pixels in the crop) the aligner maps faces onto.
        card: the full model card (metrics, training recipe, data hashes).
    """

    path: Path
    sha256: str
    name: str
    labels: tuple[str, ...]
    input_hw: tuple[int, int]
    color: str
    template: np.ndarray
    card: dict

    @classmethod
    def load(cls, path: str | Path, verify: bool = True) -> "ModelSpec":
        """Read the ONNX metadata and the card ``<path>.json``; check they agree and the file hash matches.

        Raises:
            ModelError: file or card missing, metadata absent, labels disagree, or the sha256 differs.
        """
        from fer_pipeline.fileutil import sha256_file

        path = Path(path)
        card_path = path.with_suffix(".json")
        if not path.is_file():
            raise ModelError(f"emotion model not found: {path}")
        if not card_path.is_file():
            raise ModelError(f"model card not found beside the model: {card_path}")
        card = json.loads(card_path.read_text())
        if verify:
            digest = sha256_file(path)
            if digest != card.get("sha256"):
                raise ModelError(f"{path}: sha256 {digest[:12]} does not match its card ({str(card.get('sha256'))[:12]})")
        meta = _onnx_metadata(path)
        try:
            labels = tuple(json.loads(meta["labels"]))
            input_hw = tuple(json.loads(meta["input_hw"]))
            template = np.asarray(json.loads(meta["align_template"]), np.float32)
            color = meta["color"]
        except KeyError as e:
            raise ModelError(f"{path}: ONNX metadata lacks {e.args[0]!r}; export it with fer_pipeline.training") from e
        if list(labels) != list(card.get("labels", [])):
            raise ModelError(f"{path}: labels in the ONNX metadata {labels} differ from the card {card.get('labels')}")
        if template.shape != (5, 2):
            raise ModelError(f"{path}: alignment template must be (5,2), got {template.shape}")
        return cls(path, card["sha256"], meta.get("name", card.get("name", path.stem)), labels, input_hw, color,
                   template, card)


def _onnx_metadata(path: Path) -> dict[str, str]:
    """The model's ONNX ``metadata_props``, read by onnxruntime on an unoptimised CPU session (5-20 ms; importing
    the ``onnx`` package for it took 0.08 s of every start-up).

    Raises:
        ModelError: onnxruntime cannot read the file.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own Fail / InvalidProtobuf types
        raise ModelError(f"{path}: not a readable ONNX model: {' '.join(str(e).split())[:300]}") from e
    return dict(session.get_modelmeta().custom_metadata_map)


def select_providers(available: list[str], device: str = "auto") -> list[str]:
    """Pick onnxruntime execution providers.

    Args:
        available: ``onnxruntime.get_available_providers()``.
        device: ``"auto"`` (CUDA when available, else CPU), ``"cuda"`` (required) or ``"cpu"``.

    Returns:
        Providers in priority order, always ending with ``CPUExecutionProvider``.

    Raises:
        ValueError: ``device="cuda"`` but onnxruntime has no CUDA provider, or unknown device.
    """
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
    has_cuda = "CUDAExecutionProvider" in available
    if device == "cuda" and not has_cuda:
        raise ValueError("device=cuda but onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)")
    if device != "cpu" and has_cuda:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def make_session(path: Path, device: str = "auto", threads: int = 0):
    """Build an ``onnxruntime.InferenceSession`` with full graph optimisation and the chosen providers."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts,
                                providers=select_providers(ort.get_available_providers(), device))


class EmotionModel:
    """Batched emotion classifier over aligned crops.

    Args:
        path: the ``.onnx`` model (card beside it).
        batch_size: faces per ``run()`` call; larger batches amortise overhead (a GPU takes 4x this).
        device: see :func:`select_providers`.
        threads: onnxruntime intra-op threads (0 = its default).

    Raises:
        ModelError: see :meth:`ModelSpec.load`.
    """

    def __init__(self, path: str | Path, batch_size: int = 128, device: str = "auto", threads: int = 0) -> None:
        self.spec = ModelSpec.load(path)
        self.session = make_session(self.spec.path, device, threads)
        self.on_gpu = self.session.get_providers()[0] == "CUDAExecutionProvider"
        self.batch_size = batch_size * (4 if self.on_gpu else 1)
        self._input = self.session.get_inputs()[0].name
        logger.info("emotion model %s (%s) on %s", self.spec.name, self.spec.sha256[:12],
                    self.session.get_providers()[0])

    @property
    def labels(self) -> tuple[str, ...]:
        return self.spec.labels

    def predict(self, crops: np.ndarray) -> np.ndarray:
        """Probabilities for aligned crops.

        Args:
            crops: ``(N, h, w) uint8`` grayscale crops (``(N, h, w, 3)`` for an RGB model) of ``spec.input_hw``.

        Returns:
            ``(N, C) float32`` probabilities over ``labels``, each row summing to 1 (N may be 0).

        Raises:
            ValueError: crops of the wrong shape or dtype.
        """
        h, w = self.spec.input_hw
        gray = self.spec.color == "gray"
        expected = (h, w) if gray else (h, w, 3)
        if crops.dtype != np.uint8 or crops.shape[1:] != expected:
            raise ValueError(f"crops must be (N,{','.join(map(str, expected))}) uint8, got {crops.shape} {crops.dtype}")
        out = np.empty((len(crops), len(self.labels)), np.float32)
        for i in range(0, len(crops), self.batch_size):
            c = crops[i:i + self.batch_size].astype(np.float32) * (1.0 / 255.0)
            x = c[:, None] if gray else c.transpose(0, 3, 1, 2)
            out[i:i + len(c)] = self.session.run(None, {self._input: np.ascontiguousarray(x)})[0]
        return out
