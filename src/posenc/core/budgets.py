"""Default budgets that depend on the backbone's weights, as an OmegaConf resolver.

The PosENet readout (Islam et al., ICLR 2020) on random-init features converges in far fewer SGD
steps than on trained features (issue 6): measured on VGG16, 224 px, 256 crops, 2 CPU cores
(docs/reference.md "Readout budget and convergence"; the table: docs/results/readout_budget.md),
random init is converged by :mod:`posenc.core.convergence` at 1000 steps (held-out loss -1.4% over
the last 10%) while a trained backbone still falls -3.2% at 1000 and
-2.4% at 2000 and is converged at 3000 (-0.7%). One fixed default either leaves trained runs
unconverged or triples the embedded default's wall time, so ``task.max_steps`` defaults to
``${readout_steps:${backbone.weights}}``: the measured budget of the kind of weights the run
loads. Any ``task.max_steps=N`` override replaces it.
"""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

RANDOM_INIT_STEPS = 1000
TRAINED_STEPS = 3000


def readout_steps(weights: Any) -> int:
    """The readout's default SGD steps for a backbone loaded with ``weights`` (null: random init;
    anything else: ``imagenet``, a state dict file, a posenc run dir or checkpoint)."""
    return RANDOM_INIT_STEPS if weights in (None, "") else TRAINED_STEPS


def register() -> None:
    """Register ``${readout_steps:<weights>}`` (idempotent)."""
    OmegaConf.register_new_resolver("readout_steps", readout_steps, replace=True)


register()
