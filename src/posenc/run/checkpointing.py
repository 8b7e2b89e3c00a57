"""Checkpoints that survive any ending: atomic writes (a kill or a full disk never leaves half a
file, and the previous checkpoint stays intact), loads that never run code (``weights_only=True``),
and a save schedule of posenc's own (every N optimizer steps, every epoch, on an interruption and
at the end of training) that does not depend on Lightning's top-k bookkeeping.

Lightning's ``ModelCheckpoint`` with ``save_top_k=0`` writes ``last.ckpt`` only when training ends
(Lightning 2.6), so a run killed mid-training had nothing to resume from; :class:`RunCheckpoint`
writes one file, ``checkpoints/last.ckpt``, on its schedule, through :class:`AtomicCheckpointIO`.
A resumed run continues from the exact batch, mid-epoch or at an epoch's end, as if never stopped: the
train loaders are resumable (:class:`posenc.data.datamodule.ResumableLoader`), the checkpoint holds the
RNG states, and it is written only where Lightning resumes exactly (:class:`RunCheckpoint`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.trainer.states import TrainerFn

from posenc.config.rules import Rule
from posenc.io import atomic_save, safe_load
from posenc.run.interruption import active as active_interruption

LAST = "last.ckpt"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO with :func:`atomic_save` and :func:`safe_load`; every checkpoint the
    Trainer writes or reads (``trainer.fit(ckpt_path=...)``) goes through it."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        atomic_save(checkpoint, path)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        return safe_load(path, map_location=map_location or "cpu")


def rng_state(module: torch.nn.Module) -> dict[str, Any]:
    """The global torch RNG and every ``torch.Generator`` a module of the task owns
    (``location_cls``'s shift augmentation), keyed by where it lives."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    for name, sub in module.named_modules():
        for attr, value in vars(sub).items():
            if isinstance(value, torch.Generator):
                state[f"gen:{name}:{attr}"] = value.get_state()
    return state


def set_rng_state(module: torch.nn.Module, state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    subs = dict(module.named_modules())
    for key, value in state.items():
        if key.startswith("gen:"):
            _, name, attr = key.split(":", 2)
            generator = getattr(subs.get(name), attr, None)
            if isinstance(generator, torch.Generator):
                generator.set_state(value)


def validation_follows(trainer: L.Trainer) -> bool:
    """Whether Lightning runs a validation pass right after the training batch that just ended (asked
    in ``on_train_batch_end``: Lightning's own test, on the state it reads when it decides)."""
    fit = trainer.fit_loop
    if fit._data_fetcher is None or not fit.epoch_loop._should_check_val_fx(fit._data_fetcher):
        return False
    val = fit.epoch_loop.val_loop
    if val._combined_loader is None:  # not set up yet: Lightning would now, as its pass starts; so do we, as it does
        trainer.validating = True
        val.setup_data()
        trainer.training = True
    return not val.skip  # a pass over no batches is no pass (no on_validation_end)


class RunCheckpoint(Callback):
    """Write ``<dirpath>/last.ckpt`` every ``every_n_steps`` optimizer steps (0: never by steps),
    every ``every_n_epochs`` epochs (0: never by epochs), when the run is interrupted (SIGTERM /
    SIGINT, :mod:`posenc.run.interruption`) and when training ends. The checkpoint also holds the RNG
    states, so that a resumed run draws what the uninterrupted one would have; ``resumed_from``
    is the global step a resumed run started at (None for a fresh run).

    Every checkpoint during training is written once a batch is wholly done: in ``on_train_batch_end``,
    or, when a validation pass follows the batch, in ``on_validation_end`` after it; an epoch's
    checkpoint is that of its last batch. Those are the two points Lightning resumes from exactly
    (it completes the batch, skips the validation already done, and at an epoch's last batch moves
    on to the next epoch). Not ``on_train_epoch_end``: with ``max_steps`` Lightning resumes such a
    checkpoint inside the finished epoch (it trains the next epoch's first batch as one more batch
    of it, then skips the rest of that epoch); nor before a validation pass, which a resumed run
    skips as done."""

    def __init__(
        self,
        dirpath: str,
        every_n_steps: Annotated[int, Rule(ge=0)] = 200,
        every_n_epochs: Annotated[int, Rule(ge=0)] = 1,
    ) -> None:
        self.dirpath = Path(dirpath)
        self.every_n_steps, self.every_n_epochs = every_n_steps, every_n_epochs
        self.resumed_from: int | None = None
        self._rng: dict[str, Any] | None = None  # the states a resumed run restores when training starts
        self._module: torch.nn.Module | None = None
        self._saved_step = -1
        self._after_validation = False  # a checkpoint is due once the validation pass under way ends

    @property
    def path(self) -> Path:
        return self.dirpath / LAST

    def save(self, trainer: L.Trainer) -> None:
        """Write ``last.ckpt`` now, unless it already holds this step."""
        if trainer.global_step == self._saved_step or trainer.sanity_checking:
            return
        trainer.save_checkpoint(self.path, False)  # the whole training state (optimizer, loops, callbacks)
        self._saved_step = trainer.global_step

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._module = pl_module

    def state_dict(self) -> dict[str, Any]:
        """Read by Lightning before any ``on_save_checkpoint`` hook: the RNG states of now."""
        return {"rng": rng_state(self._module)} if self._module is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._rng = state_dict.get("rng")

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        """Read before Lightning restores its loops: an epoch's checkpoint of an earlier posenc, written in
        ``on_train_epoch_end`` (the epoch counted as processed, not yet as completed), becomes what this
        one writes for it, the checkpoint of the epoch's last batch, so that it too resumes exactly."""
        fit = (checkpoint.get("loops") or {}).get("fit_loop") or {}
        epochs, batches = fit.get("epoch_progress"), fit.get("epoch_loop.batch_progress")
        stepped = fit.get("epoch_loop.state_dict") or {}
        if not (epochs and batches and "_batches_that_stepped" in stepped and batches.get("is_last_batch")):
            return
        if epochs["total"]["processed"] != epochs["total"]["completed"] + 1:
            return
        for part in ("total", "current"):
            epochs[part]["processed"] -= 1
            batches[part]["completed"] -= 1  # as in on_train_batch_end, before Lightning counts the batch done
        stepped["_batches_that_stepped"] -= 1

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint["posenc"] = {"task": type(pl_module).__name__, "global_step": trainer.global_step}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        interruption = active_interruption()
        if interruption is not None:  # from here a signal waits for the end of the current batch
            interruption.trainer, interruption.defer = trainer, True
        if trainer.global_step > 0:  # restored from a checkpoint
            self.resumed_from = trainer.global_step
            self._saved_step = trainer.global_step
            if self._rng is not None:
                set_rng_state(pl_module, self._rng)
            fit, epochs = trainer.fit_loop, trainer.fit_loop.epoch_progress.current
            if fit.restarted_mid_epoch and epochs.ready == epochs.completed:
                # the checkpoint of an epoch's last batch: Lightning has closed that epoch but still calls
                # the restart "mid-epoch", so it would neither count the next epoch as started nor call
                # on_train_epoch_start for it, as the uninterrupted run does (and a later resume misreads
                # the counts); the next epoch starts as any other
                fit.reset_restart_stage()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        interruption = active_interruption()
        stop = interruption is not None and interruption.pending
        by_steps = bool(self.every_n_steps) and trainer.global_step % self.every_n_steps == 0
        last_of_epoch = (
            batch_idx + 1 == trainer.num_training_batches or trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        )
        by_epochs = last_of_epoch and self._epoch_due(trainer)
        if not (stop or by_steps or by_epochs):
            return
        if validation_follows(trainer):
            self._after_validation = True  # on_validation_end writes it (and stops the run), after the pass
            return
        self.save(trainer)
        if interruption is not None:
            interruption.raise_if_pending()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The checkpoint of the batch this validation pass followed; or of a signal that came during it."""
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        interruption = active_interruption()
        if self._after_validation or (interruption is not None and interruption.pending):
            self._after_validation = False
            self.save(trainer)
            if interruption is not None:
                interruption.raise_if_pending()

    def _epoch_due(self, trainer: L.Trainer) -> bool:
        return bool(self.every_n_epochs) and (trainer.current_epoch + 1) % self.every_n_epochs == 0

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.save(trainer)
        interruption = active_interruption()
        if interruption is not None:
            interruption.defer = False
            interruption.raise_if_pending()
