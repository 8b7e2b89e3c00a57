"""Every PosENet readout of one network under one padding, for several seeds, trained in one loop without a
Trainer (the atlas engine, issue 34).

The readouts are PosENet's (Islam et al., ICLR 2020, Sec. 3.2; :class:`posenc.models.readouts.PosENetReadout`):
per seed one readout on all taps and one per tap alone (the tap ablation), one head per target map, trained
by SGD on an MSE against the upsampled target (:class:`posenc.models.losses.UpsampledMSE`). The seeds'
features sit side by side on the channel axis and each head reads its own seed's (and tap's) channels (the
fused module's ``channel_groups``, which already makes every head an exact, independent readout), so one
conv call per step serves every head of every seed. Each seed's heads are drawn from a generator seeded by
that seed alone, so a seed's readouts do not depend on which other seeds run beside it.

Why a loop of its own and not Lightning: a step here is a few milliseconds on 2 CPU cores, and Lightning's
per-step work (hooks, logging, the progress bar) cost more than the step itself in the per-cell runs the
atlas made before (the profile in docs/atlas.md). What the per-cell runs record is kept: the loss curve of
every head, the held-out loss every ``val_every`` steps, and the convergence flag of
:func:`posenc.metrics.convergence.convergence` on it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from posenc.metrics.convergence import MIN_VAL_WINDOW, convergence, downsample
from posenc.models.losses import UpsampledMSE
from posenc.models.readouts import PosENetReadout

ALL = None  # a head's tap when it reads every tap (the multi-tap readout)


@dataclass(frozen=True)
class ReadoutPlan:
    """How the readouts train: the PosENet task's optimizer (SGD, lr, momentum, weight decay), its lr drop
    (x ``gamma`` at ``drop_at`` of the steps), its budget and batch, the readout's conv, and the held-out
    checks the convergence flag watches (``window``, ``tol``: :mod:`posenc.run.convergence`)."""

    steps: int = 500
    batch_size: int = 32
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    drop_at: float = 2 / 3
    gamma: float = 0.1
    kernel_size: int = 3
    val_every: int = 25
    window: float = 0.1
    tol: float = 0.02
    order_seed: int = 0  # the minibatch order, shared by every head (each seed's features are its own)
    # float32 | bfloat16: the stored features and their products with the first conv's weights (float32
    # accumulation; weights, BN, loss and SGD stay float32): ~2x faster on CPUs with AVX512-BF16
    feature_dtype: str = "float32"


@dataclass(frozen=True)
class Head:
    """One readout head: the index of its seed among the trained seeds, its tap (:data:`ALL`: every tap)
    and its target map."""

    seed: int
    tap: str | None
    target: str


@dataclass
class TrainedReadouts:
    """The trained heads (``readout``, eval mode) and their record: per head the training loss of every
    step (``train_losses`` ``[steps, heads]``), the held-out loss at every check (``val_losses``
    ``[checks, heads]`` at ``val_steps``) and the lr of every step."""

    heads: list[Head]
    readout: PosENetReadout
    train_losses: torch.Tensor
    val_losses: torch.Tensor
    val_steps: list[int]
    lrs: list[float]

    def record(self, seed: int, plan: ReadoutPlan) -> dict[str, Any]:
        """What a per-cell run writes into ``metrics.json`` about its training, for the heads of ``seed``:
        the convergence flag on the held-out parts (one per head, as a run's ``val/loss_<part>``), the
        curves (at most 100 points) and the steps."""
        index = [i for i, h in enumerate(self.heads) if h.seed == seed]
        names = [_part(self.heads[i]) for i in index]
        summary: dict[str, Any] = {}
        if len(self.val_steps) > 0:
            val = {f"loss_{n}": self.val_losses[:, i].tolist() for n, i in zip(names, index)}
            val["loss"] = self.val_losses[:, index].sum(dim=1).tolist()
            summary.update(convergence(val, None, plan.window, plan.tol, MIN_VAL_WINDOW, prefix="val"))
            summary["val/loss_curve/loss"] = val["loss"]
            summary["val/loss_curve/step"] = list(self.val_steps)
        else:
            train = {f"loss_{n}": self.train_losses[:, i].tolist() for n, i in zip(names, index)}
            train["loss"] = self.train_losses[:, index].sum(dim=1).tolist()
            summary.update(convergence(train, self.lrs, plan.window, plan.tol))
        summary["train/converged_on"] = "val" if len(self.val_steps) > 0 else "train"
        steps, means = downsample(self.train_losses[:, index].sum(dim=1).tolist())
        summary["train/loss_curve/loss"] = means
        summary["train/loss_curve/step"] = steps
        summary["train/loss/final"] = means[-1] if means else None
        summary["train/steps"] = int(self.train_losses.shape[0])
        return summary


def _part(head: Head) -> str:
    """A head's loss name as the per-cell run names it: ``H`` (all taps), ``f3_H`` (tap f3 alone)."""
    return head.target if head.tap is ALL else f"{head.tap}_{head.target}"


FEATURE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def feature_dtype(plan: ReadoutPlan) -> torch.dtype:
    """The torch dtype of ``plan.feature_dtype``; one line naming the valid ones for another."""
    from posenc.errors import check_choice

    check_choice("feature_dtype", plan.feature_dtype, tuple(FEATURE_DTYPES))
    return FEATURE_DTYPES[plan.feature_dtype]


def plan_heads(
    seeds: int, taps: Sequence[str], tap_channels: Sequence[int], targets: Sequence[str]
) -> tuple[list[Head], list[tuple[int, int]]]:
    """The heads of ``seeds`` seeds (seed-major: all-taps heads, then each tap's) and each head's channel
    range in features that hold the seeds' concatenated taps side by side."""
    width = sum(tap_channels)
    offsets = [sum(tap_channels[:i]) for i in range(len(tap_channels) + 1)]
    heads: list[Head] = []
    groups: list[tuple[int, int]] = []
    for s in range(seeds):
        base = s * width
        for target in targets:
            heads.append(Head(s, ALL, target))
            groups.append((base, base + width))
        for i, tap in enumerate(taps):
            for target in targets:
                heads.append(Head(s, tap, target))
                groups.append((base + offsets[i], base + offsets[i + 1]))
    return heads, groups


def _seeded_init(
    readout: PosENetReadout, heads: Sequence[Head], groups: Sequence[tuple[int, int]], seeds: Sequence[int]
) -> None:
    """Redraw every head's first-conv weights (Xavier-uniform with its own fan-in, as
    :class:`PosENetReadout` draws them) from a generator of its seed alone, in the seed's head order."""
    conv = readout.net[0]
    assert isinstance(conv, nn.Conv2d)
    generators = {s: torch.Generator().manual_seed(int(seed)) for s, seed in enumerate(seeds)}
    with torch.no_grad():
        for index, (head, (a, b)) in enumerate(zip(heads, groups)):
            k = conv.weight.shape[-1]
            fan = (b - a) * k * k
            bound = math.sqrt(6.0 / (fan + k * k))  # xavier_uniform_ of a [1, b - a, k, k] kernel
            draw = torch.rand((b - a, k, k), generator=generators[head.seed], dtype=conv.weight.dtype)
            conv.weight[index, a:b] = ((2 * draw - 1) * bound).to(conv.weight.device)


def train_readouts(
    train: torch.Tensor,
    val: torch.Tensor | None,
    targets: torch.Tensor,
    target_names: Sequence[str],
    taps: Sequence[str],
    tap_channels: Sequence[int],
    seeds: Sequence[int],
    plan: ReadoutPlan,
) -> TrainedReadouts:
    """Train every head on ``train`` ``[N, S x C, f, f]`` (the S seeds' resized, concatenated taps side by
    side; channels-last is fastest on CPU), checking the held-out loss on ``val`` every ``plan.val_every``
    steps; ``targets`` ``[T, H, W]`` the target maps named ``target_names``."""
    dtype = feature_dtype(plan)
    last = torch.channels_last  # the block products read column ranges of a channels-last view
    train = train.to(dtype).contiguous(memory_format=last)
    val = val.to(dtype).contiguous(memory_format=last) if val is not None else None
    heads, groups = plan_heads(len(seeds), taps, tap_channels, target_names)
    feature_size = int(train.shape[-1])
    readout = PosENetReadout(
        train.shape[1],
        num_maps=len(heads),
        kernel_size=plan.kernel_size,  # type: ignore[arg-type]  # checked by PosENetReadout
        feature_size=feature_size,
        channel_groups=groups,
    )
    _seeded_init(readout, heads, groups, seeds)
    readout.to(train.device)
    order = [target_names.index(h.target) for h in heads]
    loss = UpsampledMSE(targets[order]).to(train.device)
    optimizer = torch.optim.SGD(
        readout.parameters(), lr=plan.lr, momentum=plan.momentum, weight_decay=plan.weight_decay
    )
    drop = max(1, round(plan.drop_at * plan.steps))
    generator = torch.Generator().manual_seed(plan.order_seed)
    n = train.shape[0]
    permutation = torch.randperm(n, generator=generator)
    cursor = 0
    train_losses = torch.empty(plan.steps, len(heads), dtype=torch.float64, device=train.device)
    val_losses: list[torch.Tensor] = []
    val_steps: list[int] = []
    lrs: list[float] = []
    readout.train()
    for step in range(plan.steps):
        if step == drop:
            for group in optimizer.param_groups:
                group["lr"] = plan.lr * plan.gamma
        if cursor >= n:
            permutation, cursor = torch.randperm(n, generator=generator), 0
        index = permutation[cursor : cursor + plan.batch_size].to(train.device)
        cursor += plan.batch_size
        losses = loss(readout.maps(train[index]))
        optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()
        optimizer.step()
        train_losses[step] = losses.detach().double()
        lrs.append(optimizer.param_groups[0]["lr"])
        if val is not None and (step + 1) % plan.val_every == 0:
            readout.eval()
            with torch.no_grad():
                val_losses.append(loss(readout.maps(val)).double())
            val_steps.append(step + 1)
            readout.train()
    if not torch.isfinite(train_losses).all():
        bad = int((~torch.isfinite(train_losses)).any(dim=1).nonzero()[0])
        from posenc.errors import PosencError

        raise PosencError(f"training diverged: a readout's loss is not finite at step {bad + 1}; valid: a lower lr")
    readout.eval()
    stacked = torch.stack(val_losses).cpu() if val_losses else torch.empty(0, len(heads), dtype=torch.float64)
    return TrainedReadouts(heads, readout, train_losses.cpu(), stacked, val_steps, lrs)
