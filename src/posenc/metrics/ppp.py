"""PPP, the Position-information Pattern from Padding (Lin et al., ICML 2023, "Unveiling the Mask
of Position-Information Pattern Through the Mist of Image Features"), and its strength.

Definition (ours; the paper published no code): a crop ``x`` is cut from the centre of a larger
real image, its context, with a margin of at least the receptive-field radius of every tap,
aligned to the largest jump (:func:`posenc.models.receptive_field.context_margin`). The context's tap
cropped to ``x``'s footprint is ``x``'s padding-free reference. The PPP of a tap is the mean over
N images of (``x``'s features with the padding under test - the reference). Its strength:

* SNR: the energy of the mean pattern (mean of PPP^2) over the image-to-image variance of the
  reference (mean over C, h, w of its population variance across the N images);
* relative energy: the same energy over the reference's total second moment (mean over N, C, h,
  w of ref^2), the share of the features' energy the pattern holds. Unlike the SNR it does not
  grow when a network maps all images to nearly the same features (deep random networks do: their
  variance collapses while their mean does not), so it can compare init with trained weights;
* border profile: mean |PPP| over channels and positions at each Chebyshev distance to the tap's
  border, divided by the square root of that variance (dimensionless).

Intervals (issue 33): the test images are independent draws, so the 95% interval of each strength
resamples groups of images (:func:`ppp_intervals`, through
:func:`posenc.metrics.intervals.pooled_interval`) and recomputes it from the resampled pooled sums.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from posenc.errors import PosencError, invalid_value
from posenc.metrics.binned import pixel_distance
from posenc.metrics.intervals import LEVEL, SEED, pooled_interval
from posenc.models.receptive_field import check_context, reference_crop


def crop_center(contexts: Tensor, margin: int, crop_size: int) -> Tensor:
    """The crops ``x`` of ``contexts`` ``[..., H, W]``: the ``crop_size`` square ``margin`` px from
    their top-left corner, i.e. their centre when ``H = W = crop_size + 2 * margin`` (where
    :func:`~posenc.models.receptive_field.reference_crop` of the contexts' taps finds the crops' footprint).
    Contexts smaller than that are a one-line PosencError."""
    check_context(min(contexts.shape[-2:]), crop_size, margin, f"PPP of {crop_size} px crops with margin {margin}")
    return contexts[..., margin : margin + crop_size, margin : margin + crop_size]


def features_and_reference(
    encode: Callable[[Tensor], list[Tensor]],
    contexts: Tensor,
    crop_size: int,
    margin: int,
    jumps: Sequence[int],
) -> tuple[list[Tensor], list[Tensor]]:
    """Taps of the crops (:func:`crop_center`) and their references, the taps of the contexts
    cropped to the crops' footprints (one forward each, without gradients). ``jumps``: each tap's
    total stride; ``margin`` must be a multiple of all of them."""
    crops = crop_center(contexts, margin, crop_size).contiguous()
    with torch.no_grad():
        features = list(encode(crops))
        context_taps = list(encode(contexts))
    if len(jumps) != len(features) or len(context_taps) != len(features):
        raise invalid_value("jumps", list(jumps), f"expected one jump per tap ({len(features)} taps)")
    reference = [
        reference_crop(tap, margin, jump, (f.shape[-2], f.shape[-1]))
        for tap, jump, f in zip(context_taps, jumps, features)
    ]
    return features, reference


def _ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``: 0 when the numerator is 0, NaN when only the denominator is."""
    if numerator == 0.0:
        return 0.0
    if denominator == 0.0:
        return math.nan
    return numerator / denominator


def _summarize(pattern: Tensor, variance: float, second_moment: float, dtype: torch.dtype) -> dict[str, Any]:
    """The statistics of :func:`ppp_stats` from a float64 ``[C, h, w]`` pattern, the reference's
    variance and its second moment."""
    energy = pattern.pow(2).mean().item()
    heatmap = pattern.abs().mean(dim=0)
    distance = pixel_distance(*heatmap.shape).to(heatmap.device).flatten()
    count = int(distance.max().item()) + 1
    sums = torch.zeros(count, dtype=torch.float64, device=heatmap.device).scatter_add_(0, distance, heatmap.flatten())
    means = sums / torch.bincount(distance, minlength=count).double()
    scale = math.sqrt(variance)
    return {
        "pattern": pattern.to(dtype),
        "energy": energy,
        "variance": variance,
        "snr": _ratio(energy, variance),
        "second_moment": second_moment,
        "rel_energy": _ratio(energy, second_moment),
        "border_profile": [_ratio(v, scale) for v in means.tolist()],
        "heatmap": heatmap.to(dtype),
    }


def ppp_stats(features: Tensor, reference: Tensor) -> dict[str, Any]:
    """PPP of one tap and its strength (Lin et al., ICML 2023) from ``[N, C, h, w]`` features with
    the padding under test and their padding-free reference.

    Returns ``pattern`` ``[C, h, w]`` (mean over images of the difference), ``energy`` (mean of
    ``pattern**2``), ``variance`` (mean over C, h, w of the reference's population variance over
    the images), ``snr`` (energy / variance; 0.0 for no energy, NaN for no variance but some
    energy), ``second_moment`` (mean of the reference squared) and ``rel_energy`` (energy /
    second moment), ``border_profile`` (mean |pattern| over channels and positions at each distance
    0..max to the tap's border, over sqrt(variance)) and ``heatmap`` ``[h, w]`` (mean |pattern|
    over channels). Statistics are computed in float64; tensors come back in ``features``' dtype."""
    if features.dim() != 4:
        raise invalid_value("features.shape", tuple(features.shape), "expected 4 dims [N, C, h, w]")
    if tuple(features.shape) != tuple(reference.shape):
        raise invalid_value(
            "features.shape", tuple(features.shape), f"expected the reference's shape {tuple(reference.shape)}"
        )
    if features.shape[0] < 1:
        raise PosencError("PPP needs at least one image")
    ref = reference.double()
    pattern = (features.double() - ref).mean(dim=0)
    return _summarize(pattern, ref.var(dim=0, unbiased=False).mean().item(), ref.pow(2).mean().item(), features.dtype)


def ppp_from_moments(features_mean: Tensor, reference_mean: Tensor, reference_sq_mean: Tensor) -> dict[str, Any]:
    """:func:`ppp_stats` from per-position means over the N images, ``[C, h, w]`` each (streamed
    sums over batches divided by N): of the features with the padding under test, of the reference
    and of the reference squared. The population variance is ``E[ref^2] - E[ref]^2``, clamped at 0
    against rounding."""
    shape = tuple(features_mean.shape)
    if len(shape) != 3:
        raise invalid_value("features.shape", shape, "expected 3 dims [C, h, w] (means over the images)")
    for key, other in (("reference", reference_mean), ("reference_sq", reference_sq_mean)):
        if tuple(other.shape) != shape:
            raise invalid_value(f"{key}.shape", tuple(other.shape), f"expected the features' shape {shape}")
    mean = reference_mean.double()
    variance = (reference_sq_mean.double() - mean * mean).clamp_min(0.0).mean().item()
    second_moment = reference_sq_mean.double().mean().item()
    return _summarize(features_mean.double() - mean, variance, second_moment, features_mean.dtype)


# The bootstrap's units: image index mod PPP_GROUPS (one per image when there are fewer images). The
# contexts are independent random crops (posenc.data.contexts), so any fixed split is valid; the interval
# covers the draw of the crops from the bundled photos, not the choice of those photos. Each group keeps
# its own [C, h, w] sums of the features and the reference: a 512 x 28 x 28 tap holds 2 x 16 x 3.2 MB.
# 16 groups (15 degrees of freedom) keep the expanded percentile's widening small (t(.975, 15) = 2.13
# against z = 1.96) and its coverage near 95% (posenc.metrics.intervals: .952 measured at 10 units).
PPP_GROUPS = 16
# Resamples of the groups. Measured on 14 taps (tiny: zeros, reflect, none; VGG16: zeros, circular; 64
# crops of 64 px, 16 groups), endpoints at B against 2B resamples (other seeds), |difference| / width,
# median over the 56 intervals of the median over 10 seed pairs: B = 2000: 2.5%, 10000: 0.92%, 20000: 0.68%
# (worst interval 1.3%), 50000: 0.40% (4 pairs). 20000 is the least under 1%; a resample's statistic is a
# quadratic form in its G draws (:func:`resampled_stats`), so they cost ~0.4 s per tap on 2 CPU cores.
PPP_RESAMPLES = 20000
# The strengths task=ppp reports with an interval (scalars; the border profile is a list and gets none)
INTERVAL_STATS: tuple[str, ...] = ("energy", "variance", "snr", "rel_energy")
_CHUNK_BYTES = 64 * 2**20  # temporaries of one Gram-matrix chunk over positions


def ppp_groups(num_images: int, groups: int = PPP_GROUPS) -> int:
    """The number of bootstrap groups for ``num_images`` test images: ``groups``, or one per image when
    there are fewer."""
    return max(1, min(int(groups), int(num_images)))


def _gram(a: Tensor, b: Tensor | None = None) -> Tensor:
    """``(a - b) (a - b)^T / P`` in float64 for ``[G, P]`` rows (``b`` None: ``a a^T / P``), summed over
    chunks of positions so the difference never holds more than ``_CHUNK_BYTES``."""
    groups, positions = a.shape
    chunk = max(1, _CHUNK_BYTES // (8 * groups))
    gram = torch.zeros(groups, groups, dtype=torch.float64, device=a.device)
    for start in range(0, positions, chunk):
        part = a[:, start : start + chunk].double()
        if b is not None:
            part = part - b[:, start : start + chunk].double()
        gram += part @ part.T
    return gram / positions


def _ratios(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """:func:`_ratio` per resample: 0 where the numerator is 0, NaN where only the denominator is."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = numerator / denominator
    out[denominator == 0.0] = math.nan
    out[numerator == 0.0] = 0.0
    return out


def resampled_stats(
    features: Tensor, reference: Tensor, reference_sq: Tensor, counts: Tensor
) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """The scalar strengths of :func:`ppp_from_moments` as functions of how often each group is drawn.

    ``features``, ``reference``: ``[G, C, h, w]`` sums over each group's images; ``reference_sq``: each
    group's sum of ref^2 (``[G, ...]``, summed over the rest); ``counts``: ``[G]`` images. With ``w`` the
    draws ``(B, G)``, ``N = w . counts`` and ``P = C h w``, the pooled pattern is ``w D / N`` (``D`` the
    groups' feature - reference sums), so ``energy = w (D D^T / P) w^T / N^2``; likewise
    ``mean(E[ref]^2) = w (R R^T / P) w^T / N^2``, and ``second_moment = w q / (P N)``, ``q`` the groups'
    ref^2 totals; ``variance`` is their difference. Only G x G matrices are kept: memory does not grow
    with the resamples. The per-position clamp of :func:`ppp_from_moments` is a no-op for pooled sums of
    squares (Cauchy-Schwarz); here the mean is clamped at 0 against rounding."""
    groups = len(counts)
    flat_f, flat_r = features.reshape(groups, -1), reference.reshape(groups, -1)
    pattern_gram = _gram(flat_f, flat_r).cpu().numpy()
    reference_gram = _gram(flat_r).cpu().numpy()
    positions = flat_r.shape[1]
    square = reference_sq.reshape(groups, -1).double().sum(dim=1).cpu().numpy() / positions
    sizes = counts.double().cpu().numpy()

    def stats(draws: np.ndarray) -> dict[str, np.ndarray]:
        total = draws @ sizes
        energy = ((draws @ pattern_gram) * draws).sum(axis=1) / total**2
        second_moment = draws @ square / total
        mean_sq = ((draws @ reference_gram) * draws).sum(axis=1) / total**2
        variance = np.clip(second_moment - mean_sq, 0.0, None)
        return {
            "energy": energy,
            "variance": variance,
            "snr": _ratios(energy, variance),
            "second_moment": second_moment,
            "rel_energy": _ratios(energy, second_moment),
        }

    return stats


def ppp_intervals(
    features: Tensor,
    reference: Tensor,
    reference_sq: Tensor,
    counts: Tensor,
    resamples: int = PPP_RESAMPLES,
    seed: int = SEED,
    level: float = LEVEL,
) -> dict[str, tuple[float, float]]:
    """The ``level`` intervals of :data:`INTERVAL_STATS` (Lin et al., ICML 2023; our definition) by a
    seeded bootstrap over the image groups (Hesterberg's expanded levels,
    :func:`~posenc.metrics.intervals.pooled_interval`); arguments as :func:`resampled_stats`. Empty groups
    are dropped; fewer than two groups have no interval: ``{}``.

    The *basic* (reverse-percentile) interval ``[2t - q_high, 2t - q_low]`` (Davison & Hinkley 1997, eq.
    5.6), not the percentile one: the energy is a squared norm, so its plug-in value ``t`` is biased
    upward by the image-to-image noise over N, and a resample's value is biased once more; the percentile
    interval carried that bias twice and, for a weak pattern (``tiny``, reflect and none, f1), lay above
    the value or left it out. Reflected about ``t``, the doubled bias cancels to first order: a pattern
    the images cannot tell from noise gets an interval that holds 0."""
    keep = counts > 0
    if int(keep.sum()) < 2:
        return {}
    if not bool(keep.all()):
        features, reference, reference_sq, counts = features[keep], reference[keep], reference_sq[keep], counts[keep]
    stats = resampled_stats(features, reference, reference_sq, counts)
    units = np.eye(len(counts))  # a resample's pooled "sums" of these are its draws per group
    point = stats(np.ones((1, len(counts))))  # every group once: the measured values
    intervals: dict[str, tuple[float, float]] = {}
    for name in INTERVAL_STATS:
        low, high = pooled_interval(units, _pick(stats, name), level, resamples, seed)
        value = float(point[name][0])
        intervals[name] = (2.0 * value - high, 2.0 * value - low)
    return intervals


def _pick(stats: Callable[[np.ndarray], dict[str, np.ndarray]], name: str) -> Callable[[np.ndarray], np.ndarray]:
    """The statistic ``name`` of :func:`resampled_stats` alone, as :func:`pooled_interval` takes it."""
    return lambda draws: stats(draws)[name]


class PPPMoments:
    """The streamed per-group sums PPP is computed from (Lin et al., ICML 2023; our definition): per tap,
    each group's sums of the crops' features and of their reference (``[G, C, h, w]``), the pooled sum of
    ref² (``[C, h, w]``) and each group's ref² total (``[G]``), and the images per group. One place for
    what ``task=ppp`` streams through Lightning's test loop and the atlas engine (:mod:`posenc.engine`)
    streams through its single pass: the two cannot drift apart. A group is the image's global index mod
    ``groups`` (:data:`PPP_GROUPS`). The reference parts (:meth:`reference_state`) do not depend on how
    the border is padded within a padding class and can be kept across paddings (:meth:`use_reference`)."""

    REFERENCE_PARTS = ("reference", "reference_sq", "reference_sq_groups")

    def __init__(self, layers: Sequence[str], groups: int) -> None:
        self.layers, self.groups = list(layers), int(groups)
        self.sums: dict[str, Tensor] = {}

    def _add(self, key: str, value: Tensor, groups: Tensor | None = None) -> None:
        if groups is None:
            total = value.sum(dim=0)
            self.sums[key] = self.sums[key] + total if key in self.sums else total
            return
        if key not in self.sums:
            self.sums[key] = value.new_zeros((self.groups, *value.shape[1:]))
        self.sums[key].index_add_(0, groups, value)

    def add_features(self, taps: Mapping[str, Tensor], groups: Tensor) -> None:
        """A batch's crop features (``taps[layer]``: ``[B, C, h, w]``) and its images' groups ``[B]``."""
        for layer in self.layers:
            self._add(f"{layer}/features", taps[layer].double(), groups)
        self._add("counts", torch.ones(len(groups), dtype=torch.float64, device=groups.device), groups)

    def add_reference(self, references: Mapping[str, Tensor], groups: Tensor) -> None:
        """A batch's padding-free references (the contexts' taps cropped to the crops' footprints)."""
        for layer in self.layers:
            ref = references[layer].double()
            square = ref * ref
            self._add(f"{layer}/reference", ref, groups)
            self._add(f"{layer}/reference_sq", square)
            self._add(f"{layer}/reference_sq_groups", square.flatten(1).sum(dim=1), groups)

    def reference_state(self) -> dict[str, Tensor]:
        """The reference parts and the counts (what a later padding of the same class can reuse)."""
        return {k: v for k, v in self.sums.items() if k == "counts" or k.split("/")[-1] in self.REFERENCE_PARTS}

    def use_reference(self, state: Mapping[str, Tensor]) -> None:
        """Take the reference parts of ``state`` (:meth:`reference_state` of the same images) instead of
        adding them again; the counts must match."""
        counts = self.sums.get("counts")
        if counts is not None and not torch.equal(state["counts"].to(counts), counts):
            raise PosencError("the PPP reference kept for this network groups other images than this pass")
        self.sums.update({k: v.to(counts.device if counts is not None else v.device) for k, v in state.items()})

    def reduce(self, reduce: Callable[[Tensor], Tensor]) -> None:
        """Apply ``reduce`` to every sum (under DDP: the sum over ranks)."""
        self.sums = {k: reduce(v) for k, v in self.sums.items()}

    def strengths(self, layer: str, intervals: bool = True) -> tuple[dict[str, Any], dict[str, tuple[float, float]]]:
        """``(ppp_from_moments of layer, its ppp_intervals)`` (``{}`` without ``intervals``)."""
        counts = self.sums["counts"]
        count = float(counts.sum())
        features, ref = self.sums[f"{layer}/features"], self.sums[f"{layer}/reference"]
        stats = ppp_from_moments(
            features.sum(dim=0) / count, ref.sum(dim=0) / count, self.sums[f"{layer}/reference_sq"] / count
        )
        if not intervals:
            return stats, {}
        return stats, ppp_intervals(features, ref, self.sums[f"{layer}/reference_sq_groups"], counts)
