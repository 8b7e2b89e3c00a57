"""Receptive fields of the taps (for PPP, Lin et al., ICML 2023): hand counts, an empirical
gradient probe of every tap's extent and centre, context margins, and the one-line errors."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from posenc.errors import PosencError
from posenc.models.backbones import build_backbone
from posenc.models.backbones.base import TappedBackbone
from posenc.models.receptive_field import (
    Geometry,
    check_context,
    context_margin,
    margin_needed,
    module_geometry,
    output_size,
    reference_crop,
    tap_geometries,
    tap_output_sizes,
)


@pytest.fixture(scope="module")
def vgg16() -> TappedBackbone:
    return build_backbone("vgg16", "zeros")  # random init; ~1.5 s to build, so built once


def _triples(backbone: TappedBackbone) -> list[tuple[int, int, float]]:
    return [(g.size, g.jump, g.start) for g in tap_geometries(backbone).values()]


def test_vgg16_hand_count(vgg16: TappedBackbone) -> None:
    # relu1_2: two 3x3 convs -> 1 + 2 + 2 = 5, jump 1.
    # relu2_2: pool (+1 x 1) = 6, jump 2; two convs (+2 x 2 each) -> 14.
    # relu3_3: pool (+1 x 2) = 16, jump 4; three convs (+2 x 4 each) -> 40.
    # relu4_3: pool (+1 x 4) = 44, jump 8; three convs (+2 x 8 each) -> 92.
    # relu5_3: pool (+1 x 8) = 100, jump 16; three convs (+2 x 16 each) -> 196.
    # start: the padded 3x3 convs keep it; each 2x2 pool adds half a step: 0, .5, 1.5, 3.5, 7.5.
    assert _triples(vgg16) == [(5, 1, 0.0), (14, 2, 0.5), (40, 4, 1.5), (92, 8, 3.5), (196, 16, 7.5)]


def test_resnet18_hand_count() -> None:
    # stem conv 7x7/2 -> 7, jump 2 (padding 3 centres unit 0 on pixel 0: start 0).
    # maxpool 3x3/2 (+2 x 2) = 11, jump 4; layer1: four 3x3 convs (+2 x 4 each) -> 43.
    # layer2: strided conv (+2 x 4) = 51, jump 8; three convs (+2 x 8 each) -> 99.
    # layer3: (+2 x 8) = 115, jump 16; (+3 x 2 x 16) -> 211. layer4: (+2 x 16) = 243, jump 32; (+3 x 64) -> 435.
    # Every op is padded by (k - 1) / 2: start stays 0. The 1x1 downsample shortcuts are skipped.
    expected = [(7, 2, 0.0), (43, 4, 0.0), (99, 8, 0.0), (211, 16, 0.0), (435, 32, 0.0)]
    assert _triples(build_backbone("resnet18", "zeros")) == expected


def test_tiny_hand_count() -> None:
    # Two 3x3 convs per stage, 2x2 pools between: 5; 6 + 4 + 4 = 14; 16 + 8 + 8 = 32; 36 + 16 + 16 = 68;
    # 76 + 32 + 32 = 140, jumps 1, 2, 4, 8, 16; padded starts as VGG's (0, .5, 1.5, 3.5, 7.5).
    expected = [(5, 1, 0.0), (14, 2, 0.5), (32, 4, 1.5), (68, 8, 3.5), (140, 16, 7.5)]
    assert _triples(build_backbone("tiny", "zeros")) == expected
    # none_shrink: every unit's field starts on a real pixel, unit 0's on pixel 0, so start = radius:
    # 2, 6.5, 15.5, 33.5, 69.5 (each unpadded conv adds one jump to the start).
    shrink = tap_geometries(build_backbone("tiny", "none_shrink"))
    assert [(g.size, g.jump, g.start) for g in shrink.values()] == [
        (5, 1, 2.0),
        (14, 2, 6.5),
        (32, 4, 15.5),
        (68, 8, 33.5),
        (140, 16, 69.5),
    ]
    assert all(g.start == g.radius for g in shrink.values())


def test_none_backbone_is_identity() -> None:
    backbone = build_backbone("none")
    assert tap_geometries(backbone) == {"rgb": Geometry(1, 1, 0.0)}
    assert context_margin(backbone, 64) == 0


def test_module_geometry_ops() -> None:
    # dilation 2: a 3x3 kernel spans 5 px; "same" padding 2 keeps the start: size 5, start 0.
    assert module_geometry(nn.Conv2d(1, 1, 3, padding="same", dilation=2)) == Geometry(5, 1, 0.0)
    # "valid" conv then 3x3/2 avg pool padded by 1: 3 + 2 x 1 = 5, start 1 + (1 - 1) x 1 = 1, jump 2.
    layers = [nn.Conv2d(1, 1, 3, padding="valid"), nn.BatchNorm2d(1), nn.AvgPool2d(3, 2, padding=1)]
    assert module_geometry(layers) == Geometry(5, 2, 1.0)
    block = nn.Sequential()
    block.add_module("conv", nn.Conv2d(1, 1, 3, padding=1))
    block.add_module("downsample", nn.Conv2d(1, 1, 31, stride=8))  # a shortcut: skipped
    assert module_geometry(block) == Geometry(3, 1, 0.0)


def test_non_square_ops_are_one_line_errors() -> None:
    net = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.Conv2d(1, 1, (1, 3)))
    with pytest.raises(PosencError, match=r"receptive field of 1 \(Conv2d\): non-square kernel") as info:
        module_geometry(net)
    assert "\n" not in str(info.value)
    with pytest.raises(PosencError, match="non-square stride"):
        module_geometry(nn.MaxPool2d(2, stride=(1, 2)))
    with pytest.raises(PosencError, match="AdaptiveAvgPool2d is not supported"):
        module_geometry(nn.AdaptiveAvgPool2d(1))


@pytest.mark.parametrize(("name", "padding"), [("tiny", "zeros"), ("tiny", "none_shrink"), ("resnet18", "zeros")])
def test_output_size_matches_forward(name: str, padding: str) -> None:
    backbone = build_backbone(name, padding)
    for size in (141, 150, 167):
        with torch.no_grad():
            taps = backbone(torch.rand(1, 3, size, size))
        assert list(tap_output_sizes(backbone, size).values()) == [t.shape[-1] for t in taps]
    # ceil_mode pools as torch computes them: 5 px -> 3 (the last window starts inside), 4 px -> 2.
    pool = nn.MaxPool2d(2, ceil_mode=True)
    assert [output_size(pool, n) for n in (4, 5)] == [pool(torch.rand(1, 1, n, n)).shape[-1] for n in (4, 5)]


def test_output_size_too_small_is_one_line_error() -> None:
    with pytest.raises(PosencError, match=r"an input of 100 px is too small: module \d+ gets a 2 px map"):
        output_size(build_backbone("tiny", "none_shrink").body, 100)


def _linearized(backbone: TappedBackbone) -> TappedBackbone:
    """``backbone`` with positive conv weights, no bias, identity ReLUs and average pools instead of
    max pools: the gradient of a unit is then > 0 on exactly the real input pixels of its field."""
    probe = copy.deepcopy(backbone).double()
    for parent in list(probe.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(parent, name, nn.Identity())
            elif isinstance(child, nn.MaxPool2d):
                setattr(parent, name, nn.AvgPool2d(child.kernel_size, child.stride, child.padding))
    with torch.no_grad():
        for module in probe.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.fill_(1.0 / module.weight[0].numel())
                if module.bias is not None:
                    module.bias.zero_()
    return probe


def _support(backbone: TappedBackbone, tap: int, index: int, size: int) -> tuple[list[int], list[int]]:
    """Input rows and columns on which output unit ``(index, index)`` of ``tap`` has a gradient."""
    image = torch.rand(1, 3, size, size, dtype=torch.float64, requires_grad=True)
    backbone(image)[tap][0, :, index, index].sum().backward()
    grad = image.grad.abs().sum(dim=(0, 1))
    rows = torch.nonzero(grad.sum(dim=1) > 0).flatten().tolist()
    cols = torch.nonzero(grad.sum(dim=0) > 0).flatten().tolist()
    return rows, cols


@pytest.mark.parametrize(
    ("name", "padding", "size"),
    [
        ("tiny", "zeros", 176),
        ("tiny", "none_shrink", 176),
        ("resnet18", "zeros", 136),
    ],
)
def test_geometry_matches_gradient_probe(name: str, padding: str, size: int) -> None:
    torch.manual_seed(0)
    backbone = build_backbone(name, padding, taps=["f1", "f2", "f3"] if name == "resnet18" else None)
    probe = _linearized(backbone)
    outs = tap_output_sizes(backbone, size)
    for k, (tap, geometry) in enumerate(tap_geometries(backbone).items()):
        # a unit whose field lies inside the image, as central as possible, and the first unit
        inside = [
            i
            for i in range(outs[tap])
            if 0 <= geometry.centre(i) - geometry.radius and geometry.centre(i) + geometry.radius <= size - 1
        ]
        assert inside, tap
        for index in (inside[len(inside) // 2], 0):
            rows, cols = _support(probe, k, index, size)
            low = max(0.0, geometry.centre(index) - geometry.radius)
            high = min(size - 1.0, geometry.centre(index) + geometry.radius)
            expected = list(range(math.ceil(low), math.floor(high) + 1))
            assert rows == expected, (tap, index)
            assert cols == expected, (tap, index)
        rows, _ = _support(probe, k, inside[len(inside) // 2], size)
        assert len(rows) == geometry.size
        assert (rows[0] + rows[-1]) / 2 == geometry.centre(inside[len(inside) // 2])


def _every_field_inside(backbone: TappedBackbone, crop: int, margin: int) -> bool:
    sizes = tap_output_sizes(backbone, crop)
    for tap, g in tap_geometries(backbone).items():
        for i in range(sizes[tap]):
            centre = g.centre(i) + margin  # in the context's coordinates
            if centre - g.radius < 0 or centre + g.radius > crop + 2 * margin - 1:
                return False
    return True


@pytest.mark.parametrize(
    ("name", "padding", "crop", "expected"),
    [
        # VGG16, crop 224: relu5_3 needs radius - start = 97.5 - 7.5 = 90 on the left and
        # 7.5 + 13 x 16 + 97.5 - 223 = 90 on the right -> 96, the next multiple of the jump 16.
        ("vgg16", "zeros", 224, 96),
        # ResNet18, crop 224: layer4 needs 217 - 0 on the left (right: 6 x 32 + 217 - 223 = 186) -> 224 (jump 32).
        ("resnet18", "zeros", 224, 224),
        # tiny, crop 160: f5 needs 69.5 - 7.5 = 62 on either side -> 64 (jump 16).
        ("tiny", "zeros", 160, 64),
        # none_shrink: every unit's field is inside the crop already.
        ("tiny", "none_shrink", 160, 0),
    ],
)
def test_context_margin(name: str, padding: str, crop: int, expected: int, vgg16: TappedBackbone) -> None:
    backbone = vgg16 if name == "vgg16" else build_backbone(name, padding)
    margin = context_margin(backbone, crop)
    assert margin == expected
    jump = max(g.jump for g in tap_geometries(backbone).values())
    assert margin % jump == 0
    assert _every_field_inside(backbone, crop, margin)
    if margin:
        assert not _every_field_inside(backbone, crop, margin - jump)


def test_context_margin_taps(vgg16: TappedBackbone) -> None:
    backbone = vgg16
    # relu3_3 alone, crop 224: 19.5 - 1.5 = 18 (right: 1.5 + 55 x 4 + 19.5 - 223 = 18) -> 20 (jump 4).
    assert context_margin(backbone, 224, taps=["f3"]) == 20
    with pytest.raises(PosencError, match="taps="):
        context_margin(backbone, 224, taps=["f7"])
    assert margin_needed(Geometry(5, 1, 0.0), 10, 10) == 2.0


def test_check_context_message() -> None:
    check_context(448, 224, 112, "PPP of vgg16")
    with pytest.raises(PosencError) as info:
        check_context(300, 224, 112, "PPP of vgg16")
    assert str(info.value) == (
        "data.context_size=300 is not valid: PPP of vgg16 needs contexts of at least 448 px (crop 224 + 2 x margin 112)"
    )


def test_reference_crop() -> None:
    tap = torch.arange(100.0).view(1, 1, 10, 10)
    crop = reference_crop(tap, 8, 4, (3, 4))
    assert torch.equal(crop, tap[..., 2:5, 2:6])
    with pytest.raises(PosencError, match="margin=6 is not valid: expected a multiple >= 0 of the tap's jump 4"):
        reference_crop(tap, 6, 4, (3, 3))
    with pytest.raises(PosencError, match="does not fit"):
        reference_crop(tap, 8, 4, (9, 9))


# -- measured geometry: any backbone (timm, a user's module) -----------------------------------------
@pytest.mark.parametrize("name", ["tiny", "resnet18", "resnet18_cifar"])
def test_measured_geometry_equals_the_derived_one(name: str) -> None:
    """The measurement used for backbones that are not a plain sequence of stages gives exactly
    the geometry the recursion derives where both apply (residual blocks included)."""
    from posenc.models.receptive_field import measured_geometries

    backbone = build_backbone(name)
    assert measured_geometries(backbone) == tap_geometries(backbone)


def test_measured_geometry_gives_a_padding_free_reference_on_timm() -> None:
    """On a timm ResNet-D the context margin from the measured geometry makes the crop's
    reference features independent of anything beyond the context: the same window of the
    context's taps, with the context set inside a wider frame of other pixels, is bit-identical."""
    pytest.importorskip("timm")
    from posenc.models.backbones.timm import build_timm_backbone

    torch.manual_seed(0)
    backbone = build_timm_backbone("resnet50d", taps=["f1", "f2", "f3"]).double()
    crop = 32
    margin = context_margin(backbone, crop)
    geometries = tap_geometries(backbone)
    assert margin > geometries["f3"].radius  # the f3 field (95 px) does not fit the crop
    context = torch.rand(1, 3, crop + 2 * margin, crop + 2 * margin, dtype=torch.float64)
    frame = 64  # a multiple of every jump: the window stays aligned
    framed = torch.rand(1, 3, context.shape[-1] + 2 * frame, context.shape[-1] + 2 * frame, dtype=torch.float64)
    framed[..., frame:-frame, frame:-frame] = context
    with torch.no_grad():
        plain, wide = backbone(context), backbone(framed)
        crops = backbone(context[..., margin:-margin, margin:-margin])
    for tap, a, b, c in zip(backbone.tap_names, plain, wide, crops):
        jump = geometries[tap].jump
        size = tuple(c.shape[-2:])
        ref = reference_crop(a, margin, jump, size)
        assert torch.equal(ref, reference_crop(b, margin + frame, jump, size)), tap
        assert not torch.allclose(ref, c), tap  # the crop's own features do see padding


@pytest.mark.parametrize(
    ("name", "why"),
    [("mobilenetv3_small_100", "depends on every pixel"), ("resnetv2_50x1_bit", "depends on every pixel")],
)
def test_ops_over_the_whole_map_are_refused_in_one_line(name: str, why: str) -> None:
    """Squeeze-excitation (MobileNetV3) and GroupNorm (BiT) make a unit depend on every pixel:
    no padding-free reference exists, said in one line."""
    pytest.importorskip("timm")
    from posenc.models.backbones.timm import build_timm_backbone

    with pytest.raises(PosencError, match=why) as info:
        tap_geometries(build_timm_backbone(name, taps=["f2"]))
    assert "\n" not in str(info.value)


def test_the_atlas_reads_a_global_tap_as_none_and_a_local_one_as_measured() -> None:
    """``allow_global``: squeeze-excitation's taps are None (no local receptive field) instead of an
    error; a ViT declares every tap global without measuring; tiny's derived fields are kept."""
    pytest.importorskip("timm")
    from posenc.models.backbones import build_backbone
    from posenc.models.backbones.timm import build_timm_backbone
    from posenc.models.backbones.vit import build_vit_backbone
    from posenc.models.receptive_field import measured_geometries, tap_depths, tap_receptive_fields

    assert measured_geometries(build_timm_backbone("mobilenetv3_small_100", taps=["f2"]), allow_global=True) == {
        "f2": None
    }
    vit = build_vit_backbone(taps=["f1", "f2"])
    assert tap_receptive_fields(vit) == {"f1": None, "f2": None}
    with pytest.raises(PosencError, match="depends on every pixel"):
        tap_geometries(vit)
    depths = tap_depths(build_backbone("tiny"), 64)
    assert [depths[f"tap/f{i}/rf_px"] for i in range(1, 6)] == [5, 14, 32, 68, 140]
    assert depths["tap/f3/rf_rel"] == 0.5 and tap_depths(vit, 64)["tap/f1/rf_rel"] is None
