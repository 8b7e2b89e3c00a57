"""The padding study's effects, with margins measured on small settings (Islam et al., IJCV 2024;
ICCV 2021): location classification from globally pooled features needs position from the border.

Setting: 3x3 grid canvases of 16 px shape patches (48 px images), the tiny backbone (total stride 16
= the cell size), trained end to end for 100 Adam steps. Measured (seed 0): zero padding 1.00,
circular .11 (chance; the network is exactly shift-invariant on the torus), circular with the
flatten_linear control 1.00, zero padding with PermuteNet's channel permutation (gap_permute) .25.
"""

from __future__ import annotations

from helpers.runs import cached_run

SETTING = [
    "task=location_cls",
    "data.image_size=48",
    "data.canvas.patch_size=16",
    "data.num_train=512",
    "data.num_val=64",
    "data.num_test=128",
    "data.batch_size=32",
    "task.max_steps=100",
    "callbacks.progress=null",
]


def accuracy(tmp_root: str, *overrides: str) -> dict:
    return cached_run(tmp_root, *SETTING, *overrides)


def test_zero_padding_lets_pooled_features_tell_the_location_and_circular_does_not(root):
    zeros = accuracy(root, "padding=zeros")
    circular = accuracy(root, "padding=circular")
    assert zeros["test/accuracy"] >= 0.9
    assert circular["test/accuracy"] <= 0.25  # chance is 1/9
    assert zeros["test/accuracy"] - circular["test/accuracy"] >= 0.6


def test_the_flatten_linear_control_finds_the_location_with_any_padding(root):
    assert accuracy(root, "padding=circular", "readout=flatten_linear")["test/accuracy"] >= 0.9


def test_a_fresh_channel_permutation_every_forward_takes_the_location_away(root):
    """PermuteNet (ICCV 2021): the same zero-padded setting with the pooled channels permuted
    afresh on every forward. Measured (seed 0): gap_linear 1.00, gap_permute .25 (chance .11)."""
    linear = accuracy(root, "padding=zeros")["test/accuracy"]
    permuted = accuracy(root, "padding=zeros", "readout=gap_permute")["test/accuracy"]
    assert linear >= 0.9
    assert permuted <= 0.4
    assert linear - permuted >= 0.5
