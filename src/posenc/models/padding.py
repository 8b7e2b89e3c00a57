"""Padding schemes for studying where CNNs get absolute position from.

Islam et al., "How much position information do convolutional neural networks
encode?" (ICLR 2020) and "Position, Padding and Predictions" (IJCV 2024) show that
zero padding is a main source of absolute position in CNNs and compare it with other
border treatments. :func:`convert_padding` swaps the scheme of every padded
``nn.Conv2d`` of a model in place while keeping its weights:

* ``zeros``: PyTorch's default, left as is.
* ``reflect`` / ``replicate`` / ``circular``: PyTorch's native ``padding_mode``.
* ``partial``: :class:`PartialConv2d`, partial-convolution based padding
  (Liu et al. 2018, "Partial convolution based padding").
* ``none``: :class:`UpsampledValidConv2d`, the authors' "no padding" variant: the
  input is upsampled by the padding amount and convolved without padding, so map
  sizes (and hence residual connections) are unchanged.
* ``none_shrink``: padding set to 0, every padded conv shrinks its map.

Pooling layers are not changed: max pooling pads with ``-inf`` (e.g. ResNet's stem
``MaxPool2d(3, 2, padding=1)``), so a padded tap never wins the max and adds no
constant border value that could encode position.

Each scheme is registered beside its definition (:func:`posenc.registry.register_padding`, in the
order the error messages list them); :data:`PADDING_MODES` is the registry's live view of the names.
"""

from __future__ import annotations

import copy
from collections.abc import KeysView
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from posenc.config.rules import Rule
from posenc.errors import PosencError, check_choice
from posenc.registry import PADDING_REGISTRY, register_padding

PADDING_MODES: KeysView[str] = PADDING_REGISTRY.keys()  # live: every registered scheme, in registration order
# padding=none: upsample by the conv's padding on both sides, or by the ICCV 2021 authors' (k-1)//2 (1 -> 2)
NoneUpsample = Literal["padding", "authors"]
NONE_UPSAMPLES: tuple[str, ...] = get_args(NoneUpsample)

_NativeMode = Literal["zeros", "reflect", "replicate", "circular"]  # nn.Conv2d's own padding_mode values
_NATIVE_MODES: tuple[_NativeMode, ...] = get_args(_NativeMode)
register_padding(*_NATIVE_MODES)  # PyTorch's own padding_mode: the same interior as zeros


def _pads(conv: nn.Conv2d) -> tuple[int, int, int, int]:
    """Padding of ``conv`` as ``(left, right, top, bottom)`` (``F.pad`` order)."""
    if isinstance(conv.padding, str):
        if conv.padding == "valid":
            return (0, 0, 0, 0)
        # "same": total d*(k-1) per dim, the extra pixel on the right/bottom as in torch.
        tot_h, tot_w = (d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size))
        return (tot_w // 2, tot_w - tot_w // 2, tot_h // 2, tot_h - tot_h // 2)
    ph, pw = conv.padding
    return (pw, pw, ph, ph)


def _is_padded(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and any(_pads(module))


@register_padding("partial")
class PartialConv2d(nn.Conv2d):
    """Zero-padded conv re-weighted by the fraction of taps on real pixels.

    Liu et al. 2018, "Partial convolution based padding": ``out = conv(x) * r + b``
    with ``r = k_h*k_w / #taps on real input pixels``; ``r = 1`` in the interior, so
    interior outputs equal the plain zero-padded conv exactly. The ratio map depends
    only on the input size and is cached per ``(H, W, device, dtype)``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("padding_mode", "zeros") != "zeros":
            raise PosencError("PartialConv2d needs padding_mode='zeros'")
        super().__init__(*args, **kwargs)
        self._ratio_cache: dict[tuple[int, int, torch.device, torch.dtype], torch.Tensor] = {}

    def ratio(self, height: int, width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The ``(1, 1, H_out, W_out)`` re-weighting map for an ``H x W`` input (cached)."""
        key = (height, width, torch.device(device), dtype)
        cached = self._ratio_cache.get(key)
        if cached is None:
            with torch.no_grad():
                ones = torch.ones(1, 1, height, width, device=device, dtype=dtype)
                kernel = torch.ones(1, 1, *self.kernel_size, device=device, dtype=dtype)
                count = F.conv2d(ones, kernel, None, self.stride, self.padding, self.dilation)
                taps = self.kernel_size[0] * self.kernel_size[1]
                cached = taps / count.clamp(min=1.0)  # windows with no real tap output 0 anyway
            self._ratio_cache[key] = cached
        return cached

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.conv2d(x, self.weight, None, self.stride, self.padding, self.dilation, self.groups)
        out = out * self.ratio(x.shape[-2], x.shape[-1], x.device, x.dtype)
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1)
        return out


@register_padding("none", same_interior=False)  # maps resized up by the padding's width, then a valid conv
class UpsampledValidConv2d(nn.Conv2d):
    """ "No padding" conv: bilinearly upsample ``(H, W)`` by the padding, then conv unpadded.

    Follows the authors' code for Islam et al. (ICLR 2020 / IJCV 2024): the input is
    resized to ``(H + pad_top + pad_bottom, W + pad_left + pad_right)`` and convolved
    with padding 0, so the output size equals that of the original padded conv for
    any stride while no constant border value is introduced. ``self.padding`` keeps the
    original (virtual) padding. We use ``align_corners=False`` (torch's default,
    pixel-centre alignment): border pixels of the resized map copy the input border.

    ``upsample``: ``padding`` adds the conv's padding on both sides (``2 * pad`` px; the output
    size is the padded conv's for every kernel); ``authors`` adds ``(k - 1) // 2`` px with 1
    bumped to 2, as the ICCV 2021 authors' PermuteNet code does: the same +2 px for a 3x3 conv,
    but +3 px (not 6) for ResNet's 7x7 stride-2 stem, whose map is then one pixel smaller.
    """

    def __init__(self, *args: Any, upsample: NoneUpsample = "padding", **kwargs: Any) -> None:
        if kwargs.get("padding_mode", "zeros") != "zeros":
            raise PosencError("UpsampledValidConv2d needs padding_mode='zeros'")
        check_choice("padding.none_upsample", upsample, NONE_UPSAMPLES)
        super().__init__(*args, **kwargs)
        self.upsample = upsample

    def extra_pixels(self) -> tuple[int, int]:
        """How many pixels (rows, columns) the input grows by before the valid conv."""
        left, right, top, bottom = _pads(self)
        if self.upsample == "padding":
            return top + bottom, left + right
        grow = [(k - 1) // 2 for k in self.kernel_size]
        return tuple(2 if g == 1 else g for g in grow)  # type: ignore[return-value]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows, cols = self.extra_pixels()
        if rows or cols:
            x = F.interpolate(x, size=(x.shape[-2] + rows, x.shape[-1] + cols), mode="bilinear", align_corners=False)
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _rebuild(conv: nn.Conv2d, cls: type[nn.Conv2d], **overrides: Any) -> nn.Conv2d:
    """A ``cls`` conv with ``conv``'s hyper-parameters and the very same parameter tensors."""
    kwargs: dict[str, Any] = dict(
        in_channels=conv.in_channels,
        out_channels=conv.out_channels,
        kernel_size=conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    )
    kwargs.update(overrides)
    new = cls(**kwargs, device="meta")  # no init cost; parameters are replaced below
    new.weight = conv.weight
    if conv.bias is not None:
        new.bias = conv.bias
    new.train(conv.training)
    return new


class PaddingHooks:
    """Padding ``mode`` for a conv whose class computes its own forward (timm's ``StdConv2d``
    standardises its weights; ``ScaledStdConv2d`` scales them): rebuilding it as an ``nn.Conv2d``
    would drop that computation, so the module is kept and its padding moves into hooks. The
    pre-hook pads the input explicitly (or upsamples it, ``none``) and the conv runs with padding
    0; for ``partial`` the post-hook re-weights the bias-free output by window size / real taps
    (Liu et al. 2018), as :class:`PartialConv2d` does."""

    def __init__(self, conv: nn.Conv2d, mode: str) -> None:
        self.mode, self.pads = mode, _pads(conv)
        self._input_size: tuple[int, int] = (0, 0)
        self._ratios: dict[tuple[int, int, torch.device, torch.dtype], torch.Tensor] = {}  # per input size

    def before(self, conv: nn.Conv2d, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        x = args[0]
        self._input_size = (x.shape[-2], x.shape[-1])
        left, right, top, bottom = self.pads
        if self.mode == "none":
            x = F.interpolate(
                x, size=(x.shape[-2] + top + bottom, x.shape[-1] + left + right), mode="bilinear", align_corners=False
            )
        elif self.mode != "none_shrink":
            x = F.pad(x, self.pads, mode="constant" if self.mode in ("zeros", "partial") else self.mode)
        return (x, *args[1:])

    def after(self, conv: nn.Conv2d, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> torch.Tensor:
        if self.mode != "partial":
            return out
        key = (*self._input_size, out.device, out.dtype)
        ratio = self._ratios.get(key)
        if ratio is None:
            with torch.no_grad():
                ones = F.pad(torch.ones(1, 1, *self._input_size, device=out.device, dtype=out.dtype), self.pads)
                kernel = torch.ones(1, 1, *conv.kernel_size, device=out.device, dtype=out.dtype)
                count = F.conv2d(ones, kernel, None, conv.stride, 0, conv.dilation)
                ratio = self._ratios[key] = conv.kernel_size[0] * conv.kernel_size[1] / count.clamp(min=1.0)
        bias = conv.bias.view(1, -1, 1, 1) if conv.bias is not None else 0.0
        return (out - bias) * ratio + bias


def _honours_padding(conv: nn.Conv2d) -> bool:
    """Whether ``conv``'s own forward pads exactly as its ``padding`` attribute says (and nothing
    more): its output on a probe equals the same conv run with padding 0 on the zero-padded probe.
    False for convs that pad inside ``forward`` (timm's ``Conv2dSame``: ``padding=0`` declared,
    ``F.pad`` to "same" in ``forward``), whose padding posenc cannot see to swap."""
    side = max(conv.kernel_size) * max(conv.dilation) + 2 * max(conv.stride) + 3
    pads = _pads(conv)
    weight = conv.weight
    probe = torch.randn(
        1, conv.in_channels, side, side + 1, generator=torch.Generator().manual_seed(0), dtype=weight.dtype
    ).to(weight.device)
    declared, was_training = conv.padding, conv.training
    conv.eval()
    try:
        with torch.no_grad():
            direct = conv(probe)
            conv.padding = (0, 0)
            explicit = conv(F.pad(probe, pads))
    finally:
        conv.padding = declared
        conv.train(was_training)
    left, right, top, bottom = pads
    expected = tuple(
        (n + a + b - d * (k - 1) - 1) // st + 1
        for n, a, b, d, k, st in zip(
            probe.shape[-2:], (top, left), (bottom, right), conv.dilation, conv.kernel_size, conv.stride
        )
    )
    if tuple(direct.shape[-2:]) != expected or direct.shape != explicit.shape:
        return False  # it pads more than it declares
    scale = direct.abs().max().item() + 1e-12  # standardised weights give outputs of any scale
    return (direct - explicit).abs().max().item() <= 1e-4 * scale


def _hook_padding(conv: nn.Conv2d, mode: str) -> nn.Conv2d:
    hooks = PaddingHooks(conv, mode)
    conv._posenc_padding_hooks = hooks  # type: ignore[assignment]  # its geometry (posenc.models.uneven_padding)
    conv.padding = (0, 0)
    conv.register_forward_pre_hook(hooks.before)
    conv.register_forward_hook(hooks.after)
    return conv


class PaddingRefused(PosencError):
    """A conv whose padding cannot be swapped without changing what it computes."""


register_padding("none_shrink", same_interior=False, shrinks=True)  # padding 0: every padded conv shrinks its map


def _convert_one(conv: nn.Conv2d, mode: str, none_upsample: NoneUpsample = "padding") -> nn.Conv2d:
    if type(conv) not in (nn.Conv2d, PartialConv2d, UpsampledValidConv2d):
        return _hook_padding(conv, mode)  # a class with its own computation: keep it (see PaddingHooks)
    if mode in _NATIVE_MODES:
        if type(conv) is nn.Conv2d:
            conv.padding_mode = mode
            return conv
        return _rebuild(conv, nn.Conv2d, padding_mode=mode)
    if mode == "partial":
        return _rebuild(conv, PartialConv2d, padding_mode="zeros")
    if mode == "none":
        return _rebuild(conv, UpsampledValidConv2d, padding_mode="zeros", upsample=none_upsample)
    return _rebuild(conv, nn.Conv2d, padding=0, padding_mode="zeros")  # none_shrink


def convert_padding(
    model: nn.Module, mode: str, report: dict[str, int] | None = None, none_upsample: NoneUpsample = "padding"
) -> nn.Module:
    """Switch every padded ``nn.Conv2d`` of ``model`` to padding ``mode``, in place; ``report``
    (if given) counts the converted convs per class.

    Weights are kept (the same ``Parameter`` objects), unpadded convs (1x1,
    downsample) and pooling layers are untouched; see the module docstring for the
    modes (Islam et al., ICLR 2020 / IJCV 2024). ``zeros`` changes nothing. A conv class of
    its own (not ``nn.Conv2d`` itself) keeps its computation (:class:`PaddingHooks`); one that
    pads inside its own ``forward`` cannot be converted and is refused (:class:`PaddingRefused`,
    one line naming the module and its class), never left zero-padded in silence. Returns
    ``model``, or the new module if ``model`` itself is a padded conv. Residual nets need
    ``"none"``, not ``"none_shrink"``: shrinking maps no longer match their skip connections.
    """
    check_choice("padding", mode, PADDING_MODES)
    report = {} if report is None else report
    if mode == "zeros":
        for module in model.modules():
            if isinstance(module, nn.Conv2d) and type(module) is not nn.Conv2d and not _honours_padding(module):
                report[f"zero-padded inside forward: {type(module).__name__}"] = (
                    report.get(f"zero-padded inside forward: {type(module).__name__}", 0) + 1
                )
        return model
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and type(module) is not nn.Conv2d and not _honours_padding(module):
            raise PaddingRefused(
                f"padding={mode} cannot convert {name or 'the model'} ({type(module).__name__}): it "
                "pads inside its own forward, where posenc cannot swap the scheme; valid: "
                "padding=zeros for this model"
            )
    if _is_padded(model):
        report[type(model).__name__] = 1
        return _convert_one(model, mode, none_upsample)  # type: ignore[arg-type]
    done: dict[int, nn.Module] = {}  # a conv shared by several parents is converted once
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if _is_padded(child):
                if id(child) not in done:
                    report[type(child).__name__] = report.get(type(child).__name__, 0) + 1
                    done[id(child)] = _convert_one(child, mode, none_upsample)  # type: ignore[arg-type]
                setattr(parent, name, done[id(child)])
    return model


def count_padded_convs(model: nn.Module) -> int:
    """Number of distinct ``nn.Conv2d`` modules in ``model`` with nonzero (virtual) padding."""
    return sum(1 for m in model.modules() if _is_padded(m))


@dataclass(frozen=True)
class PaddingSpec:
    """A padding scheme chosen in config (``conf/padding/<name>.yaml``); ``none_upsample``: how
    much ``none`` upsamples before a valid conv (:class:`UpsampledValidConv2d`), set only with
    ``name=none`` (the rules, :mod:`posenc.config.rules`, are read from these annotations)."""

    name: Annotated[str, Rule(choices=PADDING_MODES)]
    none_upsample: Annotated[NoneUpsample, Rule(only_with=("name", ("none",)))] = "padding"

    def __post_init__(self) -> None:
        check_choice("padding", self.name, PADDING_MODES)
        check_choice("padding.none_upsample", self.none_upsample, NONE_UPSAMPLES)

    def apply(self, model: nn.Module, report: dict[str, int] | None = None) -> nn.Module:
        """:func:`convert_padding` ``model`` to this scheme (``report``: convs converted per class)."""
        return convert_padding(model, self.name, report, self.none_upsample)


def meta_copy(model: nn.Module) -> nn.Module:
    """Deep copy of ``model`` with parameters and buffers on the meta device (no data copied)."""
    memo: dict[int, Any] = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    return copy.deepcopy(model, memo).eval()


def minimum_input_size(model: nn.Module, channels: int = 3, upper: int = 1024) -> int:
    """Smallest square input side for which ``model`` runs (matters for ``none_shrink``).

    Forwards run on a meta-device copy (shapes only, no compute). Binary search over
    ``[1, upper]``: the result ``s`` always runs and ``s - 1`` always fails; it is the
    global minimum when feasibility is monotone in the size, as for plain CNNs.
    """
    meta = meta_copy(model)
    dtype = next((p.dtype for p in meta.parameters() if p.is_floating_point()), torch.float32)

    def error(side: int) -> Exception | None:
        try:
            with torch.no_grad():
                meta(torch.empty(1, channels, side, side, device="meta", dtype=dtype))
        except (RuntimeError, ValueError, IndexError) as exc:
            return exc
        return None

    exc = error(upper)
    if exc is not None:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PosencError(f"model does not run on a {upper}x{upper} input: {first}")
    lo, hi = 0, upper  # invariant: lo fails (0 by convention), hi runs
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if error(mid) is None:
            hi = mid
        else:
            lo = mid
    return hi
