"""Position-readout metrics of PosENet (Islam et al., ICLR 2020, Sec. 4): Spearman correlation
(SPC) per image, then averaged over images, and mean absolute error (MAE).

We rank with our own vectorised, tie-aware ``average_ranks`` instead of
``torchmetrics.functional.spearman_corrcoef`` because the latter accumulates rank sums in int32,
which overflows on maps above ~46k pixels with large ties (e.g. 256x256 target maps), and it ranks
one column at a time. Averaging over images and across DDP ranks uses ``torchmetrics``.
"""

from __future__ import annotations

import torch


def average_ranks(x: torch.Tensor) -> torch.Tensor:
    """Row-wise ranks (1-based) with ties given their mean rank, like ``scipy.stats.rankdata``.

    ``x``: ``[B, N]``; returns ``float64`` ``[B, N]``.
    """
    b, n = x.shape
    sorted_x, order = x.sort(dim=1)
    starts = torch.ones_like(sorted_x, dtype=torch.bool)
    starts[:, 1:] = sorted_x[:, 1:] != sorted_x[:, :-1]
    group = starts.cumsum(dim=1) - 1
    position = torch.arange(1, n + 1, dtype=torch.float64, device=x.device).expand(b, n)
    sums = torch.zeros(b, n, dtype=torch.float64, device=x.device).scatter_add_(1, group, position)
    counts = torch.zeros(b, n, dtype=torch.float64, device=x.device).scatter_add_(1, group, torch.ones_like(position))
    mean_rank = sums.gather(1, group) / counts.gather(1, group)
    return torch.empty_like(mean_rank).scatter_(1, order, mean_rank)


def pearson_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise Pearson correlation; 0 where either row is constant (the paper prints .0)."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    denom = a.norm(dim=1) * b.norm(dim=1)
    r = (a * b).sum(dim=1) / denom.clamp_min(torch.finfo(denom.dtype).tiny)
    return torch.where(denom > 0, r.clamp(-1.0, 1.0), torch.zeros_like(r))


CONSTANT_ATOL = 1e-6  # a map whose range is below this is constant (round-off of upsampling)


def spearman_per_image(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SPC of each image: Spearman correlation of the flattened prediction and target map.

    ``pred``: ``[B, ...]``; ``target``: same shape, or one map broadcast over the batch.
    Returns ``[B]`` (float64); 0 for a constant prediction or map. A map whose range is below
    ``CONSTANT_ATOL`` counts as constant: bilinear upsampling of a constant map leaves float
    round-off whose ranks would be noise.
    """
    target = target.expand_as(pred).reshape(pred.shape[0], -1)
    pred = pred.reshape(pred.shape[0], -1)
    spc = pearson_rows(average_ranks(pred.double()), average_ranks(target.double()))
    constant = ((pred.amax(1) - pred.amin(1)) <= CONSTANT_ATOL) | ((target.amax(1) - target.amin(1)) <= CONSTANT_ATOL)
    return torch.where(constant, torch.zeros_like(spc), spc)


def mae_per_image(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error of each image, ``[B]``."""
    diff = (pred - target.expand_as(pred)).abs()
    return diff.reshape(diff.shape[0], -1).mean(dim=1)
