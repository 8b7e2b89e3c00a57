"""CNN backbones that return multi-level features f1..f5 (PosENet, Islam et al. ICLR 2020,
Sec. 3.1): built with torchvision's builders, never forked. Frozen (PosENet's readout) or trainable
(the padding study's end-to-end tasks, Islam et al. IJCV 2024): ``trainable``.

Taps, by backbone:
- ``vgg16`` / ``vgg16_bn`` / ``vgg11_bn`` / ``tiny`` / ``tiny_bn``: the last ReLU of each of the five stages
  (VGG16: relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 = ``features`` 3, 8, 15, 22, 29).
- ``resnet18`` / ``resnet50`` / ``resnet152``: f1 = stem (conv1-bn1-relu), f2..f5 = layer1..layer4.
  The default uses all five (the paper's "five blocks"); the authors' code uses layer1..4,
  i.e. ``backbone.taps=[f2,f3,f4,f5]``.
- ``resnet18_cifar``: the CIFAR-style ResNet18 of the IJCV paper's location experiments:
  torchvision's ResNet18 (7x7 stride-2 stem, widths 64/128/256/512) without the stem's max-pool;
  taps as for the ResNets.
- ``none``: "PosENet alone", the RGB image itself is the only tap.

``weights``: ``None`` (random init, torchvision's init), ``"imagenet"`` (torchvision's
IMAGENET1K_V1 file from ``$TORCH_HOME/hub/checkpoints``), a path to a state dict, or a posenc run
(its directory or a ``.ckpt`` file): the backbone a task trained, e.g. "train with padding P, then
measure its position information" (PosENet Tables 5-6).
"""

from __future__ import annotations

import inspect
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.nn as nn
import torchvision

from posenc.config.choices import BACKBONES, TAP_NAMES  # noqa: F401 - the valid values live there
from posenc.constants import IMAGENET_MEAN, IMAGENET_STD
from posenc.errors import MissingWeights, PosencError, check_choice
from posenc.io import safe_load
from posenc.models.padding import PaddingSpec, meta_copy, minimum_input_size
from posenc.models.permutation import PERMUTE_POINTS, permute_channels
from posenc.registry import backbone_entry, padding_entry

F = TypeVar("F", bound=Callable[..., Any])


def imagenet_weights_file(name: str) -> tuple[Path, str]:
    """Where torchvision caches ``name``'s IMAGENET1K_V1 weights, and the URL it comes from."""
    enum = torchvision.models.get_model_weights(name)
    url = enum.IMAGENET1K_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url), url


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    state = safe_load(path, what="weights file")
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise PosencError(f"weights file {path} holds a {type(state).__name__}, not a state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_run_backbone(backbone: nn.Module, ckpt: Path) -> None:
    """Load the backbone a posenc task trained (``backbone.*`` of its checkpoint) into ``backbone``
    (a :class:`TappedBackbone` built with the same name, taps and padding)."""
    state = _read_state_dict(ckpt)
    prefix = "backbone."
    own = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
    if not own:
        raise PosencError(f"checkpoint {ckpt} holds no backbone weights (a frozen-backbone run keeps none)")
    expected = backbone.state_dict()
    missing = sorted(expected.keys() - own.keys())
    mismatched = [k for k in expected.keys() & own.keys() if own[k].shape != expected[k].shape]
    if missing or mismatched:
        bad = (missing or mismatched)[:2]
        raise PosencError(
            f"checkpoint {ckpt} does not fit this backbone (name, taps and padding must be the "
            f"run's): {'missing' if missing else 'shape of'} {bad}"
        )
    # keys of the run's deeper layers (beyond this backbone's last tap) are not needed
    backbone.load_state_dict({k: own[k] for k in expected}, strict=True)


def load_weights(model: nn.Module, name: str, weights: str | None, download: bool = False) -> None:
    """Load ``weights`` (None | "imagenet" | path) into the torchvision ``model`` in place
    (a posenc run's checkpoint is loaded later, by :func:`load_run_backbone`)."""
    if weights is None or Path(weights).expanduser().is_dir() or Path(weights).suffix == ".ckpt":
        return  # a posenc run's checkpoint: loaded after the padding conversion (BackboneOptions.load_run)
    if weights == "imagenet":
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


# -- the builders posenc.registry names: (name, weights, download) -> (body, tap module names) ----------
def tiny_vgg(name: str, weights: str | None, download: bool) -> tuple[nn.Sequential, list[str]]:
    body = _tiny_vgg(backbone_entry(name).channels, batch_norm=name.endswith("_bn"))
    load_weights(body, name, weights, download)
    return body, _stage_ends(body)


def torchvision_vgg(name: str, weights: str | None, download: bool) -> tuple[nn.Sequential, list[str]]:
    """torchvision's VGG ``name``: its ``features``, tapped at each stage's last ReLU."""
    model = torchvision.models.get_model(name, weights=None)
    load_weights(model, name, weights, download)
    return model.features, _stage_ends(model.features)


def torchvision_resnet(name: str, weights: str | None, download: bool) -> tuple[nn.Sequential, list[str]]:
    """torchvision's ResNet ``name`` (``<name>_cifar``: without the stem's max-pool) as stem + layer1..4."""
    cifar = name.endswith("_cifar")
    model = torchvision.models.get_model(name.removesuffix("_cifar"), weights=None)
    load_weights(model, name, weights, download)
    stem = [("conv1", model.conv1), ("bn1", model.bn1), ("relu", model.relu)]
    if not cifar:
        stem.append(("maxpool", model.maxpool))
    layers = [(f"layer{i}", getattr(model, f"layer{i}")) for i in range(1, 5)]
    return nn.Sequential(OrderedDict(stem + layers)), ["relu", "layer1", "layer2", "layer3", "layer4"]


def _last_conv_channels(modules: Sequence[nn.Module]) -> int:
    convs = [m for block in modules for m in block.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels


class TappedBackbone(nn.Module):
    """A feature extractor returning the selected taps, in order, for images in [0, 1].

    Frozen (``trainable=False``, PosENet): no gradients, always in eval mode (BatchNorm uses its
    running statistics, as in the paper). Trainable: an ordinary module that trains with its task."""

    sequential = True  # the body is a sequence of stages (receptive fields, PermuteNet's point, PPP)
    padding_report: dict[str, int] = {}  # convs converted per class (posenc.models.padding.convert_padding)
    body: nn.Module | None  # an nn.Sequential of stages here (None: backbone=none); any module in ExtractorBackbone
    mean: torch.Tensor  # buffers (register_buffer): ImageNet normalisation
    std: torch.Tensor

    def __init__(
        self,
        name: str,
        body: nn.Sequential | None,
        tap_modules: dict[str, str],
        padding: str,
        normalize: bool,
        trainable: bool = False,
    ) -> None:
        super().__init__()
        self.name, self.padding, self.trainable = name, padding, bool(trainable)
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
        self.requires_grad_(self.trainable)
        self.train(self.trainable)
        self.permute_at: int | None = None  # PermuteNet: see set_channel_permutation
        self._strides: list[int] | None = None if body is not None else [1]
        self._permuted_module: str | None = None

    def set_channel_permutation(self, permute_at: int | None) -> None:
        """Permute the channels of tap ``f<permute_at>`` afresh on every forward, in training and
        in eval (PermuteNet, Islam, Kowal et al. ICCV 2021; posenc.models.permutation); None: never."""
        if permute_at is None:
            self.permute_at, self._permuted_module = None, None
            return
        valid = [k for k in PERMUTE_POINTS if TAP_NAMES[k - 1] in self.tap_names]
        if permute_at not in valid:
            raise PosencError(
                f"readout.permute_at={permute_at} is not valid for backbone {self.name} with taps "
                f"{self.tap_names}: valid: {', '.join(map(str, valid)) or 'none (no stages)'}"
            )
        tap = TAP_NAMES[permute_at - 1]
        self.permute_at = permute_at
        self._permuted_module = next(module for module, name in self._tap_of.items() if name == tap)

    @property
    def out_channels(self) -> int:
        return sum(self.tap_channels)

    def train(self, mode: bool = True) -> TappedBackbone:
        """A frozen backbone always stays in eval mode (BN uses running stats, as in the paper)."""
        return super().train(mode and self.trainable)

    def check_input_size(self, image_size: int) -> None:
        """One-line error, before anything runs, if ``image_size`` leaves a tap without pixels
        (VGG16's four pools before relu5_3 need 16 px) or is too small for ``none_shrink``. Shapes are inferred on
        torch's meta device: no memory, no compute."""
        if self.body is None:
            return
        rule = self.patch_rule()
        if rule is not None:
            fixed, patch = rule
            if fixed is not None and image_size != fixed:
                raise PosencError(
                    f"data.image_size={image_size} is not valid for backbone {self.name}: its patch embedding "
                    f"takes {fixed} px images only; valid: data.image_size={fixed}"
                )
            if fixed is None and (image_size < patch or image_size % patch):
                lower, upper = max(patch, image_size // patch * patch), (image_size // patch + 1) * patch
                near = f"{lower} or {upper}" if lower < upper and lower != image_size else f"{upper}"
                raise PosencError(
                    f"data.image_size={image_size} is not valid for backbone {self.name}: its {patch} px patches must "
                    f"tile the image; valid: a multiple of {patch}, e.g. data.image_size={near}"
                )
        if padding_entry(self.padding).shrinks:
            minimum = minimum_input_size(self.body)
            if image_size < minimum:
                raise PosencError(
                    f"data.image_size={image_size} is too small for backbone {self.name} with "
                    f"padding={self.padding}: the minimum is {minimum}"
                )
        if self.tap_shapes(image_size) is None and self.tap_shapes(2**13) is not None:  # else: meta unsupported
            smallest = next(s for s in (2**k for k in range(3, 14)) if self.tap_shapes(s) is not None)
            minimum = next(s for s in range(smallest // 2, smallest + 1) if self.tap_shapes(s) is not None)
            raise PosencError(
                f"data.image_size={image_size} is too small for backbone {self.name}: its tap "
                f"{self.tap_names[-1]} would have no pixels; valid: data.image_size >= {minimum}"
            )

    def patch_rule(self) -> tuple[int | None, int] | None:
        """``(fixed size or None, patch size)`` of a patch embedding that asserts its input's size (timm's
        ``PatchEmbed``: exactly its ``img_size`` when strict, else a multiple of its patch); None without one."""
        for module in self.modules():
            patch, size = getattr(module, "patch_size", None), getattr(module, "img_size", None)
            if not hasattr(module, "strict_img_size") or patch is None or getattr(module, "dynamic_img_pad", False):
                continue
            side = int(patch[0] if isinstance(patch, (tuple, list)) else patch)
            if module.strict_img_size and size is not None:
                return int(size[0] if isinstance(size, (tuple, list)) else size), side
            return None, side
        return None

    @property
    def tap_strides(self) -> list[int]:
        """Each tap's stride (input px per feature px): declared, else measured on a 256 px input."""
        if self._strides is None:
            shapes = self.tap_shapes(256)
            if shapes is None:
                raise PosencError(
                    f"backbone {self.name} does not run on a 256 px input, so its taps' strides cannot be measured"
                )
            self._strides = [max(1, round(256 / shape[-1])) for shape in shapes]
        return self._strides

    def tap_shapes(self, image_size: int) -> list[tuple[int, ...]] | None:
        """The taps' shapes for one ``image_size`` image (meta device); None when a layer refuses it."""
        try:
            probe = torch.zeros(1, 3, image_size, image_size, device="meta")
            with torch.no_grad():
                return [tuple(t.shape) for t in meta_copy(self)(probe)]
        except (RuntimeError, ValueError, NotImplementedError, AssertionError):  # AssertionError: torch._assert
            return None

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = (images - self.mean) / self.std if self.normalize else images
        if self.body is None:
            return [x]
        taps: list[torch.Tensor] = []
        for name, module in self.body.named_children():
            x = module(x)
            if name == self._permuted_module:
                x = permute_channels(x)
            if name in self._tap_of:
                taps.append(x)
        return taps


class ExtractorBackbone(TappedBackbone):
    """A feature extractor that is not a plain sequence of stages (a timm ``features_only`` model,
    torchvision's ``create_feature_extractor`` over a user's module) behind the same interface:
    ``forward`` returns the taps in order, picked from what ``body`` returns by ``keys`` (indices
    of a list, names of a dict); ``strides`` per tap (None: measured from the taps' shapes). Its
    receptive fields are measured, not derived (:func:`posenc.models.receptive_field.measured_geometries`);
    PermuteNet's permutation point, which sits between two stages, is refused in one line."""

    sequential = False
    body: nn.Module
    # set only by the ViT builder (posenc.models.backbones.vit); read with getattr(backbone, name, default)
    global_receptive_field: bool
    position_embedding: str

    def __init__(
        self,
        name: str,
        body: nn.Module,
        taps: Sequence[str],
        keys: Sequence[int | str],
        channels: Sequence[int],
        options: BackboneOptions,
        padding_report: dict[str, int],
        strides: Sequence[int] | None = None,
    ) -> None:
        super().__init__(name, None, {t: t for t in taps}, options.padding.name, options.normalize, options.trainable)
        self.body, self.keys, self.tap_channels = body, list(keys), list(channels)
        if strides is not None:
            self._strides = list(strides)
        self.padding_report = dict(padding_report)
        self.requires_grad_(self.trainable)
        self.train(self.trainable)

    def set_channel_permutation(self, permute_at: int | None) -> None:
        if permute_at is not None:
            raise PosencError(
                f"readout.permute_at={permute_at} is not valid for backbone {self.name}: PermuteNet's "
                "permutation point needs a torchvision backbone (a plain sequence of stages)"
            )

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = (images - self.mean) / self.std if self.normalize else images
        features = self.body(x)
        return [features[k] for k in self.keys]


@dataclass(frozen=True)
class BackboneOptions:
    """What every backbone family's builder takes beside its model and its taps (the schemas'
    ``BackboneOptionsSchema``): the padding scheme, the weights (null: random init | imagenet | a
    file | a posenc run), ImageNet normalisation, permission to download, and whether it trains."""

    padding: PaddingSpec
    weights: str | None = None
    normalize: bool = False
    download: bool = False
    trainable: bool = False

    @classmethod
    def of(cls, padding: PaddingSpec | str = "zeros", **options: Any) -> BackboneOptions:
        """The options of a builder's ``**options``; an unknown key is refused in one line."""
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise PosencError(f"backbone option {unknown[0]!r} is not valid; valid: {', '.join(valid)}")
        return cls(padding if isinstance(padding, PaddingSpec) else PaddingSpec(padding), **options)

    @cached_property
    def run(self) -> Path | None:
        """The posenc run checkpoint (``.ckpt``) ``weights`` names, else None; a run dir is resolved to its
        checkpoint by the run layer (:func:`posenc.run.weights.with_run_weights`) before this is built."""
        if self.weights is None or self.weights == "imagenet":
            return None
        path = Path(self.weights).expanduser()
        if path.is_dir():  # the run layer turns a run dir into its checkpoint (posenc.run.weights)
            raise PosencError(
                f"backbone.weights={self.weights} is a directory: train.py resolves a posenc run dir to its "
                "checkpoint; outside a run, give the run's checkpoints/last.ckpt (posenc.run.weights.run_checkpoint)"
            )
        return path if path.suffix == ".ckpt" else None

    def convert(self, model: nn.Module) -> dict[str, int]:
        """Swap ``model``'s padding in place; the convs converted, per class."""
        report: dict[str, int] = {}
        self.padding.apply(model, report)
        return report

    def load_run(self, backbone: nn.Module) -> None:
        """Load a posenc run's trained backbone into ``backbone`` (built with the run's padding)."""
        ckpt = self.run
        if ckpt is not None:
            load_run_backbone(backbone, ckpt)


def takes_backbone_options(builder: F) -> F:
    """Declare ``builder(..., **options)``'s options: its signature (``__signature__``, which
    ``inspect.signature`` reads) lists :class:`BackboneOptions`' fields with their one default, so the
    config validator, the schema tests and ``help()`` see every option a family takes."""
    signature = inspect.signature(builder)
    named = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    options = [
        inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=f.type)
        for f in fields(BackboneOptions)
        if f.name not in {p.name for p in named}
    ]
    builder.__signature__ = signature.replace(parameters=[*named, *options])  # type: ignore[attr-defined]
    return builder


def check_taps(taps: Sequence[str] | None, valid: Sequence[str], kind: str = "tap") -> list[str]:
    """``backbone.taps`` (None: all of ``valid``) as a list, or one line: empty, unknown, twice."""
    taps = list(taps) if taps is not None else list(valid)
    if not taps:
        raise PosencError(f"backbone.taps is empty; valid: any of {', '.join(valid[:8])}")
    for tap in taps:
        check_choice(kind, tap, valid)
    if len(set(taps)) != len(taps):
        twice = sorted({t for t in taps if taps.count(t) > 1})
        raise PosencError(f"backbone.taps={taps} is not valid: {', '.join(twice)} listed twice; valid: distinct taps")
    return taps


@takes_backbone_options
def build_backbone(
    name: str = "vgg16", padding: PaddingSpec | str = "zeros", taps: Sequence[str] | None = TAP_NAMES, **options: Any
) -> TappedBackbone:
    """Build a ``TappedBackbone``: torchvision model -> weights -> padding conversion (a posenc
    run's checkpoint is loaded after the conversion, into the converted modules it was saved from)."""
    entry = backbone_entry(name)
    opts = BackboneOptions.of(padding, **options)
    if not entry.taps:  # PosENet alone (backbone=none): the RGB image is the only tap
        if opts.trainable:
            raise PosencError("backbone=none has no weights to train; valid: backbone.trainable=false")
        return TappedBackbone(name, None, {"rgb": "rgb"}, opts.padding.name, opts.normalize)
    taps = check_taps(taps, entry.taps)
    if padding_entry(opts.padding.name).shrinks and entry.residual:
        raise PosencError(
            f"padding={opts.padding.name} does not fit {name}: residual additions need equal sizes; use padding=none"
        )
    body, modules = entry.build(opts.weights, opts.download)
    report = opts.convert(body)
    tap_modules = {tap: modules[TAP_NAMES.index(tap)] for tap in TAP_NAMES if tap in taps}
    backbone = TappedBackbone(name, body, tap_modules, opts.padding.name, opts.normalize, opts.trainable)
    backbone.padding_report = report
    opts.load_run(backbone)
    return backbone
