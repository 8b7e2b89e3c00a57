"""What every backbone family shares (PosENet, Islam et al. ICLR 2020, Sec. 3.1: a network that
returns multi-level features): :class:`TappedBackbone` (a sequence of stages tapped at named modules),
:class:`ExtractorBackbone` (any feature extractor behind the same interface), their per-tap
:class:`ShapeSpec` (detectron2's ``Backbone.output_shape()``: channels and stride, read from a forward
on torch's meta device, never declared), :class:`BackboneOptions` with :func:`takes_backbone_options`,
:func:`check_taps` and the loading of a posenc run's trained backbone.

The families: :mod:`~posenc.models.backbones.torchvision` (``build_backbone``: the named torchvision /
tiny networks, registered beside their builders), :mod:`~posenc.models.backbones.timm`,
:mod:`~posenc.models.backbones.vit` and :mod:`~posenc.models.backbones.module` (a user's ``nn.Module``).
Frozen (``trainable=False``, PosENet's readout) or trainable (the padding study's end-to-end tasks,
Islam et al. IJCV 2024).
"""

from __future__ import annotations

import inspect
import typing
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.nn as nn

from posenc.constants import IMAGENET_MEAN, IMAGENET_STD
from posenc.errors import PosencError, check_choice
from posenc.io import safe_load
from posenc.models.padding import PaddingSpec, meta_copy, minimum_input_size
from posenc.models.permutation import PERMUTE_POINTS, permute_channels
from posenc.registry import padding_entry

F = TypeVar("F", bound=Callable[..., Any])

TAP_NAMES: tuple[str, ...] = ("f1", "f2", "f3", "f4", "f5")  # a sequence of stages' taps, shallow to deep
PROBE_SIDE = 256  # px: the meta-device input a tap's channels and stride are read from (a multiple of 32)
# backbone.weights that name published weights, never a path: imagenet (torchvision / timm), hed (HED's VGG16)
NAMED_WEIGHTS: tuple[str, ...] = ("imagenet", "hed")


@dataclass(frozen=True)
class ShapeSpec:
    """One tap's output as detectron2's ``ShapeSpec`` states it: ``channels`` and ``stride`` (input
    px per feature px, timm's ``reduction``)."""

    channels: int
    stride: int


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The state dict in ``path`` (a bare one, or under ``state_dict``; a ``module.`` prefix dropped)."""
    state = safe_load(path, what="weights file")
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise PosencError(f"weights file {path} holds a {type(state).__name__}, not a state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_run_backbone(backbone: nn.Module, ckpt: Path) -> None:
    """Load the backbone a posenc task trained (``backbone.*`` of its checkpoint) into ``backbone``
    (a :class:`TappedBackbone` built with the same name, taps and padding)."""
    state = read_state_dict(ckpt)
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


class TappedBackbone(nn.Module):
    """A feature extractor returning the selected taps, in order, for images in [0, 1]: ``body`` (a
    sequence of stages) run up to its deepest tap, ``tap_modules`` naming each tap's stage.

    Frozen (``trainable=False``, PosENet): no gradients, always in eval mode (BatchNorm uses its
    running statistics, as in the paper). Trainable: an ordinary module that trains with its task.
    ``channels``: each tap's channel count when the builder knows it already (else read, with the
    strides, from a meta forward: :meth:`output_shape`)."""

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
        channels: Sequence[int] | None = None,
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
        self.body = body
        self.normalize = normalize
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(self.trainable)
        self.train(self.trainable)
        self.permute_at: int | None = None  # PermuteNet: see set_channel_permutation
        self._channels: list[int] | None = list(channels) if channels is not None else None
        self._strides: list[int] | None = None
        if body is None:  # backbone=none: the RGB image itself
            self._channels, self._strides = [3], [1]
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

    def output_shape(self) -> dict[str, ShapeSpec]:
        """Each tap's channels and stride (detectron2's ``Backbone.output_shape()``), read once from a
        forward of a :data:`PROBE_SIDE` px input on the meta device (no memory, no compute): channels
        from the tap's shape, stride = input side / tap side; what the builder gave is kept."""
        if self._channels is None or self._strides is None:
            shapes = self.tap_shapes(PROBE_SIDE)
            if shapes is None:
                raise PosencError(
                    f"backbone {self.name} does not run on a {PROBE_SIDE} px input, so its taps' strides cannot "
                    "be measured"
                )
            if self._channels is None:
                self._channels = [int(shape[1]) for shape in shapes]
            if self._strides is None:
                self._strides = [max(1, round(PROBE_SIDE / shape[-1])) for shape in shapes]
        return {tap: ShapeSpec(c, s) for tap, c, s in zip(self.tap_names, self._channels, self._strides)}

    @property
    def tap_channels(self) -> list[int]:
        """Each tap's channel count (:meth:`output_shape`)."""
        if self._channels is None:
            self.output_shape()
        assert self._channels is not None
        return list(self._channels)

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
        """Each tap's stride, input px per feature px (:meth:`output_shape`)."""
        return [spec.stride for spec in self.output_shape().values()]

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
    of a list, names of a dict); ``channels`` and ``strides`` per tap as the family knows them (timm's
    ``feature_info``; None: read from a meta forward, :meth:`~TappedBackbone.output_shape`). Its
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
        channels: Sequence[int] | None,
        options: BackboneOptions,
        padding_report: dict[str, int],
        strides: Sequence[int] | None = None,
    ) -> None:
        super().__init__(name, None, {t: t for t in taps}, options.padding.name, options.normalize, options.trainable)
        self.body, self.keys = body, list(keys)
        self._channels = list(channels) if channels is not None else None
        self._strides = list(strides) if strides is not None else None
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
    ``BackboneOptionsSchema``): the padding scheme, the weights (null: random init | a name of
    :data:`NAMED_WEIGHTS` | a file | a posenc run), ImageNet normalisation, permission to download,
    and whether it trains."""

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
        if self.weights is None or self.weights in NAMED_WEIGHTS:
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
    ``inspect.signature`` reads) and its annotations (``typing.get_type_hints``) list
    :class:`BackboneOptions`' fields with their one type and default, so the config schemas, the
    validator and ``help()`` see every option a family takes."""
    signature = inspect.signature(builder)
    named = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    hints = typing.get_type_hints(BackboneOptions, include_extras=True)
    options = [
        inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=hints[f.name])
        for f in fields(BackboneOptions)
        if f.name not in {p.name for p in named}
    ]
    builder.__signature__ = signature.replace(parameters=[*named, *options])  # type: ignore[attr-defined]
    builder.__annotations__ = {**builder.__annotations__, **{p.name: p.annotation for p in options}}
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
