"""PosENet readout (Islam et al., ICLR 2020, Sec. 3.2): a small conv net that regresses a position
map from frozen multi-level features.

Following the paper and the authors' code: each tap is bilinearly resized to ``feature_size``
(28) with ``align_corners=True`` (the authors' decoder; ``align_corners=False`` is an option: it
never samples the outermost ring of a large early tap, where zero padding leaves its strongest
mark) and concatenated on channels; ``depth`` k x k convs with padding 0 by default (Table 4 studies
padding 1/2); intermediate layers are conv -> BN -> ReLU keeping the channel count, the last conv
maps to one channel followed by BatchNorm(1) + Sigmoid; Xavier-uniform init. The output is
bilinearly upsampled to the image size with ``align_corners=False`` (the authors' convention).

``num_maps`` readouts (one per target map) are fused into one module: the first conv stacks the
heads' output channels and later convs are grouped by head, so every head keeps its own weights,
BN statistics and init (exactly ``num_maps`` independent readouts) while one conv call serves all.
``channel_groups`` gives each head its own range of input channels (one tap of the concatenation:
PosENet's tap ablation, the position atlas): the first conv computes each run of heads from its
range only, initialised with that range's fan-in, so each head is exactly a readout of its tap alone.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Annotated, Any, Literal, get_args

import torch
import torch.nn as nn
import torch.nn.functional as F

from posenc.config.rules import Rule
from posenc.errors import PosencError, check_choice

KernelSize = Literal[1, 3, 5, 7]  # readout.kernel_size: the readout convs' k x k
KERNEL_SIZES: tuple[int, ...] = get_args(KernelSize)
Depth = Literal[1, 2, 3]  # readout.depth: stacked convs
DEPTHS: tuple[int, ...] = get_args(Depth)


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm whose training statistics span the batches of all DDP ranks, on any device.

    ``torch.nn.SyncBatchNorm`` refuses CPU modules, so a 2-process CPU (gloo) run would normalise
    each half batch by itself and train differently from a 1-process run; here the per-channel
    sums go through an autograd-aware all-reduce instead. Without DDP it is ``BatchNorm2d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if not (self.training and distributed and torch.distributed.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        count = torch.full((1,), x.numel() / x.shape[1], dtype=x.dtype, device=x.device)
        totals = all_reduce(torch.cat([x.sum(dim=(0, 2, 3)), (x * x).sum(dim=(0, 2, 3)), count]))
        c = x.shape[1]
        n = totals[-1]
        mean = totals[:c] / n
        var = (totals[c : 2 * c] / n - mean * mean).clamp_min(0)
        mean_buf, var_buf, tracked = self.running_mean, self.running_var, self.num_batches_tracked
        if mean_buf is not None and var_buf is not None and tracked is not None:  # track_running_stats
            with torch.no_grad():
                tracked.add_(1)  # the buffer itself, in place
                # BatchNorm2d's factor: momentum, else (momentum=None) a cumulative average
                factor = 1.0 / float(tracked) if self.momentum is None else self.momentum
                mean_buf.lerp_(mean.detach(), factor)
                var_buf.lerp_(var.detach() * n / (n - 1), factor)
        shape = (1, c, 1, 1)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        return y * self.weight.view(shape) + self.bias.view(shape)


@functools.lru_cache(maxsize=64)  # a readout's spans never change: cut them once, not at every step
def _segments(spans: tuple) -> list[tuple[int, int, torch.Tensor]]:
    """The channel axis of ``spans`` (``((a, b), (c0, c1))`` per run of heads) cut at every range's ends:
    ``(s0, s1, columns)`` per piece that some run reads, ``columns`` the output columns of every run whose
    range holds the piece."""
    cuts = sorted({edge for (a, b), _ in spans for edge in (a, b)})
    pieces = []
    for s0, s1 in zip(cuts, cuts[1:]):
        columns = [torch.arange(c0, c1) for (a, b), (c0, c1) in spans if a <= s0 and s1 <= b]
        if columns:
            pieces.append((s0, s1, torch.cat(columns)))
    return pieces


class _BlockRows(torch.autograd.Function):
    """``x [P, C] -> z [P, R]`` where column range ``c0:c1`` of ``z`` reads only rows ``a:b`` of ``w [C, R]``
    (``spans``: ``((a, b), (c0, c1))`` per run of heads). Computed piece by piece of the channel axis
    (:func:`_segments`): each piece is read once, by one product for every run whose range holds it (the
    all-taps readout and the piece's own tap readout together: wider products, which BLAS runs faster than
    one narrow product per run). Its own backward because autograd's slice of ``w`` per run allocates and
    fills a zero gradient of the whole ``w`` per run; here one, and ``x`` (frozen features) gets none.
    Features stored in bfloat16 (the atlas engine's ``feature_dtype``) are multiplied in bfloat16 with
    float32 accumulation (oneDNN's AVX512-BF16 products); ``z`` and the weight gradient are float32."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, w: torch.Tensor, spans: tuple) -> torch.Tensor:
        pieces = _segments(spans)
        ctx.save_for_backward(x)
        ctx.pieces, ctx.shape = pieces, w.shape
        z = w.new_zeros(x.shape[0], w.shape[1])
        for s0, s1, columns in pieces:
            z.index_add_(1, columns, (x[:, s0:s1] @ w[s0:s1, columns].to(x.dtype)).to(w.dtype))
        return z

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, torch.Tensor, None]:
        (x,) = ctx.saved_tensors
        dw = grad.new_zeros(ctx.shape)
        for s0, s1, columns in ctx.pieces:
            dw[s0:s1, columns] = (x[:, s0:s1].T @ grad[:, columns].to(x.dtype)).to(dw.dtype)
        return None, dw, None


class ThinConv2d(nn.Conv2d):
    """A ``Conv2d`` (same parameters, init and state dict) computed, when it has many more input
    than output channels (the readout's first conv: 1472 -> 5 for VGG16), as one 1x1 conv to
    ``out x k x k`` channels followed by a sum of ``k x k`` shifted slices.

    Both are the same linear map; the 1x1 conv is a well-shaped GEMM over the channels-last
    features, while oneDNN's direct kernel for 5 output channels is not: forward + weight gradient
    take ~50 ms instead of ~110 ms per batch of 32 VGG16 feature maps on 2 CPU cores. Other
    shapes (grouped, strided, dilated, non-zero padding modes, wide outputs) use ``Conv2d``.
    """

    # channel_groups (PosENetReadout._assign_heads): ((first, stop) channels, (first, stop) heads) per run of heads
    blocks: list[tuple[tuple[int, int], tuple[int, int]]] | None = None

    def _thin(self) -> bool:
        k = self.kernel_size[0]
        return (
            self.groups == 1
            and self.stride == (1, 1)
            and self.dilation == (1, 1)
            and self.padding_mode == "zeros"
            and self.kernel_size == (k, k)
            and isinstance(self.padding, tuple)
            and self.padding[0] == self.padding[1]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blocks, bias = self.blocks, self.bias  # channel_groups: each run of heads reads its own channels
        if blocks is None:
            return self._linear_map(x, self.weight, self.bias)
        if not self._thin():
            return torch.cat(
                [
                    self._conv_forward(x[:, a:b], self.weight[h0:h1, a:b], None if bias is None else bias[h0:h1])
                    for (a, b), (h0, h1) in blocks
                ],
                dim=1,
            )
        # every run of heads' 1x1 rows, then one shift-and-add over all of them: the k x k sum of slices
        # once per call, not once per run (with 3 seeds x 6 readouts that was 18 x 9 slices, whose
        # backward allocations took half of an atlas readout step; profiled in docs/atlas.md). On
        # channels-last features the rows are matrix products of column ranges of one [B*H*W, C] view:
        # BLAS reads a range in place, where a conv copies each channel slice first (another quarter).
        k = self.kernel_size[0]
        if x.is_contiguous(memory_format=torch.channels_last) and not self.padding[0]:
            b_, c_, h_, w_ = x.shape
            cout = self.weight.shape[0]
            flat = x.permute(0, 2, 3, 1).reshape(b_ * h_ * w_, c_)
            columns = self.weight.permute(1, 0, 2, 3).reshape(c_, cout * k * k)  # (o, di, dj) per column
            spans = tuple(((a, b), (h0 * k * k, h1 * k * k)) for (a, b), (h0, h1) in blocks)
            z = _BlockRows.apply(flat, columns, spans).view(b_, h_, w_, cout, k, k)
            oh, ow = h_ - k + 1, w_ - k + 1
            out = bias if bias is not None else z.new_zeros(())
            for di in range(k):
                for dj in range(k):
                    out = out + z[:, di : di + oh, dj : dj + ow, :, di, dj]
            return out.permute(0, 3, 1, 2)
        rows = [
            F.conv2d(x[:, a:b], self.weight[h0:h1, a:b].permute(0, 2, 3, 1).reshape((h1 - h0) * k * k, b - a, 1, 1))
            for (a, b), (h0, h1) in blocks
        ]
        return self._shift_sum(torch.cat(rows, dim=1), self.weight.shape[0], bias)

    def _linear_map(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        k, cout = self.kernel_size[0], weight.shape[0]
        if not (self._thin() and cout * k * k <= weight.shape[1]):  # few outputs per input channel only
            return self._conv_forward(x, weight, bias)
        rows = weight.permute(0, 2, 3, 1).reshape(cout * k * k, weight.shape[1], 1, 1)  # (o, di, dj)
        return self._shift_sum(F.conv2d(x, rows), cout, bias)

    def _shift_sum(self, z: torch.Tensor, cout: int, bias: torch.Tensor | None) -> torch.Tensor:
        """The k x k conv from its 1x1 rows ``z`` ``[B, cout * k * k, H, W]`` (ordered (o, di, dj)): the sum
        of the ``k x k`` shifted slices, plus the bias."""
        assert isinstance(self.padding, tuple)  # checked by _thin(): not a "same"/"valid" string
        k, p = self.kernel_size[0], self.padding[0]
        if p:
            z = F.pad(z, (p, p, p, p))
        b, _, h, w = z.shape
        oh, ow = h - k + 1, w - k + 1
        z = z.view(b, cout, k, k, h, w)
        out = bias.view(1, cout, 1, 1) if bias is not None else z.new_zeros(())  # 0-dim zero: as adding 0
        for di in range(k):
            for dj in range(k):
                out = out + z[:, :, di, dj, di : di + oh, dj : dj + ow]
        return out


def resize_and_concat(features: Sequence[torch.Tensor], size: int, align_corners: bool = True) -> torch.Tensor:
    """Resize every tap to ``size x size`` (bilinear; ``align_corners=True`` as in the authors'
    decoder) and concatenate them on channels."""
    resized = [
        f
        if f.shape[-2:] == (size, size)
        else F.interpolate(f, size=(size, size), mode="bilinear", align_corners=align_corners)
        for f in features
    ]
    return torch.cat(resized, dim=1)


class PosENetReadout(nn.Module):
    """Position readouts: ``[B, C, s, s]`` features -> ``[B, num_maps, H, W]`` maps in (0, 1)."""

    def __init__(
        self,
        in_channels: int,
        num_maps: int = 1,
        kernel_size: KernelSize = 3,
        depth: Depth = 1,
        padding: Annotated[int, Rule(ge=0)] = 0,
        feature_size: Annotated[int, Rule(ge=1)] = 28,  # every tap is resized to this before concatenation
        sigmoid: bool = True,
        align_corners: bool = True,
        channel_groups: Sequence[tuple[int, int]] | None = None,
    ) -> None:
        """``channel_groups``: one ``(start, stop)`` range of input channels per head (None: every
        head reads all ``in_channels``); only with ``depth=1``."""
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
        if num_maps < 1:
            raise PosencError(f"num_maps must be >= 1, got {num_maps}")
        self.feature_size, self.num_maps, self.align_corners = feature_size, num_maps, bool(align_corners)
        layers: list[nn.Module] = []
        for i in range(depth):
            last = i == depth - 1
            cin = in_channels if i == 0 else in_channels * num_maps
            cout = num_maps if last else in_channels * num_maps
            groups = 1 if i == 0 else num_maps
            layers.append(ThinConv2d(cin, cout, kernel_size, padding=padding, groups=groups))
            layers.append(GlobalBatchNorm2d(cout))
            if not last:
                layers.append(nn.ReLU(inplace=True))
        if sigmoid:
            layers.append(nn.Sigmoid())
        self.net = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                for head in m.weight.detach().chunk(num_maps, dim=0):  # each head's own fans
                    nn.init.xavier_uniform_(head)
                if m.bias is not None:  # always: the convs are built with bias=True
                    nn.init.zeros_(m.bias)
        if channel_groups is not None:
            self._assign_heads(list(channel_groups), in_channels, num_maps, depth)

    def _assign_heads(self, groups: list[tuple[int, int]], in_channels: int, num_maps: int, depth: int) -> None:
        if depth != 1:
            raise PosencError(f"readout.depth={depth} is not valid with one readout per tap; valid: 1")
        if len(groups) != num_maps or any(not 0 <= a < b <= in_channels for a, b in groups):
            raise PosencError(
                f"channel_groups={groups} is not valid: expected {num_maps} ranges within 0..{in_channels}"
            )
        conv = self.net[0]
        assert isinstance(conv, ThinConv2d)  # __init__ starts the net with one
        blocks: list[tuple[tuple[int, int], tuple[int, int]]] = []  # (channels, heads) of each run of heads
        for head, group in enumerate(groups):
            if blocks and blocks[-1][0] == group:
                blocks[-1] = (group, (blocks[-1][1][0], head + 1))
            else:
                blocks.append((group, (head, head + 1)))
        with torch.no_grad():  # Xavier with the head's own fan-in: as a readout of those channels alone
            conv.weight.zero_()  # entries outside a head's channels are never read
            for head, (a, b) in enumerate(groups):
                own = torch.empty(1, b - a, *conv.weight.shape[2:])
                nn.init.xavier_uniform_(own)
                conv.weight[head, a:b] = own[0]
        conv.blocks = blocks

    def maps(self, features: torch.Tensor) -> torch.Tensor:
        """The readouts' maps at feature resolution, ``[B, num_maps, h, w]``."""
        return self.net(features)

    def forward(self, features: torch.Tensor, output_size: int | tuple[int, int]) -> torch.Tensor:
        out = self.maps(features)
        size = (output_size, output_size) if isinstance(output_size, int) else output_size
        return F.interpolate(out, size=size, mode="bilinear", align_corners=False)
