"""Uneven padding (Alsallakh et al., ICLR 2021, "Mind the Pad -- CNNs Can Develop Blind Spots"): which strided
convs and pools of a model read their padding on one side only at a given input size.

A layer of kernel ``k`` (dilation ``d``), stride ``s`` and padding ``p_before``, ``p_after`` on an ``N``-px input
reads padded positions ``0 .. (o - 1) s + d (k - 1)`` of the ``L = N + p_before + p_after`` it is given, ``o`` its
output size; the last

    r = (N + p_before + p_after - d (k - 1) - 1) mod s

positions are never read. When ``r > 0`` and the layer pads, its far (bottom / right) padding is read less than
its near one, or not at all: the padding is uneven, and the learned kernels skew towards the near side (the
paper's ResNets at 224 px; at 225 px the stem's ``r`` is 0). When ``r`` exceeds the far padding, input pixels
at the bottom / right edge are never read either. Pure geometry: measured from the input size every layer sees
on a forward pass of an empty tensor on the meta device (no weights are touched, nothing is computed).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from posenc.models.padding import _pads, meta_copy

_LAYERS = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)


@dataclass(frozen=True)
class UnevenLayer:
    """One layer that reads its padding unevenly: its name, kind, the input size it sees ``(h, w)``, kernel,
    stride, padding ``(left, right, top, bottom)``, and per axis ``(rows, cols)`` the far positions it never
    reads: of its padding (``unused_padding``) and of the input itself (``unused_input``)."""

    name: str
    kind: str
    input_size: tuple[int, int]
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int, int, int]
    unused_padding: tuple[int, int]
    unused_input: tuple[int, int]

    def describe(self) -> str:
        """``layer1.0.conv1 (conv k3 s2 p1 on 32x32: 1 px of bottom/right padding unread)``."""
        parts = []
        if any(self.unused_padding):
            parts.append(f"{max(self.unused_padding)} px of bottom/right padding unread")
        if any(self.unused_input):
            parts.append(f"{max(self.unused_input)} px of the bottom/right input unread")
        k, s, p = self.kernel[0], self.stride[0], max(self.padding)
        h, w = self.input_size
        return f"{self.name} ({self.kind} k{k} s{s} p{p} on {h}x{w}: {', '.join(parts)})"


def _geometry(module: nn.Module) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int, int, int]]:
    """``(kernel, stride, dilation, pads)`` of a conv or pool, each per axis ``(h, w)``; pads ``(l, r, t, b)``."""

    def pair(value: int | tuple[int, ...]) -> tuple[int, int]:
        return (value, value) if isinstance(value, int) else (int(value[0]), int(value[-1]))

    if isinstance(module, nn.Conv2d):
        kernel, stride, dilation = pair(module.kernel_size), pair(module.stride), pair(module.dilation)
        hooks = getattr(module, "_posenc_padding_hooks", None)  # a conv whose padding moved into hooks
        pads = hooks.pads if hooks is not None else _pads(module)
    else:
        kernel = pair(module.kernel_size)  # type: ignore[arg-type]
        stride = pair(module.stride if module.stride is not None else module.kernel_size)  # type: ignore[arg-type]
        dilation = pair(getattr(module, "dilation", 1))
        ph, pw = pair(module.padding)  # type: ignore[arg-type]
        pads = (pw, pw, ph, ph)
    return kernel, stride, dilation, pads


def _unread(size: int, before: int, after: int, kernel: int, dilation: int, stride: int) -> tuple[int, int]:
    """``(far padding, far input)`` positions never read on one axis."""
    extent = size + before + after - dilation * (kernel - 1)
    if extent < 1:
        return 0, 0
    r = (extent - 1) % stride
    return min(r, after), max(0, r - after)


@contextmanager
def _sizes_seen(model: nn.Module) -> Iterator[dict[str, tuple[int, int]]]:
    seen: dict[str, tuple[int, int]] = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, _LAYERS):

            def record(mod: nn.Module, args: tuple, name: str = name) -> None:
                seen.setdefault(name, (int(args[0].shape[-2]), int(args[0].shape[-1])))

            handles.append(module.register_forward_pre_hook(record))
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


def uneven_layers(model: nn.Module, image_size: int | tuple[int, int], channels: int = 3) -> list[UnevenLayer]:
    """Every strided conv or pool of ``model`` that, on a ``image_size`` input, leaves far positions of its
    padding (or of its input) unread, in forward order (Alsallakh et al. ICLR 2021). ``model``: any module taking
    ``[B, channels, H, W]`` (a posenc backbone's ``body``, a user's model)."""
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    copy = meta_copy(model)
    with _sizes_seen(copy) as seen, torch.no_grad():
        copy(torch.zeros(1, channels, h, w, device="meta"))
    modules = dict(model.named_modules())
    found = []
    for name, (in_h, in_w) in seen.items():
        module = modules.get(name)
        if module is None:
            continue
        kernel, stride, dilation, (left, right, top, bottom) = _geometry(module)
        if stride == (1, 1):
            continue
        rows = _unread(in_h, top, bottom, kernel[0], dilation[0], stride[0])
        cols = _unread(in_w, left, right, kernel[1], dilation[1], stride[1])
        if any(rows) or any(cols):
            found.append(
                UnevenLayer(
                    name,
                    "conv" if isinstance(module, nn.Conv2d) else "pool",
                    (in_h, in_w),
                    kernel,
                    stride,
                    (left, right, top, bottom),
                    (rows[0], cols[0]),
                    (rows[1], cols[1]),
                )
            )
    return found
