"""PosENet readout (Islam et al., ICLR 2020, Sec. 3.2): a small conv net that regresses a position
map from frozen multi-level features.

Following the paper and the authors' code: each tap is bilinearly resized to ``feature_size``
(28) and concatenated on channels; ``depth`` k x k convs with padding 0 by default (Table 4 studies
padding 1/2); intermediate layers are conv -> BN -> ReLU keeping the channel count, the last conv
maps to one channel followed by BatchNorm(1) + Sigmoid; Xavier-uniform init. The output is
bilinearly upsampled to the image size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from posenc.errors import PosencError, check_choice

KERNEL_SIZES = (1, 3, 5, 7)
DEPTHS = (1, 2, 3)


def resize_and_concat(features: Sequence[torch.Tensor], size: int) -> torch.Tensor:
    """Resize every tap to ``size x size`` (bilinear) and concatenate them on channels."""
    resized = [
        f if f.shape[-2:] == (size, size)
        else F.interpolate(f, size=(size, size), mode="bilinear", align_corners=False)
        for f in features
    ]
    return torch.cat(resized, dim=1)


class PosENetReadout(nn.Module):
    """Position readout: ``[B, C, s, s]`` features -> ``[B, 1, H, W]`` map in (0, 1)."""

    def __init__(
        self,
        in_channels: int,
        kernel_size: int = 3,
        depth: int = 1,
        padding: int = 0,
        feature_size: int = 28,
        sigmoid: bool = True,
    ) -> None:
        super().__init__()
        check_choice("readout.kernel_size", kernel_size, KERNEL_SIZES)
        check_choice("readout.depth", depth, DEPTHS)
        if padding < 0:
            raise PosencError(f"readout.padding must be >= 0, got {padding}")
        if feature_size - depth * (kernel_size - 1 - 2 * padding) < 1:
            raise PosencError(
                f"readout.feature_size={feature_size} is too small for depth {depth} of "
                f"{kernel_size}x{kernel_size} convs with padding {padding}"
            )
        self.feature_size = feature_size
        layers: list[nn.Module] = []
        for i in range(depth):
            last = i == depth - 1
            out_channels = 1 if last else in_channels
            layers.append(nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding))
            layers.append(nn.BatchNorm2d(out_channels))
            if not last:
                layers.append(nn.ReLU(inplace=True))
        if sigmoid:
            layers.append(nn.Sigmoid())
        self.net = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, features: torch.Tensor, output_size: int | tuple[int, int]) -> torch.Tensor:
        out = self.net(features)
        size = (output_size, output_size) if isinstance(output_size, int) else output_size
        return F.interpolate(out, size=size, mode="bilinear", align_corners=False)
