"""Mirrored photos (posenc.data.mirror, ``data.mirror``): the views, their units, and the reason they exist: on
the four views of an image a translation-equivariant readout's H and V correlations cancel exactly."""

from __future__ import annotations

import pytest
import torch

from posenc.data.datamodule import PositionDataModule
from posenc.data.mirror import all_views, mirror, random_codes
from posenc.data.position_maps import make_target
from posenc.errors import PosencError
from posenc.metrics.spearman import spearman_per_image


def test_a_code_flips_the_axes_its_bits_name() -> None:
    image = torch.arange(12.0).reshape(1, 3, 4)
    assert torch.equal(mirror(image, 0), image)
    assert torch.equal(mirror(image, 1), image[..., [3, 2, 1, 0]])
    assert torch.equal(mirror(image, 2), image[..., [2, 1, 0], :])
    assert torch.equal(mirror(image, 3), image[..., [2, 1, 0], :][..., [3, 2, 1, 0]])


def test_views_and_training_codes() -> None:
    source, code = all_views(3)
    assert source.tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2] and code.tolist() == [0, 1, 2, 3] * 3
    codes = random_codes(4000, seed=5)
    assert torch.equal(codes, random_codes(4000, seed=5)) and not torch.equal(codes, random_codes(4000, seed=6))
    assert set(torch.bincount(codes, minlength=4).tolist()) <= set(range(900, 1100))  # each view ~1/4


def _module(mirror_mode: str) -> PositionDataModule:
    dm = PositionDataModule(
        num_train=8, num_val=4, num_test=6, image_size=32, batch_size=4, mirror=mirror_mode, test_inputs=["natural"]
    )
    dm.setup()
    return dm


def test_each_natural_test_crop_is_shown_in_four_views_of_one_unit() -> None:
    plain, mirrored = _module("none").test_sets["natural"], _module("test").test_sets["natural"]
    assert len(plain) == 6 and len(mirrored) == 24
    for i in range(6):
        views = [mirrored[4 * i + k] for k in range(4)]
        assert {int(v["unit"]) for v in views} == {int(plain[i]["unit"])}  # the photo, as without mirrors
        for k, view in enumerate(views):
            assert torch.equal(view["image"], mirror(plain[i]["image"], k))


def test_training_crops_are_flipped_at_random_and_the_cache_key_knows() -> None:
    plain, flipped = _module("none"), _module("train")
    assert len(flipped.train_set) == len(plain.train_set) == 8
    same = [torch.equal(flipped.train_set[i]["image"], plain.train_set[i]["image"]) for i in range(8)]
    assert not all(same)
    assert len(flipped.test_sets["natural"]) == 6  # test images untouched in mode train
    assert plain.fingerprint() != flipped.fingerprint()


def test_an_equivariant_readout_reads_exactly_zero_on_h_and_v_over_the_views() -> None:
    """f(x) = a blur of x's brightness commutes with flips: whatever the content, the Spearman correlations
    of its maps with H and V sum to 0 over an image's four views (docs/reference.md, the floors)."""
    test = _module("test").test_sets["natural"]
    images = torch.stack([test[i]["image"] for i in range(len(test))])
    maps = torch.nn.functional.avg_pool2d(images.double().mean(1, keepdim=True), 5, stride=1, padding=2)[:, 0]
    maps = (maps * 1e6).round()  # equal values stay tied: round-off of a flipped sum must not break their ranks
    for name in ("H", "V"):
        target = make_target(name, 32).expand(len(maps), 32, 32)
        scores = spearman_per_image(maps.flatten(1), target.flatten(1))
        assert scores.abs().max() > 0.05  # the content alone does correlate with position, view by view
        assert scores.view(-1, 4).sum(1).abs().max() < 1e-9


def test_a_bad_mode_is_refused_in_one_line() -> None:
    with pytest.raises(PosencError, match="data.mirror.*valid: none, train, test, both"):
        PositionDataModule(mirror="sideways")
