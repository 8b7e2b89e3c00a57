"""Progress a researcher can see: the training bar counts optimizer steps of the step budget, and every
long phase outside the Trainer's loops (feature extraction, PPP's context passes, the ranking and
attack passes) shows a rich bar saying what it does.

Both build on rich (Lightning's :class:`~lightning.pytorch.callbacks.RichProgressBar` and
:class:`rich.progress.Progress`); written here only for what they lack: a bar over the whole step
budget (Lightning's counts batches per epoch and titles it ``Epoch 124/-2`` when ``max_epochs`` is
unset) and one switch (``POSENC_PROGRESS=0``, rank zero only) for the phases outside training.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar


class StepProgressBar(RichProgressBar):
    """Lightning's rich bar, but with a step budget (``trainer.max_steps``, posenc's default) one bar
    over all optimizer steps, ``train step 1234/2000 (epoch 3)``, instead of one per epoch."""

    def _by_steps(self, trainer: L.Trainer) -> bool:
        return trainer.max_steps is not None and trainer.max_steps > 0

    def _step_description(self, trainer: L.Trainer) -> str:
        return f"train (epoch {trainer.current_epoch})"

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._by_steps(trainer):
            return super().on_train_epoch_start(trainer, pl_module)
        if self.is_disabled or self.progress is None:
            return None
        if self.train_progress_bar_id is None:
            self.train_progress_bar_id = self._add_task(trainer.max_steps, self._step_description(trainer))
        self.progress.update(
            self.train_progress_bar_id,
            completed=trainer.global_step,
            description=self._step_description(trainer),
            visible=True,
        )
        self.refresh()
        return None

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not self._by_steps(trainer):
            return super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if not self.is_disabled and self.train_progress_bar_id is None:  # resumed mid-epoch
            self.on_train_epoch_start(trainer, pl_module)
        self._update(self.train_progress_bar_id, trainer.global_step)
        self._update_metrics(trainer, pl_module)
        self.refresh()
        return None
