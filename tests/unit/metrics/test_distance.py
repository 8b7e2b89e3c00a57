"""Distance to the border (Islam et al., IJCV 2024): rings, bands, binned sums and confusion."""

from __future__ import annotations

import math

import pytest
import torch

from posenc.errors import PosencError
from posenc.metrics.binned import (
    BinnedConfusion,
    BinnedMean,
    band_edges,
    band_of_pixels,
    bin_names_bands,
    bin_names_rings,
    binned_sums,
    cell_rings,
    object_distance,
    pixel_distance,
    ring_of_cell,
)


def test_pixel_distance_literal() -> None:
    assert pixel_distance(5, 5).tolist() == [
        [0, 0, 0, 0, 0],
        [0, 1, 1, 1, 0],
        [0, 1, 2, 1, 0],
        [0, 1, 1, 1, 0],
        [0, 0, 0, 0, 0],
    ]
    assert pixel_distance(3, 4).tolist() == [[0, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
    assert pixel_distance(64, 64).max().item() == 31


def test_cell_rings_literal() -> None:
    assert cell_rings(3).tolist() == [[0, 0, 0], [0, 1, 0], [0, 0, 0]]
    assert cell_rings(4).tolist() == [[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
    assert cell_rings(1).tolist() == [[0]]
    assert cell_rings(3).dtype == torch.long
    assert ring_of_cell(torch.tensor([0, 4, 5, 8]), 3).tolist() == [0, 1, 0, 0]
    assert ring_of_cell(torch.tensor([[5, 6], [9, 10]]), 4).tolist() == [[1, 1], [1, 1]]
    assert ring_of_cell(torch.tensor([3, 12, 15]), 4).tolist() == [0, 0, 0]


def test_bands() -> None:
    edges = band_edges(64, 4)
    assert edges == [0, 8, 16, 24]
    assert bin_names_bands(edges, 31) == ["px00-07", "px08-15", "px16-23", "px24-31"]
    assert band_edges(10, 2) == [0, 2]  # distances 0..4: widths 2, 3 (the last takes the rest)
    assert bin_names_bands([0, 2], 4) == ["px00-01", "px02-04"]
    assert bin_names_bands([0, 50], 120) == ["px000-049", "px050-120"]
    assert band_edges(64, 32) == list(range(32))
    assert band_edges(7, 1) == [0]
    assert band_of_pixels(6, 6, [0, 2]).tolist() == [
        [0, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0],
        [0, 0, 1, 1, 0, 0],
        [0, 0, 1, 1, 0, 0],
        [0, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0],
    ]
    bands = band_of_pixels(64, 64, edges)
    assert torch.equal(bands, pixel_distance(64, 64) // 8)


def test_bin_names_are_key_safe() -> None:
    assert bin_names_rings(3) == ["ring0", "ring1"]
    assert bin_names_rings(4) == ["ring0", "ring1"]
    assert bin_names_rings(5) == ["ring0", "ring1", "ring2"]
    names = bin_names_rings(7) + bin_names_bands(band_edges(224, 7), 111)
    assert all("/" not in n and "." not in n and " " not in n for n in names)


def test_binned_sums_and_mean() -> None:
    values = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    bins = torch.tensor([0, 1, 0, -1, 2])  # -1: ignored
    sums, counts = binned_sums(values, bins, 4)
    assert sums.tolist() == [4.0, 2.0, 5.0, 0.0]
    assert counts.tolist() == [2, 1, 1, 0]
    metric = BinnedMean(4)
    metric.update(values[:2], bins[:2])
    metric.update(values[2:], bins[2:])
    mean = metric.compute()
    assert mean[:3].tolist() == [2.0, 2.0, 5.0]
    assert math.isnan(mean[3].item())
    single = BinnedMean(1)  # stays [num_bins] (torchmetrics would squeeze it to 0-dim)
    single.update(values, torch.zeros(5, dtype=torch.long))
    assert single.compute().tolist() == [3.0]
    grid = torch.arange(16.0).view(2, 2, 4)  # any shape
    sums, counts = binned_sums(grid, (grid >= 8).long(), 2)
    assert sums.tolist() == [28.0, 92.0] and counts.tolist() == [8, 8]


# 4x4 example: band 0 = the 12 border pixels, band 1 = the 4 centre pixels, band 2 = nothing.
TARGET = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 1], [0, 1, 1, 1], [0, 0, 255, 1]])
PRED = torch.tensor([[0, 1, 1, 1], [0, 1, 0, 1], [0, 1, 1, 1], [1, 0, 0, 1]])
BANDS = torch.tensor([[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]])


def test_binned_confusion_by_hand() -> None:
    bins = band_of_pixels(4, 4, [0, 1])
    assert torch.equal(bins, BANDS)
    metric = BinnedConfusion(num_classes=2, num_bins=3)
    metric.update(PRED[None], TARGET[None], bins)
    # band 0 (11 pixels, (3,2) ignored): target 0 at 6 px, 4 predicted 0 and 2 predicted 1;
    # target 1 at 5 px, all predicted 1 -> confusion [[4, 2], [0, 5]]
    # IoU_0 = 4 / (4 + 2) = 2/3, IoU_1 = 5 / (5 + 2) = 5/7, pixel acc 9/11
    # band 1 (centre): target all 1, pred [1, 0, 1, 1] -> confusion [[0, 0], [1, 3]]
    # IoU_1 = 3/4, IoU_0 = 0/1 = 0 (class 0 is predicted there), pixel acc 3/4
    assert metric.confusion.tolist()[:2] == [[[4, 2], [0, 5]], [[0, 0], [1, 3]]]
    out = metric.compute()
    assert out["miou"][:2].tolist() == pytest.approx([(2 / 3 + 5 / 7) / 2, 0.375])
    assert out["pixel_acc"][:2].tolist() == pytest.approx([9 / 11, 0.75])
    assert math.isnan(out["miou"][2].item()) and math.isnan(out["pixel_acc"][2].item())


def test_binned_confusion_in_halves_and_batched_bins() -> None:
    bins = band_of_pixels(4, 4, [0, 1])
    whole = BinnedConfusion(num_classes=2, num_bins=2)
    whole.update(torch.stack([PRED, 1 - PRED]), torch.stack([TARGET, TARGET]), bins)
    halves = BinnedConfusion(num_classes=2, num_bins=2)
    halves.update(PRED[None], TARGET[None], bins[None])
    halves.update((1 - PRED)[None], TARGET[None], bins)
    assert torch.equal(whole.confusion, halves.confusion)
    assert whole.confusion.sum().item() == 2 * 15
    one_class = BinnedConfusion(num_classes=3, num_bins=1)  # class 2 absent: not averaged
    zeros = torch.zeros(1, 2, 2, dtype=torch.long)
    one_class.update(zeros, zeros, zeros[0])
    assert one_class.compute()["miou"].tolist() == [1.0]


def test_object_distance() -> None:
    masks = torch.zeros(4, 5, 5, dtype=torch.bool)
    masks[0, 2, 2] = True  # centre: 2
    masks[1, 1, 1] = masks[1, 2, 2] = True  # nearest pixel decides: 1
    masks[2, 0, 3] = True  # on the border: 0
    assert object_distance(masks).tolist() == [2, 1, 0, -1]


@pytest.mark.parametrize(
    ("call", "shown"),
    [
        (lambda: cell_rings(0), "grid=0"),
        (lambda: ring_of_cell(torch.tensor([2, 9]), 3), "cell=9"),
        (lambda: pixel_distance(0, 5), "height=0"),
        (lambda: band_edges(64, 33), "num_bands=33"),
        (lambda: band_edges(64, 0), "num_bands=0"),
        (lambda: bin_names_bands([0, 8, 8], 31), "[0, 8, 8]"),
        (lambda: bin_names_bands([0, 8], 5), "max_distance=5"),
        (lambda: band_of_pixels(8, 8, [1, 2]), "[1, 2]"),
        (lambda: binned_sums(torch.ones(3), torch.tensor([0, 1, 4]), 4), "bin=4"),
        (lambda: binned_sums(torch.ones(3), torch.tensor([0, 1]), 4), "(2,)"),
        (lambda: BinnedMean(0), "num_bins=0"),
        (lambda: BinnedConfusion(2, 2).update(torch.full((1, 4, 4), 7), TARGET[None], BANDS), "pred=7"),
        (lambda: BinnedConfusion(2, 2).update(PRED[None], PRED[None] + 3, BANDS), "target=3"),
        (lambda: BinnedConfusion(2, 2).update(PRED[None], TARGET[None], BANDS[:3]), "(3, 4)"),
        (lambda: object_distance(torch.zeros(5, 5, dtype=torch.bool)), "(5, 5)"),
    ],
)
def test_bad_input_raises(call, shown: str) -> None:
    with pytest.raises(PosencError, match="valid") as info:
        call()
    assert shown in str(info.value)
    assert "\n" not in str(info.value)
