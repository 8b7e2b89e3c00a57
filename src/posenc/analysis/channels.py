"""Position information per channel (Islam, Kowal et al., ICCV 2021, "Global Pooling, More than
Meets the Eye: Position Information is Encoded Channel-Wise in CNNs"): rank the channels of a layer
by how much position they encode, then zero the top-ranked ones before a segmentation head and
measure mIoU on the whole image and on its left / centre / right column thirds, against zeroing as
many random channels.

Scores compare the global average pooling (GAP) of a layer's features for an image ``x`` and for
its horizontal flip: ``d_c(x) = GAP(f(x))_c - GAP(f(hflip x))_c``.

* ``overall_c = mean_x |d_c(x)|``: how much channel ``c`` changes when the content changes side.
* ``signed_c = mean_x side(x) * d_c(x)``, with ``side(x) = +1`` when the content's column centroid
  is left of the image centre ``(W - 1) / 2``, ``-1`` when right and ``0`` when exactly centred or
  empty (:func:`content_sides`). Our choice for the signed ranking: weighting by the side makes a
  channel that fires more when the content is on the left positive whichever side each image's
  content is on, so a positive score means left-specific, a negative one right-specific. Without
  sides every image counts with ``side = +1``.

The attack (:func:`attack_curves`) runs only the head, on features the caller cached once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from posenc.errors import PosencError, invalid_value
from posenc.metrics.binned import confusion_per_bin, miou_per_bin
from posenc.progress import track

if TYPE_CHECKING:
    from matplotlib.figure import Figure

REGIONS = ("left", "centre", "right")
REGION_KEYS = ("whole", *REGIONS)


def _check_int(key: str, value: object, low: int, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high]`` (no upper bound for ``high=None``)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < low or (high is not None and value > high):
        expected = f"expected an int in [{low}, {high}]" if high is not None else f"expected an int >= {low}"
        raise invalid_value(key, value, expected)
    return value


# --------------------------------------------------------------------------- scores and rankings


def global_pool(tap: Tensor) -> Tensor:
    """Global average pooling of features ``[B, C, H, W]`` over ``H, W``: ``[B, C]``."""
    if tap.dim() != 4:
        raise invalid_value("tap.shape", tuple(tap.shape), "expected 4 dims [B, C, H, W]")
    return tap.mean(dim=(2, 3))


def content_sides(masks: Tensor) -> Tensor:
    """Side of each mask's content: ``+1`` when the column centroid of its pixels is left of the
    image centre ``(W - 1) / 2``, ``-1`` when right, ``0`` when centred or empty. ``masks``: bool or
    0/1 ``[B, H, W]``; returns float ``[B]``."""
    if masks.dim() != 3:
        raise invalid_value("masks.shape", tuple(masks.shape), "expected 3 dims [B, H, W]")
    if masks.dtype != torch.bool:
        bad = masks[(masks != 0) & (masks != 1)]
        if bad.numel():
            raise invalid_value("mask value", bad[0].item(), "expected a binary mask (bool or 0/1)")
    masks = masks.bool()
    width = masks.shape[-1]
    columns = torch.arange(width, device=masks.device, dtype=torch.float64)
    per_column = masks.sum(dim=1, dtype=torch.float64)  # [B, W]
    count = per_column.sum(dim=1)
    centroid = (per_column * columns).sum(dim=1) / count.clamp_min(1.0)
    sides = torch.sign((width - 1) / 2 - centroid)
    return torch.where(count > 0, sides, torch.zeros_like(sides)).float()


def channel_scores(pooled: Tensor, pooled_flipped: Tensor, sides: Tensor | None = None) -> dict[str, Tensor]:
    """``{"overall": mean |d|, "signed": mean side * d}`` per channel, ``[C]`` each (float64), from
    the pooled features of ``N`` images and of their horizontal flips, ``[N, C]`` each (ICCV 2021;
    see the module docstring for ``d`` and ``side``). ``sides``: ``[N]``, ``+1`` for all if None."""
    if pooled.dim() != 2 or pooled.shape[0] == 0:
        raise invalid_value("pooled.shape", tuple(pooled.shape), "expected 2 dims [N, C] with N >= 1")
    if tuple(pooled_flipped.shape) != tuple(pooled.shape):
        raise invalid_value(
            "pooled_flipped.shape", tuple(pooled_flipped.shape), f"expected pooled's shape {tuple(pooled.shape)}"
        )
    diff = pooled.double() - pooled_flipped.double().to(pooled.device)
    if sides is None:
        weights = torch.ones(diff.shape[0], dtype=torch.float64, device=diff.device)
    else:
        if tuple(sides.shape) != (diff.shape[0],):
            raise invalid_value("sides.shape", tuple(sides.shape), f"expected ({diff.shape[0]},), one side per image")
        weights = sides.double().to(diff.device)
    return {"overall": diff.abs().mean(dim=0), "signed": (weights.unsqueeze(1) * diff).mean(dim=0)}


def rank_channels(scores: dict[str, Tensor]) -> dict[str, list[int]]:
    """Channels by ``overall`` descending, by ``signed`` descending (``left``) and ascending
    (``right``); equal scores keep the lower channel index first."""
    for key in ("overall", "signed"):
        if key not in scores:
            raise PosencError(f"scores has no {key!r} entry; expected the keys 'overall' and 'signed'")
    overall, signed = scores["overall"].detach().cpu(), scores["signed"].detach().cpu()
    if overall.dim() != 1 or tuple(signed.shape) != tuple(overall.shape):
        raise invalid_value("scores shapes", (tuple(overall.shape), tuple(signed.shape)), "expected two [C] vectors")
    return {
        "overall": torch.sort(overall, descending=True, stable=True).indices.tolist(),
        "left": torch.sort(signed, descending=True, stable=True).indices.tolist(),
        "right": torch.sort(signed, descending=False, stable=True).indices.tolist(),
    }


# --------------------------------------------------------------------------- channel selection


def check_counts(counts: Sequence[int], num_channels: int, layer: str) -> list[int]:
    """The numbers ``N`` of channels to zero, sorted and unique; each an int in ``[1, C]``."""
    counts = list(counts)
    if not counts:
        raise invalid_value("counts", counts, f"expected at least one N in 1..{num_channels}")
    for n in counts:
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= num_channels:
            raise invalid_value("N", n, f"layer {layer} has {num_channels} channels; expected 1..{num_channels}")
    return sorted(set(counts))


def random_channel_sets(num_channels: int, n: int, draws: int, seed: int) -> list[Tensor]:
    """``draws`` sets of ``n`` distinct channels of ``num_channels`` (sorted LongTensors), drawn
    from a generator seeded with ``seed``: the same seed gives the same sets."""
    _check_int("num_channels", num_channels, 1)
    _check_int("n", n, 1, num_channels)
    _check_int("draws", draws, 1)
    generator = torch.Generator().manual_seed(seed)
    return [torch.randperm(num_channels, generator=generator)[:n].sort().values for _ in range(draws)]


def zero_channels(taps: Sequence[Tensor], layer: int, channels: Tensor | Sequence[int]) -> list[Tensor]:
    """A new list of ``taps`` where tap ``layer`` is a copy with ``channels`` (dim 1) set to 0; the
    other taps are the same objects and nothing given is modified."""
    taps = list(taps)
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < len(taps):
        raise invalid_value("layer", layer, f"expected a tap index in [0, {len(taps) - 1}]")
    tap = taps[layer]
    index = torch.as_tensor(channels, dtype=torch.long).flatten()
    if index.numel() and (index.min().item() < 0 or index.max().item() >= tap.shape[1]):
        bad = index[(index < 0) | (index >= tap.shape[1])][0].item()
        raise invalid_value("channel", bad, f"tap {layer} has {tap.shape[1]} channels; expected 0..{tap.shape[1] - 1}")
    zeroed = tap.clone()
    zeroed[:, index.to(tap.device)] = 0
    taps[layer] = zeroed
    return taps


# --------------------------------------------------------------------------- regions


def region_bins(height: int, width: int) -> Tensor:
    """Region of each pixel, ``[H, W]``: 0 for the left third of the columns, 1 the centre, 2 the
    right (boundaries at ``round(W / 3)`` and ``round(2 W / 3)``)."""
    _check_int("height", height, 1)
    _check_int("width", width, 1)
    columns = torch.arange(width)
    region = (columns >= round(width / 3)).long() + (columns >= round(2 * width / 3)).long()
    return region.expand(height, width).clone()


def _region_values(confusion: Tensor) -> dict[str, float]:
    """``{"whole", "left", "centre", "right"}`` mIoU from per-region confusions ``[3, K, K]``."""
    per_region = miou_per_bin(confusion).tolist()
    whole = miou_per_bin(confusion.sum(dim=0, keepdim=True))[0].item()
    return {"whole": whole, **dict(zip(REGIONS, per_region))}


def _region_confusion(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int) -> Tensor:
    if target.dim() != 3:
        raise invalid_value("target.shape", tuple(target.shape), "expected 3 dims [N, H, W]")
    bins = region_bins(target.shape[-2], target.shape[-1]).to(target.device)
    return confusion_per_bin(pred, target, bins, num_classes, len(REGIONS), ignore_index)


def region_miou(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int = 255) -> dict[str, float]:
    """mIoU of label maps ``[N, H, W]`` over all pixels (``whole``) and over the left / centre /
    right column thirds (:func:`region_bins`); NaN for a region without pixels."""
    return _region_values(_region_confusion(pred, target, num_classes, ignore_index))


# --------------------------------------------------------------------------- the attack


def attack_curves(
    head: Callable[[list[Tensor]], Tensor],
    taps: Sequence[Tensor],
    target: Tensor,
    layer: int,
    rankings: dict[str, list[int]],
    counts: Sequence[int],
    num_classes: int,
    draws: int = 5,
    seed: int = 0,
    batch_size: int = 64,
    ignore_index: int = 255,
) -> dict[str, Any]:
    """Region mIoU when the first ``N`` channels of each ranking of tap ``layer`` are zeroed before
    ``head``, and when ``draws`` random sets of ``N`` channels are (seed ``seed + N``), for each
    ``N`` in ``counts`` (ICCV 2021's region-specific attack).

    ``taps``: cached features of the whole test set, ``[N, C_i, h_i, w_i]`` each; ``head`` maps a
    list of tap batches to logits ``[B, K, H, W]`` at ``target``'s size ``[N, H, W]``. Returns a
    JSON-serialisable dict: ``counts``, ``baseline`` (nothing zeroed), ``ranked[ranking][region]``
    and ``random[region]["mean" | "std"]`` (population std over draws), one value per ``N``."""
    taps = list(taps)
    if not taps:
        raise invalid_value("taps", [], "expected at least one cached tap")
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < len(taps):
        raise invalid_value("layer", layer, f"expected a tap index in [0, {len(taps) - 1}]")
    if target.dim() != 3:
        raise invalid_value("target.shape", tuple(target.shape), "expected 3 dims [N, H, W]")
    for i, tap in enumerate(taps):
        if tap.dim() < 2 or tap.shape[0] != target.shape[0]:
            expected = f"expected [{target.shape[0]}, C, ...], one row per target"
            raise invalid_value(f"taps[{i}].shape", tuple(tap.shape), expected)
    draws = _check_int("draws", draws, 1)
    batch_size = _check_int("batch_size", batch_size, 1)
    num_channels = taps[layer].shape[1]
    counts = check_counts(counts, num_channels, str(layer))
    for name, order in rankings.items():
        if len(order) < counts[-1]:
            raise invalid_value(f"rankings[{name!r}]", f"{len(order)} channels", f"expected at least N={counts[-1]}")

    # Every configuration: a key and the channels it zeroes (None: nothing).
    configs: dict[tuple, Tensor | None] = {("baseline",): None}
    for name, order in rankings.items():
        for n in counts:
            configs[("ranked", name, n)] = torch.tensor(order[:n], dtype=torch.long)
    for n in counts:
        for d, channels in enumerate(random_channel_sets(num_channels, n, draws, seed + n)):
            configs[("random", n, d)] = channels

    confusions = {key: torch.zeros(len(REGIONS), num_classes, num_classes, dtype=torch.long) for key in configs}
    starts = range(0, target.shape[0], batch_size)
    with torch.no_grad():
        for start in track(starts, f"attack: {len(configs)} channel sets x {target.shape[0]} images"):
            batch = [tap[start : start + batch_size] for tap in taps]
            truth = target[start : start + batch_size]
            for key, zeroed in configs.items():
                inputs = batch if zeroed is None else zero_channels(batch, layer, zeroed)
                logits = head(inputs)
                if logits.dim() != 4 or tuple(logits.shape[-2:]) != tuple(truth.shape[-2:]):
                    expected = f"expected [B, K, {truth.shape[-2]}, {truth.shape[-1]}] logits at the target's size"
                    raise invalid_value("head output shape", tuple(logits.shape), expected)
                pred = logits.argmax(dim=1)
                confusion = _region_confusion(pred, truth.to(pred.device), num_classes, ignore_index)
                confusions[key] += confusion.cpu()

    values = {key: _region_values(confusion) for key, confusion in confusions.items()}
    ranked = {
        name: {region: [values[("ranked", name, n)][region] for n in counts] for region in REGION_KEYS}
        for name in rankings
    }
    random_curves: dict[str, dict[str, list[float]]] = {region: {"mean": [], "std": []} for region in REGION_KEYS}
    for region in REGION_KEYS:
        for n in counts:
            samples = [values[("random", n, d)][region] for d in range(draws)]
            mean = sum(samples) / draws
            random_curves[region]["mean"].append(mean)
            random_curves[region]["std"].append(math.sqrt(sum((s - mean) ** 2 for s in samples) / draws))
    return {
        "counts": counts,
        "baseline": values[("baseline",)],
        "ranked": ranked,
        "random": random_curves,
        "draws": draws,
        "seed": seed,
        "layer": layer,
    }


# --------------------------------------------------------------------------- figures


def scores_figure(scores: dict[str, Tensor], layer: str) -> Figure:
    """Position scores of the channels of ``layer``, sorted: overall (left panel) and signed
    (right panel; positive: left-specific, negative: right-specific), as in ICCV 2021."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    overall = scores["overall"].detach().double().cpu().sort(descending=True).values
    signed = scores["signed"].detach().double().cpu().sort(descending=True).values
    fig, axes = plt.subplots(1, 2, figsize=(7.2, 3.0), squeeze=False)
    ax_overall, ax_signed = axes[0]
    ax_overall.plot(range(len(overall)), overall.tolist(), lw=1.2, color="black")
    ax_overall.set_ylabel("mean |GAP(x) - GAP(flip x)|")
    ax_overall.set_title(f"{layer}: overall position", fontsize=9)
    ax_signed.plot(range(len(signed)), signed.tolist(), lw=1.2, color="tab:blue")
    ax_signed.axhline(0.0, color="0.5", lw=0.8, ls=":")
    ax_signed.set_ylabel("mean side * (GAP(x) - GAP(flip x))")
    ax_signed.set_title(f"{layer}: left (+) / right (-)", fontsize=9)
    for ax in (ax_overall, ax_signed):
        ax.set_xlabel("channel (sorted)")
    fig.tight_layout()
    return fig


def attack_figure(result: dict[str, Any]) -> Figure:
    """mIoU against the number ``N`` of zeroed channels, one panel per region (whole, left,
    centre, right): a line per ranking, random draws as mean +- std, the baseline dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = result["counts"]
    fig, axes = plt.subplots(1, len(REGION_KEYS), figsize=(3.2 * len(REGION_KEYS), 3.0), squeeze=False, sharey=True)
    axes[0, 0].set_ylim(0.0, 1.0)  # one fixed mIoU scale: the regions compare at a glance
    for ax, region in zip(axes[0], REGION_KEYS):
        for name, curves in result["ranked"].items():
            ax.plot(counts, curves[region], "-o", ms=3, label=name)
        mean = torch.tensor(result["random"][region]["mean"], dtype=torch.float64)
        std = torch.tensor(result["random"][region]["std"], dtype=torch.float64)
        (line,) = ax.plot(counts, mean.tolist(), "-s", ms=3, color="0.4", label=f"random ({result['draws']})")
        ax.fill_between(counts, (mean - std).tolist(), (mean + std).tolist(), color=line.get_color(), alpha=0.2, lw=0)
        ax.axhline(result["baseline"][region], color="black", ls="--", lw=1.0, label="baseline")
        ax.set_title(region, fontsize=9)
        ax.set_xlabel("zeroed channels N")
        ax.set_ylabel("mIoU")
    axes[0, 0].legend(fontsize=6)
    fig.suptitle(f"layer {result['layer']}", fontsize=9)
    fig.tight_layout()
    return fig
