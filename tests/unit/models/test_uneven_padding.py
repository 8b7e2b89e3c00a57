"""posenc.models.uneven_padding (Alsallakh et al., ICLR 2021): which strided layers read their padding on one side
only, checked against an independent statement: the gradient of a layer's output with respect to its explicitly
padded input is zero exactly on the positions it never reads."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from posenc.models.uneven_padding import uneven_layers


def _unread_by_gradient(size: int, k: int, s: int, p: int) -> tuple[int, int]:
    """(far padding, far input) rows that get no gradient: read off the padded input, not derived."""
    x = torch.randn(1, 1, size + 2 * p, size + 2 * p, requires_grad=True)
    F.conv2d(x, torch.ones(1, 1, k, k), stride=s).sum().backward()
    assert x.grad is not None
    rows = x.grad[0, 0].abs().sum(dim=1)
    unread = 0
    while unread < len(rows) and rows[-1 - unread] == 0:
        unread += 1
    return min(unread, p), max(0, unread - p)


@pytest.mark.parametrize("size", [7, 8, 9, 16, 17, 31, 32, 64, 65])
@pytest.mark.parametrize(("k", "s", "p"), [(3, 2, 1), (7, 2, 3), (1, 2, 0), (3, 3, 1), (5, 4, 2)])
def test_unread_positions_equal_the_gradients_zeros(size, k, s, p):
    found = uneven_layers(nn.Sequential(nn.Conv2d(1, 1, k, stride=s, padding=p)), size, channels=1)
    expected = _unread_by_gradient(size, k, s, p)
    if expected == (0, 0):
        assert found == []
    else:
        (layer,) = found
        assert layer.unused_padding == (expected[0], expected[0]) and layer.unused_input == (expected[1], expected[1])


def test_resnet18_is_uneven_at_224_and_even_at_225():
    """The paper's example: torchvision's ResNet18 at 224 px reads the far padding of its stem, its max-pool and
    every stage's first strided conv less than the near one; at 225 px every one is even."""
    model = torchvision.models.resnet18()
    at_224 = {layer.name for layer in uneven_layers(model, 224)}
    assert {"conv1", "maxpool", "layer2.0.conv1", "layer3.0.conv1", "layer4.0.conv1"} <= at_224
    assert uneven_layers(model, 225) == []
    assert "1 px of bottom/right padding unread" in uneven_layers(model, 224)[0].describe()


def test_a_plain_vgg_pads_evenly():
    assert uneven_layers(torchvision.models.vgg16().features, 64) == []
