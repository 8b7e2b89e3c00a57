"""Checkpoints leave the frozen backbone out and refuse a backbone other than the one trained on."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from helpers.runs import compose_run
from hydra.utils import instantiate

from posenc.errors import PosencError


def tiny_task(tmp_path, seed: int):
    cfg = compose_run(["backbone=tiny", "data.image_size=32", f"seed={seed}"], tmp_path / f"s{seed}")
    L.seed_everything(seed)
    return instantiate(cfg.task)


def test_checkpoint_omits_backbone_and_restores_it(tmp_path):
    task = tiny_task(tmp_path, 0)
    with torch.no_grad():
        for p in task.readout.parameters():  # "trained": differs from a fresh readout
            p.add_(1.0)
    checkpoint = {"state_dict": {k: v.clone() for k, v in task.state_dict().items()}}
    task.on_save_checkpoint(checkpoint)
    assert not any(k.startswith("backbone.") for k in checkpoint["state_dict"])
    assert any(k.startswith("readout.") for k in checkpoint["state_dict"])
    same = tiny_task(tmp_path, 0)
    assert not torch.equal(same.readout.net[0].weight, task.readout.net[0].weight)
    same.on_load_checkpoint(checkpoint)
    same.load_state_dict(checkpoint["state_dict"])  # strict: the backbone keys are back
    for (name, a), b in zip(task.state_dict().items(), same.state_dict().values()):
        assert torch.equal(a, b), name


def test_checkpoint_of_another_backbone_is_refused(tmp_path):
    checkpoint = {"state_dict": tiny_task(tmp_path, 0).state_dict()}
    tiny_task(tmp_path, 0).on_save_checkpoint(checkpoint)
    with pytest.raises(PosencError, match="another backbone"):
        tiny_task(tmp_path, 1).on_load_checkpoint(checkpoint)
