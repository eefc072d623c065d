"""Export a trained classifier to ONNX (dynamic batch axis) with its model card, checked against torch.

The exported graph takes ``(B, 1, 48, 48) float32`` grayscale pixels scaled to [0, 1] and returns ``(B, C)``
probabilities (softmax inside the graph). Standardisation with the training set's mean/std is inside the graph too,
so the runtime's preprocessing is fixed by :class:`fer_pipeline.classify.ModelSpec`: align, grayscale, /255.
The same facts (labels, input size, colour, alignment template) go into the ONNX ``metadata_props`` and the JSON card
beside it, both written by :class:`fer_pipeline.classify.ModelSpec` (``write_metadata``, ``card_fields``), which reads
and checks them at load time. The checks run the written graphs through :func:`fer_pipeline.onnx.session` on the CPU,
as the pipeline runs them.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path

import numpy as np

from fer_pipeline.fileutil import sha256_file

logger = logging.getLogger(__name__)


def _wrapper(module, tta: bool):
    import torch
    from torch import nn

    class Exported(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = module.inference_backbone
            self.mean, self.std = module.mean, module.std

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = (x - self.mean) / self.std
            p = torch.softmax(self.backbone(x), dim=1)
            if tta:
                p = (p + torch.softmax(self.backbone(torch.flip(x, dims=[3])), dim=1)) * 0.5
            return p

    return Exported().eval()


def _predict(session, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """``(N, 48, 48) uint8`` -> ``(N, C)`` probabilities of an exported graph (input scaled to [0, 1], as the
    pipeline feeds it)."""
    x = images[:, None].astype(np.float32) / 255.0
    return np.concatenate([session.run(None, {"input": x[i:i + batch_size]})[0]
                           for i in range(0, len(x), batch_size)])


def _check_against_fp64(wrapper, x, ref, got) -> dict:
    """Tell fp32 rounding from a wrong graph when ONNX and torch (both fp32) differ by more than 1e-4.

    Deep networks (Inception-v3: 94 convolutions and a resize) amplify fp32 rounding so that two correct fp32
    implementations differ by more than 1e-4 in probability: then both are compared with the network evaluated in
    float64 (a deep copy of ``wrapper``), and the export passes when ONNX is no further from it than twice torch's
    own fp32 error + 1e-4.

    Args:
        wrapper: the exported torch module (fp32, eval); ``x``: its ``(B, 1, 48, 48) float32`` check input;
        ref, got: torch's and ONNX Runtime's ``(B, C)`` outputs for ``x``.

    Returns:
        ``{"torch_fp32_vs_fp64": max abs diff, "onnx_vs_fp64": max abs diff}``.

    Raises:
        RuntimeError: ONNX is further from the float64 evaluation than that.
    """
    import copy

    import torch

    with torch.inference_mode():
        exact = copy.deepcopy(wrapper).double()(x.double()).numpy()
    err_torch, err_onnx = float(np.abs(ref - exact).max()), float(np.abs(got - exact).max())
    if err_onnx > 2 * err_torch + 1e-4:
        raise RuntimeError(f"ONNX export differs from torch by {np.abs(ref - got).max():.2e} (> 1e-4), and from the "
                           f"float64 evaluation by {err_onnx:.2e} (torch fp32: {err_torch:.2e})")
    logger.info("ONNX vs torch fp32 %.2e > 1e-4, but vs float64 %.2e (torch fp32 vs float64 %.2e): fp32 rounding",
                float(np.abs(ref - got).max()), err_onnx, err_torch)
    return {"torch_fp32_vs_fp64": err_torch, "onnx_vs_fp64": err_onnx}


def export_onnx(module, cfg, metrics: dict, path: Path, tta: bool = False, opset: int = 17,
                int8_calib: np.ndarray | None = None, eval_sets: dict | None = None) -> dict:
    """Write ``path`` (ONNX) and ``path.with_suffix('.json')`` (model card); return the card.

    Args:
        module: a trained :class:`~fer_pipeline.training.module.EmotionClassifier` (eval mode, CPU).
        cfg: the :class:`~fer_pipeline.training.train.TrainConfig` it was trained with (recorded in the card).
        metrics: evaluation results to record (``val``, ``test`` blocks from :func:`train`).
        path: destination ``.onnx``.
        tta: bake horizontal-flip test-time augmentation into the graph (2x the cost per face).
        opset: ONNX opset.
        int8_calib: when given, ``(N, 48, 48) uint8`` training images: the file written is the int8 quantization
            of the fp32 graph (:func:`fer_pipeline.training.quantize.quantize_int8`) calibrated on them.
        eval_sets: ``{"val": ImageSet, "test": ImageSet}``: the written file is evaluated on them with
            onnxruntime (as the pipeline runs it); the figures go to the card's ``onnx_metrics``.

    Raises:
        RuntimeError: the fp32 ONNX output differs from torch by more than 1e-4 (max abs, probabilities) and,
            against the float64 evaluation of the same network, by more than twice torch's own fp32 error + 1e-4
            (:func:`_check_against_fp64`), or the int8 model's top-1 agrees with the fp32 one on fewer than 97% of
            the first ``eval_sets`` images or its probabilities do not sum to 1 (within 1e-4).
    """
    import onnx
    import torch

    from fer_pipeline import onnx as onnx_rt
    from fer_pipeline.align import FER2013_TEMPLATE, TEMPLATE_SIZE
    from fer_pipeline.classify import ModelSpec
    from fer_pipeline.training.backbones import count_parameters
    from fer_pipeline.training.data import _Source

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = module.float().cpu().eval()
    wrapper = _wrapper(module, tta)
    x = torch.rand(4, 1, 48, 48)
    tmp = path.with_suffix(".tmp.onnx")
    torch.onnx.export(wrapper, (x,), str(tmp), input_names=["input"], output_names=["probs"],
                      dynamic_axes={"input": {0: "batch"}, "probs": {0: "batch"}}, opset_version=opset,
                      dynamo=False)
    labels = list(module.labels)
    spec = ModelSpec(name=cfg.name, labels=tuple(labels), input_hw=TEMPLATE_SIZE, color="gray",
                     template=np.asarray(FER2013_TEMPLATE), align_size=TEMPLATE_SIZE,
                     mean_std=(module.mean, module.std), tta_flip=tta, input_scale="0-1")
    model = onnx.load(str(tmp))
    spec.write_metadata(model)
    onnx.save(model, str(tmp))

    sess = onnx_rt.session(tmp, device="cpu")
    xb = torch.rand(37, 1, 48, 48)
    with torch.inference_mode():
        ref = wrapper(xb).numpy()
    got = sess.run(None, {"input": xb.numpy()})[0]
    max_diff = float(np.abs(ref - got).max())
    fp64_check = None
    if max_diff > 1e-4:
        fp64_check = _check_against_fp64(wrapper, xb, ref, got)
    quant = None
    if int8_calib is not None:
        from fer_pipeline.training.quantize import quantize_int8

        qtmp = path.with_suffix(".int8.tmp.onnx")
        quantize_int8(tmp, qtmp, int8_calib)
        check = next(iter(eval_sets.values())).images if eval_sets else int8_calib
        p32 = _predict(sess, check)
        p8 = _predict(onnx_rt.session(qtmp, device="cpu"), check)
        agree = float((p32.argmax(1) == p8.argmax(1)).mean())
        quant = {"type": "int8 static, QDQ, per-channel weights (onnxruntime quantize_static, MinMax calibration)",
                 "calibration_images": int(len(int8_calib)), "top1_agreement_with_fp32": agree,
                 "max_abs_diff_vs_fp32": float(np.abs(p32 - p8).max()), "checked_on_images": int(len(check))}
        if agree < 0.97:
            raise RuntimeError(f"int8 model agrees with fp32 on only {agree:.1%} of {len(check)} images (< 97%)")
        if np.abs(p8.sum(1) - 1).max() > 1e-4:
            raise RuntimeError(f"int8 model's probabilities do not sum to 1 (off by {np.abs(p8.sum(1) - 1).max():.2e})")
        tmp.unlink()
        tmp = qtmp
    tmp.replace(path)
    onnx_metrics = None
    if eval_sets:
        from fer_pipeline.training.evaluate import classification_metrics

        final = onnx_rt.session(path, device="cpu")
        onnx_metrics = {split: classification_metrics(data.labels, _predict(final, data.images).argmax(1),
                                                      data.label_names) for split, data in eval_sets.items()}

    data_path = Path(cfg.data.path)
    card = {
        "name": cfg.name,
        "file": path.name,
        "sha256": sha256_file(path),
        **spec.card_fields(),  # labels, input, output, alignment, tta_flip_in_graph
        "backbone": {"name": cfg.model.backbone, **cfg.model.kwargs, "parameters": count_parameters(module.backbone)},
        "training": json.loads(cfg.model_dump_json()),
        "data": {"path": str(data_path), "sha256": sha256_file(data_path) if data_path.is_file() else None,
                 "fingerprint": _Source(data_path).fingerprint() if data_path.exists() else None},
        "init_from": None if cfg.init_from is None else {
            "path": str(cfg.init_from),
            "sha256": sha256_file(cfg.init_from) if Path(cfg.init_from).is_file() else None},
        "soft_targets": None if cfg.data.soft_targets == "none" else {
            "kind": cfg.data.soft_targets, "weight": cfg.data.soft_weight, "path": str(cfg.data.soft_source),
            "sha256": sha256_file(cfg.data.soft_source) if Path(cfg.data.soft_source).is_file() else None},
        "metrics": metrics,
        "onnx_metrics": onnx_metrics,
        "quantization": quant,
        "onnx_vs_torch_max_abs_diff": max_diff,
        "onnx_vs_float64_check": fp64_check,
        "opset": opset,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    path.with_suffix(".json").write_text(json.dumps(card, indent=2))
    logger.info("exported %s (sha256 %s, max |onnx - torch| %.2e)", path, card["sha256"][:12], max_diff)
    return card
