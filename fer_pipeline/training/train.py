"""Training entry point: a YAML recipe -> a checkpointed, resumable Lightning run -> metrics and an ONNX model.

``fer-pipeline train --config configs/train/<recipe>.yaml`` calls :func:`train`. Re-running the same command resumes
from ``<out_dir>/last.ckpt`` when it exists. ``--smoke`` calls :func:`smoke` instead: a few batches that check the
recipe runs, writing nothing.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

logger = logging.getLogger(__name__)


class DataConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dataset: Literal["fer2013", "ferplus"] = "fer2013"
    path: Path = Path("../shared/data/fer2013.zip")
    ferplus_classes: Literal[7, 8] = 7
    soft_labels: bool = False
    soft_targets: Literal["none", "ferplus", "teacher"] = Field(
        "none", description="train on (1 - soft_weight) * one-hot label + soft_weight * a label distribution per "
        "image: FER+ vote distributions of the FER2013 images, matched by pixels (ferplus; FER2013 only) or a "
        "teacher model's probabilities (teacher: knowledge distillation); fer_pipeline.training.soft_targets")
    soft_source: Path | None = Field(None, description="ferplus.zip for soft_targets: ferplus, the teacher .onnx "
                                     "for soft_targets: teacher")
    soft_weight: float = Field(0.5, ge=0, le=1, description="weight of the distribution in the soft target")
    limit: int | None = Field(None, description="use only the first N training images (smoke tests)")

    @model_validator(mode="after")
    def _soft_source_given(self) -> "DataConfig":
        if self.soft_targets != "none" and self.soft_source is None:
            raise ValueError(f"soft_targets: {self.soft_targets} needs soft_source (ferplus.zip or a teacher .onnx)")
        if self.soft_targets == "ferplus" and self.dataset != "fer2013":
            raise ValueError("soft_targets: ferplus is for the FER2013 dataset (FER+ has its own votes: soft_labels)")
        return self

    @property
    def uses_soft(self) -> bool:
        """Whether training reads the soft targets (vote distributions or mixed targets) instead of labels."""
        return self.soft_labels or self.soft_targets != "none"


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    backbone: str = "vgg"
    kwargs: dict = Field(default_factory=dict)


class OptimConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    ema_decay: float = Field(0.0, description="exponential moving average of the weights (0 = off), e.g. 0.999")
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"
    budget_cpu_min: float | None = Field(
        None, gt=0, description="stop training once it has spent this many CPU minutes (time.process_time of the "
        "training process, all its threads; validation passes not counted), and run the lr schedule over this "
        "budget instead of over `epochs` (which then only caps the run): fer_pipeline.training.budget.CPUBudget")
    val_check_interval: float = Field(
        1.0, gt=0, le=1, description="validate (and checkpoint the best) this often, as a fraction of a training "
        "epoch: 0.25 = four times per epoch")


class ImbalanceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    class_weights: Literal["none", "inverse", "sqrt"] = "none"
    sampler: Literal["none", "weighted"] = "none"
    oversample: Literal["none", "random", "smote"] = Field(
        "none", description="balance the training split once, before training, by adding images up to the largest "
        "class: random copies or SMOTE's synthetic images (fer_pipeline.training.oversample)")


class AugmentSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    flip: bool = True
    max_rotate_deg: float = 10.0
    max_shift: float = 0.1
    scale: tuple[float, float] = (0.9, 1.1)
    erasing_p: float = 0.5
    erasing_size: int = 12
    mixup_alpha: float = Field(0.0, ge=0, description="MixUp Beta(a, a) parameter, 0 = off (Zhang et al. 2018)")
    cutmix_alpha: float = Field(0.0, ge=0, description="CutMix Beta(a, a) parameter, 0 = off (Yun et al. 2019); "
                                "with both set, each mixed batch uses one of the two at even odds")
    mix_p: float = Field(1.0, ge=0, le=1, description="probability that a training batch is mixed")


class TrainConfig(BaseModel):
    """A training recipe (``configs/train/*.yaml``). Every default lives here."""

    model_config = ConfigDict(extra="forbid")
    name: str = "fer2013-vgg"
    seed: int = 0
    precision: Literal["auto", "32-true", "bf16-mixed"] = Field(
        "auto", description="auto: bf16-mixed where the CPU has native bf16 (avx512_bf16/amx_bf16), else 32-true")
    threads: int = 2
    out_dir: Path = Path("runs/fer2013-vgg")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    imbalance: ImbalanceConfig = Field(default_factory=ImbalanceConfig)
    augment: AugmentSettings = Field(default_factory=AugmentSettings)
    export_onnx: Path | None = Field(None, description="write the best model here as ONNX + model card")
    export_int8: bool = Field(False, description="ship the int8 quantization of the exported graph (calibrated on "
                              "1,024 training images; fer_pipeline.training.quantize)")
    export_tta: bool = Field(False, description="bake horizontal-flip test-time augmentation into the exported "
                             "graph (2x the cost per face)")
    init_from: Path | None = Field(None, description="warm start: an ONNX model exported by this project (same vgg "
                                   "backbone) whose weights start the run (fer_pipeline.training.warmstart)")
    evaluate_test: bool = Field(True, description="score the selected checkpoint on the test split at the end of "
                                "training; off for studies that evaluate the test split once, afterwards, on the "
                                "exported model (benchmarks/model_zoo.py)")

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: dict | None = None) -> "TrainConfig":
        """Load and validate a recipe.

        Raises:
            FileNotFoundError: no such file.
            pydantic.ValidationError: unknown key or wrong type.
        """
        raw = yaml.safe_load(Path(path).read_text()) or {}
        for dotted, value in (overrides or {}).items():
            node = raw
            *parents, leaf = dotted.split(".")
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = value
        return cls.model_validate(raw)


def load_splits(cfg: DataConfig):
    """(train, val, test) :class:`ImageSet` for the recipe: FER2013 train/PublicTest/PrivateTest or FER+
    train/valid/test."""
    from fer_pipeline.training.data import ImageSet, load_fer2013, load_ferplus

    if cfg.dataset == "fer2013":
        tr, va, te = (load_fer2013(cfg.path, s) for s in ("train", "public-test", "private-test"))
    else:
        tr, va, te = (load_ferplus(cfg.path, s, cfg.ferplus_classes) for s in ("train", "valid", "test"))
    if cfg.limit:
        n = np.random.default_rng(0).permutation(len(tr))[: cfg.limit]  # a random subset: files are class-sorted
        tr = ImageSet(tr.images[n], tr.labels[n], tr.label_names, None if tr.soft is None else tr.soft[n],
                      None if tr.names is None else tr.names[n])
    return tr, va, te


def with_soft_targets(tr, cfg: DataConfig):
    """The training split with the recipe's soft targets mixed in (``cfg.soft_targets``; unchanged when "none").
    Applied after any subsetting, so a ``--smoke`` run matches or scores only its few images.

    Raises:
        ValueError, fer_pipeline.classify.ModelError: see
            :func:`~fer_pipeline.training.soft_targets.ferplus_distributions` and
            :func:`~fer_pipeline.training.soft_targets.teacher_distributions`.
    """
    if cfg.soft_targets == "none":
        return tr
    from fer_pipeline.training import soft_targets as st

    dist = (st.ferplus_distributions(tr, cfg.soft_source, "train") if cfg.soft_targets == "ferplus"
            else st.teacher_distributions(tr, cfg.soft_source))
    return st.mix_targets(tr, dist, cfg.soft_weight)


def resolve_precision(precision: str, cpuinfo: str | None = None) -> str:
    """``"auto"`` -> ``"bf16-mixed"`` when the CPU computes bf16 natively (``avx512_bf16`` or ``amx_bf16`` in
    /proc/cpuinfo), else ``"32-true"`` (emulated bf16 was 3.7x slower per step than fp32 on an AVX-512 Xeon without
    bf16 here, while native bf16 was about 2x faster than fp32 on an AMD EPYC with it). Other values pass through."""
    if precision != "auto":
        return precision
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    flags = set(cpuinfo.split())
    return "bf16-mixed" if flags & {"avx512_bf16", "amx_bf16"} else "32-true"


SMOKE_BATCHES = 2
"""Training and validation batches of a ``--smoke`` run (Lightning's ``fast_dev_run``)."""
SMOKE_BATCH_SIZE = 16
"""Largest batch of a ``--smoke`` run (the recipe's, if smaller)."""


def _check_inputs(cfg: TrainConfig) -> None:
    if cfg.init_from and not Path(cfg.init_from).is_file():
        raise FileNotFoundError(f"init_from not found: {cfg.init_from} (the recipe warm-starts from a model that an "
                                "earlier recipe exports, e.g. configs/train/fer2013_vgg.yaml)")
    src = cfg.data.soft_source
    if cfg.data.soft_targets != "none" and not Path(src).exists():
        hint = ("the teacher is a model trained and exported first (an ensemble: python -m "
                "fer_pipeline.training.ensemble)" if cfg.data.soft_targets == "teacher" else "the FER+ dataset")
        raise FileNotFoundError(f"soft_source not found: {src} ({hint})")


def _build_module(cfg: TrainConfig, tr):
    """The backbone (warm-started when ``init_from``) wrapped in an :class:`EmotionClassifier` for ``cfg``, with
    the standardisation statistics of ``tr`` (or of the warm-start model)."""
    from fer_pipeline.training.backbones import build_backbone
    from fer_pipeline.training.module import EmotionClassifier, class_weights

    labels = tr.label_names
    backbone = build_backbone(cfg.model.backbone, num_classes=len(labels), **cfg.model.kwargs)
    if cfg.init_from:
        from fer_pipeline.classify import ModelSpec
        from fer_pipeline.training.warmstart import load_vgg_from_onnx, onnx_mean_std

        mean, std = onnx_mean_std(cfg.init_from)  # the inputs the warm-start weights were trained on
        same_labels = tuple(ModelSpec.load(cfg.init_from).labels) == tuple(labels)
        calib = tr.images[np.random.default_rng(cfg.seed).permutation(len(tr))[:4096]]
        load_vgg_from_onnx(backbone, cfg.init_from, calib, mean, std, load_head=same_labels)
    else:
        images = tr.images.astype(np.float32) / 255.0
        mean, std = float(images.mean()), float(images.std())
        del images
    module = EmotionClassifier(backbone, labels, mean, std, lr=cfg.optim.lr, momentum=cfg.optim.momentum,
                               weight_decay=cfg.optim.weight_decay, label_smoothing=cfg.optim.label_smoothing,
                               loss_weights=class_weights(tr.class_counts(), cfg.imbalance.class_weights),
                               augment=cfg.augment.model_dump(), seed=cfg.seed, ema_decay=cfg.optim.ema_decay,
                               schedule=cfg.optim.schedule, budget_schedule=cfg.optim.budget_cpu_min is not None)
    return backbone, module


def _subset(data, n: int, seed: int):
    from fer_pipeline.training.data import ImageSet

    idx = np.sort(np.random.default_rng(seed).permutation(len(data))[:n])
    return ImageSet(data.images[idx], data.labels[idx], data.label_names,
                    None if data.soft is None else data.soft[idx], None if data.names is None else data.names[idx])


def smoke(cfg: TrainConfig) -> dict:
    """Check that a recipe trains: :data:`SMOKE_BATCHES` training and validation batches (Lightning's
    ``fast_dev_run``) of at most :data:`SMOKE_BATCH_SIZE` real images, through the recipe's data, backbone,
    warm start, imbalance settings, augmentation, precision, optimiser and CPU-budget callback.

    Writes nothing: not ``out_dir``, not ``export_onnx``, no checkpoint or log (Lightning runs in a temporary
    folder, removed afterwards). The dataset cache (``fer_pipeline.fileutil.cache_dir``) may be filled on first use.

    Returns:
        ``{"name", "backbone", "parameters", "batch_size", "train_batches", "val_batches", "train_loss",
        "val_acc", "seconds"}`` (loss and accuracy of the few batches: no measure of the recipe's quality).

    Raises:
        FileNotFoundError: the dataset or ``init_from`` is missing.
        RuntimeError: the training loss is not finite.
    """
    import tempfile

    import lightning as L
    import torch

    from fer_pipeline.training.backbones import count_parameters
    from fer_pipeline.training.budget import CPUBudget
    from fer_pipeline.training.module import FERDataModule

    t0 = time.time()
    _check_inputs(cfg)
    torch.set_num_threads(cfg.threads)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    bs = min(cfg.optim.batch_size, SMOKE_BATCH_SIZE)
    tr, va, _ = load_splits(cfg.data)
    tr, va = _subset(tr, 4 * bs, cfg.seed), _subset(va, SMOKE_BATCHES * bs, cfg.seed)
    tr = with_soft_targets(tr, cfg.data)
    from fer_pipeline.training.oversample import oversample

    tr = oversample(tr, cfg.imbalance.oversample, cfg.seed)
    backbone, module = _build_module(cfg, tr)
    dm = FERDataModule(tr, va, bs, cfg.imbalance.sampler, cfg.data.uses_soft, cfg.seed, val_batch_size=bs)
    callbacks = [CPUBudget(cfg.optim.budget_cpu_min)] if cfg.optim.budget_cpu_min else []
    quiet = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric")]  # fast_dev_run notices
    levels = [q.level for q in quiet]
    try:
        for q in quiet:
            q.setLevel(logging.WARNING)
        with tempfile.TemporaryDirectory(prefix="fer-smoke-") as tmp:
            trainer = L.Trainer(fast_dev_run=SMOKE_BATCHES, accelerator="cpu",
                                precision=resolve_precision(cfg.precision), callbacks=callbacks,
                                default_root_dir=tmp, logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False)
            trainer.fit(module, datamodule=dm)
    finally:
        for q, level in zip(quiet, levels):
            q.setLevel(level)
    m = trainer.callback_metrics
    loss = float(m["train_loss"])
    if not np.isfinite(loss):
        raise RuntimeError(f"{cfg.name}: training loss is {loss} after {SMOKE_BATCHES} batches")
    return {"name": cfg.name, "backbone": cfg.model.backbone, "parameters": count_parameters(backbone),
            "batch_size": bs, "train_batches": SMOKE_BATCHES, "val_batches": SMOKE_BATCHES, "train_loss": loss,
            "val_acc": float(m["val_acc"]), "seconds": round(time.time() - t0, 1)}


def train(cfg: TrainConfig) -> dict:
    """Fit the recipe, evaluate the best checkpoint on validation (and test, unless ``evaluate_test`` is off),
    optionally export ONNX.

    With ``optim.budget_cpu_min`` the fit stops once training has spent that much CPU
    (:class:`~fer_pipeline.training.budget.CPUBudget`) and the metrics get a ``budget`` block (its
    :meth:`~fer_pipeline.training.budget.CPUBudget.summary`).

    Returns:
        A dict of metrics (``val`` and, with ``evaluate_test``, ``test`` blocks with accuracy and macro-F1), also
        written to ``<out_dir>/metrics.json``.

    Raises:
        FileNotFoundError: the dataset or ``init_from`` is missing.
    """
    import sys

    import lightning as L
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint

    from fer_pipeline.training.backbones import count_parameters
    from fer_pipeline.training.budget import CPUBudget
    from fer_pipeline.training.evaluate import evaluate_module
    from fer_pipeline.training.module import EmotionClassifier, FERDataModule

    _check_inputs(cfg)
    torch.set_num_threads(cfg.threads)
    L.seed_everything(cfg.seed, workers=True)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(json.loads(cfg.model_dump_json())))

    tr, va, te = load_splits(cfg.data)
    tr = with_soft_targets(tr, cfg.data)
    from fer_pipeline.training.oversample import oversample

    tr = oversample(tr, cfg.imbalance.oversample, cfg.seed)
    backbone, module = _build_module(cfg, tr)
    logger.info("%s: %d parameters, train %d, val %d, test %d", cfg.model.backbone, count_parameters(backbone),
                len(tr), len(va), len(te))
    dm = FERDataModule(tr, va, cfg.optim.batch_size, cfg.imbalance.sampler, cfg.data.uses_soft, cfg.seed)
    ckpt = ModelCheckpoint(dirpath=out, filename="best", monitor="val_acc", mode="max", save_last=True)
    budget = CPUBudget(cfg.optim.budget_cpu_min) if cfg.optim.budget_cpu_min else None
    trainer = L.Trainer(max_epochs=cfg.optim.epochs, accelerator="cpu",
                        precision=resolve_precision(cfg.precision), val_check_interval=cfg.optim.val_check_interval,
                        callbacks=[ckpt] + ([budget] if budget else []), default_root_dir=out,
                        logger=L.pytorch.loggers.CSVLogger(out, name="logs"),
                        enable_progress_bar=sys.stderr.isatty(), log_every_n_steps=50, deterministic=False)
    last = out / "last.ckpt"
    t0, c0 = time.time(), time.process_time()
    trainer.fit(module, datamodule=dm, ckpt_path=str(last) if last.exists() else None)
    train_s, train_cpu_s = time.time() - t0, time.process_time() - c0

    best = EmotionClassifier.load_from_checkpoint(ckpt.best_model_path, backbone=backbone, map_location="cpu")
    best.eval()
    metrics = {
        "name": cfg.name,
        "parameters": count_parameters(backbone),
        "train_seconds_this_run": round(train_s, 1),
        "train_cpu_seconds_this_run": round(train_cpu_s, 1),
        "best_checkpoint": str(ckpt.best_model_path),
        "best_val_acc_in_training": None if ckpt.best_model_score is None else float(ckpt.best_model_score),
        "val": evaluate_module(best, va),
    }
    if cfg.evaluate_test:
        metrics["test"] = evaluate_module(best, te)
        metrics["test_no_tta"] = evaluate_module(best, te, tta=False)
    if budget:
        metrics["budget"] = budget.summary(trainer)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    if cfg.evaluate_test:
        logger.info("val acc %.4f, test acc %.4f (macro-F1 %.4f)", metrics["val"]["accuracy"],
                    metrics["test"]["accuracy"], metrics["test"]["macro_f1"])
    else:
        logger.info("val acc %.4f (macro-F1 %.4f); test not evaluated (evaluate_test: false)",
                    metrics["val"]["accuracy"], metrics["val"]["macro_f1"])
    if cfg.export_onnx:
        from fer_pipeline.training.export import export_onnx

        calib = None
        if cfg.export_int8:
            calib = tr.images[np.random.default_rng(cfg.seed + 1).permutation(len(tr))[:1024]]
        export_onnx(best, cfg, metrics, Path(cfg.export_onnx), tta=cfg.export_tta, int8_calib=calib,
                    eval_sets={"val": va, "test": te} if cfg.evaluate_test else {"val": va})
    return metrics
