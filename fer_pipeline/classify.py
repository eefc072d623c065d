"""Emotion classification of aligned face crops with an ONNX model and its card.

The model file carries its own description in ONNX ``metadata_props`` (labels, input size, colour, alignment
template, ...), and a JSON card beside it records the file's sha256; both are checked at load time, nothing is guessed
from file names. :class:`ModelSpec` is that description: it writes the metadata and the model-dependent card fields
at export (:mod:`fer_pipeline.training.export`) and reads them back at load, from the one key list
:data:`METADATA_KEYS`. One ``InferenceSession`` is built per model (:func:`fer_pipeline.onnx.session`) and reused;
inference is one ``run()`` per batch of faces.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fer_pipeline import onnx as onnx_rt
from fer_pipeline.onnx import select_providers  # re-exported: the picker every model of the package uses

if TYPE_CHECKING:
    import onnxruntime as ort

logger = logging.getLogger(__name__)

__all__ = ["METADATA_KEYS", "REQUIRED_KEYS", "EmotionModel", "ModelError", "ModelSpec", "select_providers"]


class ModelError(ValueError):
    """The emotion model file or its card is missing, altered or inconsistent."""


#: :class:`ModelSpec` field -> ONNX ``metadata_props`` key, in the order they are written. The one list both the
#: writer (:meth:`ModelSpec.to_metadata`) and the reader (:meth:`ModelSpec.from_metadata`) use. Text fields are
#: stored as they are, the others as JSON (see :data:`_TEXT_FIELDS`).
METADATA_KEYS: dict[str, str] = {
    "labels": "labels",  # JSON list of class names, in output order
    "input_hw": "input_hw",  # JSON [height, width], pixels
    "color": "color",  # "gray" | "rgb"
    "input_scale": "input_scale",  # "0-1": pixel / 255
    "mean_std": "mean_std_in_graph",  # JSON [mean, std] of the standardisation inside the graph (on 0-1 pixels)
    "template": "align_template",  # JSON (5, 2) [x, y] pixels of the crop
    "align_size": "align_size",  # JSON [height, width] the template is given in, pixels
    "tta_flip": "tta_flip",  # JSON bool: the graph averages the face and its mirror image
    "name": "name",  # model name
}
#: Metadata keys a model must carry; without the others, fields take their defaults (``name`` then comes from the
#: card, else the file name).
REQUIRED_KEYS: tuple[str, ...] = ("labels", "input_hw", "color", "align_template")
_TEXT_FIELDS = frozenset({"color", "input_scale", "name"})
_LANDMARKS = ["left_eye", "right_eye", "nose", "left_mouth", "right_mouth"]
#: Tensor names of the exported graphs (``torch.onnx.export(input_names=..., output_names=...)``).
INPUT_NAME, OUTPUT_NAME = "input", "probs"


@dataclass(frozen=True, eq=False)
class ModelSpec:
    """What the runtime needs to know about an emotion model; written into and read from the ONNX metadata.

    Attributes:
        name: model name (e.g. ``fer2013-vgg``).
        labels: class names in output order.
        input_hw: crop ``(height, width)`` in pixels.
        color: ``"gray"`` (luminance; input ``(B, 1, h, w)``) or ``"rgb"`` (input ``(B, 3, h, w)``).
        template: ``(5, 2) float32`` landmark positions (x, y pixels in the crop) the aligner maps faces onto.
        align_size: ``(height, width)`` in pixels the template is given in (``None``: not recorded).
        mean_std: ``(mean, std)`` standardisation applied inside the graph to pixel / 255 (``None``: not recorded).
        tta_flip: the graph averages the face and its mirror image (2x the cost per face).
        input_scale: how pixels are scaled before the graph; only ``"0-1"`` (pixel / 255, float32) is supported.
        path: the ``.onnx`` file (``None`` for a spec not read from a file).
        sha256: hex digest of the file (from the card, verified at :meth:`load`; of the file at :meth:`from_onnx`).
        card: the full model card (metrics, training recipe, data hashes); ``{}`` when not read from one.

    Two specs are equal when every field is (``template`` compared by value).

    Raises:
        ModelError: a field has the wrong shape or an unsupported value.
    """

    name: str
    labels: tuple[str, ...]
    input_hw: tuple[int, int]
    color: str
    template: np.ndarray
    align_size: tuple[int, int] | None = None
    mean_std: tuple[float, float] | None = None
    tta_flip: bool = False
    input_scale: str = "0-1"
    path: Path | None = None
    sha256: str | None = None
    card: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"{self.path}: " if self.path is not None else ""
        try:
            labels = tuple(str(v) for v in self.labels)
            hw = tuple(int(v) for v in self.input_hw)
            template = np.asarray(self.template, np.float32)
            align_size = None if self.align_size is None else tuple(int(v) for v in self.align_size)
            mean_std = None if self.mean_std is None else tuple(float(v) for v in self.mean_std)
        except (TypeError, ValueError) as e:
            raise ModelError(f"{where}malformed model description: {e}") from e
        if not labels:
            raise ModelError(f"{where}model has no labels")
        if len(hw) != 2 or min(hw) < 1:
            raise ModelError(f"{where}input_hw must be (height, width) >= 1, got {self.input_hw!r}")
        if self.color not in ("gray", "rgb"):
            raise ModelError(f"{where}color must be 'gray' or 'rgb', got {self.color!r}")
        if template.shape != (5, 2):
            raise ModelError(f"{where}alignment template must be (5,2), got {template.shape}")
        if align_size is not None and len(align_size) != 2:
            raise ModelError(f"{where}align_size must be (height, width), got {self.align_size!r}")
        if mean_std is not None and len(mean_std) != 2:
            raise ModelError(f"{where}mean_std must be (mean, std), got {self.mean_std!r}")
        if self.input_scale != "0-1":
            raise ModelError(f"{where}input_scale {self.input_scale!r} is not supported (the runtime feeds "
                             "pixel / 255, '0-1')")
        for name, value in (("labels", labels), ("input_hw", hw), ("template", template), ("align_size", align_size),
                            ("mean_std", mean_std), ("tta_flip", bool(self.tta_flip)),
                            ("path", None if self.path is None else Path(self.path))):
            object.__setattr__(self, name, value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ModelSpec):
            return NotImplemented
        return all(np.array_equal(getattr(self, f.name), getattr(other, f.name)) if f.name == "template"
                   else getattr(self, f.name) == getattr(other, f.name) for f in fields(self))

    __hash__ = None  # type: ignore[assignment]  # mutable card, array template

    # ---------------------------------------------------------------------------------------------- metadata ------

    def to_metadata(self) -> dict[str, str]:
        """The ONNX ``metadata_props`` describing this model: :data:`METADATA_KEYS` keys (in that order) -> strings;
        fields that are ``None`` are left out."""
        values: dict[str, Any] = {
            "labels": list(self.labels), "input_hw": list(self.input_hw), "color": self.color,
            "input_scale": self.input_scale, "mean_std": None if self.mean_std is None else list(self.mean_std),
            "template": self.template.tolist(), "align_size": None if self.align_size is None else list(self.align_size),
            "tta_flip": self.tta_flip, "name": self.name}
        return {key: (values[f] if f in _TEXT_FIELDS else json.dumps(values[f]))
                for f, key in METADATA_KEYS.items() if values[f] is not None}

    def write_metadata(self, model: Any) -> None:
        """Replace the ``metadata_props`` of an ``onnx.ModelProto`` (in place) with :meth:`to_metadata`."""
        del model.metadata_props[:]
        for key, value in self.to_metadata().items():
            model.metadata_props.add(key=key, value=value)

    @classmethod
    def from_metadata(cls, meta: dict[str, str], path: str | Path | None = None, sha256: str | None = None,
                      card: dict | None = None) -> ModelSpec:
        """The spec described by ONNX ``metadata_props`` (as :meth:`to_metadata` writes them); keys not in
        :data:`METADATA_KEYS` (e.g. ONNX Runtime's quantization notes) are ignored.

        Args:
            meta: key -> string.
            path, sha256, card: recorded as they are; ``card["name"]`` (else the file name) is the name when the
                metadata has none.

        Raises:
            ModelError: a key of :data:`REQUIRED_KEYS` is missing, or a value is malformed.
        """
        card = {} if card is None else card
        where = f"{path}: " if path is not None else ""
        missing = [k for k in REQUIRED_KEYS if k not in meta]
        if missing:
            raise ModelError(f"{where}ONNX metadata lacks {missing[0]!r}; export it with fer_pipeline.training")
        values: dict[str, Any] = {}
        for f, key in METADATA_KEYS.items():
            if key not in meta:
                continue
            try:
                values[f] = meta[key] if f in _TEXT_FIELDS else json.loads(meta[key])
            except ValueError as e:
                raise ModelError(f"{where}ONNX metadata {key!r} is not valid JSON: {meta[key][:80]!r}") from e
        if "name" not in values:
            values["name"] = card.get("name", Path(path).stem if path is not None else "")
        return cls(**values, path=None if path is None else Path(path), sha256=sha256, card=card)

    @classmethod
    def from_onnx(cls, path: str | Path) -> ModelSpec:
        """The spec in an ``.onnx`` file's metadata alone (no card): ``sha256`` is the file's, ``card`` is ``{}``.

        Raises:
            ModelError: the file is missing or unreadable, or its metadata incomplete (see :meth:`from_metadata`).
        """
        from fer_pipeline.fileutil import sha256_file

        path = Path(path)
        if not path.is_file():
            raise ModelError(f"emotion model not found: {path}")
        return cls.from_metadata(_read_metadata(path), path=path, sha256=sha256_file(path))

    def card_fields(self) -> dict:
        """The model card's fields that follow from this spec (``labels``, ``input``, ``output``, ``alignment``,
        ``tta_flip_in_graph``, in that order); the exporter adds the rest (name, file, sha256, training, metrics)."""
        h, w = self.input_hw
        inp: dict[str, Any] = {"name": INPUT_NAME, "shape": ["batch", 1 if self.color == "gray" else 3, h, w],
                               "dtype": "float32", "color": self.color, "scale": "pixel / 255, in [0, 1]"}
        if self.mean_std is not None:
            inp["normalisation"] = {"mean": self.mean_std[0], "std": self.mean_std[1], "applied": "inside the graph"}
        alignment: dict[str, Any] = {"template_px": self.template.tolist()}
        if self.align_size is not None:
            alignment["size"] = list(self.align_size)
        alignment.update(landmarks=list(_LANDMARKS), how="similarity transform of the 5 detector landmarks onto the "
                                                         "template (fer_pipeline.align)")
        return {"labels": list(self.labels), "input": inp,
                "output": {"name": OUTPUT_NAME, "shape": ["batch", len(self.labels)],
                           "meaning": "softmax probabilities, sum 1"},
                "alignment": alignment, "tta_flip_in_graph": self.tta_flip}

    # ---------------------------------------------------------------------------------------------- loading -------

    @classmethod
    def load(cls, path: str | Path, verify: bool = True) -> ModelSpec:
        """Read the ONNX metadata and the card ``<path>.json``; check they agree and the file hash matches.

        Raises:
            ModelError: file or card missing, metadata absent or malformed, labels disagree, or the sha256 differs.
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
        spec = cls.from_metadata(_read_metadata(path), path=path, sha256=card.get("sha256"), card=card)
        if list(spec.labels) != list(card.get("labels", [])):
            raise ModelError(f"{path}: labels in the ONNX metadata {spec.labels} differ from the card "
                             f"{card.get('labels')}")
        return spec


def _read_metadata(path: Path) -> dict[str, str]:
    """:func:`fer_pipeline.onnx.metadata` of an emotion model file.

    Raises:
        ModelError: onnxruntime cannot read the file.
    """
    try:
        return onnx_rt.metadata(path)
    except onnx_rt.SessionError as e:
        raise ModelError(f"{path}: not a readable ONNX model: {str(e).split(': ', 1)[-1]}") from e


class EmotionModel:
    """Batched emotion classifier over aligned crops.

    Args:
        path: the ``.onnx`` model (card beside it).
        batch_size: faces per ``run()`` call; larger batches amortise overhead (a GPU takes 4x this).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``; see :func:`fer_pipeline.onnx.select_providers`.
        threads: onnxruntime intra-op threads (0 = its default).
        session: an ``onnxruntime.InferenceSession`` of ``path`` to use instead of building one (``device`` and
            ``threads`` are then ignored); by default :func:`fer_pipeline.onnx.session` builds it (full graph
            optimisation).

    Raises:
        ModelError: see :meth:`ModelSpec.load`; or onnxruntime cannot load the file, or ``device="cuda"`` and CUDA
            does not start.
        ValueError: unknown ``device``, or ``device="cuda"`` and onnxruntime has no CUDA provider.
    """

    def __init__(self, path: str | Path, batch_size: int = 128, device: str = "auto", threads: int = 0,
                 session: ort.InferenceSession | None = None) -> None:
        self.spec = ModelSpec.load(path)
        if session is None:
            try:
                session = onnx_rt.session(self.spec.path, device, threads, name=f"emotion model {self.spec.path}")
            except onnx_rt.SessionError as e:
                raise ModelError(str(e)) from e
        self.session = session
        self.on_gpu = onnx_rt.on_gpu(session)
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
