"""Tests for posenc.models.readouts: the PosENet readout (Islam et al., ICLR 2020, Sec. 3.2) and the
resize-and-concatenate of multi-level features (checked against a numpy bilinear reference)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from posenc.errors import PosencError
from posenc.models.readouts import DEPTHS, KERNEL_SIZES, PosENetReadout, resize_and_concat


def _x(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _bilinear_matrix(n_in: int, n_out: int, align_corners: bool = False) -> np.ndarray:
    """``[n_out, n_in]`` 1-D bilinear interpolation: half-pixel centres (align_corners=False), or
    the first and last samples on the first and last input pixels (align_corners=True)."""
    m = np.zeros((n_out, n_in))
    for i in range(n_out):
        if align_corners:
            src = i * (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
        else:
            src = max((i + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = int(math.floor(src))
        i1 = min(i0 + 1, n_in - 1)
        w = src - i0
        m[i, i0] += 1 - w
        m[i, i1] += w
    return m


def _np_resize(f: np.ndarray, size: int, align_corners: bool = False) -> np.ndarray:
    rows = _bilinear_matrix(f.shape[-2], size, align_corners)
    cols = _bilinear_matrix(f.shape[-1], size, align_corners)
    return np.einsum("oh,bchw,pw->bcop", rows, f, cols)


# --------------------------------------------------------------------------- resize_and_concat
@pytest.mark.parametrize("align_corners", [True, False])
def test_resize_and_concat_against_numpy(align_corners: bool) -> None:
    feats = [_x(2, 3, 28, 28, seed=1), _x(2, 4, 14, 14, seed=2), _x(2, 5, 7, 7, seed=3), _x(2, 2, 40, 40, seed=4)]
    out = resize_and_concat(feats, 28, align_corners=align_corners)
    assert out.shape == (2, 14, 28, 28)
    want = np.concatenate([_np_resize(f.double().numpy(), 28, align_corners) for f in feats], axis=1)
    np.testing.assert_allclose(out.numpy(), want, rtol=0, atol=3e-5)  # float32 round-off
    assert torch.equal(out[:, :3], feats[0])  # a tap already at size is passed unchanged


def test_resize_and_concat_constant_and_single_pixel() -> None:
    one = torch.arange(6.0).view(1, 6, 1, 1)  # f5 of a small input can be 1x1
    out = resize_and_concat([one], 5)
    torch.testing.assert_close(out, one.expand(1, 6, 5, 5), rtol=0, atol=1e-6)  # up to float round-off
    ramp = torch.arange(4.0).view(1, 1, 1, 4).expand(1, 1, 4, 4)
    up = resize_and_concat([ramp], 8, align_corners=False)[0, 0, 0]
    # half-pixel centres: ends copy the border, interior is piecewise linear with step 0.5
    want = torch.tensor([0.0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3.0])
    torch.testing.assert_close(up, want, rtol=0, atol=1e-6)
    up = resize_and_concat([ramp], 7, align_corners=True)[0, 0, 0]  # the authors' convention
    torch.testing.assert_close(up, torch.arange(7.0) / 2, rtol=0, atol=1e-6)


def test_align_corners_samples_the_border_ring() -> None:
    """A 224-px early tap that is 1 only on its outermost ring (where zero padding marks it):
    the authors' ``align_corners=True`` resize keeps the ring on the 28x28 border; the half-pixel
    convention (False) averages pixels 3-4 and 219-220 there and loses it entirely."""
    ring = torch.zeros(1, 1, 224, 224)
    ring[..., 0, :] = ring[..., -1, :] = ring[..., :, 0] = ring[..., :, -1] = 1.0
    authors = resize_and_concat([ring], 28, align_corners=True)[0, 0]
    assert authors[0].min() == 1 and authors[-1].min() == 1 and authors[1:-1, 1:-1].abs().max() == 0
    assert resize_and_concat([ring], 28, align_corners=False).abs().max() == 0


# --------------------------------------------------------------------------- structure
@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("k", KERNEL_SIZES)
def test_spatial_size_without_padding(k: int, depth: int) -> None:
    r = PosENetReadout(in_channels=6, kernel_size=k, depth=depth, padding=0, feature_size=28)
    x = _x(2, 6, 28, 28)
    inner = r.net(x).shape
    assert inner == (2, 1, 28 - depth * (k - 1), 28 - depth * (k - 1))
    assert r(x, 64).shape == (2, 1, 64, 64)


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("k", KERNEL_SIZES)
def test_spatial_size_with_same_padding(k: int, depth: int) -> None:
    r = PosENetReadout(in_channels=6, kernel_size=k, depth=depth, padding=(k - 1) // 2, feature_size=28)
    assert r.net(_x(2, 6, 28, 28)).shape == (2, 1, 28, 28)
    assert r(_x(2, 6, 28, 28), (32, 48)).shape == (2, 1, 32, 48)


@pytest.mark.parametrize("depth", DEPTHS)
def test_layers(depth: int) -> None:
    r = PosENetReadout(in_channels=10, kernel_size=3, depth=depth)
    layers = list(r.net)
    convs = [m for m in layers if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(10, 10)] * (depth - 1) + [(10, 1)]
    assert all(c.padding == (0, 0) and c.kernel_size == (3, 3) for c in convs)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in layers) == depth
    assert sum(isinstance(m, nn.ReLU) for m in layers) == depth - 1
    assert isinstance(layers[-1], nn.Sigmoid) and isinstance(layers[-2], nn.BatchNorm2d)
    assert layers[-2].num_features == 1
    assert r.feature_size == 28  # the paper's default


def test_xavier_uniform_init_and_zero_bias() -> None:
    torch.manual_seed(0)
    r = PosENetReadout(in_channels=64, kernel_size=5, depth=2)
    convs = [m for m in r.net if isinstance(m, nn.Conv2d)]
    for conv in convs:
        fan_in = conv.in_channels * 25
        fan_out = conv.out_channels * 25
        bound = math.sqrt(6 / (fan_in + fan_out))
        w = conv.weight.detach()
        assert w.abs().max() <= bound
        assert w.abs().max() > 0.99 * bound  # uniform fills the interval (>= 1600 draws)
        assert abs(w.std().item() / (bound / math.sqrt(3)) - 1) < 0.05  # var of U(-a, a) = a^2 / 3
        assert abs(w.mean().item()) < 0.05 * bound
        assert torch.equal(conv.bias, torch.zeros_like(conv.bias))
    # not PyTorch's default kaiming-uniform(a=sqrt(5)) bound 1/sqrt(fan_in)
    assert convs[0].weight.abs().max() > 1.5 / math.sqrt(64 * 25)


# --------------------------------------------------------------------------- forward
def test_output_in_open_unit_interval() -> None:
    torch.manual_seed(1)
    r = PosENetReadout(in_channels=8, kernel_size=3, depth=2)
    x = _x(4, 8, 28, 28, seed=5) * 5
    for mode in (True, False):
        r.train(mode)
        out = r(x, 224)
        assert out.shape == (4, 1, 224, 224)
        assert out.min() > 0 and out.max() < 1
        assert out.std() > 1e-3  # not a constant map


def test_forward_is_net_then_bilinear_upsampling() -> None:
    torch.manual_seed(2)
    r = PosENetReadout(in_channels=4, kernel_size=3, depth=1).eval()
    x = _x(1, 4, 28, 28, seed=6)
    inner = r.net(x)
    assert inner.shape[-1] == 26
    assert torch.equal(r(x, 26), inner)  # same size: no resampling
    want = _np_resize(inner.detach().double().numpy(), 56)
    np.testing.assert_allclose(r(x, 56).detach().numpy(), want, rtol=0, atol=1e-5)  # float32 weights


def test_without_sigmoid_values_leave_the_unit_interval() -> None:
    torch.manual_seed(3)
    r = PosENetReadout(in_channels=4, kernel_size=1, depth=1, sigmoid=False).train()
    assert not any(isinstance(m, nn.Sigmoid) for m in r.net)
    out = r(_x(8, 4, 7, 7, seed=7), 7)
    assert out.min() < 0 and out.max() > 0  # train-mode BN output: zero mean, unit variance
    assert abs(out.mean().item()) < 1e-5 and abs(out.var(unbiased=False).item() - 1) < 1e-3


def test_feature_size_boundary() -> None:
    # 19 - 3 * (7 - 1) = 1 pixel left: allowed; 18 would leave none
    r = PosENetReadout(in_channels=2, kernel_size=7, depth=3, feature_size=19).eval()
    assert r.net(_x(1, 2, 19, 19)).shape == (1, 1, 1, 1)
    with pytest.raises(ValueError, match="feature_size=18 is too small for depth 3 of 7x7 convs"):
        PosENetReadout(in_channels=2, kernel_size=7, depth=3, feature_size=18)
    PosENetReadout(in_channels=2, kernel_size=7, depth=3, padding=3, feature_size=2)  # padded: fine


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("k", [0, 2, 4, 9])
def test_invalid_kernel_size(k: int) -> None:
    with pytest.raises(PosencError) as excinfo:
        PosENetReadout(in_channels=4, kernel_size=k)
    assert str(excinfo.value) == f"unknown readout.kernel_size {k}; valid: 1, 3, 5, 7"


@pytest.mark.parametrize("depth", [0, 4])
def test_invalid_depth(depth: int) -> None:
    with pytest.raises(PosencError) as excinfo:
        PosENetReadout(in_channels=4, depth=depth)
    assert str(excinfo.value) == f"unknown readout.depth {depth}; valid: 1, 2, 3"


def test_negative_padding_is_refused() -> None:
    with pytest.raises(ValueError, match="readout.padding must be >= 0, got -1"):
        PosENetReadout(in_channels=4, padding=-1)


def test_bad_padding_and_feature_size_are_posenc_errors() -> None:
    with pytest.raises(PosencError):
        PosENetReadout(in_channels=4, padding=-1)
    with pytest.raises(PosencError):
        PosENetReadout(in_channels=4, kernel_size=7, depth=3, feature_size=18)


def test_fused_readout_equals_independent_readouts() -> None:
    """num_maps heads in one module == num_maps separate readouts with the same weights."""
    torch.manual_seed(0)
    for depth in (1, 2, 3):
        fused = PosENetReadout(6, num_maps=3, kernel_size=3, depth=depth, feature_size=12)
        singles = [PosENetReadout(6, num_maps=1, kernel_size=3, depth=depth, feature_size=12) for _ in range(3)]
        fused_convs = [m for m in fused.net if isinstance(m, torch.nn.Conv2d)]
        for h, single in enumerate(singles):
            for fc, sc in zip(fused_convs, [m for m in single.net if isinstance(m, torch.nn.Conv2d)]):
                n = sc.out_channels
                sc.weight.data.copy_(fc.weight.data[h * n : (h + 1) * n])
                sc.bias.data.copy_(fc.bias.data[h * n : (h + 1) * n])
        x = torch.randn(4, 6, 12, 12)
        out = fused(x, 20)
        ref = torch.cat([s(x, 20) for s in singles], dim=1)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
        # gradients stay per head: a loss on head 1 leaves heads 0 and 2 untouched
        fused.zero_grad()
        fused(x, 20)[:, 1].sum().backward()
        last = fused_convs[-1]
        assert last.weight.grad[0].abs().sum() == 0 and last.weight.grad[2].abs().sum() == 0
        assert last.weight.grad[1].abs().sum() > 0


def test_fused_heads_have_per_head_xavier_bounds() -> None:
    fused = PosENetReadout(64, num_maps=5, kernel_size=3, depth=1)
    conv = fused.net[0]
    bound = (6.0 / (64 * 9 + 1 * 9)) ** 0.5  # a single head's fan_in + fan_out
    assert conv.weight.abs().max() <= bound
    assert conv.weight.abs().max() > 0.9 * bound


def test_global_batchnorm_without_ddp_is_batchnorm() -> None:
    from posenc.models.readouts import GlobalBatchNorm2d

    torch.manual_seed(0)
    x = torch.randn(4, 3, 5, 5)
    ours, ref = GlobalBatchNorm2d(3), torch.nn.BatchNorm2d(3)
    torch.testing.assert_close(ours(x), ref(x))
    torch.testing.assert_close(ours.running_var, ref.running_var)


@pytest.mark.parametrize(
    "k,padding,cin,cout", [(3, 0, 40, 4), (5, 2, 60, 2), (1, 0, 8, 3), (7, 3, 147, 3), (3, 1, 6, 5)]
)
def test_thin_conv_equals_conv2d_values_and_gradients(k: int, padding: int, cin: int, cout: int) -> None:
    """ThinConv2d (1x1 projection + shifted sums) is Conv2d: same outputs, same gradients for the
    weights, bias and input, channels-last or not (the last case is wide: plain Conv2d)."""
    from posenc.models.readouts import ThinConv2d

    torch.manual_seed(0)
    thin = ThinConv2d(cin, cout, k, padding=padding).double()
    conv = nn.Conv2d(cin, cout, k, padding=padding).double()
    conv.load_state_dict(thin.state_dict())
    for layout in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(3, cin, 11, 11, dtype=torch.float64).contiguous(memory_format=layout).requires_grad_()
        y_thin, y_conv = thin(x), conv(x)
        torch.testing.assert_close(y_thin, y_conv, rtol=1e-10, atol=1e-10)
        g = torch.randn_like(y_conv)
        grads_thin = torch.autograd.grad(y_thin, [x, thin.weight, thin.bias], g)
        grads_conv = torch.autograd.grad(y_conv, [x, conv.weight, conv.bias], g)
        for a, b in zip(grads_thin, grads_conv):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("layout", ["channels_last", "contiguous"])
def test_heads_on_channel_ranges_equal_separate_convs_in_value_and_weight_gradient(layout):
    """The fused readout's heads, each reading its own channel range (taps, and seeds side by side: the atlas
    engine), against an independent statement: one ``F.conv2d`` per head on its range alone; the outputs and
    the weight gradient agree to float32 rounding, on channels-last features (the block product) and others."""
    groups = [(0, 24), (0, 24), (0, 8), (0, 8), (8, 24), (24, 48), (24, 32), (32, 48)]
    readout = PosENetReadout(48, num_maps=len(groups), feature_size=8, channel_groups=groups, sigmoid=False)
    conv = readout.net[0]
    x = _x(4, 48, 8, 8, seed=3)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    out = conv(x)
    weights = conv.weight.detach().clone().requires_grad_(True)
    expected = torch.cat(
        [
            torch.nn.functional.conv2d(x[:, a:b], weights[h : h + 1, a:b], conv.bias.detach()[h : h + 1])
            for h, (a, b) in enumerate(groups)
        ],
        dim=1,
    )
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    probe = _x(*out.shape, seed=4)
    (out * probe).sum().backward()
    (expected * probe).sum().backward()
    torch.testing.assert_close(conv.weight.grad, weights.grad, rtol=1e-4, atol=1e-5)
    for h, (a, b) in enumerate(groups):  # outside its range a head's weights get no gradient
        assert conv.weight.grad[h, :a].abs().max().item() == 0.0 if a else True
        assert conv.weight.grad[h, b:].abs().max().item() == 0.0 if b < 48 else True
