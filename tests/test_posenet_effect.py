"""The science of PosENet (Islam et al., ICLR 2020) on a tiny random-init backbone: zero padding
lets the readout recover absolute position; circular padding and no padding (upsample + valid
conv) give far less; the readout alone on RGB finds none.

Measured on this config (48 train crops, 64 px, 4 epochs, seed 0), natural test images, SPC:
zeros H .973 / V .962; circular H .349 / V .347; none H .048 / V .431 (V: image content, sky on
top, not position: H stays at 0); backbone=none H -.03 / V .23. Margins below leave room for seed
and platform noise.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    from conftest import TINY, compose_run
    from posenc.training import run

    root = tmp_path_factory.mktemp("effect")
    out = {}
    for label, override in [("zeros", "padding=zeros"), ("circular", "padding=circular"),
                            ("none", "padding=none"), ("rgb", "backbone=none")]:
        out[label] = run(compose_run([*TINY, override], root / label))
    return out


def spc(metrics: dict, target: str, inputs: str = "natural") -> float:
    return metrics[f"test/{inputs}/{target}/spc"]


@pytest.mark.parametrize("target", ["H", "V"])
def test_zero_padding_reads_out_position(results, target):
    assert spc(results["zeros"], target) > 0.85
    assert spc(results["zeros"], target, "white") > 0.85


@pytest.mark.parametrize("target", ["H", "V"])
def test_zero_padding_beats_no_padding_by_far(results, target):
    assert spc(results["zeros"], target) > abs(spc(results["none"], target)) + 0.35


@pytest.mark.parametrize("target", ["H", "V"])
def test_zero_padding_beats_circular(results, target):
    assert spc(results["zeros"], target) > abs(spc(results["circular"], target)) + 0.35


def test_posenet_alone_finds_no_horizontal_position(results):
    assert abs(spc(results["rgb"], "H")) < 0.3


def test_constant_input_with_zero_padding_carries_no_position(results):
    """A black image gives all-zero features (zero bias init): the readout output is constant,
    so its SPC is exactly 0 (the paper prints .0 for such maps)."""
    assert spc(results["zeros"], "H", "black") == 0.0
