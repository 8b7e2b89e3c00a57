"""Salient-object-detection metrics: per-image MAE, the max F-measure (Achanta et al., CVPR 2009;
Borji et al., TIP 2015: beta^2 = 0.3, mean precision/recall curve over a dataset, then its best
threshold) and the Structure-measure (Fan et al., ICCV 2017, "Structure-measure: A New Way to
Evaluate Foreground Maps"), as pure functions and as ``torchmetrics`` metrics whose states are
summed across DDP ranks.

``pred`` is a float saliency map with values in [0, 1] and ``gt`` a binary mask (bool or 0/1),
both ``[B, H, W]`` (``[H, W]`` for :func:`s_measure`). Everything is computed in float64.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchmetrics import Metric

from posenc.errors import PosencError, invalid_value

BETA2 = 0.3  # beta^2 of the F-measure (Achanta et al. 2009), weighting precision over recall
S_ALPHA = 0.5  # alpha of S = alpha * S_o + (1 - alpha) * S_r (Fan et al. 2017)
S_LAMBDA = 0.5  # lambda of the object-aware term; 2 * lambda = 1 as in the authors' released code


# --------------------------------------------------------------------------- input checks


def _check_maps(pred: Tensor, gt: Tensor, dims: int) -> tuple[Tensor, Tensor]:
    """Validate a saliency map and its mask; return them as float64 and bool."""
    layout = "[B, H, W]" if dims == 3 else "[H, W]"
    if pred.dim() != dims:
        raise invalid_value("pred.shape", tuple(pred.shape), f"expected {dims} dims {layout}")
    if tuple(gt.shape) != tuple(pred.shape):
        raise invalid_value("gt.shape", tuple(gt.shape), f"expected pred's shape {tuple(pred.shape)}")
    if pred.numel() == 0:
        raise invalid_value("pred.shape", tuple(pred.shape), "expected a non-empty map")
    if not pred.is_floating_point():
        raise invalid_value("pred.dtype", str(pred.dtype), "expected a float saliency map in [0, 1]")
    lo, hi = pred.min().item(), pred.max().item()
    if not (lo >= 0.0 and hi <= 1.0):  # also catches NaN
        raise PosencError(f"pred has values in [{lo:.4g}, {hi:.4g}]; valid: a saliency map in [0, 1]")
    if gt.dtype != torch.bool:
        bad = gt[(gt != 0) & (gt != 1)]
        if bad.numel():
            raise PosencError(f"gt has value {bad[0].item()!r}; valid: a binary mask (bool or 0/1)")
    return pred.double(), gt.bool()


def _check_thresholds(num_thresholds: int, beta2: float) -> None:
    if isinstance(num_thresholds, bool) or not isinstance(num_thresholds, int) or num_thresholds < 2:
        raise invalid_value("num_thresholds", num_thresholds, "expected an int >= 2")
    if not beta2 > 0:
        raise invalid_value("beta2", beta2, "expected a number > 0")


def _check_alpha(alpha: float) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise invalid_value("alpha", alpha, "expected a number in [0, 1]")


# --------------------------------------------------------------------------- MAE and F-measure


def mae_per_image(pred: Tensor, gt: Tensor) -> Tensor:
    """Mean absolute error ``mean |pred - gt|`` of each image (Perazzi et al., CVPR 2012), ``[B]``."""
    pred, gt = _check_maps(pred, gt, 3)
    return (pred - gt.double()).abs().flatten(1).mean(dim=1)


def f_thresholds(num_thresholds: int, device: torch.device | None = None) -> Tensor:
    """The thresholds ``t_k = k / (T - 1)``, ``k = 0..T-1``, evenly spaced in [0, 1] (float64)."""
    return torch.arange(num_thresholds, dtype=torch.float64, device=device) / (num_thresholds - 1)


def f_measure_curve(pred: Tensor, gt: Tensor, num_thresholds: int = 256, beta2: float = BETA2) -> Tensor:
    """F-measure ``F = (1 + b2) P R / (b2 P + R)`` of each image at each threshold, ``[B, T]``.

    At threshold ``t_k = k / (T - 1)`` the foreground is ``pred >= t_k``; P and R are its
    precision and recall against ``gt`` (Achanta et al. 2009). Conventions: P = 0 where nothing
    is predicted, R = 0 where ``gt`` is empty (an empty mask thus scores F = 0 everywhere), and
    F = 0 where P + R = 0. Thresholds are compared in ``pred``'s own precision (at least float32),
    so that e.g. a float32 ``128 / 255`` passes ``t_128`` of 256. One histogram per image of the
    highest threshold each pixel passes, summed from the top, gives the counts at all thresholds.
    """
    dtype = pred.dtype if pred.dtype in (torch.float32, torch.float64) else torch.float32
    _check_maps(pred, gt, 3)
    _check_thresholds(num_thresholds, beta2)
    b, t = pred.shape[0], num_thresholds
    flat, fg = pred.flatten(1).to(dtype), gt.bool().flatten(1)
    edges = f_thresholds(t, pred.device).to(dtype)
    passed = torch.bucketize(flat, edges, right=True) - 1  # the largest k with t_k <= pred
    index = passed + t * torch.arange(b, device=pred.device).unsqueeze(1)
    every = torch.bincount(index.flatten(), minlength=b * t).view(b, t)
    hits = torch.bincount(index[fg], minlength=b * t).view(b, t)
    predicted = every.flip(1).cumsum(1).flip(1).double()  # pixels with pred >= t_k
    true_pos = hits.flip(1).cumsum(1).flip(1).double()
    positives = fg.sum(dim=1, keepdim=True).double()
    precision = true_pos / predicted.clamp_min(1.0)
    recall = true_pos / positives.clamp_min(1.0)
    denom = beta2 * precision + recall
    f = (1.0 + beta2) * precision * recall / denom.clamp_min(torch.finfo(torch.float64).tiny)
    return torch.where(denom > 0, f, torch.zeros_like(f))


def max_f_measure(pred: Tensor, gt: Tensor, num_thresholds: int = 256, beta2: float = BETA2) -> float:
    """maxF: the F-measure curve averaged over the images, at its best threshold (Borji et al. 2015)."""
    return f_measure_curve(pred, gt, num_thresholds, beta2).mean(dim=0).max().item()


# --------------------------------------------------------------------------- S-measure


def _object_similarity(values: Tensor) -> Tensor:
    """``O = 2 x / (x^2 + 1 + 2 lambda sigma_x)``: similarity of a region's values (mean ``x``,
    sample std ``sigma_x``, 0 for one pixel) to a uniform region of 1s (Fan et al. 2017, object-aware
    term, with the GT region's mean y = 1)."""
    mean = values.mean()
    std = values.std() if values.numel() > 1 else torch.zeros_like(mean)
    return 2.0 * mean / (mean**2 + 1.0 + 2.0 * S_LAMBDA * std)


def object_aware(pred: Tensor, gt: Tensor) -> Tensor:
    """``S_o = mu O_FG + (1 - mu) O_BG`` (Fan et al. 2017), ``mu`` the GT's foreground ratio:
    ``O_FG`` compares ``pred`` on the GT foreground, ``O_BG`` compares ``1 - pred`` on the GT
    background, each with :func:`_object_similarity`. Needs both regions non-empty."""
    mu = gt.double().mean()
    return mu * _object_similarity(pred[gt]) + (1.0 - mu) * _object_similarity(1.0 - pred[~gt])


def _deviations(x: Tensor) -> Tensor:
    """``x - mean(x)``, exactly 0 for a constant block (no round-off from the mean)."""
    return torch.where(x.amax() > x.amin(), x - x.mean(), torch.zeros_like(x))


def block_ssim(x: Tensor, y: Tensor) -> Tensor:
    """SSIM of one block as in Fan et al. 2017: ``4 x y s_xy / ((x^2 + y^2)(s_x^2 + s_y^2))``
    with block means ``x, y`` and (co)variances ``s``; 1 where numerator and denominator are both
    0 (e.g. two constant blocks), 0 where only the numerator is (the authors' released code)."""
    n = max(x.numel() - 1, 1)
    dx, dy = _deviations(x), _deviations(y)
    mx, my = x.mean(), y.mean()
    num = 4.0 * mx * my * (dx * dy).sum() / n
    den = (mx**2 + my**2) * ((dx * dx).sum() + (dy * dy).sum()) / n
    quotient = num / torch.where(den > 0, den, torch.ones_like(den))
    return torch.where(num != 0, quotient, (den == 0).to(num.dtype))


def gt_centroid(gt: Tensor) -> tuple[int, int]:
    """``(Y, X)``: the GT's centroid in 1-based pixel coordinates, rounded half up (Fan et al. 2017);
    equivalently the heights/widths of the top/left blocks of the region-aware split."""
    h, w = gt.shape
    mask = gt.double()
    total = mask.sum()
    rows = torch.arange(1, h + 1, dtype=torch.float64, device=gt.device)
    cols = torch.arange(1, w + 1, dtype=torch.float64, device=gt.device)
    y = (mask.sum(dim=1) * rows).sum() / total
    x = (mask.sum(dim=0) * cols).sum() / total
    return math.floor(y.item() + 0.5), math.floor(x.item() + 0.5)


def region_aware(pred: Tensor, gt: Tensor) -> Tensor:
    """``S_r = sum_k w_k ssim_k`` (Fan et al. 2017): split both maps at the GT centroid into four
    blocks, ``w_k`` the block's share of the image area; an empty block has weight 0."""
    h, w = gt.shape
    y, x = gt_centroid(gt)
    score = pred.new_zeros(())
    for rows in (slice(0, y), slice(y, h)):
        for cols in (slice(0, x), slice(x, w)):
            block = pred[rows, cols]
            if block.numel():
                score = score + block.numel() / (h * w) * block_ssim(block, gt[rows, cols].double())
    return score


def s_measure(pred: Tensor, gt: Tensor, alpha: float = S_ALPHA) -> float:
    """Structure-measure ``S = alpha S_o + (1 - alpha) S_r`` of one ``[H, W]`` map (Fan et al.,
    ICCV 2017), clipped at 0. Special cases: an all-background GT gives ``1 - mean(pred)``, an
    all-foreground GT gives ``mean(pred)``."""
    _check_alpha(alpha)
    pred, gt = _check_maps(pred, gt, 2)
    foreground = gt.double().mean().item()
    if foreground == 0.0:
        return 1.0 - pred.mean().item()
    if foreground == 1.0:
        return pred.mean().item()
    score = alpha * object_aware(pred, gt) + (1.0 - alpha) * region_aware(pred, gt)
    return max(score.item(), 0.0)


# --------------------------------------------------------------------------- torchmetrics wrappers


class _MeanOverImages(Metric):
    """Mean of a per-image score over all images seen (sums and count, summed across ranks)."""

    full_state_update = False
    is_differentiable = False
    total: Tensor  # metric states (add_state)
    count: Tensor

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.add_state("total", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update_scores(self, scores: Tensor) -> None:
        """Add per-image scores computed elsewhere (a task that also keeps them for its intervals)."""
        self.total += scores.sum().to(self.total)
        self.count += scores.numel()

    def compute(self) -> Tensor:
        return self.total / self.count


class SaliencyMAE(_MeanOverImages):
    """Mean over images of :func:`mae_per_image`."""

    higher_is_better = False

    def update(self, pred: Tensor, gt: Tensor) -> None:
        self.update_scores(mae_per_image(pred, gt))


class SMeasure(_MeanOverImages):
    """Mean over images of :func:`s_measure`."""

    higher_is_better = True

    def __init__(self, alpha: float = S_ALPHA, **kwargs: object) -> None:
        _check_alpha(alpha)
        super().__init__(**kwargs)
        self.alpha = alpha

    def update(self, pred: Tensor, gt: Tensor) -> None:
        _check_maps(pred, gt, 3)
        scores = [s_measure(p, g, self.alpha) for p, g in zip(pred, gt)]
        self.update_scores(torch.tensor(scores, dtype=torch.float64))


class MaxFMeasure(Metric):
    """maxF over all images seen: per-image F curves summed, averaged, then maximised."""

    full_state_update = False
    is_differentiable = False
    higher_is_better = True
    curve_sum: Tensor  # metric states (add_state)
    count: Tensor

    def __init__(self, num_thresholds: int = 256, beta2: float = BETA2, **kwargs: object) -> None:
        _check_thresholds(num_thresholds, beta2)
        super().__init__(**kwargs)
        self.num_thresholds, self.beta2 = num_thresholds, beta2
        self.add_state("curve_sum", default=torch.zeros(num_thresholds, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred: Tensor, gt: Tensor) -> None:
        self.update_curves(f_measure_curve(pred, gt, self.num_thresholds, self.beta2))

    def update_curves(self, curves: Tensor) -> None:
        """Add per-image F curves (:func:`f_measure_curve`) computed elsewhere."""
        self.curve_sum += curves.sum(dim=0).to(self.curve_sum)
        self.count += curves.shape[0]

    def compute(self) -> Tensor:
        return (self.curve_sum / self.count).max()
