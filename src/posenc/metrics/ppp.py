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
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from posenc.errors import PosencError, invalid_value
from posenc.metrics.binned import pixel_distance
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
