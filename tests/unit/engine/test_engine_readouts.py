"""posenc.engine.readouts: every readout of every seed in one loop (the atlas engine, issue 34)."""

from __future__ import annotations

import torch

from posenc.data.position_maps import make_targets
from posenc.engine.readouts import ALL, ReadoutPlan, plan_heads, train_readouts

TAPS, CHANNELS, TARGETS = ["f1", "f2"], [6, 10], ["H", "G"]


def _features(seed: int, n: int = 24) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, sum(CHANNELS), 8, 8, generator=g).contiguous(memory_format=torch.channels_last)


def test_the_heads_of_a_seed_read_its_channels_and_its_taps():
    heads, groups = plan_heads(2, TAPS, CHANNELS, TARGETS)
    assert [(h.seed, h.tap, h.target) for h in heads[:6]] == [
        (0, ALL, "H"),
        (0, ALL, "G"),
        (0, "f1", "H"),
        (0, "f1", "G"),
        (0, "f2", "H"),
        (0, "f2", "G"),
    ]
    assert groups[:6] == [(0, 16), (0, 16), (0, 6), (0, 6), (6, 16), (6, 16)]
    assert groups[6:8] == [(16, 32), (16, 32)] and groups[-1] == (22, 32)


def test_a_seed_trains_the_same_alone_and_beside_another_seed():
    """A seed's heads are drawn from its own generator and read only its own features: beside seed 7 (other
    features), seed 0's readouts end where they end alone."""
    targets = make_targets(TARGETS, 32)
    plan = ReadoutPlan(steps=30, batch_size=8, val_every=10)
    alone = train_readouts(_features(0), None, targets, TARGETS, TAPS, CHANNELS, [0], plan)
    both = train_readouts(
        torch.cat([_features(0), _features(7)], dim=1).contiguous(memory_format=torch.channels_last),
        None,
        targets,
        TARGETS,
        TAPS,
        CHANNELS,
        [0, 7],
        plan,
    )
    n = len(alone.heads)
    torch.testing.assert_close(both.train_losses[:, :n], alone.train_losses, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(both.train_losses[:, n:], alone.train_losses)


def test_the_record_has_the_held_out_curve_and_the_convergence_flag():
    targets = make_targets(TARGETS, 32)
    plan = ReadoutPlan(steps=60, batch_size=8, val_every=5)
    trained = train_readouts(_features(0), _features(1, 8), targets, TARGETS, TAPS, CHANNELS, [0], plan)
    record = trained.record(0, plan)
    assert record["train/steps"] == 60 and record["train/converged_on"] == "val"
    assert record["val/loss_curve/step"] == list(range(5, 61, 5))
    assert isinstance(record["train/converged"], bool)
    assert {"val/loss_f1_H/rel_decrease", "val/loss_H/rel_decrease", "val/loss/rel_decrease"} <= set(record)
    assert trained.train_losses[-10:].mean() < trained.train_losses[:10].mean()  # it learns
