"""Receptive fields of a backbone's taps, and the context margin that makes features padding-free.

For PPP (Lin et al., ICML 2023, "Unveiling the Mask of Position-Information Pattern Through the
Mist of Image Features") a crop ``x`` is cut from a larger image, its context, with a margin of at
least the tap's receptive-field radius: the context's features cropped to ``x``'s footprint are then
``x``'s features without any padding (the reference). This module does the geometry.

The geometry of a layer is the classic recursion over its conv and pooling ops (kernel ``k``,
stride ``s``, padding ``p``, dilation ``d``), starting from ``size 1, jump 1, start 0``::

    size  += (k - 1) * d * jump
    start += ((k - 1) * d / 2 - p) * jump
    jump  *= s

``start`` is the input x-coordinate (input pixel ``i`` has coordinate ``i``) of the centre of the
receptive field of output index 0; output index ``i`` is centred at ``start + i * jump``.

If every output unit's receptive field lies inside the image, no padded value reaches it: a value
padded at any layer sits at an index < 0 or >= the map's size, whose own receptive field (by the
same recursion) pokes out of the image, and it would be part of the unit's receptive field.
Leaf modules are walked in registration order, which is the forward order of VGG's ``features``
and of torchvision's ResNet blocks; a block's ``downsample`` shortcut (a strided 1x1 conv, whose
receptive field lies inside the main path's) is skipped.

A backbone that is not a plain sequence of stages (a timm model, a user's module: an
:class:`~posenc.models.backbones.base.ExtractorBackbone`) has its geometry measured instead
(:func:`measured_geometries`): the support of the input gradient of its centre unit, on a copy
whose weights are all made positive and whose max-pools average (so no path is cut off by a ReLU or
an argmax), with the tap's declared stride as the jump; then checked with NaN, which every op
propagates structurally (even through a zero weight or a saturated gate): a NaN column just
outside the measured field, or at the input's edge, must not reach the unit. A unit that depends
on pixels that far (squeeze-excitation, GroupNorm: ops over the whole map) has no padding-free
reference; it is refused in one line, as is a field wider than 1024 px.
:class:`~posenc.models.padding.UpsampledValidConv2d` (``padding=none``) is counted with its virtual
padding: its bilinear resize keeps the map's size, so its geometry is that of the padded conv up to the
interpolation's sub-pixel blur. Under
``padding.none_upsample=authors`` a 7x7 stride-2 stem grows by 3 px, not 6, and its map is one
pixel smaller: the derived geometry does not model that pixel (measure it instead).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from posenc.errors import PosencError, invalid_value
from posenc.models.padding import _pads

if TYPE_CHECKING:
    from posenc.models.backbones.base import TappedBackbone

SKIPPED_CHILD = "downsample"  # torchvision ResNet blocks' parallel shortcut
_SPATIAL_UNSUPPORTED = (
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.Upsample,
    nn.ConvTranspose2d,
    nn.Flatten,
    nn.Linear,
)


@dataclass(frozen=True)
class Geometry:
    """Receptive field of a layer's units: side ``size`` (input px), total stride ``jump``, and
    ``start``, the input coordinate of the centre of output index 0 (may be negative/fractional)."""

    size: int
    jump: int
    start: float

    @property
    def radius(self) -> float:
        """Half the side, ``(size - 1) / 2``: the unit at ``c`` sees input ``[c - radius, c + radius]``."""
        return (self.size - 1) / 2

    def centre(self, index: int) -> float:
        """Input coordinate of the centre of output ``index``'s receptive field."""
        return self.start + index * self.jump


IDENTITY = Geometry(1, 1, 0.0)


@dataclass(frozen=True)
class _Op:
    """One spatial op along one axis: kernel, stride, padding before/after, dilation, ceil mode."""

    kernel: int
    stride: int
    pad_before: int
    pad_after: int
    dilation: int = 1
    ceil_mode: bool = False


def _named_leaves(module: nn.Module, prefix: str) -> Iterator[tuple[str, nn.Module]]:
    children = list(module.named_children())
    if not children:
        yield prefix or type(module).__name__, module
        return
    for name, child in children:
        if name != SKIPPED_CHILD:
            yield from _named_leaves(child, f"{prefix}.{name}" if prefix else name)


def _square(name: str, module: nn.Module, what: str, value: object) -> int:
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(pair) != 2 or pair[0] != pair[1]:
        raise PosencError(
            f"receptive field of {name} ({type(module).__name__}): non-square {what} {value}; "
            "only square kernels, strides, paddings and dilations are supported"
        )
    return int(pair[0])


def _op_of(name: str, module: nn.Module) -> _Op | None:
    """The op of a leaf module, None for one that keeps the geometry (BN, ReLU, Identity, ...)."""
    if isinstance(module, nn.Conv2d):
        left, right, top, bottom = _pads(module)
        if (left, right) != (top, bottom):
            raise PosencError(
                f"receptive field of {name} ({type(module).__name__}): non-square padding "
                f"{module.padding}; only square kernels, strides, paddings and dilations are supported"
            )
        return _Op(
            _square(name, module, "kernel", module.kernel_size),
            _square(name, module, "stride", module.stride),
            left,
            right,
            _square(name, module, "dilation", module.dilation),
        )
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        kernel = _square(name, module, "kernel", module.kernel_size)
        stride = _square(name, module, "stride", module.stride if module.stride is not None else kernel)
        pad = _square(name, module, "padding", module.padding)
        dilation = _square(name, module, "dilation", getattr(module, "dilation", 1))
        return _Op(kernel, stride, pad, pad, dilation, bool(module.ceil_mode))
    if isinstance(module, _SPATIAL_UNSUPPORTED):
        raise PosencError(f"receptive field of {name}: {type(module).__name__} is not supported")
    return None


def _ops(modules: nn.Module | Iterable[nn.Module]) -> list[tuple[str, _Op]]:
    roots = [("", modules)] if isinstance(modules, nn.Module) else [(str(i), m) for i, m in enumerate(modules)]
    ops = []
    for prefix, root in roots:
        for name, leaf in _named_leaves(root, prefix):
            op = _op_of(name, leaf)
            if op is not None:
                ops.append((name, op))
    return ops


def module_geometry(modules: nn.Module | Iterable[nn.Module]) -> Geometry:
    """Receptive field of ``modules`` (a module, or several applied in order) composed over their
    Conv2d (any subclass), MaxPool2d and AvgPool2d leaves; other leaves are the identity and
    ``downsample`` subtrees are skipped. Non-square ops raise a :class:`PosencError`."""
    size, jump, start = 1, 1, 0.0
    for _, op in _ops(modules):
        reach = (op.kernel - 1) * op.dilation
        size += reach * jump
        start += (reach / 2 - op.pad_before) * jump
        jump *= op.stride
    return Geometry(size, jump, start)


def output_size(modules: nn.Module | Iterable[nn.Module], size: int) -> int:
    """Side of ``modules``' output for a ``size`` px input, by conv arithmetic
    ``floor((n + p_before + p_after - d (k - 1) - 1) / s) + 1`` (pools with ``ceil_mode`` as torch
    computes them); ``downsample`` subtrees are skipped. A map shrunk below 1 px is a PosencError."""
    n = size
    for name, op in _ops(modules):
        span = n + op.pad_before + op.pad_after - op.dilation * (op.kernel - 1) - 1
        if span < 0:
            raise PosencError(
                f"an input of {size} px is too small: module {name} gets a {n} px map, "
                f"smaller than its {op.dilation * (op.kernel - 1) + 1} px kernel"
            )
        if op.ceil_mode:
            out = math.ceil(span / op.stride) + 1
            if (out - 1) * op.stride >= n + op.pad_before:  # torch: the last window must start inside
                out -= 1
        else:
            out = span // op.stride + 1
        n = out
    return n


def tap_modules(backbone: TappedBackbone) -> dict[str, list[nn.Module]]:
    """For each tap of ``backbone``, its body's children up to and including the tap's child
    (empty lists for the ``none`` backbone, whose only tap is the image)."""
    if backbone.body is None:
        return {tap: [] for tap in backbone.tap_names}
    if not getattr(backbone, "sequential", True):
        raise PosencError(
            f"backbone {backbone.name} is not a plain sequence of stages, so its receptive fields "
            "(and PPP's padding-free reference) cannot be derived; valid: a torchvision backbone"
        )
    children = list(backbone.body.named_children())
    found = {
        backbone._tap_of[name]: [m for _, m in children[: k + 1]]
        for k, (name, _) in enumerate(children)
        if name in backbone._tap_of
    }
    return {tap: found[tap] for tap in backbone.tap_names}


def tap_geometries(backbone: TappedBackbone) -> dict[str, Geometry]:
    """:func:`module_geometry` of each tap (``f1``..``f5``; the identity for the ``none`` backbone);
    :func:`measured_geometries` for a backbone that is not a plain sequence of stages."""
    if getattr(backbone, "global_receptive_field", False):
        raise PosencError(
            f"every tap of backbone {backbone.name} depends on every pixel (attention over the whole "
            "image): no padding-free reference exists; valid: a CNN"
        )
    if not getattr(backbone, "sequential", True):
        measured: dict[str, Geometry] = {}
        for tap, geometry in measured_geometries(backbone).items():
            assert geometry is not None, tap  # without allow_global a tap is measured or refused
            measured[tap] = geometry
        return measured
    return {tap: module_geometry(modules) for tap, modules in tap_modules(backbone).items()}


def tap_output_sizes(backbone: TappedBackbone, size: int) -> dict[str, int]:
    """:func:`output_size` of each tap for a ``size`` px input (by shape inference on the meta
    device for a backbone that is not a plain sequence of stages)."""
    if not getattr(backbone, "sequential", True):
        shapes = backbone.tap_shapes(size)
        if shapes is None:
            raise PosencError(f"an input of {size} px is too small for backbone {backbone.name}")
        return {tap: shape[-1] for tap, shape in zip(backbone.tap_names, shapes)}
    return {tap: output_size(modules, size) for tap, modules in tap_modules(backbone).items()}


LARGEST_MEASURED_INPUT = 1024  # px: a receptive field that still touches its borders there counts as global


def _average_instead_of_max(
    x: Tensor, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False
) -> Tensor:
    """``F.max_pool2d``'s window as an average: the same support, a gradient to every pixel of it."""
    if dilation not in (1, (1, 1)) or return_indices:
        raise PosencError("receptive field: a dilated or index-returning max-pool is not supported")
    return F.avg_pool2d(x, kernel_size, stride, padding, ceil_mode, count_include_pad=True)


def _dependency_probe(backbone: TappedBackbone) -> nn.Module:
    """A float64 copy of ``backbone`` whose every parameter is positive and whose BatchNorms are the
    identity up to their (positive) affine part: every input pixel a unit depends on structurally
    gets a non-zero gradient."""
    probe = copy.deepcopy(backbone).double().eval()
    with torch.no_grad():
        for param in probe.parameters():
            param.abs_().add_(0.05)
        for name, buffer in probe.named_buffers():
            if name.endswith("running_mean"):
                buffer.zero_()
            elif name.endswith("running_var"):
                buffer.fill_(1.0)
    return probe.requires_grad_(False)


def measured_geometries(backbone: TappedBackbone, allow_global: bool = False) -> dict[str, Geometry | None]:
    """Receptive field of each tap of any backbone, measured (see the module's docstring): the
    support ``[lo, hi]`` of the centre unit ``c``'s input gradient gives ``size = hi - lo + 1`` and
    ``start = (lo + hi) / 2 - c * jump``, with ``jump`` the tap's declared stride. The input grows
    from 64 px until no support touches its border; at :data:`LARGEST_MEASURED_INPUT` px a tap
    still touching it is refused, as is one that NaN shows to depend on pixels outside it
    (``allow_global``: such taps are None instead)."""
    wide = _wide_taps(backbone)
    if wide and not allow_global:
        raise PosencError(
            f"tap {wide[0]} of backbone {backbone.name} depends on every pixel of a {LARGEST_MEASURED_INPUT} px "
            "input (its edge columns reach the centre: an op over the whole map, such as GroupNorm or "
            f"squeeze-excitation, or a receptive field wider than {LARGEST_MEASURED_INPUT} px): no padding-free "
            "reference exists; valid: layers with smaller receptive fields"
        )
    probe = _dependency_probe(backbone)
    strides = backbone.tap_strides
    side = 64
    found: dict[str, Geometry | None] = dict.fromkeys(wide)  # None: depends on every pixel (allow_global)
    measured_at: dict[str, tuple[int, int, int]] = {}  # (side, lo, hi) of the measurement
    generator = torch.Generator().manual_seed(0)
    while len(found) < len(backbone.tap_names):
        if side > LARGEST_MEASURED_INPUT and allow_global:
            found.update({t: None for t in backbone.tap_names if t not in found})
            break
        if side > LARGEST_MEASURED_INPUT:
            tap = next(t for t in backbone.tap_names if t not in found)
            raise PosencError(
                f"tap {tap} of backbone {backbone.name} depends on every pixel of a "
                f"{LARGEST_MEASURED_INPUT} px input (an op over the whole map, such as GroupNorm or "
                f"squeeze-excitation, or a receptive field wider than {LARGEST_MEASURED_INPUT} px): "
                "no padding-free reference exists; valid: layers with smaller receptive fields"
            )
        image = (torch.rand(1, 3, side, side, dtype=torch.float64, generator=generator) + 0.5).requires_grad_(True)
        original = F.max_pool2d
        # nn.MaxPool2d (and timm's pools) look it up at call time; restored below
        F.max_pool2d = _average_instead_of_max  # type: ignore[assignment]  # deliberate patch of an overloaded function
        try:
            with torch.enable_grad():
                try:
                    taps = probe(image)
                except RuntimeError:  # too small for this padding (reflect wider than a deep map): grow
                    side *= 2
                    continue
                for tap, features, jump in zip(backbone.tap_names, taps, strides):
                    if tap in found:
                        continue
                    centre = features.shape[-1] // 2
                    unit = features[0, :, features.shape[-2] // 2, centre].sum()
                    (grad,) = torch.autograd.grad(unit, image, retain_graph=True)
                    columns = grad[0].abs().sum(dim=(0, 1)).nonzero().flatten()
                    lo, hi = int(columns.min()), int(columns.max())
                    if lo > 0 and hi < side - 1:
                        found[tap] = Geometry(hi - lo + 1, int(jump), (lo + hi) / 2 - centre * int(jump))
                        measured_at[tap] = (side, lo, hi)
        finally:
            F.max_pool2d = original
        side *= 2
    evaluated = copy.deepcopy(backbone).eval()  # BatchNorm on running stats: a batch statistic would spread NaN
    for index, tap in enumerate(backbone.tap_names):
        if found[tap] is None:
            continue
        try:
            _check_with_nan(evaluated, index, *measured_at[tap])
        except PosencError:
            if not allow_global:
                raise
            found[tap] = None
    return {tap: found[tap] for tap in backbone.tap_names}


def _wide_taps(backbone: TappedBackbone) -> list[str]:
    """The taps whose centre unit a NaN in the first or last column of a :data:`LARGEST_MEASURED_INPUT` px
    wide input reaches: one forward pass, without gradients, settles what the measurement would only find at its
    largest input (an op over the whole map, squeeze-excitation in every EfficientNet block, reaches the
    centre from anywhere; NaN spreads through every op, as :func:`_check_with_nan` relies on)."""
    side = LARGEST_MEASURED_INPUT
    # a band of 128 rows: the reach along a row is what the measurement bounds (its support's columns), and a
    # band costs an eighth of the square
    images = torch.rand(1, 3, 128, side, generator=torch.Generator().manual_seed(2))
    images[:, :, :, 0] = images[:, :, :, -1] = float("nan")
    training = backbone.training
    backbone.eval()  # BatchNorm on running stats: a batch statistic would spread NaN everywhere
    try:
        with torch.no_grad():
            dtype = next(backbone.parameters()).dtype
            taps = backbone(images.to(dtype))
    except (RuntimeError, ValueError, AssertionError, StopIteration):  # no parameters, or a size it refuses
        return []
    finally:
        backbone.train(training)
    return [
        tap
        for tap, features in zip(backbone.tap_names, taps)
        if bool(features[0, :, features.shape[-2] // 2, features.shape[-1] // 2].isnan().any())
    ]


def _check_with_nan(backbone: TappedBackbone, index: int, side: int, lo: int, hi: int) -> None:
    """Refuse tap ``index`` of ``backbone`` (in eval mode) if its centre unit depends on an input column
    outside ``[lo, hi]`` (NaN there reaches it), or does not depend on column ``lo`` (the measurement missed a path)."""
    columns = sorted({0, lo - 1, hi + 1, side - 1} - {lo, hi}) + [lo]
    dtype = next(backbone.parameters()).dtype
    images = torch.rand(len(columns), 3, side, side, generator=torch.Generator().manual_seed(1)).to(dtype)
    for row, column in enumerate(columns):
        images[row, :, :, column] = float("nan")
    with torch.no_grad():
        features = backbone(images)[index]
    reached = features[:, :, features.shape[-2] // 2, features.shape[-1] // 2].isnan().any(dim=1).tolist()
    tap = backbone.tap_names[index]
    if any(reached[:-1]):
        column = columns[reached.index(True)]
        raise PosencError(
            f"tap {tap} of backbone {backbone.name} depends on input column {column}, outside its "
            f"receptive field [{lo}, {hi}] of a {side} px input: an op over the whole map (squeeze-"
            "excitation, GroupNorm, ...), so no padding-free reference exists; valid: a backbone "
            "without such ops"
        )
    if not reached[-1]:
        raise PosencError(
            f"receptive field of tap {tap} of backbone {backbone.name} could not be measured "
            f"(column {lo} does not reach its centre unit)"
        )


_DEPTHS: dict[tuple[str, tuple[str, ...], int], dict[str, Geometry | None]] = {}  # per process


def _structure(backbone: TappedBackbone) -> int:
    """A hash of what the receptive fields depend on: every leaf's class, kernel, stride and dilation.
    Not the padding *mode* (zeros, reflect and circular share one measurement) nor the weights;
    a user's module built with other kwargs (``backbone=module``, same name) gets its own."""
    return hash(
        tuple(
            (
                type(m).__name__,
                getattr(m, "kernel_size", None),
                getattr(m, "stride", None),
                getattr(m, "dilation", None),
            )
            for m in backbone.modules()
            if not list(m.children())
        )
    )


def tap_receptive_fields(backbone: TappedBackbone) -> dict[str, Geometry | None]:
    """:func:`tap_geometries`, with None for a tap whose units depend on every pixel (attention,
    squeeze-excitation; a backbone may declare it: ``global_receptive_field = True``). Structural
    (weights and padding modes do not enter), so cached per structure within a process: the atlas's
    cells of one model measure it once per padding class."""
    key = (backbone.name, tuple(backbone.tap_names), _structure(backbone))
    if key not in _DEPTHS:
        if getattr(backbone, "global_receptive_field", False):
            _DEPTHS[key] = {tap: None for tap in backbone.tap_names}
        else:
            _DEPTHS[key] = (
                measured_geometries(backbone, allow_global=True)
                if not getattr(backbone, "sequential", True)
                else dict(tap_geometries(backbone))
            )
    return _DEPTHS[key]


def tap_depths(backbone: TappedBackbone, image_size: int) -> dict[str, float | int | None]:
    """Each tap's depth as comparable across families (the position atlas): ``tap/<t>/rf_px`` (receptive
    field), ``tap/<t>/stride`` and ``tap/<t>/rf_rel`` = receptive field / ``image_size``; the field is
    None for a tap that depends on every pixel."""
    fields = tap_receptive_fields(backbone)
    out: dict[str, float | int | None] = {}
    for tap, stride in zip(backbone.tap_names, backbone.tap_strides):
        g = fields[tap]
        out.update(
            {
                f"tap/{tap}/rf_px": None if g is None else int(g.size),
                f"tap/{tap}/stride": int(stride),
                f"tap/{tap}/rf_rel": None if g is None else g.size / image_size,
            }
        )
    return out


def margin_needed(geometry: Geometry, crop_size: int, out: int) -> float:
    """Smallest margin (input px, unrounded) that puts the receptive fields of all ``out`` units of
    a ``crop_size`` crop inside the context: ``max(0, radius - start, start + (out - 1) jump +
    radius - (crop_size - 1))``."""
    left = geometry.radius - geometry.start
    right = geometry.centre(out - 1) + geometry.radius - (crop_size - 1)
    return max(0.0, left, right)


def context_margin(
    backbone: TappedBackbone,
    crop_size: int,
    taps: Sequence[str] | None = None,
    geometries: Mapping[str, Geometry] | None = None,
) -> int:
    """Margin ``m`` of the context around a ``crop_size`` crop for PPP (Lin et al., ICML 2023):
    the smallest multiple of the largest jump of ``taps`` (default: all of ``backbone``'s) such that
    every unit of every tap of the crop has its whole receptive field inside the context (crop plus
    ``m`` on each side); the reference features are then padding-free and aligned to the crop's.
    ``geometries``: the taps' fields when already known (default: :func:`tap_geometries`)."""
    geometries = dict(geometries) if geometries is not None else tap_geometries(backbone)
    sizes = tap_output_sizes(backbone, crop_size)
    taps = list(taps) if taps is not None else list(geometries)
    for tap in taps:
        if tap not in geometries:
            raise invalid_value(
                "taps", list(taps), f"expected taps of backbone {backbone.name}: {', '.join(geometries)}"
            )
    if not taps:
        raise invalid_value("taps", [], f"expected at least one of {', '.join(geometries)}")
    jump = max(geometries[t].jump for t in taps)
    need = max(margin_needed(geometries[t], crop_size, sizes[t]) for t in taps)
    return int(math.ceil(need / jump)) * jump


def check_context(context_size: int, crop_size: int, margin: int, what: str) -> None:
    """One-line PosencError unless ``context_size >= crop_size + 2 * margin``."""
    needed = crop_size + 2 * margin
    if context_size < needed:
        raise invalid_value(
            "data.context_size",
            context_size,
            f"{what} needs contexts of at least {needed} px (crop {crop_size} + 2 x margin {margin})",
        )


def reference_crop(tap: Tensor, margin: int, jump: int, out_size: tuple[int, int]) -> Tensor:
    """The footprint of the crop inside the context's tap ``[..., H', W']``: the ``out_size``
    window at offset ``margin / jump`` (``margin`` must be a multiple of ``jump``)."""
    if jump < 1 or margin < 0 or margin % jump:
        raise invalid_value("margin", margin, f"expected a multiple >= 0 of the tap's jump {jump}")
    offset = margin // jump
    height, width = int(out_size[0]), int(out_size[1])
    if offset + height > tap.shape[-2] or offset + width > tap.shape[-1]:
        raise invalid_value(
            "margin",
            margin,
            f"the {height}x{width} window at offset {offset} does not fit the "
            f"context's {tap.shape[-2]}x{tap.shape[-1]} tap",
        )
    return tap[..., offset : offset + height, offset : offset + width]
