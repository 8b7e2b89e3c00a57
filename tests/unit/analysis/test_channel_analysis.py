"""Position information per channel (Islam, Kowal et al., ICCV 2021): flip scores, rankings,
channel zeroing, column-third regions and the region-specific attack."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest
import torch
from torch import Tensor

from posenc.analysis.channels import (
    REGIONS,
    attack_curves,
    attack_figure,
    channel_scores,
    check_counts,
    content_sides,
    global_pool,
    random_channel_sets,
    rank_channels,
    region_bins,
    region_miou,
    scores_figure,
    zero_channels,
)
from posenc.errors import PosencError
from posenc.viz.figures import save_figure

LEFT_CHANNEL = 3  # the one left-biased channel of the hand-built model
NUM_FEATURES = 6


def blob_images(num: int, size: int, seed: int) -> tuple[Tensor, Tensor, list[int]]:
    """Black images with one bright 4x4 blob, alternately in the left and right half (random
    position within the half): images ``[num, 3, size, size]``, masks ``[num, size, size]``, sides."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.zeros(num, 3, size, size)
    masks = torch.zeros(num, size, size, dtype=torch.bool)
    sides = []
    half = size // 2
    for i in range(num):
        left = i % 2 == 0
        x0 = int(torch.randint(0, half - 4 + 1, (1,), generator=generator)) + (0 if left else half)
        y0 = int(torch.randint(0, size - 4 + 1, (1,), generator=generator))
        images[i, :, y0 : y0 + 4, x0 : x0 + 4] = 0.5 + 0.5 * torch.rand(3, 1, 1, generator=generator)
        masks[i, y0 : y0 + 4, x0 : x0 + 4] = True
        sides.append(1 if left else -1)
    return images, masks, sides


def toy_model(images: Tensor) -> Tensor:
    """Features ``[B, 6, H, W]``: channel 3 is the intensity in the left half of the columns, the
    others are left-right symmetric (scaled intensity, intensity plus its mirror, a constant)."""
    intensity = images.mean(dim=1)
    width = intensity.shape[-1]
    left_half = (torch.arange(width) < width // 2).to(intensity)
    channels = [
        intensity,
        2.0 * intensity,
        intensity + intensity.flip(-1),
        intensity * left_half,
        torch.ones_like(intensity),
        0.5 * intensity,
    ]
    return torch.stack(channels, dim=1)


# --------------------------------------------------------------------------- scores and rankings


def test_content_sides_literal() -> None:
    masks = torch.zeros(5, 3, 8, dtype=torch.bool)
    masks[0, :, 0:2] = True  # left
    masks[1, 1, 6] = True  # right
    masks[2, :, 3:5] = True  # centroid 3.5 = (8 - 1) / 2: centred
    # masks[3] empty
    masks[4, 0, 0] = masks[4, 0, 6] = True  # centroid 3.0: just left of 3.5
    assert content_sides(masks).tolist() == [1.0, -1.0, 0.0, 0.0, 1.0]
    assert content_sides(masks.long()).tolist() == [1.0, -1.0, 0.0, 0.0, 1.0]
    with pytest.raises(PosencError):
        content_sides(torch.full((1, 2, 2), 0.5))


def test_left_channel_ranks_first() -> None:
    images, masks, sides = blob_images(16, 16, seed=0)
    assert content_sides(masks).tolist() == [float(s) for s in sides]
    pooled = global_pool(toy_model(images))
    pooled_flipped = global_pool(toy_model(images.flip(-1)))
    assert pooled.shape == (16, NUM_FEATURES)
    scores = channel_scores(pooled, pooled_flipped, content_sides(masks))

    # Channel 3 pools the blob's mass when the blob is on the left and 0 otherwise, so its
    # |difference| and its side-weighted difference are both the blob's mean intensity / (H W).
    mass = images.mean(dim=1).sum(dim=(1, 2)).double() / (16 * 16)
    assert scores["overall"][LEFT_CHANNEL].item() == pytest.approx(mass.mean().item(), rel=1e-6)
    assert scores["signed"][LEFT_CHANNEL].item() == pytest.approx(mass.mean().item(), rel=1e-6)
    others = [c for c in range(NUM_FEATURES) if c != LEFT_CHANNEL]
    assert scores["overall"][others].abs().max().item() < 1e-6
    assert scores["overall"][LEFT_CHANNEL].item() > 0.01

    ranking = rank_channels(scores)
    assert ranking["overall"][0] == LEFT_CHANNEL
    assert ranking["left"][0] == LEFT_CHANNEL
    assert ranking["right"][-1] == LEFT_CHANNEL
    assert sorted(ranking["overall"]) == list(range(NUM_FEATURES))

    # Without sides every image counts +1: half the blobs are on the right, so channel 3's
    # signed score cancels to ~0 and it no longer stands out as left-specific.
    unsided = channel_scores(pooled, pooled_flipped)
    assert unsided["overall"].tolist() == scores["overall"].tolist()
    expected = (mass * torch.tensor(sides, dtype=torch.float64)).mean().item()
    assert unsided["signed"][LEFT_CHANNEL].item() == pytest.approx(expected, abs=1e-7)
    assert abs(expected) < 0.5 * scores["signed"][LEFT_CHANNEL].item()


def test_channel_scores_literal_and_shape_errors() -> None:
    pooled = torch.tensor([[1.0, 0.0, 2.0], [0.0, 3.0, 2.0]])
    flipped = torch.tensor([[0.0, 1.0, 2.0], [2.0, 0.0, 2.0]])
    scores = channel_scores(pooled, flipped, torch.tensor([1.0, -1.0]))
    assert scores["overall"].tolist() == [1.5, 2.0, 0.0]
    assert scores["signed"].tolist() == [1.5, -2.0, 0.0]
    assert rank_channels(scores) == {"overall": [1, 0, 2], "left": [0, 2, 1], "right": [1, 2, 0]}
    with pytest.raises(PosencError) as info:
        channel_scores(pooled, flipped[:, :2])
    assert "\n" not in str(info.value) and "pooled_flipped.shape=(2, 2)" in str(info.value)
    with pytest.raises(PosencError):
        channel_scores(pooled, flipped, torch.ones(3))


def test_rank_ties_keep_lower_index_first() -> None:
    scores = {"overall": torch.tensor([1.0, 2.0, 1.0, 2.0]), "signed": torch.tensor([0.0, 1.0, 0.0, 1.0])}
    assert rank_channels(scores) == {"overall": [1, 3, 0, 2], "left": [1, 3, 0, 2], "right": [0, 2, 1, 3]}


# --------------------------------------------------------------------------- channel selection


def test_zero_channels_zeroes_exactly_the_chosen() -> None:
    generator = torch.Generator().manual_seed(1)
    taps = [torch.rand(2, 4, 3, 3, generator=generator) + 1, torch.rand(2, 6, 2, 2, generator=generator) + 1]
    before = [t.clone() for t in taps]
    for channels in ([0, 4], torch.tensor([4, 0])):
        out = zero_channels(taps, 1, channels)
        assert out is not taps and len(out) == 2
        assert out[0] is taps[0]
        assert out[1] is not taps[1]
        assert torch.equal(out[1][:, [0, 4]], torch.zeros(2, 2, 2, 2))
        keep = [1, 2, 3, 5]
        assert torch.equal(out[1][:, keep], taps[1][:, keep])
        assert (out[1][:, keep] != 0).all()
        for tap, original in zip(taps, before):
            assert torch.equal(tap, original)


def test_random_channel_sets_are_seeded() -> None:
    first = random_channel_sets(64, 8, 5, seed=3)
    again = random_channel_sets(64, 8, 5, seed=3)
    other = random_channel_sets(64, 8, 5, seed=4)
    assert len(first) == 5
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert any(not torch.equal(a, b) for a, b in zip(first, other))
    assert len({tuple(s.tolist()) for s in first}) == 5  # the draws differ from each other
    for s in first:
        assert s.dtype == torch.long and s.numel() == 8
        assert len(set(s.tolist())) == 8
        assert 0 <= s.min().item() and s.max().item() < 64


def test_errors_name_value_and_range() -> None:
    with pytest.raises(PosencError) as info:
        check_counts([4, 600], 512, "f5")
    assert str(info.value) == "N=600 is not valid: layer f5 has 512 channels; expected 1..512"
    for bad in (0, True, 2.0, -1):
        with pytest.raises(PosencError, match="expected 1..8"):
            check_counts([bad], 8, "f1")
    assert check_counts([4, 1, 4, 2], 8, "f1") == [1, 2, 4]

    taps = [torch.ones(1, 2, 2, 2)]
    with pytest.raises(PosencError) as info:
        zero_channels(taps, 1, [0])
    assert str(info.value).startswith("layer=1 is not valid") and "\n" not in str(info.value)
    with pytest.raises(PosencError, match="channel=2 is not valid"):
        zero_channels(taps, 0, [0, 2])
    with pytest.raises(PosencError):
        random_channel_sets(4, 5, 1, seed=0)


# --------------------------------------------------------------------------- regions


def test_region_bins_literal() -> None:
    assert region_bins(2, 6).tolist() == [[0, 0, 1, 1, 2, 2]] * 2
    assert region_bins(1, 7).tolist() == [[0, 0, 1, 1, 1, 2, 2]]  # round(2.33)=2, round(4.67)=5
    assert region_bins(1, 5).tolist() == [[0, 0, 1, 2, 2]]  # round(1.67)=2, round(3.33)=3
    assert region_bins(3, 9).dtype == torch.long


def test_region_miou_hand_computed() -> None:
    target = torch.tensor([[[0, 0, 1, 1, 0, 1], [0, 1, 1, 1, 0, 255]]])
    pred = torch.tensor([[[0, 0, 1, 1, 1, 1], [0, 0, 1, 1, 0, 0]]])
    result = region_miou(pred, target, num_classes=2)
    # left: class 0 TP 3 FP 1 -> 3/4, class 1 FN 1 -> 0; centre: all class 1, correct;
    # right (one pixel ignored): class 0 TP 1 FN 1 -> 1/2, class 1 TP 1 FP 1 -> 1/2;
    # whole: class 0 TP 4 FN 1 FP 1 -> 4/6, class 1 TP 5 FN 1 FP 1 -> 5/7.
    assert result == pytest.approx({"whole": (4 / 6 + 5 / 7) / 2, "left": 0.375, "centre": 1.0, "right": 0.5})
    assert set(result) == {"whole", *REGIONS}
    twice = region_miou(pred.repeat(2, 1, 1), target.repeat(2, 1, 1), num_classes=2)
    assert twice == pytest.approx(result)


# --------------------------------------------------------------------------- the attack

DRIVER = 5  # the channel that alone drives the prediction in the left third
ATTACK_CHANNELS = 8


def attack_setup() -> tuple[list[Tensor], Tensor]:
    """Cached taps and labels: tap 1 has 8 channels, each a copy of the 0/1 labels ``[10, 6, 9]``."""
    generator = torch.Generator().manual_seed(0)
    target = (torch.rand(10, 6, 9, generator=generator) > 0.5).long()
    target[0, 0, 0] = 255
    labels = target.clamp(max=1).float()
    taps = [torch.rand(10, 2, 3, 3, generator=generator), labels.unsqueeze(1).repeat(1, ATTACK_CHANNELS, 1, 1)]
    return taps, target


def make_head(calls: list[int]):
    """Class-1 logit: channel ``DRIVER`` in the left third, the max over the other channels in the
    centre and right thirds; records the batch sizes and that no gradient is tracked."""

    def head(batch: list[Tensor]) -> Tensor:
        assert not torch.is_grad_enabled()
        calls.append(batch[1].shape[0])
        features = batch[1]
        others = torch.cat([features[:, :DRIVER], features[:, DRIVER + 1 :]], dim=1).amax(dim=1)
        left = region_bins(features.shape[-2], features.shape[-1]) == 0
        score = torch.where(left, features[:, DRIVER], others)
        return torch.stack([0.5 - score, score - 0.5], dim=1)

    return head


def test_attack_curves_left_channel(tmp_path: Path) -> None:
    taps, target = attack_setup()
    before = [t.clone() for t in taps]
    others = [c for c in range(ATTACK_CHANNELS) if c != DRIVER]
    rankings = {"left": [DRIVER, *others], "right": [*others, DRIVER]}
    calls: list[int] = []
    result = attack_curves(
        make_head(calls),
        taps,
        target,
        layer=1,
        rankings=rankings,
        counts=[4, 1, 2],
        num_classes=2,
        draws=4,
        seed=7,
        batch_size=3,
    )
    assert max(calls) == 3 and sum(calls) == 10 * (1 + 2 * 3 + 3 * 4)
    assert all(torch.equal(t, b) for t, b in zip(taps, before))
    assert result["counts"] == [1, 2, 4] and result["draws"] == 4 and result["seed"] == 7 and result["layer"] == 1
    assert result["baseline"] == {"whole": 1.0, "left": 1.0, "centre": 1.0, "right": 1.0}

    # Zeroing the driver: the left third predicts class 0 everywhere -> mIoU = (IoU_0 + 0) / 2.
    left_labels = target[:, :, :3]
    valid = left_labels != 255
    dropped = ((left_labels == 0) & valid).sum().item() / valid.sum().item() / 2
    assert result["ranked"]["left"]["left"] == pytest.approx([dropped] * 3)
    assert max(result["ranked"]["left"]["left"]) < result["baseline"]["left"] - 0.3
    assert result["ranked"]["left"]["right"] == [result["baseline"]["right"]] * 3
    assert result["ranked"]["left"]["centre"] == [result["baseline"]["centre"]] * 3
    assert max(result["ranked"]["left"]["whole"]) < result["baseline"]["whole"] - 0.1
    for region in ("whole", *REGIONS):  # the driver is last in "right": nothing changes
        assert result["ranked"]["right"][region] == [1.0] * 3

    # Random draws: each N uses its own seed (seed + N); a draw hurts the left third iff it
    # contains the driver.
    for i, n in enumerate(result["counts"]):
        lefts = [dropped if DRIVER in s.tolist() else 1.0 for s in random_channel_sets(ATTACK_CHANNELS, n, 4, 7 + n)]
        assert result["random"]["left"]["mean"][i] == pytest.approx(statistics.fmean(lefts))
        assert result["random"]["left"]["std"][i] == pytest.approx(statistics.pstdev(lefts))
        assert result["random"]["right"]["mean"][i] == 1.0 and result["random"]["right"]["std"][i] == 0.0

    again = attack_curves(make_head([]), taps, target, 1, rankings, [1, 2, 4], 2, draws=4, seed=7)
    assert json.loads(json.dumps(again)) == json.loads(json.dumps(result))  # batch size does not matter
    one = attack_curves(make_head([]), taps, target, 1, rankings, [2], 2, draws=1, seed=0)
    assert one["random"]["left"]["std"] == [0.0]
    assert not any(math.isnan(v) for v in one["baseline"].values())

    with pytest.raises(PosencError, match="N=9 is not valid: layer 1 has 8 channels"):
        attack_curves(make_head([]), taps, target, 1, rankings, [9], 2)

    pooled = global_pool(taps[1])
    scores = channel_scores(pooled, global_pool(taps[1].flip(-1)))
    for name, fig in (("scores", scores_figure(scores, "f1")), ("attack", attack_figure(result))):
        path = save_figure(fig, tmp_path / f"{name}.png")
        assert path.is_file() and path.stat().st_size > 1000
