"""LightningModule and LightningDataModule for 48x48 facial-expression classification."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset, WeightedRandomSampler

from fer_pipeline.training.augment import augment_batch, mix_batch
from fer_pipeline.training.data import ImageSet

logger = logging.getLogger(__name__)

SCHEDULES = ("onecycle", "cosine", "constant")
"""Learning-rate schedules of :class:`EmotionClassifier` (``optim.schedule`` in the recipes)."""

# torch.optim.lr_scheduler.OneCycleLR's defaults, which the step-driven schedule uses
_ONECYCLE_PCT_START, _ONECYCLE_DIV, _ONECYCLE_FINAL_DIV = 0.3, 25.0, 1e4
_ONECYCLE_MOMENTUM = (0.85, 0.95)  # (base, max): OneCycleLR cycles SGD's momentum between them


def schedule_at(schedule: str, progress: float) -> tuple[float, float | None]:
    """The learning-rate factor (of the peak ``lr``) and the SGD momentum at a point of a run.

    The same shapes as the step-driven schedulers (``OneCycleLR`` with its defaults: cosine warm-up from lr/25 over
    the first 30%, cosine annealing to lr/25e4, momentum cycled 0.95 -> 0.85 -> 0.95; ``CosineAnnealingLR`` to 0;
    constant), as a function of the fraction of the run done, so that a run bounded by a CPU budget
    (:class:`fer_pipeline.training.budget.CPUBudget`) gets the whole schedule within its budget.

    Args:
        schedule: one of :data:`SCHEDULES`.
        progress: fraction of the run done, clipped to [0, 1].

    Returns:
        ``(lr_factor, momentum)``; ``momentum`` is ``None`` where the schedule leaves it alone (cosine, constant).

    Raises:
        ValueError: unknown schedule.
    """
    p = min(max(float(progress), 0.0), 1.0)

    def cos_anneal(start: float, end: float, q: float) -> float:
        return end + (start - end) / 2.0 * (math.cos(math.pi * q) + 1.0)

    if schedule == "onecycle":
        lo, hi = _ONECYCLE_MOMENTUM
        if p <= _ONECYCLE_PCT_START:
            q = p / _ONECYCLE_PCT_START
            return cos_anneal(1.0 / _ONECYCLE_DIV, 1.0, q), cos_anneal(hi, lo, q)
        q = (p - _ONECYCLE_PCT_START) / (1.0 - _ONECYCLE_PCT_START)
        return cos_anneal(1.0, 1.0 / (_ONECYCLE_DIV * _ONECYCLE_FINAL_DIV), q), cos_anneal(lo, hi, q)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * p)), None
    if schedule == "constant":
        return 1.0, None
    raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")


@dataclass
class AugmentConfig:
    """Switches of :func:`fer_pipeline.training.augment.augment_batch` and of
    :func:`~fer_pipeline.training.augment.mix_batch` (MixUp / CutMix; 0 / False turns a transform off)."""

    flip: bool = True
    max_rotate_deg: float = 10.0
    max_shift: float = 0.1
    scale: tuple[float, float] = (0.9, 1.1)
    erasing_p: float = 0.5
    erasing_size: int = 12
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mix_p: float = 1.0


def class_weights(counts: np.ndarray, mode: str) -> torch.Tensor | None:
    """Per-class loss weights from class counts.

    Args:
        counts: ``(C,)`` images per class.
        mode: ``"none"`` (returns None), ``"inverse"`` (N / (C * n_c)) or ``"sqrt"`` (square root of inverse,
            a milder reweighting).

    Raises:
        ValueError: unknown mode.
    """
    if mode == "none":
        return None
    counts = np.maximum(counts.astype(np.float64), 1.0)
    w = counts.sum() / (len(counts) * counts)
    if mode == "sqrt":
        w = np.sqrt(w)
    elif mode != "inverse":
        raise ValueError(f"unknown class weight mode {mode!r}; expected none, inverse or sqrt")
    return torch.tensor(w / w.mean(), dtype=torch.float32)


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images))[:, None]  # (N,1,H,W) uint8


class FERDataModule(L.LightningDataModule):
    """Serves in-memory :class:`ImageSet` splits as uint8 batches; augmentation runs batched in the module.

    Args:
        train, val: the training and validation splits (e.g. FER2013 train and PublicTest).
        batch_size: images per step.
        sampler: ``"none"`` or ``"weighted"`` (WeightedRandomSampler with inverse class frequency: oversampling).
        soft_labels: feed ``train.soft`` (FER+ vote distributions) instead of hard labels.
        seed: seeds the sampler.
        val_batch_size: images per validation batch.
    """

    def __init__(self, train: ImageSet, val: ImageSet, batch_size: int = 128, sampler: str = "none",
                 soft_labels: bool = False, seed: int = 0, val_batch_size: int = 512) -> None:
        super().__init__()
        if sampler not in ("none", "weighted"):
            raise ValueError(f"sampler must be none or weighted, got {sampler!r}")
        if soft_labels and train.soft is None:
            raise ValueError("soft_labels needs a dataset with vote distributions (FER+)")
        self.train_set, self.val_set = train, val
        self.batch_size, self.sampler, self.soft_labels, self.seed = batch_size, sampler, soft_labels, seed
        self.val_batch_size = val_batch_size

    def train_dataloader(self) -> DataLoader:
        t = self.train_set
        y = torch.from_numpy(t.soft) if self.soft_labels else torch.from_numpy(t.labels)
        ds = TensorDataset(_to_tensor(t.images), y)
        g = torch.Generator().manual_seed(self.seed)
        if self.sampler == "weighted":
            counts = t.class_counts()
            w = 1.0 / np.maximum(counts, 1)
            sampler = WeightedRandomSampler(torch.from_numpy(w[t.labels]), len(t), replacement=True, generator=g)
            return DataLoader(ds, batch_size=self.batch_size, sampler=sampler, drop_last=True)
        return DataLoader(ds, batch_size=self.batch_size, shuffle=True, generator=g, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        v = self.val_set
        return DataLoader(TensorDataset(_to_tensor(v.images), torch.from_numpy(v.labels)),
                          batch_size=self.val_batch_size)


class EmotionClassifier(L.LightningModule):
    """Expression classifier over an injected backbone.

    Inputs are ``(B,1,48,48) uint8`` grayscale batches; the module scales to [0,1], standardises with ``mean``/``std``
    (of the training set), augments during training and evaluates with horizontal-flip test-time augmentation
    (softmax averaged over the image and its mirror).

    Optimiser: SGD with Nesterov momentum and, by ``schedule``, a OneCycle learning-rate schedule (Smith & Topin 2019)
    over the whole run, a cosine decay from ``lr`` to 0, or a constant ``lr`` (fine-tuning with weight averaging,
    as in SWA, Izmailov et al. 2018); loss: cross-entropy with label smoothing and optional class weights, or soft
    cross-entropy on vote distributions when the targets are ``(B,C)`` floats; a backbone whose training output is
    ``(B, K, C)`` (the branches of :func:`~fer_pipeline.training.backbones.esr_vgg`) gets the sum of one loss per
    branch.

    With ``budget_schedule`` the optimiser gets no step-driven scheduler: the learning rate (and OneCycle's momentum)
    follow :func:`schedule_at` of the fraction of the run done, which a
    :class:`~fer_pipeline.training.budget.CPUBudget` callback passes to :meth:`set_progress` before every batch.

    With ``ema_decay`` in (0, 1) an exponential moving average of the weights and BN statistics
    (``torch.optim.swa_utils.AveragedModel``, updated after every optimiser step) is what validation, evaluation and
    export use (:attr:`inference_backbone`); the raw weights are only trained.
    """

    def __init__(self, backbone: nn.Module, labels: tuple[str, ...], mean: float, std: float, lr: float = 0.1,
                 momentum: float = 0.9, weight_decay: float = 5e-4, label_smoothing: float = 0.1,
                 loss_weights: torch.Tensor | None = None, augment: dict | None = None,
                 seed: int = 0, ema_decay: float = 0.0, schedule: str = "onecycle",
                 budget_schedule: bool = False) -> None:
        super().__init__()
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        self.save_hyperparameters(ignore=["backbone", "loss_weights"])
        self.backbone = backbone.to(memory_format=torch.channels_last)
        self.ema = None
        if ema_decay > 0:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema = AveragedModel(self.backbone, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True)
            self.ema.requires_grad_(False)
        self.labels = tuple(labels)
        self.mean, self.std = float(mean), float(std)
        self.augment = AugmentConfig(**(augment or {}))
        self.register_buffer("loss_weights", loss_weights if loss_weights is not None else torch.ones(len(labels)))
        self._gen = torch.Generator().manual_seed(seed)
        self._val_probs: list[torch.Tensor] = []
        self._val_targets: list[torch.Tensor] = []

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """``(B,1,H,W) uint8`` -> standardised float32, channels-last."""
        x = x.float().div_(255.0)
        return ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # standardised input -> logits
        return self.backbone(x)

    @property
    def inference_backbone(self) -> nn.Module:
        """The weights to evaluate and export: the EMA copy when ``ema_decay`` > 0, else the trained backbone."""
        return self.ema.module if self.ema is not None else self.backbone

    def predict_proba(self, x_uint8: torch.Tensor, tta: bool = True) -> torch.Tensor:
        """``(B,1,H,W) uint8`` -> ``(B,C) float32`` probabilities (flip-TTA averaged when ``tta``)."""
        net = self.inference_backbone
        x = self.normalise(x_uint8)
        p = F.softmax(net(x).float(), 1)
        if tta:
            p = (p + F.softmax(net(x.flip(-1)).float(), 1)) / 2
        return p

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self.ema is not None:
            self.ema.update_parameters(self.backbone)

    def training_step(self, batch, batch_idx):
        x, y = batch
        a = self.augment
        x = augment_batch(self.normalise(x), self._gen, a.flip, a.max_rotate_deg, a.max_shift, tuple(a.scale),
                          a.erasing_p, a.erasing_size).contiguous(memory_format=torch.channels_last)
        if a.mixup_alpha > 0 or a.cutmix_alpha > 0:
            if not y.dtype.is_floating_point:
                y = F.one_hot(y, len(self.labels)).float()
            x, y = mix_batch(x, y, self._gen, a.mixup_alpha, a.cutmix_alpha, a.mix_p)
        logits = self(x).float()
        if logits.ndim == 3:  # (B, K, C): the branches of a shared-representation ensemble, one loss each
            loss = sum(self._loss(logits[:, k], y) for k in range(logits.shape[1]))
        else:
            loss = self._loss(logits, y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        hp = self.hparams
        if y.dtype.is_floating_point:  # soft targets (FER+ votes, a teacher's probabilities, mixed batches)
            target = y * (1 - hp.label_smoothing) + hp.label_smoothing / y.shape[1]
            return -(target * F.log_softmax(logits, 1) * self.loss_weights).sum(1).mean()
        return F.cross_entropy(logits, y, weight=self.loss_weights, label_smoothing=hp.label_smoothing)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self._val_probs.append(self.predict_proba(x))
        self._val_targets.append(y)

    def on_validation_epoch_end(self) -> None:
        from sklearn.metrics import f1_score

        p = torch.cat(self._val_probs).argmax(1).cpu().numpy()
        y = torch.cat(self._val_targets).cpu().numpy()
        self._val_probs.clear()
        self._val_targets.clear()
        acc = float((p == y).mean())
        f1 = float(f1_score(y, p, average="macro", labels=list(range(len(self.labels))), zero_division=0))
        self.log("val_acc", acc, prog_bar=True)
        self.log("val_macro_f1", f1, prog_bar=True)
        logger.info("epoch %d: val_acc %.4f val_macro_f1 %.4f", self.current_epoch, acc, f1)

    def set_progress(self, progress: float) -> None:
        """Set the learning rate and momentum of every parameter group to the schedule's values at ``progress``
        (fraction of the run done, [0, 1]; see :func:`schedule_at`). Only for ``budget_schedule`` runs.

        Raises:
            RuntimeError: the module was built without ``budget_schedule`` (a step-driven scheduler owns the lr).
        """
        hp = self.hparams
        if not hp.get("budget_schedule", False):
            raise RuntimeError("set_progress needs budget_schedule=True (a step-driven scheduler sets the lr)")
        factor, momentum = schedule_at(hp.get("schedule", "onecycle"), progress)
        opts = self.trainer.optimizers
        for group in opts[0].param_groups:
            group["lr"] = hp.lr * factor
            if momentum is not None:
                group["momentum"] = momentum

    def configure_optimizers(self):
        hp = self.hparams
        decay, no_decay = [], []
        for n, p in self.backbone.named_parameters():
            (no_decay if p.ndim <= 1 else decay).append(p)
        opt = torch.optim.SGD([{"params": decay, "weight_decay": hp.weight_decay},
                               {"params": no_decay, "weight_decay": 0.0}],
                              lr=hp.lr, momentum=hp.momentum, nesterov=True)
        schedule = hp.get("schedule", "onecycle")
        if hp.get("budget_schedule", False):  # lr and momentum set by set_progress before every batch
            for group in opt.param_groups:
                factor, momentum = schedule_at(schedule, 0.0)
                group["lr"] = hp.lr * factor
                if momentum is not None:
                    group["momentum"] = momentum
            return opt
        total = int(self.trainer.estimated_stepping_batches)
        if schedule == "onecycle":
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=hp.lr, total_steps=total)
        elif schedule == "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
        else:
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
