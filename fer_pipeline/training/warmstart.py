"""Warm start: initialise a VGG backbone from one of our exported ONNX emotion models, to fine-tune it.

Our ONNX export (:mod:`fer_pipeline.training.export`) folds every BatchNorm into the convolution before it, so the
graph holds ``Conv(weight, bias) -> Relu`` pairs and a final ``Gemm``. :func:`load_vgg_from_onnx` puts those weights
back into a freshly built ``vgg`` backbone (``Conv(bias=False) -> BatchNorm -> ReLU``) and re-creates BatchNorm
layers that reproduce the exported function exactly in eval mode *and* behave as the identity in train mode: each
BatchNorm gets the per-channel mean and variance of its input measured on calibration images (``running_mean``,
``running_var``), ``weight = sqrt(var + eps)`` and ``bias = conv_bias + mean``, so that

    BN(z) = (z - mean) / sqrt(var + eps) * sqrt(var + eps) + conv_bias + mean = z + conv_bias.

Fine-tuning then starts from the exported model's accuracy instead of a random network.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)


def onnx_mean_std(path: str | Path) -> tuple[float, float]:
    """The input standardisation ``(mean, std)`` recorded in one of our ONNX models (``mean_std_in_graph``).

    Raises:
        ValueError: the model has no such metadata (not exported by this project).
    """
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    if "mean_std_in_graph" not in meta:
        raise ValueError(f"{path}: no 'mean_std_in_graph' metadata; not an ONNX model exported by fer-pipeline")
    mean, std = json.loads(meta["mean_std_in_graph"])
    return float(mean), float(std)


def _weights(model) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Float arrays of the graph's initializers, of ``Identity`` nodes over them (the exporter's way of sharing one
    weight between the two passes of a flip-TTA graph) and of ``DequantizeLinear`` nodes over them (the weights of an
    int8 QDQ model, :mod:`fer_pipeline.training.quantize`), by tensor name; and, for every such name, the name of the
    initializer it comes from (so a weight used twice is recognised as one)."""
    from onnx import numpy_helper

    arrays = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    source = {name: name for name in arrays}
    for n in model.graph.node:
        if n.op_type == "Identity" and n.input[0] in arrays:
            arrays[n.output[0]] = arrays[n.input[0]]
            source[n.output[0]] = source[n.input[0]]
        elif n.op_type == "DequantizeLinear" and n.input[0] in arrays:
            source[n.output[0]] = source[n.input[0]]
            q = arrays[n.input[0]].astype(np.float64)
            scale = arrays[n.input[1]].astype(np.float64)
            zero = arrays[n.input[2]].astype(np.float64) if len(n.input) > 2 and n.input[2] else 0.0
            axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
            if np.ndim(scale) == 1 and q.ndim > 1:  # per-channel along `axis`
                shape = [1] * q.ndim
                shape[axis] = -1
                scale, zero = scale.reshape(shape), np.reshape(zero, shape) if np.ndim(zero) else zero
            arrays[n.output[0]] = ((q - zero) * scale).astype(np.float32)
    return arrays, source


def load_vgg_from_onnx(backbone, path: str | Path, calib: np.ndarray, mean: float, std: float,
                       load_head: bool = True) -> None:
    """Copy the weights of an exported ONNX model into ``backbone`` in place (see the module docstring).

    Args:
        backbone: a ``vgg`` backbone (:func:`fer_pipeline.training.backbones.vgg`) with the same widths and conv
            counts as the exported one.
        path: the ``.onnx`` file (fp32, or its int8 QDQ quantization: weights are dequantized; with or without
            flip TTA in the graph).
        calib: ``(N, 48, 48) uint8`` grayscale training images (a few thousand) to measure BatchNorm statistics.
        mean, std: the standardisation of the inputs (the exported model's, :func:`onnx_mean_std`).
        load_head: also copy the final linear layer; False when the new model has other classes (e.g. FER+), the
            head then keeps its random initialisation.

    Raises:
        ValueError: the ONNX model's convolutions or head do not match the backbone's shapes.
    """
    import onnx
    import torch
    from torch import nn

    model = onnx.load(str(path))
    init, source = _weights(model)
    seen: set[str] = set()  # a flip-TTA graph runs the same convolutions twice: keep each weight once, in order
    convs_onnx = [(init[n.input[1]], init[n.input[2]]) for n in model.graph.node
                  if n.op_type == "Conv" and not (source[n.input[1]] in seen or seen.add(source[n.input[1]]))]
    gemm = next((n for n in model.graph.node if n.op_type == "Gemm"), None)
    convs = [m for m in backbone.modules() if isinstance(m, nn.Conv2d)]
    bns = [m for m in backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    linear = [m for m in backbone.modules() if isinstance(m, nn.Linear)][-1]
    if len(convs_onnx) != len(convs) or any(w.shape != tuple(c.weight.shape) for (w, _), c in zip(convs_onnx, convs)):
        raise ValueError(f"{path}: its convolutions {[w.shape for w, _ in convs_onnx]} do not match the backbone's "
                         f"{[tuple(c.weight.shape) for c in convs]}")
    with torch.no_grad():
        for (w, b), conv, bn in zip(convs_onnx, convs, bns):
            conv.weight.copy_(torch.from_numpy(np.array(w)))
            # identity BatchNorm in eval mode for now: the network equals the exported one while we measure
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - bn.eps)
            bn.weight.fill_(1.0)
            bn.bias.copy_(torch.from_numpy(np.array(b)))
        if load_head:
            if gemm is None:
                raise ValueError(f"{path}: no Gemm (linear head) in the graph")
            hw, hb = init[gemm.input[1]], init[gemm.input[2]]
            if hw.shape != tuple(linear.weight.shape):
                raise ValueError(f"{path}: head {hw.shape} does not match the backbone's {tuple(linear.weight.shape)}")
            linear.weight.copy_(torch.from_numpy(np.array(hw)))
            linear.bias.copy_(torch.from_numpy(np.array(hb)))

        stats: dict[int, list[torch.Tensor]] = {i: [] for i in range(len(convs))}
        hooks = [c.register_forward_hook(lambda m, i, o, k=k: stats[k].append(o.double().transpose(0, 1)
                                                                             .reshape(o.shape[1], -1)))
                 for k, c in enumerate(convs)]
        was_training = backbone.training
        backbone.eval()
        try:
            for s in range(0, len(calib), 256):
                x = torch.from_numpy(np.ascontiguousarray(calib[s:s + 256]))[:, None].float() / 255.0
                backbone((x - mean) / std)
        finally:
            for h in hooks:
                h.remove()
            backbone.train(was_training)
        for k, bn in enumerate(bns):
            z = torch.cat(stats[k], 1)
            mu, var = z.mean(1), z.var(1, unbiased=False)
            bn.running_mean.copy_(mu.float())
            bn.running_var.copy_(var.float())
            bn.weight.copy_(torch.sqrt(var + bn.eps).float())
            bn.bias.add_(mu.float())
    logger.info("warm start from %s: %d convolutions%s, BatchNorm statistics from %d images", path, len(convs),
                " + head" if load_head else "", len(calib))
