"""Heads of the padding study's tasks add no position of their own (posenc.models.heads), and the
CIFAR-style ResNet18 is the authors' shape with every padding applied."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from posenc.errors import PosencError
from posenc.models.backbones import build_backbone
from posenc.models.heads import FlattenLinearHead, GapLinearHead, PixelDecoder


def taps(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 8, 12, 12, generator=g), torch.randn(2, 16, 6, 6, generator=g)]


def shifted(ts: list[torch.Tensor], k: int) -> list[torch.Tensor]:
    """Every tap rolled (circularly) by k pixels of the coarsest map, in its own pixels."""
    return [torch.roll(t, shifts=(k * t.shape[-1] // 6, k * t.shape[-1] // 6), dims=(-2, -1)) for t in ts]


def test_gap_linear_cannot_see_where_a_feature_is_and_flatten_linear_can():
    torch.manual_seed(0)
    sizes = [(12, 12), (6, 6)]
    gap, flat = GapLinearHead([8, 16], sizes, 9), FlattenLinearHead([8, 16], sizes, 9)
    x, moved = taps(), shifted(taps(), 2)
    torch.testing.assert_close(gap(moved), gap(x))  # pooled: the layout is gone
    assert (flat(moved) - flat(x)).abs().max() > 1e-2  # flattened: the layout is seen


def test_pixel_decoder_has_no_padding_of_its_own():
    """On taps of the image's size (no upsampling) the decoder is 1x1 convs only: exactly
    equivariant to circular shifts, so nothing in it knows where the border is."""
    torch.manual_seed(0)
    decoder = PixelDecoder([8, 16], [(12, 12), (12, 12)], 3, width=4).eval()  # fused at 12x12
    g = torch.Generator().manual_seed(1)
    x = [torch.randn(2, 8, 12, 12, generator=g), torch.randn(2, 16, 12, 12, generator=g)]
    moved = [torch.roll(t, shifts=(3, 5), dims=(-2, -1)) for t in x]
    torch.testing.assert_close(decoder(moved, 12), torch.roll(decoder(x, 12), shifts=(3, 5), dims=(-2, -1)))
    assert decoder([t[:, :, :6, :6] for t in x], 24).shape == (2, 3, 24, 24)  # upsampled to the image
    with pytest.raises(PosencError, match="readout.width=0"):
        PixelDecoder([8], [(4, 4)], 3, width=0)


@pytest.mark.parametrize("padding", ["zeros", "reflect", "replicate", "circular", "partial", "none"])
def test_resnet18_cifar_has_no_stem_max_pool_and_takes_every_padding(padding):
    net = build_backbone("resnet18_cifar", padding, trainable=True)
    assert "maxpool" not in dict(net.body.named_children())
    feats = net(torch.rand(1, 3, 96, 96))
    assert [tuple(f.shape[1:]) for f in feats] == [
        (64, 48, 48),
        (64, 48, 48),
        (128, 24, 24),
        (256, 12, 12),
        (512, 6, 6),
    ]
    assert net.trainable and net.training and all(p.requires_grad for p in net.parameters())
    if padding != "zeros":
        modes = {getattr(m, "padding_mode", None) for m in net.modules() if isinstance(m, torch.nn.Conv2d)}
        assert modes != {"zeros"} or padding in ("partial", "none")


@pytest.mark.parametrize("padding", ["zeros", "reflect", "replicate", "circular", "partial", "none"])
def test_vgg11_bn_takes_every_padding(padding):
    """The VGG-BN variant of the global-pooling experiments (Islam, Kowal et al. ICCV 2021)."""
    net = build_backbone("vgg11_bn", padding, trainable=True)
    feats = net(torch.rand(2, 3, 32, 32))
    assert [tuple(f.shape[1:]) for f in feats] == [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4), (512, 2, 2)]
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()) == 8


def test_pixel_decoder_depth_adds_per_pixel_layers_and_no_spatial_mixing():
    """readout.depth: 1x1 layers after fusing; nothing mixes neighbours, so a change at one pixel of
    the (full-size) tap changes only that pixel's logits: the decoder adds capacity, not position."""

    torch.manual_seed(0)
    head = PixelDecoder([8], [(12, 12)], num_classes=3, width=16, fuse_at=0, depth=3).eval()
    assert sum(isinstance(m, nn.Conv2d) for m in head.mlp) == 2
    taps = [torch.randn(2, 8, 12, 12)]
    poked = [taps[0].clone()]
    poked[0][:, :, 5, 7] += 3.0
    with torch.no_grad():
        changed = (head(poked, 12) - head(taps, 12)).abs().amax(dim=(0, 1)) > 0
    assert changed[5, 7] and changed.sum() == 1
    with pytest.raises(PosencError, match="readout.depth=0"):
        PixelDecoder([8], [(12, 12)], num_classes=3, depth=0)
