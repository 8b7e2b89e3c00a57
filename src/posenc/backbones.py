"""Frozen CNN backbones that return multi-level features f1..f5 (PosENet, Islam et al. ICLR 2020,
Sec. 3.1): built with torchvision's builders, never forked.

Taps, by backbone:
- ``vgg16`` / ``vgg16_bn`` / ``tiny``: the last ReLU of each of the five stages
  (VGG16: relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 = ``features`` 3, 8, 15, 22, 29).
- ``resnet18`` / ``resnet50`` / ``resnet152``: f1 = stem (conv1-bn1-relu), f2..f5 = layer1..layer4.
  The default uses all five (the paper's "five blocks"); the authors' code uses layer1..4,
  i.e. ``backbone.taps=[f2,f3,f4,f5]``.
- ``none``: "PosENet alone", the RGB image itself is the only tap.

``weights``: ``None`` (random init, torchvision's init), ``"imagenet"`` (torchvision's
IMAGENET1K_V1 file from ``$TORCH_HOME/hub/checkpoints``) or a path to a state dict.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn as nn
import torchvision

from posenc.errors import PosencError, check_choice
from posenc.padding import PaddingSpec, minimum_input_size

BACKBONES: tuple[str, ...] = ("vgg16", "vgg16_bn", "resnet18", "resnet50", "resnet152", "tiny", "none")
TAP_NAMES: tuple[str, ...] = ("f1", "f2", "f3", "f4", "f5")
RESNETS = ("resnet18", "resnet50", "resnet152")
TINY_WIDTHS = (16, 32, 64, 64, 64)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_weights_file(name: str) -> tuple[Path, str]:
    """Where torchvision caches ``name``'s IMAGENET1K_V1 weights, and the URL it comes from."""
    enum = torchvision.models.get_model_weights(name)
    url = enum.IMAGENET1K_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url), url


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise PosencError(f"weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any decode failure is the same user error
        raise PosencError(f"cannot read weights file {path}: {exc}".splitlines()[0]) from exc
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise PosencError(f"weights file {path} holds a {type(state).__name__}, not a state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_weights(model: nn.Module, name: str, weights: str | None, download: bool = False) -> None:
    """Load ``weights`` (None | "imagenet" | path) into the torchvision ``model`` in place."""
    if weights is None:
        return
    if weights == "imagenet":
        if name == "tiny":
            raise PosencError("backbone tiny has no imagenet weights; valid: backbone.weights=null or a path")
        path, url = imagenet_weights_file(name)
        if not path.is_file():
            if not download:
                raise PosencError(
                    f"ImageNet weights for {name} not found: put {path.name} into {path.parent} "
                    f"(from {url}), or set backbone.download=true when online"
                )
            torch.hub.load_state_dict_from_url(url, progress=True)
    else:
        path = Path(weights).expanduser()
    state = _read_state_dict(path)
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        detail = next((ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln), "shapes differ")
        raise PosencError(f"weights file {path} does not fit {name}: {detail}") from exc
    missing = [k for k in result.missing_keys if not k.startswith(("classifier", "fc"))]
    if missing or (not state.keys() & model.state_dict().keys()):
        raise PosencError(f"weights file {path} does not fit {name}: missing {missing[:3]} ...")


def _tiny_vgg() -> nn.Sequential:
    """A small VGG-style net (5 stages of two 3x3 conv + ReLU, max-pool between) for fast tests."""
    layers: list[nn.Module] = []
    cin = 3
    for i, width in enumerate(TINY_WIDTHS):
        if i:
            layers.append(nn.MaxPool2d(2))
        for _ in range(2):
            layers += [nn.Conv2d(cin, width, 3, padding=1), nn.ReLU(inplace=True)]
            cin = width
    net = nn.Sequential(*layers)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
    return net


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


def _body_and_taps(name: str, weights: str | None, download: bool) -> tuple[nn.Sequential, list[str]]:
    if name == "tiny":
        body = _tiny_vgg()
        load_weights(body, name, weights, download)
        return body, _stage_ends(body)
    model = torchvision.models.get_model(name, weights=None)
    load_weights(model, name, weights, download)
    if name.startswith("vgg"):
        return model.features, _stage_ends(model.features)
    stem = [("conv1", model.conv1), ("bn1", model.bn1), ("relu", model.relu), ("maxpool", model.maxpool)]
    layers = [(f"layer{i}", getattr(model, f"layer{i}")) for i in range(1, 5)]
    return nn.Sequential(OrderedDict(stem + layers)), ["relu", "layer1", "layer2", "layer3", "layer4"]


def _last_conv_channels(modules: Sequence[nn.Module]) -> int:
    convs = [m for block in modules for m in block.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels


class TappedBackbone(nn.Module):
    """A frozen feature extractor returning the selected taps, in order, for images in [0, 1]."""

    def __init__(
        self,
        name: str,
        body: nn.Sequential | None,
        tap_modules: dict[str, str],
        padding: str,
        normalize: bool,
    ) -> None:
        super().__init__()
        self.name, self.padding = name, padding
        self.tap_names = list(tap_modules)
        self._tap_of = {module: tap for tap, module in tap_modules.items()}
        if body is not None:
            children = list(body.named_children())
            names = [n for n, _ in children]
            positions = [names.index(m) for m in tap_modules.values()]
            body = nn.Sequential(OrderedDict(children[: max(positions) + 1]))
            self.tap_channels = [_last_conv_channels([m for _, m in children[: p + 1]]) for p in positions]
        else:
            self.tap_channels = [3]
        self.body = body
        self.normalize = normalize
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    @property
    def out_channels(self) -> int:
        return sum(self.tap_channels)

    def train(self, mode: bool = True) -> TappedBackbone:
        """Frozen: always stays in eval mode (BN uses running stats, as in the paper)."""
        return super().train(False)

    def check_input_size(self, image_size: int) -> None:
        """One-line error if ``image_size`` is too small for this backbone (``none_shrink``)."""
        if self.body is None or self.padding != "none_shrink":
            return
        minimum = minimum_input_size(self.body)
        if image_size < minimum:
            raise PosencError(
                f"data.image_size={image_size} is too small for backbone {self.name} with "
                f"padding=none_shrink: the minimum is {minimum}"
            )

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = (images - self.mean) / self.std if self.normalize else images
        if self.body is None:
            return [x]
        taps: list[torch.Tensor] = []
        for name, module in self.body.named_children():
            x = module(x)
            if name in self._tap_of:
                taps.append(x)
        return taps


def build_backbone(
    name: str = "vgg16",
    padding: PaddingSpec | str = "zeros",
    weights: str | None = None,
    taps: Sequence[str] | None = None,
    normalize: bool = False,
    download: bool = False,
) -> TappedBackbone:
    """Build a frozen ``TappedBackbone``: torchvision model -> weights -> padding conversion."""
    check_choice("backbone", name, BACKBONES)
    padding = padding if isinstance(padding, PaddingSpec) else PaddingSpec(padding)
    if name == "none":
        return TappedBackbone(name, None, {"rgb": "rgb"}, padding.name, normalize)
    taps = list(taps) if taps is not None else list(TAP_NAMES)
    if not taps:
        raise PosencError(f"backbone.taps is empty; valid: any of {', '.join(TAP_NAMES)}")
    for tap in taps:
        check_choice("tap", tap, TAP_NAMES)
    if padding.name == "none_shrink" and name in RESNETS:
        raise PosencError(
            f"padding=none_shrink does not fit {name}: residual additions need equal sizes; use padding=none"
        )
    body, modules = _body_and_taps(name, weights, download)
    padding.apply(body)
    tap_modules = {tap: modules[TAP_NAMES.index(tap)] for tap in TAP_NAMES if tap in taps}
    return TappedBackbone(name, body, tap_modules, padding.name, normalize)
