"""Task heads on a backbone's taps (the ``readout=`` options of the trainable tasks).

The padding study (Islam et al., IJCV 2024) asks how much position a CNN gets from its padding, so
no head may add position of its own:

- ``gap_linear``: global average pooling of the last tap, then a linear layer. Pooling discards
  where a feature is, so a location can only be classified if the backbone wrote it into the
  channels (the default of ``task=location_cls``; Islam et al., ICCV 2021, GAPNet).
- ``gapnet``: GAPNet (Islam, Kowal et al., ICCV 2021): a 3x3 conv from the last tap to one
  channel per class, globally averaged: the pooled maps are the logits. Its conv has no padding by
  default (``padding=1`` is the option that keeps the map's size, at the price of adding position).
- ``gap_permute``: ``gap_linear`` with PermuteNet's fresh channel permutation on every forward
  (``permute_at``: the tap whose channels are permuted, 5 = the pooled features; posenc.models.permutation).
  ``gap_linear`` and ``gapnet`` take ``permute_at`` too (default null: no permutation). The
  permutation happens inside the backbone; the task installs it (``backbone.set_channel_permutation``)
  when it builds the head.
- ``flatten_linear``: the last tap flattened, then a linear layer: the positive control, which sees
  the spatial layout directly and finds the location with any padding.
- ``pixel_decoder``: a light segmentation decoder of 1x1 convolutions only: every tap projected to
  ``width`` channels, resized to the size of tap ``fuse_at`` (bilinear up, average-pooled down),
  summed, BatchNorm + ReLU, a 1x1 classifier, bilinearly upsampled to the image. Fusing at the
  second tap (stride 2, the default) rather than the first costs a quarter of the upsampling, which
  dominated a CPU step (measured, 2 CPU cores, semseg at 64 px, batch 32: 40 steps and the test took
  54 s fused at full resolution, 25 s at stride 2). A 3x3 decoder conv would pad, and its padding would add
  position that the backbone's padding scheme is meant to control; bilinear upsampling with
  ``align_corners=False`` clamps at the border (no constant is introduced).

Every head is built by its task once the backbone's tap shapes and the number of classes are known:
``head(tap_channels=[...], tap_sizes=[(h, w), ...], num_classes=K)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from posenc.config.rules import Rule
from posenc.errors import PosencError, invalid_value
from posenc.models.permutation import PERMUTE_POINTS, PermutePoint

Dropout = Annotated[float, Rule(ge=0, lt=1)]  # readout.dropout: the probability of zeroing a feature

TapSizes = Sequence[tuple[int, int]]  # (h, w) of every tap


def _check(num_classes: int, tap_channels: Sequence[int], tap_sizes: TapSizes) -> None:
    if num_classes < 1:
        raise PosencError(f"a head needs num_classes >= 1, got {num_classes}")
    if not tap_channels or len(tap_channels) != len(tap_sizes):
        raise PosencError(f"a head needs one size per tap, got {len(tap_channels)} taps and {len(tap_sizes)} sizes")


def _check_permute_at(permute_at: int | None) -> int | None:
    if permute_at is not None and permute_at not in PERMUTE_POINTS:
        raise invalid_value(
            "readout.permute_at", permute_at, f"expected null or one of {', '.join(map(str, PERMUTE_POINTS))}"
        )
    return permute_at


class _ClassificationHead(nn.Module):
    """What the classification heads share: the tap shapes checked, ``permute_at`` checked and kept
    (the task reads it to install the permutation in the backbone)."""

    kind = "classification"

    def __init__(
        self, tap_channels: Sequence[int], tap_sizes: TapSizes, num_classes: int, permute_at: int | None
    ) -> None:
        super().__init__()
        _check(num_classes, tap_channels, tap_sizes)
        self.permute_at = _check_permute_at(permute_at)


class GapLinearHead(_ClassificationHead):
    """Global average pooling of the last tap -> linear classifier (logits ``[B, K]``);
    ``permute_at``: PermuteNet's channel permutation at that tap (``gap_permute``)."""

    def __init__(
        self,
        tap_channels: Sequence[int],
        tap_sizes: Sequence[tuple[int, int]],
        num_classes: int,
        dropout: Dropout = 0.0,
        permute_at: PermutePoint | None = None,
    ) -> None:
        super().__init__(tap_channels, tap_sizes, num_classes, permute_at)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(tap_channels[-1], num_classes)

    def forward(self, taps: Sequence[torch.Tensor], image_size: int | None = None) -> torch.Tensor:
        return self.fc(self.dropout(taps[-1].mean(dim=(2, 3))))


class GapPermuteHead(GapLinearHead):
    """PermuteNet (Islam, Kowal et al., ICCV 2021): :class:`GapLinearHead` whose channels at tap
    ``f<permute_at>`` (5: the pooled features) are permuted afresh on every forward; its other
    arguments are :class:`GapLinearHead`'s, by keyword."""

    def __init__(self, *, permute_at: PermutePoint = 5, **kwargs: Any) -> None:
        if permute_at is None:
            raise invalid_value(
                "readout.permute_at",
                permute_at,
                f"expected one of {', '.join(map(str, PERMUTE_POINTS))} (gap_linear has no permutation)",
            )
        super().__init__(permute_at=permute_at, **kwargs)


class GapNetHead(_ClassificationHead):
    """GAPNet (Islam, Kowal et al., ICCV 2021): ``k x k`` conv (padding 1, the authors') from the
    last tap to one map per class, then global average pooling; the pooled maps are the logits
    ``[B, K]``. A conv that leaves a 1x1 map of a larger tap is refused: the "pooling" would pool
    nothing, and the head would be a dense layer that reads every position of the tap."""

    def __init__(
        self,
        tap_channels: Sequence[int],
        tap_sizes: Sequence[tuple[int, int]],
        num_classes: int,
        kernel_size: Annotated[int, Rule(ge=1)] = 3,
        padding: Annotated[int, Rule(ge=0)] = 1,
        permute_at: PermutePoint | None = None,
    ) -> None:
        super().__init__(tap_channels, tap_sizes, num_classes, permute_at)
        h, w = tap_sizes[-1]
        if kernel_size < 1 or min(h, w) + 2 * padding < kernel_size:
            raise invalid_value(
                "readout.kernel_size",
                kernel_size,
                f"expected 1..{min(h, w) + 2 * padding} for the last tap's {h}x{w} map with readout.padding={padding}",
            )
        out = min(h, w) + 2 * padding - kernel_size + 1
        if out == 1 and max(h, w) > 1:
            raise invalid_value(
                "readout.padding",
                padding,
                f"readout.kernel_size={kernel_size} leaves a 1x1 map of the "
                f"last tap's {h}x{w}: global pooling would pool nothing and the head would read every "
                f"position; valid: readout.padding >= {(kernel_size - min(h, w)) // 2 + 1}, a smaller "
                "kernel or a larger input",
            )
        self.conv = nn.Conv2d(tap_channels[-1], num_classes, kernel_size, padding=padding)

    def forward(self, taps: Sequence[torch.Tensor], image_size: int | None = None) -> torch.Tensor:
        return self.conv(taps[-1]).mean(dim=(2, 3))


class FlattenLinearHead(_ClassificationHead):
    """The last tap flattened -> linear classifier: sees where every feature is (positive control)."""

    def __init__(
        self,
        tap_channels: Sequence[int],
        tap_sizes: Sequence[tuple[int, int]],
        num_classes: int,
        dropout: Dropout = 0.0,
    ) -> None:
        super().__init__(tap_channels, tap_sizes, num_classes, permute_at=None)
        h, w = tap_sizes[-1]
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(tap_channels[-1] * h * w, num_classes)

    def forward(self, taps: Sequence[torch.Tensor], image_size: int | None = None) -> torch.Tensor:
        return self.fc(self.dropout(taps[-1].flatten(1)))


class PixelDecoder(nn.Module):
    """1x1-conv decoder over all taps -> per-pixel logits ``[B, K, S, S]``.

    Every tap is projected to ``width`` channels and resized to tap ``fuse_at`` (average pooling
    down, bilinear up), summed, then ``depth`` per-pixel layers (1x1 conv, BatchNorm, ReLU) and a
    1x1 classifier. Nothing in it pads or mixes neighbouring pixels, so it adds capacity but no
    position of its own: what position the logits carry comes from the backbone."""

    kind = "segmentation"

    def __init__(
        self,
        tap_channels: Sequence[int],
        tap_sizes: Sequence[tuple[int, int]],
        num_classes: int,
        width: Annotated[int, Rule(ge=1)] = 64,
        fuse_at: Annotated[int, Rule(ge=0)] = 1,  # the tap whose size the taps are fused at
        depth: Annotated[int, Rule(ge=1)] = 1,  # per-pixel layers after fusing (the first is the fusion's)
    ) -> None:
        super().__init__()
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise PosencError(f"readout.depth={depth} is not valid: expected an int >= 1 (1x1 layers after fusing)")
        _check(num_classes, tap_channels, tap_sizes)
        if width < 1:
            raise PosencError(f"readout.width={width} is not valid: expected an int >= 1")
        if fuse_at < 0:
            raise PosencError(f"readout.fuse_at={fuse_at} is not valid: expected a tap index >= 0")
        if fuse_at >= len(tap_channels):
            raise PosencError(
                f"readout.fuse_at={fuse_at} is not valid: the backbone has {len(tap_channels)} taps; "
                f"valid: 0..{len(tap_channels) - 1}"
            )
        self.fuse_at = fuse_at
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in tap_channels)
        self.norm = nn.BatchNorm2d(width)
        layers: list[nn.Module] = []
        for _ in range(depth - 1):
            layers += [nn.Conv2d(width, width, 1), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        self.mlp = nn.Sequential(*layers)
        self.classify = nn.Conv2d(width, num_classes, 1)

    def forward(self, taps: Sequence[torch.Tensor], image_size: int | None = None) -> torch.Tensor:
        h, w = taps[self.fuse_at].shape[-2:]
        size = (h, w)
        fused = None
        for tap, lateral in zip(taps, self.lateral):
            x = lateral(tap)
            if x.shape[-2] > size[0]:
                x = F.adaptive_avg_pool2d(x, size)
            elif x.shape[-2:] != size:
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            fused = x if fused is None else fused + x
        logits = self.classify(self.mlp(F.relu(self.norm(fused))))
        if image_size is not None and logits.shape[-2:] != (image_size, image_size):
            logits = F.interpolate(logits, size=(image_size, image_size), mode="bilinear", align_corners=False)
        return logits
