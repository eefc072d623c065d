"""A fixed CPU budget for a training run (``optim.budget_cpu_min`` in the recipes), as a Lightning callback.

The budget is CPU time of the training process (:func:`time.process_time`: every thread of the process, user and
system), not wall time, so that runs compared under the same budget are compared fairly on a machine that other work
shares: a run that waits for a core does not spend its budget waiting. Only training counts: the clock is read at
the start and end of every validation pass and the CPU spent in it is booked apart (``val_cpu_s``), so the number of
validation points a recipe asks for does not take training away from it. Data loading, the optimiser and checkpoint
writing between training batches count as training.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from lightning.pytorch.callbacks import Callback


class CPUBudget(Callback):
    """Stop ``Trainer.fit`` once training has spent ``budget_cpu_min`` CPU minutes; drive the lr schedule by it.

    The clock is read after every training batch (one ``clock_gettime``, microseconds; a batch costs 0.3-3 CPU s
    here) and at the end of every epoch; once the training CPU reaches the budget, ``trainer.should_stop`` is set,
    Lightning runs a last validation pass (so the last weights are a selection candidate too) and ends the fit.
    The counters are saved in the checkpoints (:meth:`state_dict`), so a resumed run continues the same budget.

    Before every batch, a module with a ``set_progress(p)`` method and ``budget_schedule`` on (see
    :class:`~fer_pipeline.training.module.EmotionClassifier`) gets ``p`` = the larger of the budget spent and the
    steps done out of ``max_epochs`` worth, in [0, 1]: the whole learning-rate schedule fits into the budget (or
    into the epochs, whichever ends first).

    Args:
        budget_cpu_min: CPU minutes of training (> 0).
        clock: the CPU clock, seconds (default :func:`time.process_time`).
        wall: the wall clock, seconds (default :func:`time.monotonic`).

    Raises:
        ValueError: ``budget_cpu_min`` <= 0.
    """

    def __init__(self, budget_cpu_min: float, clock: Callable[[], float] | None = None,
                 wall: Callable[[], float] | None = None) -> None:
        if not budget_cpu_min > 0:
            raise ValueError(f"budget_cpu_min must be > 0, got {budget_cpu_min!r}")
        self.budget_s = float(budget_cpu_min) * 60.0
        self.clock, self.wall = clock or time.process_time, wall or time.monotonic
        self.train_cpu_s = 0.0  # CPU seconds spent training (over all resumed sessions)
        self.val_cpu_s = 0.0  # CPU seconds spent in validation passes
        self.fit_wall_s = 0.0  # wall seconds of the fit (training + validation)
        self.stopped_by_budget = False
        self.history: list[dict] = []  # one record per validation pass
        self._cpu: float | None = None
        self._wall: float | None = None

    # --- persistence in the checkpoints ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"budget_s": self.budget_s, "train_cpu_s": self.train_cpu_s, "val_cpu_s": self.val_cpu_s,
                "fit_wall_s": self.fit_wall_s, "stopped_by_budget": self.stopped_by_budget,
                "history": list(self.history)}

    def load_state_dict(self, state: dict) -> None:
        self.train_cpu_s = float(state.get("train_cpu_s", 0.0))
        self.val_cpu_s = float(state.get("val_cpu_s", 0.0))
        self.fit_wall_s = float(state.get("fit_wall_s", 0.0))
        self.stopped_by_budget = bool(state.get("stopped_by_budget", False))
        self.history = list(state.get("history", []))

    # --- accounting ------------------------------------------------------------------------------------------------
    @property
    def spent(self) -> float:
        """Fraction of the budget spent, >= 0 (may pass 1 by the last batch's cost)."""
        return self.train_cpu_s / self.budget_s

    def _tick(self) -> tuple[float, float]:
        """CPU and wall seconds since the last tick (0, 0 before the fit starts)."""
        cpu, wall = self.clock(), self.wall()
        d = (0.0, 0.0) if self._cpu is None else (cpu - self._cpu, wall - self._wall)
        self._cpu, self._wall = cpu, wall
        self.fit_wall_s += d[1]
        return d

    def progress(self, trainer) -> float:
        """The fraction of the run done, [0, 1]: the larger of the budget spent and the steps done."""
        steps = trainer.estimated_stepping_batches
        by_steps = trainer.global_step / steps if steps and steps != float("inf") else 0.0
        return min(1.0, max(self.spent, by_steps))

    def _check(self, trainer) -> None:
        if self.train_cpu_s >= self.budget_s:
            self.stopped_by_budget = True
            trainer.should_stop = True

    def on_train_start(self, trainer, pl_module) -> None:
        self._tick()
        self._check(trainer)  # a resumed run whose budget is spent trains no further batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if getattr(pl_module, "hparams", {}).get("budget_schedule", False):
            pl_module.set_progress(self.progress(trainer))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.train_cpu_s += self._tick()[0]
        self._check(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.train_cpu_s += self._tick()[0]
        self._check(trainer)

    def on_validation_start(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or self._cpu is None:
            return
        self.train_cpu_s += self._tick()[0]

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or self._cpu is None:
            return
        self.val_cpu_s += self._tick()[0]
        m = trainer.callback_metrics
        steps_per_epoch = max(int(trainer.num_training_batches or 1), 1)
        self.history.append({
            "step": int(trainer.global_step),
            "epochs": round(trainer.global_step / steps_per_epoch, 3),
            "train_cpu_min": round(self.train_cpu_s / 60, 2),
            "val_acc": float(m["val_acc"]) if "val_acc" in m else None,
            "val_macro_f1": float(m["val_macro_f1"]) if "val_macro_f1" in m else None,
        })

    def summary(self, trainer) -> dict:
        """The run's budget figures: ``budget_cpu_min``, ``train_cpu_min`` (spent training), ``val_cpu_min``,
        ``fit_wall_min`` (training + validation, over all resumed sessions), ``stopped_by_budget``, ``global_step``,
        ``epochs_reached`` (optimiser steps / steps per epoch, fractional) and ``history`` (per validation pass:
        step, epochs, train_cpu_min, val_acc, val_macro_f1)."""
        steps_per_epoch = max(int(trainer.num_training_batches or 1), 1)
        return {"budget_cpu_min": round(self.budget_s / 60, 3), "train_cpu_min": round(self.train_cpu_s / 60, 3),
                "val_cpu_min": round(self.val_cpu_s / 60, 3), "fit_wall_min": round(self.fit_wall_s / 60, 3),
                "stopped_by_budget": self.stopped_by_budget, "global_step": int(trainer.global_step),
                "epochs_reached": round(trainer.global_step / steps_per_epoch, 3), "history": list(self.history)}
