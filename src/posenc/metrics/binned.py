"""Distance to the image border, for accuracy as a function of distance to the border (Islam et
al., IJCV 2024, "Position, Padding and Predictions"): rings of grid cells, bands of pixels, sums
and confusion matrices per bin, as pure functions and as ``torchmetrics`` metrics whose states are
summed across DDP ranks.

Distances are Chebyshev distances to the nearest border (0 on the border), so "bins" are
concentric square rings; a bin index < 0 marks a value to ignore.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from posenc.errors import invalid_value


def _check_positive(key: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise invalid_value(key, value, "expected an int >= 1")


# --------------------------------------------------------------------------- rings and bands


def border_distance(size_y: int, size_x: int, device: torch.device | None = None) -> Tensor:
    """``min(y, x, size_y - 1 - y, size_x - 1 - x)`` for every position of a grid, ``[size_y, size_x]``."""
    y = torch.arange(size_y, device=device).unsqueeze(1)
    x = torch.arange(size_x, device=device).unsqueeze(0)
    return torch.minimum(torch.minimum(y, size_y - 1 - y), torch.minimum(x, size_x - 1 - x))


def cell_rings(grid: int) -> Tensor:
    """Ring of each cell of a ``grid x grid`` grid: its Chebyshev distance to the nearest border
    cell, ``min(i, j, g-1-i, g-1-j)`` (3x3: the 8 border cells are ring 0, the centre ring 1)."""
    _check_positive("grid", grid)
    return border_distance(grid, grid)


def ring_of_cell(cells: Tensor, grid: int) -> Tensor:
    """Ring of each cell index ``row * grid + col`` in ``cells`` (any shape)."""
    _check_positive("grid", grid)
    if cells.numel() and (cells.min().item() < 0 or cells.max().item() >= grid * grid):
        bad = cells[(cells < 0) | (cells >= grid * grid)][0].item()
        raise invalid_value("cell", bad, f"expected a cell index in [0, {grid * grid - 1}] of a {grid}x{grid} grid")
    return cell_rings(grid).to(cells.device).flatten()[cells.long()]


def pixel_distance(height: int, width: int) -> Tensor:
    """Distance of each pixel to the nearest image edge, ``min(y, x, H-1-y, W-1-x)``, ``[H, W]``."""
    _check_positive("height", height)
    _check_positive("width", width)
    return border_distance(height, width)


def band_edges(size: int, num_bands: int) -> list[int]:
    """First distance of each of ``num_bands`` contiguous bands covering the distances
    ``0..ceil(size/2)-1`` of a ``size``-pixel side: equal widths ``n // num_bands``, the last band
    taking the rest (size 64, 4 bands: ``[0, 8, 16, 24]``)."""
    _check_positive("size", size)
    distances = (size + 1) // 2
    if isinstance(num_bands, bool) or not isinstance(num_bands, int) or not 1 <= num_bands <= distances:
        raise invalid_value(
            "num_bands", num_bands, f"expected an int in [1, {distances}] (the distinct distances of size {size})"
        )
    width = distances // num_bands
    return [k * width for k in range(num_bands)]


def _check_edges(edges: list[int]) -> None:
    if not edges or edges[0] != 0 or any(b <= a for a, b in zip(edges, edges[1:])):
        raise invalid_value("edges", list(edges), "expected increasing band starts beginning with 0")


def bin_names_rings(grid: int) -> list[str]:
    """``["ring0", "ring1", ...]``, one per ring of a ``grid x grid`` grid."""
    _check_positive("grid", grid)
    return [f"ring{r}" for r in range((grid + 1) // 2)]


def bin_names_bands(edges: list[int], max_distance: int) -> list[str]:
    """Inclusive, zero-padded names of the bands ``edges`` up to ``max_distance``: ``px00-07``..."""
    _check_edges(edges)
    if isinstance(max_distance, bool) or not isinstance(max_distance, int) or max_distance < edges[-1]:
        raise invalid_value("max_distance", max_distance, f"expected an int >= the last band start {edges[-1]}")
    digits = max(2, len(str(max_distance)))
    ends = [b - 1 for b in edges[1:]] + [max_distance]
    return [f"px{a:0{digits}d}-{b:0{digits}d}" for a, b in zip(edges, ends)]


def band_of_pixels(height: int, width: int, edges: list[int]) -> Tensor:
    """Band index of each pixel's :func:`pixel_distance` among the band starts ``edges``, ``[H, W]``."""
    _check_edges(edges)
    distance = pixel_distance(height, width)
    return torch.bucketize(distance, torch.tensor(edges), right=True) - 1


def object_distance(masks: Tensor) -> Tensor:
    """Distance of each object to the nearest image edge: the smallest :func:`pixel_distance`
    over its pixels; -1 for an empty mask. ``masks``: bool ``[B, H, W]``; returns ``[B]``."""
    if masks.dim() != 3:
        raise invalid_value("masks.shape", tuple(masks.shape), "expected 3 dims [B, H, W]")
    _, h, w = masks.shape
    distance = pixel_distance(h, w).to(masks.device)
    far = torch.full_like(distance, h + w)
    nearest = torch.where(masks.bool(), distance, far).flatten(1).amin(dim=1)
    return torch.where(nearest == h + w, torch.full_like(nearest, -1), nearest)


# --------------------------------------------------------------------------- binned statistics


def _check_bins(bins: Tensor, num_bins: int) -> Tensor:
    _check_positive("num_bins", num_bins)
    if bins.is_floating_point() or bins.is_complex() or bins.dtype == torch.bool:
        raise invalid_value("bins.dtype", str(bins.dtype), "expected an integer tensor of bin indices")
    if bins.numel() and bins.max().item() >= num_bins:
        raise invalid_value("bin", bins.max().item(), f"expected a bin index < num_bins={num_bins} (< 0 to ignore)")
    return bins.long()


def binned_sums(values: Tensor, bins: Tensor, num_bins: int) -> tuple[Tensor, Tensor]:
    """Sum (float64) and count (int64) of ``values`` per bin, ``[num_bins]`` each; ``bins`` has
    ``values``' shape and entries with a bin < 0 (e.g. ignore-index pixels) are left out."""
    if tuple(bins.shape) != tuple(values.shape):
        raise invalid_value("bins.shape", tuple(bins.shape), f"expected values' shape {tuple(values.shape)}")
    bins = _check_bins(bins, num_bins).flatten()
    keep = bins >= 0
    bins, kept = bins[keep], values.flatten()[keep].double()
    sums = torch.zeros(num_bins, dtype=torch.float64, device=values.device).scatter_add_(0, bins, kept)
    counts = torch.zeros(num_bins, dtype=torch.long, device=values.device).scatter_add_(0, bins, torch.ones_like(bins))
    return sums, counts


def confusion_per_bin(
    pred: Tensor, target: Tensor, bins: Tensor, num_classes: int, num_bins: int, ignore_index: int = 255
) -> Tensor:
    """Confusion matrix of each bin, ``[num_bins, C, C]`` (rows: target, columns: prediction);
    pixels whose target is ``ignore_index`` or whose bin is < 0 are left out. ``bins`` has
    ``target``'s shape or is one ``[H, W]`` map for the whole batch."""
    _check_positive("num_classes", num_classes)
    if tuple(pred.shape) != tuple(target.shape):
        raise invalid_value("pred.shape", tuple(pred.shape), f"expected target's shape {tuple(target.shape)}")
    if tuple(bins.shape) not in (tuple(target.shape), tuple(target.shape[-2:])):
        raise invalid_value("bins.shape", tuple(bins.shape), f"expected {tuple(target.shape)} or [H, W]")
    bins = _check_bins(bins, num_bins).expand_as(target)
    keep = (target != ignore_index) & (bins >= 0)
    bins, truth, guess = bins[keep], target[keep].long(), pred[keep].long()
    for key, labels in (("target", truth), ("pred", guess)):
        bad = labels[(labels < 0) | (labels >= num_classes)]
        if bad.numel():
            raise invalid_value(key, bad[0].item(), f"expected a class in [0, {num_classes - 1}] or {ignore_index}")
    index = (bins * num_classes + truth) * num_classes + guess
    counts = torch.bincount(index, minlength=num_bins * num_classes * num_classes)
    return counts.view(num_bins, num_classes, num_classes)


def miou_per_bin(confusion: Tensor) -> Tensor:
    """Mean IoU ``TP / (TP + FP + FN)`` of each bin over the classes present (in the target or the
    prediction) in that bin; NaN for a bin with no pixels. ``confusion``: ``[N, C, C]``."""
    confusion = confusion.double()
    true_pos = confusion.diagonal(dim1=1, dim2=2)
    union = confusion.sum(dim=2) + confusion.sum(dim=1) - true_pos
    iou = true_pos / union.clamp_min(1.0)
    present = union > 0
    return (iou * present).sum(dim=1) / present.sum(dim=1)


def pixel_accuracy_per_bin(confusion: Tensor) -> Tensor:
    """Fraction of correctly labelled pixels of each bin; NaN for a bin with no pixels."""
    confusion = confusion.double()
    return confusion.diagonal(dim1=1, dim2=2).sum(dim=1) / confusion.sum(dim=(1, 2))


class _PerBinMetric(Metric):
    """A metric whose results are ``[num_bins]`` vectors, kept 1-D even for one bin (torchmetrics
    squeezes one-element results of ``compute`` to 0-dim)."""

    full_state_update = False
    is_differentiable = False

    def _wrap_compute(self, compute: Callable) -> Callable:
        wrapped = super()._wrap_compute(compute)

        @functools.wraps(compute)
        def per_bin(*args: Any, **kwargs: Any) -> Any:
            value = wrapped(*args, **kwargs)
            if isinstance(value, dict):
                return {key: v.reshape(-1) for key, v in value.items()}
            return value.reshape(-1)

        return per_bin


class BinnedMean(_PerBinMetric):
    """Mean of the values per bin over everything seen (:func:`binned_sums`); NaN for empty bins."""

    sums: Tensor  # metric states (add_state)
    counts: Tensor

    def __init__(self, num_bins: int, **kwargs: object) -> None:
        _check_positive("num_bins", num_bins)
        super().__init__(**kwargs)
        self.num_bins = num_bins
        self.add_state("sums", default=torch.zeros(num_bins, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("counts", default=torch.zeros(num_bins, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, values: Tensor, bins: Tensor) -> None:
        sums, counts = binned_sums(values, bins.to(values.device), self.num_bins)
        self.sums += sums.to(self.sums)
        self.counts += counts.to(self.counts)

    def compute(self) -> Tensor:
        return self.sums / self.counts


class BinnedConfusion(_PerBinMetric):
    """Confusion matrix per distance bin (:func:`confusion_per_bin`); ``compute`` gives the mIoU
    and pixel accuracy of each bin."""

    higher_is_better = True
    confusion: Tensor  # metric state (add_state)

    def __init__(self, num_classes: int, num_bins: int, ignore_index: int = 255, **kwargs: object) -> None:
        _check_positive("num_classes", num_classes)
        _check_positive("num_bins", num_bins)
        super().__init__(**kwargs)
        self.num_classes, self.num_bins, self.ignore_index = num_classes, num_bins, ignore_index
        self.add_state(
            "confusion",
            default=torch.zeros(num_bins, num_classes, num_classes, dtype=torch.long),
            dist_reduce_fx="sum",
        )

    def update(self, pred_labels: Tensor, target: Tensor, bins: Tensor) -> None:
        confusion = confusion_per_bin(
            pred_labels, target, bins.to(target.device), self.num_classes, self.num_bins, self.ignore_index
        )
        self.confusion += confusion.to(self.confusion)

    def compute(self) -> dict[str, Tensor]:
        return {"miou": miou_per_bin(self.confusion), "pixel_acc": pixel_accuracy_per_bin(self.confusion)}
