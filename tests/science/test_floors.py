"""The position-blind floors read zero (issue 33 §3, docs/reference.md "The floors"): at the embedded default
(VGG16 protocol, 224 px, mirrored photos, 1000 steps), a readout told nothing about position scores 0 within
its 95% interval on H, V and G, while the zero-padded VGG16 stays far above it.

Slow (four full default runs, about 9.5 min on 2 CPU cores): ``pytest -n 0 -m slow tests/science/test_floors.py``,
a CI step of its own (.ci/run)."""

from __future__ import annotations

import pytest
from helpers.runs import cached_run

from posenc.viz.tables import interval

FLOORS = {
    "posenet_alone": ["backbone=none"],
    "vit_without_embedding": ["backbone=vit_tiny", "backbone.position_embedding=none"],
    "vgg16_without_padding": ["backbone=vgg16", "padding=none_shrink"],  # `none` resamples: not blind
}
QUIET = ["callbacks.progress=null", "logger=csv"]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FLOORS))
def test_a_position_blind_readout_reads_zero_within_its_interval(name: str, root: str) -> None:
    metrics = cached_run(root, *FLOORS[name], *QUIET)
    for target in ("H", "V", "G"):
        key = f"test/natural/{target}/spc"
        low, high = interval(metrics, key) or (float("nan"), float("nan"))
        assert low <= 0.0 <= high, f"{name}: {key} = {metrics[key]:.3f} [{low:.3f}, {high:.3f}] excludes 0"
        assert high - low < 0.6, f"{name}: {key}'s interval [{low:.3f}, {high:.3f}] is too wide to mean anything"


@pytest.mark.slow
def test_the_padded_readout_keeps_its_level(root: str) -> None:
    """Mirroring takes the content's cue away, not the border's: zero-padded VGG16 reads H, V, G above .8
    with intervals far from 0 (measured .95-.96 with the mirrors, as without)."""
    metrics = cached_run(root, "backbone=vgg16", *QUIET)
    for target in ("H", "V", "G"):
        key = f"test/natural/{target}/spc"
        low, _ = interval(metrics, key) or (float("nan"), float("nan"))
        assert metrics[key] > 0.8 and low > 0.5, f"{key} = {metrics[key]:.3f}, interval from {low:.3f}"
