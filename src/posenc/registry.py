"""The backbones and padding schemes posenc knows, with the properties the code acts on, in one
torch-free module: the config schemas (imported before the command line is read) and the code
both read these tables, so no name or property is copied anywhere.

A backbone's taps are declared the way timm's ``FeatureInfo`` declares a model's stages: the
channels and the stride (reduction) of every tap; ``tests/unit/models/test_backbones.py`` checks each
declaration against the network its builder returns. Builders are named as ``"module:function"``
and imported only when a backbone is built (this module must not import torch).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

TAP_NAMES: tuple[str, ...] = ("f1", "f2", "f3", "f4", "f5")


@dataclass(frozen=True)
class BackboneEntry:
    """One named backbone: ``builder`` returns ``(body, tap module names)`` for ``(name, weights,
    download)``; ``channels`` / ``strides`` per tap ``f1..``; ``imagenet``: torchvision has
    IMAGENET1K_V1 weights for it; ``residual``: skip additions need equal map sizes, so a padding
    that shrinks maps cannot apply."""

    name: str
    builder: str
    channels: tuple[int, ...]
    strides: tuple[int, ...]
    imagenet: bool = True
    residual: bool = False

    @property
    def taps(self) -> tuple[str, ...]:
        return TAP_NAMES[: len(self.channels)]

    def build(self, *args: Any) -> Any:
        module, _, function = self.builder.partition(":")
        factory: Callable[..., Any] = getattr(importlib.import_module(module), function)
        return factory(self.name, *args)


@dataclass(frozen=True)
class PaddingEntry:
    """One padding scheme (Islam et al. IJCV 2024, Sec. 3): ``same_interior``: away from the
    border it computes exactly what zero padding computes (the PPP reference of Lin et al. ICML
    2023 is shared with ``zeros``); ``shrinks``: every padded conv shrinks its map."""

    name: str
    same_interior: bool = True
    shrinks: bool = False


BACKBONE_REGISTRY: dict[str, BackboneEntry] = {}
PADDING_REGISTRY: dict[str, PaddingEntry] = {}


def register_backbone(
    name: str,
    builder: str,
    channels: tuple[int, ...] = (),
    strides: tuple[int, ...] = (),
    imagenet: bool = True,
    residual: bool = False,
) -> BackboneEntry:
    """Add (or replace) the backbone ``name``; returns its entry."""
    if len(channels) != len(strides) or len(channels) > len(TAP_NAMES):
        raise ValueError(f"backbone {name}: one channel count and one stride per tap (at most {len(TAP_NAMES)})")
    entry = BackboneEntry(name, builder, tuple(channels), tuple(strides), imagenet, residual)
    BACKBONE_REGISTRY[name] = entry
    return entry


def register_padding(name: str, same_interior: bool = True, shrinks: bool = False) -> PaddingEntry:
    """Add (or replace) the padding scheme ``name`` (its conversion lives in :mod:`posenc.models.padding`)."""
    entry = PaddingEntry(name, same_interior, shrinks)
    PADDING_REGISTRY[name] = entry
    return entry


_VGG, _RESNET, _TINY = (
    "posenc.models.backbones.base:torchvision_vgg",
    "posenc.models.backbones.base:torchvision_resnet",
    "posenc.models.backbones.base:tiny_vgg",
)
_VGG_STRIDES = (1, 2, 4, 8, 16)  # taps before each max-pool
_RESNET_STRIDES = (2, 4, 8, 16, 32)  # stem, layer1..layer4
for _name in ("vgg16", "vgg16_bn", "vgg11_bn"):
    register_backbone(_name, _VGG, (64, 128, 256, 512, 512), _VGG_STRIDES)
register_backbone("resnet18", _RESNET, (64, 64, 128, 256, 512), _RESNET_STRIDES, residual=True)
register_backbone("resnet50", _RESNET, (64, 256, 512, 1024, 2048), _RESNET_STRIDES, residual=True)
register_backbone("resnet152", _RESNET, (64, 256, 512, 1024, 2048), _RESNET_STRIDES, residual=True)
register_backbone(
    "resnet18_cifar", _RESNET, (64, 64, 128, 256, 512), (2, 2, 4, 8, 16), imagenet=False, residual=True
)  # the stem's max-pool dropped (IJCV 2024's location experiments)
register_backbone("tiny", _TINY, (16, 32, 64, 64, 64), _VGG_STRIDES, imagenet=False)
register_backbone("tiny_bn", _TINY, (16, 32, 64, 64, 64), _VGG_STRIDES, imagenet=False)
register_backbone("none", "", imagenet=False)  # PosENet alone: no network, the RGB image is the only tap

for _name in ("zeros", "reflect", "replicate", "circular", "partial"):
    register_padding(_name)
register_padding("none", same_interior=False)  # maps resized up by the padding's width, then a valid conv
register_padding("none_shrink", same_interior=False, shrinks=True)


def backbone_entry(name: str) -> BackboneEntry:
    from posenc.errors import check_choice  # torch-free

    check_choice("backbone", name, tuple(BACKBONE_REGISTRY))
    return BACKBONE_REGISTRY[name]


def padding_entry(name: str) -> PaddingEntry:
    from posenc.errors import check_choice

    check_choice("padding", name, tuple(PADDING_REGISTRY))
    return PADDING_REGISTRY[name]
