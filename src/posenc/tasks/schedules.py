"""Learning-rate schedules stated as fractions of the run's budget.

PosENet (Islam et al., ICLR 2020, Sec. 4) trains 15 epochs and drops the lr x0.1 at epoch 10.
posenc counts the readout budget in optimizer steps (``trainer.max_steps``), so the drop is placed
at the same fraction of the steps: ``multistep_at_fractions(opt, total_steps, fractions=[10/15])``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import torch

from posenc.config.rules import Rule
from posenc.errors import PosencError

# A task's budget, which the trainer config reads (trainer.max_steps: ${task.max_steps}): -1 (and null
# epochs): no cap
MaxSteps = Annotated[int, Rule(ge=1, also=(-1,))]
MaxEpochs = Annotated[int, Rule(ge=1, also=(-1,))] | None


def milestones_at(fractions: Sequence[float], total_steps: int) -> list[int]:
    """Step indices at ``fractions`` of ``total_steps`` (rounded; each at least 1)."""
    for f in fractions:
        if not 0.0 < float(f) < 1.0:
            raise PosencError(f"task.scheduler.fractions entry {f} is not valid: expected a float in (0, 1)")
    return sorted({max(1, round(float(f) * total_steps)) for f in fractions})


def multistep_at_fractions(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    fractions: Annotated[Sequence[float], Rule(items=Rule(gt=0, lt=1))] = (2 / 3,),
    gamma: Annotated[float, Rule(gt=0)] = 0.1,
) -> dict:
    """A per-step ``MultiStepLR`` that multiplies the lr by ``gamma`` after each fraction of
    ``total_steps``; returned as Lightning's scheduler dict (``interval: step``)."""
    milestones = milestones_at(fractions, total_steps)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=gamma)
    return {"scheduler": scheduler, "interval": "step", "frequency": 1}
