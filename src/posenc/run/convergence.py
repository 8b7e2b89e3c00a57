"""Training-loss curves and the convergence flag every run records.

A budget is only trustworthy if the run has stopped improving when it ends: the PosENet readout on
a trained VGG16 scores H SPC .05 after 60 SGD steps and .83 after 240 (issue 6), and nothing in the
metrics says which of the two a short run was. So every run records its per-step training loss
(``figures/loss_curve.png``, and ``train/loss_curve/*`` in ``metrics.json``), and is flagged:

**Criterion (posenc's, documented in the README).** Compare the mean of a loss over the last
``window`` of the run with its mean over the window before (windows of at least 3 validation checks
or 20 training steps); the run is *converged* when the relative change of the total loss and of
every part (one per target map) is at most ``tol`` either way: a held-out loss that still rises by
more (measured: a trained tiny backbone's HS readout drifting from SPC .71 to .34 when the budget
doubled, its held-out loss up 12%) depends on the budget as much as one that still falls. Every part is
judged: on a trained tiny backbone the total had levelled off at 1000 steps while G's SPC still
doubled with twice the steps.

    |mean(L[n-2w:n-w]) - mean(L[n-w:n])| / mean(L[n-2w:n-w]) <= tol,

or the last window's mean is at most the task's ``converged_loss`` (classification tasks: a
cross-entropy of 0.01 nats, i.e. ~99% confidence on every sample, where the relative criterion
would wait forever for a loss that keeps halving).

Which loss: the *held-out* one when the run has a validation set (``data.num_val`` crops of the
training photos, evaluated every ``trainer.val_check_interval`` steps), else the training loss.
Measured on VGG16 (issue 6), the readout's training loss keeps falling long after the test SPC has
settled (it fits its 256 crops ever closer), so a training-loss plateau never arrives, while the
held-out loss levels off when more steps stop helping. With the lr drop at 2/3, both final windows
(``window <= 1/6``) lie in the low-lr phase, where checks are steady; at the full lr the held-out
loss jumps by +-50% from check to check (BatchNorm's running statistics chase a fast-moving
readout), so that phase cannot be judged on it. For the training loss, which has no such jumps,
the end of every constant-lr phase is checked: after an lr drop the loss flattens whether or not
the readout had finished learning. A run shorter than two windows is "too short to tell" and not
converged.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn

from posenc.config.rules import Rule
from posenc.errors import PosencError
from posenc.metrics.convergence import (  # noqa: F401 - the pure criterion, re-exported for its users
    CURVE_POINTS,
    MIN_VAL_WINDOW,
    MIN_WINDOW,
    constant_lr_phases,
    convergence,
    convergence_windows,
    downsample,
    relative_decrease,
    window_steps,
)

log = logging.getLogger(__name__)


class TrainingDiverged(PosencError):
    """A non-finite training loss: nothing the run would measure after it is valid."""

    def __init__(self, step: int, value: float, name: str = "loss") -> None:
        self.step = step
        super().__init__(
            f"training diverged: {name} is {value} at step {step}; valid: a finite loss "
            "(lower task.optimizer.lr, or check the data)"
        )


class LossCurve(Callback):
    """Record every optimizer step's training loss (``outputs["loss"]`` and the named parts in
    ``outputs["losses"]``) and every validation check's ``val/loss*`` metrics, keep them in
    checkpoints (a resumed run has the whole curve), and at the end of training write
    ``figures/loss_curve.png`` and the flag of :func:`convergence` (on the validation curves when
    there are any; ``summary``, merged into ``metrics.json``); warn when it has not converged."""

    CHECK_EVERY_CUDA = 25  # steps between finiteness checks on a GPU (each one waits for the device)

    def __init__(
        self, window: Annotated[float, Rule(gt=0, le=0.5)] = 0.1, tol: Annotated[float, Rule(gt=0)] = 0.02
    ) -> None:
        self.window, self.tol = window, tol
        self._finite: torch.Tensor | None = None  # all losses since the last check finite (no sync per step)
        self.history: dict[str, list[torch.Tensor | float]] = {}
        self.lrs: list[float] = []
        self.val: dict[str, list[float]] = {}  # "step", "lr", and one list per val/loss* metric
        self.summary: dict[str, Any] = {}

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not isinstance(outputs, Mapping) or "loss" not in outputs:
            return
        parts = {"loss": outputs["loss"], **{f"loss_{k}": v for k, v in outputs.get("losses", {}).items()}}
        for name, value in parts.items():
            self.history.setdefault(name, []).append(value.detach())  # no device sync per step
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else math.nan)
        finite = torch.isfinite(outputs["loss"].detach()).all()
        self._finite = finite if self._finite is None else self._finite & finite
        on_gpu = outputs["loss"].device.type != "cpu"
        if not on_gpu or len(self.history["loss"]) % self.CHECK_EVERY_CUDA == 0:
            self.check_finite(trainer)

    def check_finite(self, trainer: L.Trainer) -> None:
        """Raise :class:`TrainingDiverged` at the first non-finite loss (its 1-based step)."""
        if self._finite is None or bool(self._finite):
            self._finite = None
            return
        losses = self.history["loss"]
        first = next(i for i, v in enumerate(losses) if not math.isfinite(float(v)))
        offset = trainer.global_step - len(losses)  # steps recorded before this process (none: the curve is whole)
        raise TrainingDiverged(offset + first + 1, float(losses[first]))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """After Lightning has reduced the epoch's ``val/*`` metrics into ``callback_metrics``."""
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        losses = {
            k.removeprefix("val/"): float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/loss")
        }
        if not losses:
            return
        point = {"step": trainer.global_step, "lr": self.lrs[-1] if self.lrs else math.nan, **losses}
        for key, value in point.items():
            self.val.setdefault(key, []).append(value)

    def val_curves(self) -> dict[str, list[float]]:
        return {k: v for k, v in self.val.items() if k not in ("step", "lr")}

    def curves(self) -> dict[str, list[float]]:
        return {name: [float(v) for v in values] for name, values in self.history.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.curves(), "lrs": list(self.lrs), "val": {k: list(v) for k, v in self.val.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = {k: list(v) for k, v in state_dict.get("history", {}).items()}
        self.lrs = list(state_dict.get("lrs", []))
        self.val = {k: list(v) for k, v in state_dict.get("val", {}).items()}

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check_finite(trainer)
        curves, val = self.curves(), self.val_curves()
        floor = getattr(pl_module, "converged_loss", None)  # a task's "nothing left to learn" loss
        if val:
            # the end of the run only: at the full lr the held-out loss jumps by +-50% from check to check
            self.summary = convergence(val, None, self.window, self.tol, MIN_VAL_WINDOW, prefix="val", floor=floor)
            self.summary.update({f"val/loss_curve/{k}": v for k, v in val.items()})
            self.summary["val/loss_curve/step"] = self.val["step"]
        else:
            self.summary = convergence(curves, self.lrs, self.window, self.tol, floor=floor)
        self.summary["train/converged_on"] = "val" if val else "train"
        for name, values in curves.items():
            steps, means = downsample(values)
            self.summary[f"train/loss_curve/{name}"] = means
            self.summary[f"train/{name}/final"] = means[-1] if means else None
        self.summary["train/loss_curve/step"] = downsample(curves.get("loss", []))[0]
        self.summary["train/steps"] = len(curves.get("loss", []))
        if not trainer.is_global_zero or not curves:
            return
        from posenc.viz.figures import save_figure
        from posenc.viz.loss_curve import loss_curve_figure

        val_points = (self.val["step"], val) if val else None
        windows = convergence_windows(curves, self.window, val_points, self.lrs)
        save_figure(
            loss_curve_figure(
                curves, windows, val_points, tol=self.tol, floor=floor, converged=self.summary["train/converged"]
            ),
            Path(trainer.default_root_dir) / "figures" / "loss_curve.png",
        )
        if not self.summary["train/converged"]:
            worst = max(
                (k for k in self.summary if k.endswith("/rel_decrease")),
                key=lambda k: math.inf if self.summary[k] is None else abs(self.summary[k]),
            )
            change = self.summary[worst]
            said = (
                "too few steps to tell"
                if change is None
                else f"{'fell' if change > 0 else 'rose'} {100 * abs(change):.1f}%"
            )
            log.warning(
                "training has not converged: %s %s %s over a window of %d%% of %d steps at the end of an lr "
                "phase (tolerance %.0f%%); raise the budget (task.max_steps / trainer.max_epochs)",
                worst.split("/")[0],
                worst.split("/")[1],
                said,
                round(100 * self.window),
                len(curves["loss"]),
                100 * self.tol,
            )
