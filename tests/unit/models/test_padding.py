"""Tests for posenc.models.padding (padding schemes of Islam et al., ICLR 2020 / IJCV 2024)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torchvision.models import resnet18, vgg16

from posenc.errors import PosencError
from posenc.models.padding import (
    PADDING_MODES,
    PaddingSpec,
    PartialConv2d,
    UpsampledValidConv2d,
    convert_padding,
    count_padded_convs,
    minimum_input_size,
)

BORDER_MODES = ("reflect", "replicate", "circular", "partial")


def _conv(k: int = 3, pad: int = 1, seed: int = 0, **kw: object) -> nn.Conv2d:
    torch.manual_seed(seed)
    return nn.Conv2d(4, 5, k, padding=pad, **kw)  # type: ignore[arg-type]


def _x(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _ring(h: int, w: int, width: int = 1) -> torch.Tensor:
    mask = torch.ones(h, w, dtype=torch.bool)
    mask[width:-width, width:-width] = False
    return mask


@pytest.fixture(scope="module")
def vgg_features() -> nn.Module:
    torch.manual_seed(0)
    return vgg16(weights=None).features.eval()


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)
    return resnet18(weights=None).eval()


@pytest.mark.parametrize("mode", BORDER_MODES)
def test_border_modes_change_only_the_border_ring(mode: str) -> None:
    x = _x(1, 4, 12, 12)
    ref = _conv()
    with torch.no_grad():
        base = ref(x)[0]
        out = convert_padding(copy.deepcopy(ref), mode)(x)[0]
    ring = _ring(12, 12)
    assert torch.allclose(out[:, ~ring], base[:, ~ring], atol=1e-6)
    assert (out[:, ring] - base[:, ring]).abs().max() > 1e-3


@pytest.mark.parametrize("k,pad,edge,corner", [(3, 1, 9 / 6, 9 / 4), (5, 2, 25 / 15, 25 / 9)])
def test_partial_conv_ratios_match_hand_computed(k: int, pad: int, edge: float, corner: float) -> None:
    ref = _conv(k, pad)
    part = convert_padding(copy.deepcopy(ref), "partial")
    assert isinstance(part, PartialConv2d)
    x = _x(1, 4, 12, 12)
    with torch.no_grad():
        zb = ref(x) - ref.bias.view(1, -1, 1, 1)
        pb = part(x) - ref.bias.view(1, -1, 1, 1)
    assert torch.allclose(pb[..., pad:-pad, pad:-pad], zb[..., pad:-pad, pad:-pad], atol=1e-6)
    # a pixel on the outermost edge (middle of the top row) and the corners
    assert torch.allclose(pb[..., 0, 6], zb[..., 0, 6] * edge, atol=1e-5)
    assert torch.allclose(pb[..., 6, -1], zb[..., 6, -1] * edge, atol=1e-5)
    for i, j in [(0, 0), (0, -1), (-1, 0), (-1, -1)]:
        assert torch.allclose(pb[..., i, j], zb[..., i, j] * corner, atol=1e-5)


def _brute_force_ratio(h: int, w: int, conv: nn.Conv2d) -> torch.Tensor:
    """Count real taps per output pixel with plain loops (independent of the module)."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = conv.kernel_size, conv.stride, conv.padding, conv.dilation
    oh, ow = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    ratio = torch.empty(oh, ow)
    for i in range(oh):
        for j in range(ow):
            n = sum(
                0 <= i * sh - ph + a * dh < h and 0 <= j * sw - pw + b * dw < w for a in range(kh) for b in range(kw)
            )
            ratio[i, j] = kh * kw / n
    return ratio


def test_partial_conv_stride_dilation_groups_no_bias_and_cache() -> None:
    torch.manual_seed(0)
    ref = nn.Conv2d(4, 6, 3, stride=2, padding=2, dilation=2, groups=2, bias=False)
    part = convert_padding(copy.deepcopy(ref), "partial")
    assert isinstance(part, PartialConv2d) and part.bias is None
    x = _x(2, 4, 11, 9)
    with torch.no_grad():
        expected = ref(x) * _brute_force_ratio(11, 9, ref)
        out = part(x)
        part(_x(2, 4, 11, 9, seed=3))
    assert out.shape == expected.shape
    assert torch.allclose(out, expected, atol=1e-5)
    assert len(part._ratio_cache) == 1  # same size: reused, not recomputed
    with torch.no_grad():
        part(_x(1, 4, 8, 8))
    assert len(part._ratio_cache) == 2


@pytest.mark.parametrize("k,stride,pad,side", [(3, 1, 1, 12), (7, 2, 3, 64), (7, 2, 3, 63)])
def test_upsampled_valid_conv_keeps_output_shape(k: int, stride: int, pad: int, side: int) -> None:
    ref = nn.Conv2d(3, 8, k, stride=stride, padding=pad)
    conv = convert_padding(copy.deepcopy(ref), "none")
    assert isinstance(conv, UpsampledValidConv2d)
    x = _x(1, 3, side, side)
    assert conv(x).shape == ref(x).shape


@pytest.mark.parametrize("k,pad,authors_extra", [(3, 1, 2), (5, 2, 2), (7, 3, 3), (1, 0, 0)])
def test_none_upsample_authors_grows_by_half_the_kernel_with_one_bumped_to_two(
    k: int, pad: int, authors_extra: int
) -> None:
    """The ICCV 2021 authors' "no padding": resize by (k-1)//2 px (1 -> 2) before the valid conv;
    posenc's default resizes by 2 * pad. The authors' 7x7 stride-2 stem maps 96 px to 47, not 48."""
    ref = nn.Conv2d(3, 4, k, stride=2 if k == 7 else 1, padding=pad)
    x = _x(1, 3, 96, 96)
    ours = convert_padding(copy.deepcopy(ref), "none") if pad else ref
    theirs = convert_padding(copy.deepcopy(ref), "none", none_upsample="authors") if pad else ref
    if not pad:  # an unpadded conv is left as it is under both rules
        assert type(convert_padding(copy.deepcopy(ref), "none", none_upsample="authors")) is nn.Conv2d
        return
    assert theirs.extra_pixels() == (authors_extra, authors_extra)
    assert ours.extra_pixels() == (2 * pad, 2 * pad)
    resized = torch.nn.functional.interpolate(x, size=(96 + authors_extra,) * 2, mode="bilinear", align_corners=False)
    expected = torch.nn.functional.conv2d(resized, ref.weight, ref.bias, ref.stride)
    assert torch.equal(theirs(x), expected)
    stride = ref.stride[0]
    assert theirs(x).shape[-1] == (96 + authors_extra - k) // stride + 1  # 47 for the 7x7 stem, 94 for 5x5
    assert ours(x).shape == ref(x).shape
    with pytest.raises(PosencError, match="padding.none_upsample.*'kernel'.*padding, authors"):
        PaddingSpec("none", none_upsample="kernel")


def test_constant_input_gives_constant_output_without_zero_border() -> None:
    x = torch.full((1, 4, 10, 10), 2.0)
    ref = _conv()
    with torch.no_grad():
        for mode in ("none", "replicate", "reflect", "circular"):
            out = convert_padding(copy.deepcopy(ref), mode)(x)
            assert torch.allclose(out, out[..., :1, :1].expand_as(out), atol=1e-5), mode
        zeros_out = ref(x)
    assert (zeros_out - zeros_out[..., 5:6, 5:6]).abs().max() > 1e-3  # zero border is visible


def test_none_shrink_shrinks_by_two() -> None:
    conv = convert_padding(_conv(), "none_shrink")
    assert conv(_x(1, 4, 12, 12)).shape[-2:] == (10, 10)


def _conv_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: m.weight for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


EXPECTED_TYPE = {"partial": PartialConv2d, "none": UpsampledValidConv2d}


def _check_converted(orig: nn.Module, model: nn.Module, mode: str, n_padded: int) -> None:
    before, after = _conv_weights(orig), _conv_weights(model)
    assert before.keys() == after.keys()
    for name in before:
        assert torch.equal(before[name], after[name]), name
    convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    origs = {n: m for n, m in orig.named_modules() if isinstance(m, nn.Conv2d)}
    padded = [n for n, m in origs.items() if m.padding != (0, 0)]
    assert len(padded) == n_padded
    for n in padded:
        if mode in EXPECTED_TYPE:
            assert type(convs[n]) is EXPECTED_TYPE[mode]
        elif mode == "none_shrink":
            assert convs[n].padding == (0, 0)
        else:
            assert type(convs[n]) is nn.Conv2d and convs[n].padding_mode == mode
    for n, m in origs.items():  # unpadded convs are untouched
        if n not in padded:
            assert type(convs[n]) is nn.Conv2d and convs[n].padding_mode == "zeros"
    assert count_padded_convs(model) == (0 if mode == "none_shrink" else n_padded)


@pytest.mark.parametrize("mode", PADDING_MODES)
def test_convert_vgg16_features(vgg_features: nn.Module, mode: str) -> None:
    model = convert_padding(copy.deepcopy(vgg_features), mode)
    _check_converted(vgg_features, model, mode, n_padded=13)
    x = _x(1, 3, 64, 64)
    with torch.no_grad():
        if mode == "none_shrink":  # first block only: two 3x3 convs (-4 px) and a 2x2 pool
            assert model[:5](x).shape == (1, 64, 30, 30)
        else:
            assert model(x).shape == vgg_features(x).shape == (1, 512, 2, 2)


@pytest.mark.parametrize("mode", PADDING_MODES)
def test_convert_resnet18(resnet: nn.Module, mode: str) -> None:
    model = convert_padding(copy.deepcopy(resnet), mode)
    # stem 7x7 + 16 3x3 convs in BasicBlocks; the three 1x1 downsample convs are unpadded
    _check_converted(resnet, model, mode, n_padded=17)
    assert isinstance(model.maxpool, nn.MaxPool2d) and model.maxpool.padding == 1
    if mode != "none_shrink":  # residual shapes mismatch with none_shrink
        x = _x(1, 3, 64, 64)
        with torch.no_grad():
            assert model(x).shape == (1, 1000)
            feats = nn.Sequential(*list(model.children())[:-2])
            assert feats(x).shape == (1, 512, 2, 2)


def test_parameters_are_shared_not_copied() -> None:
    model = nn.Sequential(nn.Sequential(_conv()), nn.ReLU())
    weight, bias = model[0][0].weight, model[0][0].bias
    convert_padding(model, "partial")
    assert model[0][0].weight is weight and model[0][0].bias is bias


def test_unknown_mode_errors() -> None:
    with pytest.raises(PosencError, match="unknown padding 'mirror'; valid: zeros, reflect") as info:
        convert_padding(_conv(), "mirror")
    assert all(m in str(info.value) for m in PADDING_MODES)
    with pytest.raises(PosencError, match="'mirror'"):
        PaddingSpec(name="mirror")


def test_padding_spec_apply() -> None:
    model = nn.Sequential(_conv(), nn.ReLU())
    assert PaddingSpec(name="partial").apply(model) is model
    assert isinstance(model[0], PartialConv2d)


def _runs_on_meta(model: nn.Module, side: int) -> bool:
    meta = copy.deepcopy(model).to("meta")
    try:
        meta(torch.empty(1, 3, side, side, device="meta"))
    except RuntimeError:
        return False
    return True


def test_minimum_input_size_vgg_none_shrink(vgg_features: nn.Module) -> None:
    model = convert_padding(copy.deepcopy(vgg_features), "none_shrink")
    s = minimum_input_size(model)
    # by hand: 5 blocks of (2, 2, 3, 3, 3) valid 3x3 convs, each followed by a 2x2 pool
    assert s == 212
    assert _runs_on_meta(model, s) and not _runs_on_meta(model, s - 1)
    assert minimum_input_size(vgg_features) == 32  # zero padding: only the 5 pools limit it


def test_minimum_input_size_real_forward_and_error() -> None:
    torch.manual_seed(0)
    net = convert_padding(
        nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.MaxPool2d(2), nn.Conv2d(5, 2, 3, padding=1)), "none_shrink"
    )
    s = minimum_input_size(net)
    assert s == 8  # 8 -> 6 -> 3 -> 1
    net(torch.randn(1, 3, s, s))
    with pytest.raises(RuntimeError):
        net(torch.randn(1, 3, s - 1, s - 1))
    with pytest.raises(PosencError, match="20x20"):
        minimum_input_size(nn.Conv2d(3, 1, 50), upper=20)
