"""The tables of the backbones and padding schemes posenc knows, torch-free (detectron2's
``utils/registry.py``, timm's ``_registry.py``): their entries, the ``register_*`` functions and
the lookups that refuse an unknown name in one line.

Nothing is registered here. Each entry is registered beside its definition, as timm's
``@register_model`` does: ``@register_backbone("vgg16")`` on its builder in
:mod:`posenc.models.backbones.torchvision`, ``register_padding(...)`` beside each scheme in
:mod:`posenc.models.padding`; importing ``posenc.models.backbones`` registers every built-in one.
The config schemas read the names through live views (``BACKBONE_REGISTRY.keys()``), so a
registered name is valid everywhere at once. A tap's channels and stride are never declared: they
are read from the built network (``posenc.models.backbones.torchvision.output_shape_of``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from posenc.errors import check_choice

T = TypeVar("T")
B = TypeVar("B", bound=Callable[..., Any])


@dataclass(frozen=True)
class BackboneEntry:
    """One named backbone: ``builder(name, weights, download)`` returns ``(body, tap module names)``
    (``(None, [])``: no network, the image is the only tap); ``imagenet``: torchvision has
    IMAGENET1K_V1 weights for it; ``residual``: skip additions need equal map sizes, so a padding
    that shrinks maps cannot apply."""

    name: str
    builder: Callable[..., Any]
    imagenet: bool = True
    residual: bool = False

    def build(self, *args: Any) -> Any:
        """``builder(name, *args)``: ``(body, tap module names)``."""
        return self.builder(self.name, *args)


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


def register_backbone(*names: str, imagenet: bool = True, residual: bool = False) -> Callable[[B], B]:
    """Decorator (timm's ``register_model``): register the builder it decorates under each of
    ``names``, in order (an existing name is replaced); the builder is returned unchanged."""

    def register(builder: B) -> B:
        for name in names:
            BACKBONE_REGISTRY[name] = BackboneEntry(name, builder, imagenet, residual)
        return builder

    return register


def register_padding(*names: str, same_interior: bool = True, shrinks: bool = False) -> Callable[[T], T]:
    """Register the padding schemes ``names`` now, in order (an existing name is replaced); returns
    a pass-through decorator, so the call may sit on the class that implements the scheme."""
    for name in names:
        PADDING_REGISTRY[name] = PaddingEntry(name, same_interior, shrinks)
    return lambda implementation: implementation


def backbone_entry(name: str) -> BackboneEntry:
    """The entry of backbone ``name``; one line listing the registered names when there is none."""
    check_choice("backbone", name, tuple(BACKBONE_REGISTRY))
    return BACKBONE_REGISTRY[name]


def padding_entry(name: str) -> PaddingEntry:
    """The entry of padding scheme ``name``; one line listing the registered names when there is none."""
    check_choice("padding", name, tuple(PADDING_REGISTRY))
    return PADDING_REGISTRY[name]
