"""posenc.metrics.equivariance: a tap's translation-equivariance error (issue 35, item 2), against independent
statements: a conv is exactly equivariant away from the border, and circular padding is exactly equivariant to
circular shifts by multiples of a tap's stride."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from posenc.config.compose import compose_run
from posenc.metrics.equivariance import equivariance_errors


def test_a_zero_padded_conv_errs_only_in_its_border_columns():
    """One 3x3 conv, zero padding 1, shift 1 px: every column at distance >= 1 from the border is computed from
    the same pixels in both crops, so its error is exactly 0; the border columns are not (the padded zeros)."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    images = torch.rand(2, 3, 12, 13)
    (found,) = equivariance_errors(lambda x: [conv(x)], images, crop=12, strides=[1])
    assert found["shift_px"] == 1 and found["error"] > 0
    profile = found["by_distance"]
    assert profile[0] > 1e-3 and all(abs(e) < 1e-12 for e in profile[1:])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    def build(padding: str):
        cfg = compose_run(["backbone=tiny", f"padding={padding}"], tmp_path_factory.mktemp("eq"))
        return instantiate(cfg.backbone).eval()

    return build


def test_circular_padding_is_equivariant_to_circular_shifts_at_every_tap(tiny):
    net = tiny("circular")
    images = torch.rand(2, 3, 64, 64)
    for found in equivariance_errors(net, images, crop=64, strides=net.tap_strides, mode="circular"):
        assert found["error"] < 1e-10, found
    zeros = tiny("zeros")
    deepest = equivariance_errors(zeros, images, crop=64, strides=zeros.tap_strides, mode="circular")[-1]
    assert deepest["error"] > 1e-3  # zero padding is not: the seam meets the padded border


def test_zero_padding_errs_most_at_the_border(tiny):
    net = tiny("zeros")
    images = torch.rand(4, 3, 64, 64 + 16)
    found = equivariance_errors(net, images, crop=64, strides=net.tap_strides)
    for tap in found[:3]:  # maps of 64, 32 and 16 columns: the border column errs most
        assert tap["by_distance"][0] == max(tap["by_distance"]), tap
        low, high = tap["error_ci"]
        assert 0 <= low <= tap["error"] <= high


def test_bad_arguments_are_one_line():
    from posenc.errors import PosencError

    with pytest.raises(PosencError, match="images width"):
        equivariance_errors(lambda x: [x], torch.rand(1, 3, 8, 8), crop=8, strides=[1])
    with pytest.raises(PosencError, match="mode"):
        equivariance_errors(lambda x: [x], torch.rand(1, 3, 8, 9), crop=8, strides=[1], mode="wrap")
