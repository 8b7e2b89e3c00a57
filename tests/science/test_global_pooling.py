"""Position after global pooling (Islam, Kowal et al., ICCV 2021): PermuteNet's channel permutation,
the GAPNet head, the shift augmentation of the translation-invariance experiment, and channel
ranking and the region-specific attack on trained runs (``python -m posenc.analysis.*``), with their
one-line errors. The location-vs-permutation effect is in test_padding_effects.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers.runs import compose_run

from posenc.data.augment import random_shift
from posenc.errors import PosencError
from posenc.models.backbones import build_backbone
from posenc.models.heads import GapLinearHead, GapNetHead

QUIET = ["callbacks.progress=null"]


# --------------------------------------------------------------------------- permutation
@pytest.mark.parametrize("permute_at", [2, 5])
def test_the_permutation_is_fresh_on_every_forward_and_applied_in_eval_too(permute_at):
    torch.manual_seed(0)
    net = build_backbone("tiny", "zeros", trainable=True)
    x = torch.rand(2, 3, 32, 32)
    net.eval()
    reference = net(x)[-1]
    net.set_channel_permutation(permute_at)
    for mode in (False, True):  # eval, then train
        net.train(mode)
        first, second = net(x)[-1], net(x)[-1]
        assert not torch.equal(first, second), "the same order twice: the permutation is not fresh"
        if permute_at == 5 and not mode:  # the last tap itself: the same values in another channel order
            assert not torch.equal(first, reference)
            torch.testing.assert_close(first.sort(dim=1).values, reference.sort(dim=1).values)
    net.eval()
    net.set_channel_permutation(None)
    torch.testing.assert_close(net(x)[-1], reference)  # switched off: the plain network again


def test_permute_at_must_name_a_tap_of_the_backbone():
    net = build_backbone("tiny", "zeros", taps=["f3", "f5"], trainable=True)
    with pytest.raises(PosencError, match=r"readout.permute_at=2 is not valid for backbone tiny .* valid: 3, 5$"):
        net.set_channel_permutation(2)
    with pytest.raises(PosencError, match=r"readout.permute_at=6 is not valid: expected null or one of 1, 2, 3, 4, 5"):
        GapLinearHead([8], [(4, 4)], 3, permute_at=6)


def test_gapnet_logits_are_the_pooled_class_maps():
    torch.manual_seed(0)
    head = GapNetHead([8], [(6, 6)], num_classes=4)
    tap = torch.randn(2, 8, 6, 6)
    torch.testing.assert_close(head([tap]), head.conv(tap).mean(dim=(2, 3)))
    assert head.conv.padding == (1, 1) and head([tap]).shape == (2, 4)  # the authors' padding 1
    with pytest.raises(PosencError, match="readout.kernel_size=9 is not valid: expected 1..8"):
        GapNetHead([8], [(6, 6)], num_classes=4, kernel_size=9)


def test_gapnet_refuses_a_conv_that_leaves_nothing_to_pool():
    """On a 3x3 last map a 3x3 conv without padding leaves 1x1: a dense layer over the unpooled
    map, which reads the cell at any padding; the head says so in one line."""
    with pytest.raises(
        PosencError,
        match="readout.padding=0 is not valid: readout.kernel_size=3 leaves a 1x1 map of the last tap's 3x3",
    ) as info:
        GapNetHead([8], [(3, 3)], num_classes=9, padding=0)
    assert "valid: readout.padding >= 1" in str(info.value)
    assert GapNetHead([8], [(3, 3)], num_classes=9).conv(torch.zeros(1, 8, 3, 3)).shape[-1] == 3


# --------------------------------------------------------------------------- shift augmentation
def test_a_shift_moves_each_image_by_its_own_offset_and_repeats_the_edge():
    images = torch.zeros(64, 1, 12, 12)
    images[:, :, 5, 6] = 1.0
    images[:, :, :, 0] = 0.5  # a left edge column: what a shift to the right repeats
    moved = random_shift(images, 3, torch.Generator().manual_seed(0))
    dots = [(m[0] == 1.0).nonzero().tolist() for m in moved]
    assert all(len(d) == 1 for d in dots)  # the object moved whole (it is 5+ px from every edge)
    dy = torch.tensor([d[0][0] - 5 for d in dots])
    dx = torch.tensor([d[0][1] - 6 for d in dots])
    assert dy.abs().max() <= 3 and dx.abs().max() <= 3 and len(set(zip(dy.tolist(), dx.tolist()))) > 10
    for m, x in zip(moved, dx.tolist()):
        if x > 0:  # shifted right: the uncovered columns repeat the edge column
            assert torch.all(m[0, :, : x + 1] == 0.5)
    assert torch.equal(random_shift(images, 0), images)


# --------------------------------------------------------------------------- trained runs
@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """A small semseg run and a small location_cls run (tiny backbone, a few steps)."""
    from posenc.run.train import run

    root = tmp_path_factory.mktemp("trained")
    scenes = [
        "task=semseg",
        "data.image_size=32",
        "data.num_train=32",
        "data.num_val=0",
        "data.num_test=24",
        "data.batch_size=16",
        "trainer.max_epochs=2",
        *QUIET,
    ]
    canvases = [
        "task=location_cls",
        "data.image_size=48",
        "data.num_train=32",
        "data.num_val=0",
        "data.num_test=16",
        "data.batch_size=16",
        "trainer.max_epochs=1",
        *QUIET,
    ]
    for name, overrides in (("semseg", scenes), ("location_cls", canvases)):
        assert run(compose_run(overrides, root / name)) is not None
    return {"semseg": root / "semseg", "location_cls": root / "location_cls"}


def test_rank_channels_of_a_trained_run_writes_the_rankings(trained, capsys):
    from posenc.cli.rank_channels import main

    assert main([str(trained["location_cls"]), "--layer", "f4"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == str(trained["location_cls"] / "analysis")
    result = json.loads((trained["location_cls"] / "analysis" / "rank_channels_f4.json").read_text())
    assert result["num_channels"] == 64 and result["num_images"] == 16 * 9  # the balanced test: each patch in 9 cells
    for name in ("overall", "left", "right"):
        assert sorted(result["ranking"][name]) == list(range(64))
    assert result["ranking"]["left"] == result["ranking"]["right"][::-1] or len(set(result["scores"]["signed"])) < 64
    assert sum(result["sides"].values()) == 16 * 9 and result["sides"]["left"] > 0 and result["sides"]["right"] > 0
    assert (trained["location_cls"] / "analysis" / "rank_channels_f4.png").stat().st_size > 5_000


def test_the_attack_on_a_trained_segmentation_run(trained, capsys):
    from posenc.cli.attack import main

    args = [str(trained["semseg"]), "--counts", "1,8,32", "--draws", "2", "--seed", "3"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "vs one forward pass" in printed and printed.strip().splitlines()[-1] == str(trained["semseg"] / "analysis")
    result = json.loads((trained["semseg"] / "analysis" / "attack_f5.json").read_text())
    assert result["counts"] == [1, 8, 32] and result["draws"] == 2 and result["seed"] == 3
    assert set(result["ranked"]) == {"overall", "left", "right"}
    assert set(result["baseline"]) == {"whole", "left", "centre", "right"}
    assert len(result["random"]["left"]["mean"]) == 3 and result["settings"] == 1 + 3 * (3 + 2)
    assert main(args) == 0  # the random baseline is seeded: the same numbers again
    assert json.loads((trained["semseg"] / "analysis" / "attack_f5.json").read_text())["random"] == result["random"]


@pytest.mark.parametrize(
    ("module", "args", "words"),
    [
        ("rank_channels", ["{empty}"], ["holds no trained model", "config.yaml"]),
        ("rank_channels", ["{location_cls}", "--layer", "f9"], ["'f9'", "valid: f1, f2, f3, f4, f5"]),
        ("attack", ["{semseg}", "--counts", "1,65"], ["N=65 is not valid", "64 channels", "1..64"]),
        ("attack", ["{location_cls}"], ["needs a segmentation run", "LocationClassificationTask"]),
    ],
)
def test_bad_analysis_input_is_one_line(trained, tmp_path, capsys, module, args, words):
    import importlib

    main = importlib.import_module(f"posenc.tools.{module}").main
    paths = {"empty": tmp_path, **{k: str(v) for k, v in trained.items()}}
    assert main([a.format(**paths) for a in args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    for word in words:
        assert word in err[0], err[0]
