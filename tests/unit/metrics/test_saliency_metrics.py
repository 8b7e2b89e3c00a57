"""Saliency metrics: MAE, maxF (Achanta et al. 2009) and the S-measure (Fan et al., ICCV 2017),
checked against hand-computed values and an independent plain-numpy restatement."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from posenc.errors import PosencError
from posenc.metrics.saliency import (
    MaxFMeasure,
    SaliencyMAE,
    SMeasure,
    f_measure_curve,
    mae_per_image,
    max_f_measure,
    s_measure,
)


def t(rows: list) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


# --------------------------------------------------------------------------- an independent numpy S-measure


def np_object(values: np.ndarray) -> float:
    """O = 2 x / (x^2 + 1 + sigma), sample std (lambda = 0.5)."""
    x = values.mean()
    sigma = values.std(ddof=1) if values.size > 1 else 0.0
    return 2 * x / (x * x + 1 + sigma)


def np_ssim(p: np.ndarray, g: np.ndarray) -> float:
    n = p.size
    x, y = p.mean(), g.mean()
    sx = ((p - x) ** 2).sum() / max(n - 1, 1) if p.max() > p.min() else 0.0
    sy = ((g - y) ** 2).sum() / max(n - 1, 1) if g.max() > g.min() else 0.0
    sxy = ((p - x) * (g - y)).sum() / max(n - 1, 1) if sx and sy else 0.0
    a, b = 4 * x * y * sxy, (x * x + y * y) * (sx + sy)
    return a / b if a != 0 else float(b == 0)


def np_s_measure(pred: np.ndarray, gt: np.ndarray, alpha: float = 0.5) -> float:
    gt = gt.astype(bool)
    if not gt.any():
        return 1 - pred.mean()
    if gt.all():
        return pred.mean()
    mu = gt.mean()
    s_o = mu * np_object(pred[gt]) + (1 - mu) * np_object(1 - pred[~gt])
    h, w = gt.shape
    ys, xs = np.nonzero(gt)
    cy, cx = math.floor(ys.mean() + 1 + 0.5), math.floor(xs.mean() + 1 + 0.5)  # 1-based, rounded
    s_r = 0.0
    for rows in (slice(0, cy), slice(cy, h)):
        for cols in (slice(0, cx), slice(cx, w)):
            p, g = pred[rows, cols], gt[rows, cols].astype(float)
            if p.size:
                s_r += p.size / (h * w) * np_ssim(p, g)
    return max(alpha * s_o + (1 - alpha) * s_r, 0.0)


# --------------------------------------------------------------------------- S-measure


GT_A = [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
GT_B = [[1, 1, 1, 0], [1, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
PRED_B = [[1.0, 1.0, 0.5, 0.0], [1.0, 0.5, 0.5, 0.5], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.5]]


def test_s_measure_identical_maps_score_one() -> None:
    for gt in (GT_A, GT_B, [[0, 1, 0], [1, 1, 1], [0, 1, 0]]):
        assert s_measure(t(gt), t(gt)) == pytest.approx(1.0, abs=1e-12)


def test_s_measure_special_cases() -> None:
    pred = t([[0.2, 0.4], [0.6, 0.0]])  # mean 0.3
    assert s_measure(pred, torch.zeros(2, 2)) == pytest.approx(1 - 0.3)  # GT all background
    assert s_measure(pred, torch.ones(2, 2, dtype=torch.bool)) == pytest.approx(0.3)  # all foreground


def test_s_measure_hand_case_uniform_foreground() -> None:
    # GT_A: foreground = top-left 2x2; pred = 0.8 there, 0 elsewhere.
    # O_FG = 2*0.8 / (0.64 + 1 + 0) = 1.6/1.64; O_BG (1 - pred = 1 everywhere) = 2/(1+1) = 1
    # S_o = 4/16 * 1.6/1.64 + 12/16 * 1
    # centroid (1-based): rows 1,2 -> 1.5 -> 2; cols likewise 2 -> four 2x2 blocks of weight 1/4,
    # each a constant pred against a constant GT -> SSIM numerator and denominator 0 -> 1, S_r = 1
    pred = 0.8 * t(GT_A)
    s_o = 0.25 * 1.6 / 1.64 + 0.75
    expected = 0.5 * s_o + 0.5 * 1.0
    assert expected == pytest.approx(0.9969512195121951)
    assert s_measure(pred, t(GT_A)) == pytest.approx(expected, abs=1e-12)


def test_s_measure_hand_case_mixed_blocks() -> None:
    # GT_B: foreground = rows 0-1, cols 0-2 (6 px), mu = 6/16.
    # FG pred values [1,1,.5,1,.5,.5]: mean .75, sample var 6*.0625/5 = .075
    o_fg = 2 * 0.75 / (0.75**2 + 1 + math.sqrt(0.075))
    # BG 1-pred values: eight 1s and two .5s: mean .9, sample var (8*.01 + 2*.16)/9 = .4/9
    o_bg = 2 * 0.9 / (0.9**2 + 1 + math.sqrt(0.4 / 9))
    s_o = 6 / 16 * o_fg + 10 / 16 * o_bg
    # centroid (1-based): rows mean 1.5 -> 2, cols mean 2 -> 2: four 2x2 blocks, weight 1/4 each.
    # TL: GT constant 1, pred varies -> 0.  BL: both 0 -> 1.  BR: GT 0, pred varies -> 0.
    # TR: pred [.5,0;.5,.5] (x=.375), GT [1,0;1,0] (y=.5); with n-1 = 3:
    #   s_xy = .25/3, s_x^2 = .1875/3, s_y^2 = 1/3
    #   ssim = 4*.375*.5*(.25/3) / ((.375^2 + .25) * (1.1875/3)) = .0625 / (.390625 * .3958333)
    tr = 4 * 0.375 * 0.5 * (0.25 / 3) / ((0.375**2 + 0.5**2) * (1.1875 / 3))
    s_r = 0.25 * (0.0 + tr + 1.0 + 0.0)
    expected = 0.5 * s_o + 0.5 * s_r
    assert tr == pytest.approx(0.4042105263157895)
    assert expected == pytest.approx(0.6070350101709636)
    assert s_measure(t(PRED_B), t(GT_B)) == pytest.approx(expected, abs=1e-12)
    assert np_s_measure(np.array(PRED_B), np.array(GT_B)) == pytest.approx(expected, abs=1e-12)
    assert s_measure(t(PRED_B), t(GT_B), alpha=1.0) == pytest.approx(s_o, abs=1e-12)
    assert s_measure(t(PRED_B), t(GT_B), alpha=0.0) == pytest.approx(s_r, abs=1e-12)


def test_s_measure_matches_numpy_restatement_on_random_maps() -> None:
    rng = np.random.default_rng(0)
    for h, w in ((5, 7), (6, 3), (8, 8)):
        gt = rng.random((h, w)) < 0.4
        gt[0, 0], gt[-1, -1] = True, False
        pred = rng.random((h, w))
        assert s_measure(torch.from_numpy(pred), torch.from_numpy(gt)) == pytest.approx(
            np_s_measure(pred, gt), abs=1e-12
        )
    gt = np.zeros((4, 5), dtype=bool)
    gt[:, -1] = True  # centroid on the last column: the right blocks are empty
    pred = rng.random((4, 5))
    assert s_measure(torch.from_numpy(pred), torch.from_numpy(gt)) == pytest.approx(np_s_measure(pred, gt))


# --------------------------------------------------------------------------- MAE and F-measure


PRED_F = t([[[0.9, 0.4], [0.6, 0.0]], [[0.2, 1.0], [0.5, 0.0]]])
GT_F = torch.tensor([[[1, 1], [0, 0]], [[0, 1], [0, 0]]], dtype=torch.bool)


def test_mae_per_image() -> None:
    # |.9-1| + |.4-1| + .6 + 0 = 1.3 -> .325; .2 + 0 + .5 + 0 = .7 -> .175
    assert mae_per_image(PRED_F, GT_F).tolist() == pytest.approx([0.325, 0.175])


def test_f_measure_curve_by_hand() -> None:
    # thresholds 0, .5, 1 (foreground = pred >= t); F = 1.3 P R / (.3 P + R)
    f = lambda p, r: 1.3 * p * r / (0.3 * p + r) if p + r else 0.0  # noqa: E731
    # image 0: t=0 all 4 px, TP 2 -> P .5 R 1; t=.5 {.9,.6}, TP 1 -> P .5 R .5; t=1 nothing -> 0
    # image 1: t=0 P .25 R 1; t=.5 {1, .5} -> P .5 R 1; t=1 {1} -> P 1 R 1
    expected = [[f(0.5, 1), f(0.5, 0.5), 0.0], [f(0.25, 1), f(0.5, 1), f(1, 1)]]
    curve = f_measure_curve(PRED_F, GT_F, num_thresholds=3)
    assert curve.tolist()[0] == pytest.approx(expected[0])
    assert curve.tolist()[1] == pytest.approx(expected[1])
    # mean curve [.4338, .5326, .5]: maxF at t = .5
    assert max_f_measure(PRED_F, GT_F, num_thresholds=3) == pytest.approx((f(0.5, 0.5) + f(0.5, 1)) / 2)


def test_f_measure_curve_matches_thresholding_loop() -> None:
    gen = torch.Generator().manual_seed(0)
    pred = torch.randint(0, 256, (3, 6, 5), generator=gen).double() / 255  # many values on thresholds
    gt = torch.rand(3, 6, 5, generator=gen) < 0.3
    gt[2] = False  # empty mask: F = 0 everywhere
    curve = f_measure_curve(pred, gt)
    assert curve.shape == (3, 256)
    for k in range(0, 256, 5):
        fg = pred >= k / 255
        tp = (fg & gt).flatten(1).sum(1).double()
        p = tp / fg.flatten(1).sum(1).clamp_min(1)
        r = tp / gt.flatten(1).sum(1).clamp_min(1)
        f = torch.where(p + r > 0, 1.3 * p * r / (0.3 * p + r).clamp_min(1e-300), torch.zeros_like(p))
        assert torch.allclose(curve[:, k], f), k
    assert curve[2].abs().max() == 0
    assert torch.allclose(f_measure_curve(pred.float(), gt).double(), curve)  # float32 = 8-bit values


# --------------------------------------------------------------------------- Metric classes


def test_metrics_in_two_halves_match_functions() -> None:
    gen = torch.Generator().manual_seed(1)
    pred = torch.rand(6, 7, 9, generator=gen, dtype=torch.float64)
    gt = torch.rand(6, 7, 9, generator=gen) < 0.35
    metrics = [SaliencyMAE(), MaxFMeasure(num_thresholds=64), SMeasure()]
    for metric in metrics:
        metric.update(pred[:4], gt[:4])
        metric.update(pred[4:], gt[4:].long())
    mae, max_f, s = (m.compute().item() for m in metrics)
    assert mae == pytest.approx(mae_per_image(pred, gt).mean().item(), abs=1e-12)
    assert max_f == pytest.approx(max_f_measure(pred, gt, num_thresholds=64), abs=1e-12)
    assert s == pytest.approx(float(np.mean([s_measure(p, g) for p, g in zip(pred, gt)])), abs=1e-12)
    assert s == pytest.approx(float(np.mean([np_s_measure(p.numpy(), g.numpy()) for p, g in zip(pred, gt)])))


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("call", "shown"),
    [
        (lambda: mae_per_image(torch.full((1, 2, 2), 1.5), torch.zeros(1, 2, 2)), "1.5"),
        (lambda: mae_per_image(torch.zeros(1, 2, 2), torch.full((1, 2, 2), 2)), "2"),
        (lambda: mae_per_image(torch.zeros(1, 2, 2), torch.zeros(1, 2, 3)), "(1, 2, 3)"),
        (lambda: mae_per_image(torch.zeros(2, 2), torch.zeros(2, 2)), "(2, 2)"),
        (lambda: f_measure_curve(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2), num_thresholds=1), "num_thresholds=1"),
        (lambda: f_measure_curve(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2), beta2=0.0), "beta2=0.0"),
        (lambda: s_measure(torch.zeros(2, 2), torch.zeros(2, 2), alpha=1.5), "alpha=1.5"),
        (lambda: s_measure(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2)), "(1, 2, 2)"),
        (lambda: MaxFMeasure(num_thresholds=0), "num_thresholds=0"),
        (lambda: SMeasure(alpha=-1.0), "alpha=-1.0"),
    ],
)
def test_bad_input_raises(call, shown: str) -> None:
    with pytest.raises(PosencError, match="valid") as info:
        call()
    assert shown in str(info.value)
    assert "\n" not in str(info.value)
