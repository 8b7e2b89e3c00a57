"""Translation equivariance per tap: the price a network pays for the absolute position it encodes (issue 35,
item 2; Kayhan & van Gemert, CVPR 2020, and Karras et al., NeurIPS 2021, EQ-T, for dense outputs).

A tap of total stride ``s`` is shift-equivariant for shifts by multiples of ``s`` when shifting the input by
``c * s`` px shifts its map by ``c`` cells. Away from the border every conv, pool and pointwise op is; what
breaks it is the border (the padding, and crops that bring new content in). The error of a tap, for a horizontal
shift of ``c`` cells:

* **crop** (the default; the input is a crop, as a camera's frame): ``x0`` and ``x1`` are crops of one wider image
  at offsets 0 and ``c * s``; the columns both maps see are compared, ``f(x1)[:, :, :, j]`` against
  ``f(x0)[:, :, :, j + c]`` for ``j < w - c``;
* **circular**: ``x1`` is ``x0`` rolled by ``c * s`` px and compared with ``f(x0)`` rolled by ``c`` cells, over the
  whole map (circular padding is exactly equivariant to circular shifts: a test).

``error = sum (f(x1) - shifted f(x0))^2 / sum (shifted f(x0))^2`` over the compared positions (0: equivariant),
and the same per column binned by the compared columns' distance to the nearest left/right border of the two maps
(where the padding acts). Pure: features in, numbers out; the caller's ``encode`` runs the network.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from posenc.errors import invalid_value
from posenc.metrics.intervals import pooled_interval


def _ratio(diff: Tensor, ref: Tensor) -> float:
    energy = float(ref.pow(2).sum())
    return float(diff.pow(2).sum()) / energy if energy > 0 else float("nan")


def _by_distance(diff: Tensor, ref: Tensor, distance: Sequence[int]) -> list[float]:
    """Per distance ``d`` to the border: the error over the compared columns whose ``distance`` is ``d``."""
    out = []
    for d in range(max(distance) + 1 if len(distance) else 0):
        picked = [j for j, dj in enumerate(distance) if dj == d]
        out.append(_ratio(diff[..., picked], ref[..., picked]) if picked else float("nan"))
    return out


def equivariance_errors(
    encode: Callable[[Tensor], Sequence[Tensor]],
    images: Tensor,
    crop: int,
    strides: Sequence[int],
    cells: int = 1,
    mode: str = "crop",
) -> list[dict[str, Any]]:
    """Per tap (in ``encode``'s order, of total ``strides``): ``{"error", "error_ci", "by_distance", "shift_px"}``
    (``error_ci``: its 95% bootstrap interval over the images, None for one image) for a
    horizontal shift of ``cells`` cells. ``images``: ``[N, C, crop, W]`` with ``W >= crop + cells * max(strides)``
    for ``mode="crop"`` (crops of it at offset 0 and at the shift), ``W >= crop`` for ``mode="circular"``."""
    if mode not in ("crop", "circular"):
        raise invalid_value("mode", mode, "expected crop or circular")
    if cells < 1:
        raise invalid_value("cells", cells, "expected a shift of at least one cell")
    widest = cells * max(strides)
    if mode == "crop" and images.shape[-1] < crop + widest:
        raise invalid_value(
            "images width", images.shape[-1], f"expected >= crop + cells x the largest stride = {crop + widest}"
        )
    base = images[..., :crop]
    with torch.no_grad():
        reference = list(encode(base))
    out = []
    for index, stride in enumerate(strides):
        shift = cells * int(stride)
        with torch.no_grad():
            if mode == "crop":
                moved = encode(images[..., shift : shift + crop])[index]
            else:
                moved = encode(torch.roll(base, shifts=shift, dims=-1))[index]
        ref = reference[index]
        width = ref.shape[-1]
        if mode == "crop":
            if cells >= width:
                out.append({"error": float("nan"), "by_distance": [], "shift_px": shift})
                continue
            a, b = moved[..., : width - cells].double(), ref[..., cells:].double()
            # a compared pair is column j of f(x1) and j + c of f(x0): its distance to the nearer of their borders
            distance = [min(j, width - 1 - (j + cells)) for j in range(width - cells)]
        else:
            a, b = moved.double(), torch.roll(ref, shifts=cells, dims=-1).double()
            distance = [min(j, width - 1 - j) for j in range(width)]
        # per image: the error's sums, resampled over the images for its 95% interval (posenc.metrics.intervals)
        sums = torch.stack([(a - b).pow(2).flatten(1).sum(1), b.pow(2).flatten(1).sum(1)], dim=1).cpu().numpy()
        ci = pooled_interval(sums, lambda pooled: pooled[:, 0] / pooled[:, 1]) if len(sums) >= 2 else None
        out.append(
            {
                "error": _ratio(a - b, b),
                "error_ci": ci,
                "by_distance": _by_distance(a - b, b, distance),
                "shift_px": shift,
            }
        )
    return out
