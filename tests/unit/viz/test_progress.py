"""Progress: the training bar counts the step budget; long phases outside training show a bar."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from posenc.progress import track
from posenc.run.progress_bar import StepProgressBar


class _Regression(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize("max_steps", [7, 12])  # within one epoch of 8 batches, and across two
def test_the_training_bar_counts_steps_of_the_budget(max_steps):
    """``max_epochs`` unset and a step budget: one bar over every optimizer step, never ``Epoch 1/-2``."""
    data = DataLoader(TensorDataset(torch.randn(16, 2), torch.randn(16, 1)), batch_size=2)
    bar = StepProgressBar()
    trainer = L.Trainer(
        max_steps=max_steps,
        max_epochs=-1,
        callbacks=[bar],
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(_Regression(), data)
    task = bar.progress.tasks[bar.train_progress_bar_id]
    assert (task.total, task.completed) == (max_steps, max_steps)
    assert task.description == f"train (epoch {(max_steps - 1) // 8})"  # 8 batches an epoch; never "/-2"


def test_a_phase_yields_everything_with_or_without_its_bar(monkeypatch, capsys):
    assert list(track(range(5), "counting")) == [0, 1, 2, 3, 4]
    assert "counting" in capsys.readouterr().err  # the finished bar, also without a terminal
    monkeypatch.setenv("POSENC_PROGRESS", "0")
    assert list(track(iter(range(3)), "quiet")) == [0, 1, 2]
    assert "quiet" not in capsys.readouterr().err
