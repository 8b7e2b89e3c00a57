"""Channel permutation (PermuteNet; Islam, Kowal et al., ICCV 2021, "Global Pooling, More than
Meets the Eye"): a fresh random order of the channels on every forward pass, in training *and* at
test time, so no layer after it can rely on which channel is which.

Global average pooling keeps one number per channel; if position survives pooling it must be
encoded in *which* channels fire (channel order). Permuting the channels destroys that code while
keeping the set of values, so location accuracy should fall towards chance (1/g^2) and semantic
accuracy much less (the paper's claim, tested by the ``channel_order`` sweep).

``permute_at`` ``k`` in 1..5 permutes the output of tap ``f_k`` of the backbone (posenc.models.backbones.base):
for the ResNets (f1 = stem, f2..f5 = layer1..layer4) ``k`` = 1..4 is "before stage k" and 5 the
last stage's output; for the VGG-style backbones tap ``f_k`` ends stage ``k``. Because global
average pooling is per channel, permuting ``f5`` is the same as permuting the pooled vector
("after pooling") for the GAP heads.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch

PermutePoint = Literal[1, 2, 3, 4, 5]  # readout.permute_at: tap f<k> of the backbone
PERMUTE_POINTS: tuple[int, ...] = get_args(PermutePoint)


def permute_channels(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """``x`` ``[B, C, ...]`` with its channels in a fresh random order (one order for the batch,
    drawn from ``generator`` or torch's global RNG, which ``seed`` seeds)."""
    device = x.device if generator is None else generator.device
    order = torch.randperm(x.shape[1], generator=generator, device=device)
    return x.index_select(1, order.to(x.device))
