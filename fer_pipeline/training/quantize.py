"""INT8 post-training quantization of an exported emotion model (onnxruntime static quantization, QDQ format).

On this project's 2-core Xeon (AVX-512 VNNI) the int8 graph of the default model costs about a third of the fp32
one per face, at the same accuracy (``benchmarks/classifier_cost.py``; figures in ``models/README.md``).
Method: ``onnxruntime.quantization.quantize_static`` with per-channel int8 weights and uint8 activations whose
ranges are calibrated (MinMax) on training images. The softmax and everything after it (the averaging of a
flip-TTA graph) stay fp32, so probabilities still sum to 1. Metadata (labels, input spec) is carried over unchanged.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)


def _softmax_and_after(graph) -> list[str]:
    """Names of the Softmax nodes and of every node downstream of one (e.g. the averaging of a flip-TTA graph): they
    stay fp32 so the output probabilities are not rounded to the 1/255 steps of a uint8 tensor."""
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    todo = [n for n in graph.node if n.op_type == "Softmax"]
    names: set[str] = set()
    while todo:
        n = todo.pop()
        if n.name in names:
            continue
        names.add(n.name)
        for o in n.output:
            todo.extend(consumers.get(o, []))
    return sorted(names)


def quantize_int8(src: str | Path, dst: str | Path, calib: np.ndarray, batch_size: int = 64) -> None:
    """Write an int8 (QDQ) copy of ``src`` to ``dst``.

    Args:
        src: fp32 ONNX model whose input is ``(B, 1, 48, 48) float32`` in [0, 1] (our export).
        dst: destination path (overwritten).
        calib: ``(N, 48, 48) uint8`` grayscale training images for the activation ranges (a thousand is plenty;
            never test images).
        batch_size: calibration images per inference.

    Raises:
        ValueError: ``calib`` is empty or not ``(N, H, W) uint8``.
    """
    import tempfile

    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if calib.ndim != 3 or calib.dtype != np.uint8 or not len(calib):
        raise ValueError(f"calib must be (N,H,W) uint8 with N > 0, got {calib.shape} {calib.dtype}")
    x = calib[:, None].astype(np.float32) / 255.0

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter([{"input": x[i:i + batch_size]} for i in range(0, len(x), batch_size)])

        def get_next(self):
            return next(self._it, None)

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre))
        quantize_static(str(pre), str(dst), _Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=_softmax_and_after(onnx.load(str(pre)).graph))
    logger.info("int8 model written to %s (calibrated on %d images)", dst, len(calib))
