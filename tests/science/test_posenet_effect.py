"""The science of PosENet (Islam et al., ICLR 2020) on a tiny random-init backbone: zero padding
lets the readout recover absolute position; circular padding and no padding (upsample + valid
conv) give far less; the readout alone on RGB finds none.

Measured on this config (48 train crops, 64 px, 4 epochs, seed 0), natural test images, SPC:
zeros H .973 / V .962; circular H .349 / V .347 (.133 / -.448 on a later install, whose zeros
stayed at .975 / .960); none H .048 / V .431 (V: image content, sky on
top, not position: H stays at 0); backbone=none H -.03 / V .23. Margins below leave room for seed
and platform noise.

A canvas is a border of its own (Islam et al., IJCV 2024): the same crops shrunk into an 8 px frame
of canvas (``data.canvas.margin=8``) give circular padding its position back, and how much depends
on the canvas colour. Measured, circular, natural H / V / G: no canvas .133 / -.448 / .227; black
.757 / .782 / .749; white .834 / .821 / .813; mean (ImageNet's mean colour, the least contrast with
photos) .588 / .439 / .475; noise .823 / .786 / .701.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    from helpers.runs import TINY, compose_run

    from posenc.run.train import run

    root = tmp_path_factory.mktemp("effect")
    out = {}
    frame = ["padding=circular", "data.canvas.margin=8"]
    for label, overrides in [
        ("zeros", ["padding=zeros"]),
        ("circular", ["padding=circular"]),
        ("none", ["padding=none"]),
        ("rgb", ["backbone=none"]),
        *[(f"circular_{fill}", [*frame, f"data.canvas.fill={fill}"]) for fill in ("black", "white", "mean")],
    ]:
        out[label] = run(compose_run([*TINY, *overrides], root / label))
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


@pytest.mark.parametrize("fill", ["black", "white", "mean"])
def test_a_canvas_gives_circular_padding_position(results, fill):
    """The frame's inner edge sits at the same place in every image, so the readout finds position
    that circular padding alone does not give (measured H: .133 alone, .59-.83 framed)."""
    assert spc(results[f"circular_{fill}"], "H") > abs(spc(results["circular"], "H")) + 0.3


def test_the_canvas_colour_decides_how_much(results):
    """A canvas of the photos' mean colour contrasts least with them: less position than white or
    black (measured mean H .588, V .439 against white .834, .821 and black .757, .782)."""
    for target in ("H", "V"):
        mean = spc(results["circular_mean"], target)
        assert min(spc(results["circular_white"], target), spc(results["circular_black"], target)) > mean + 0.12
