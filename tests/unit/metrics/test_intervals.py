"""The 95% intervals every test metric carries (posenc.metrics.intervals), against independent references:
scipy's bootstrap and t-interval, a plain-loop cluster bootstrap, and the coverage the level promises."""

from __future__ import annotations

import random

import numpy as np
import pytest
from scipy import stats

from posenc.errors import PosencError
from posenc.metrics.intervals import (
    contains,
    mean_interval,
    pooled_interval,
    resample_counts,
    seed_interval,
)
from posenc.viz.tables import with_interval


def test_the_mean_interval_agrees_with_scipys_percentile_bootstrap():
    values = np.random.default_rng(3).normal(0.6, 0.2, size=40)
    plain = mean_interval(values, resamples=20000, expanded=False)
    ref = stats.bootstrap((values,), np.mean, method="percentile", n_resamples=20000, random_state=1)
    # two independent random streams of 20000 resamples: the percentiles agree to Monte Carlo error (~0.003)
    assert plain == pytest.approx((ref.confidence_interval.low, ref.confidence_interval.high), abs=0.006)
    # Hesterberg's expanded percentile: the plain bootstrap at the level Phi(sqrt(n/(n-1)) t(.975, n-1))
    n = len(values)
    wider = 1 - 2 * stats.norm.sf(np.sqrt(n / (n - 1)) * stats.t.ppf(0.975, n - 1))
    ref = stats.bootstrap((values,), np.mean, confidence_level=wider, method="percentile", n_resamples=20000,
                          random_state=1)
    ours = mean_interval(values, resamples=20000)
    assert ours == pytest.approx((ref.confidence_interval.low, ref.confidence_interval.high), abs=0.006)
    assert ours[0] < plain[0] and ours[1] > plain[1]


def test_resampling_photos_agrees_with_a_plain_loop_cluster_bootstrap():
    """Crops of one photo are not independent: the units drawn are photos, and a resample's mean weights
    every crop of a drawn photo once (the metric's own mean over crops)."""
    rng = np.random.default_rng(5)
    photos = np.repeat(np.arange(8), 5)
    values = rng.normal(0.0, 0.05, size=40) + rng.normal(0.0, 0.3, size=8)[photos]
    ours = mean_interval(values, units=photos, resamples=20000, expanded=False)
    draw = random.Random(11)
    means = []
    for _ in range(20000):
        chosen = [draw.randrange(8) for _ in range(8)]
        picked = np.concatenate([values[photos == p] for p in chosen])
        means.append(picked.mean())
    ref = np.percentile(means, [2.5, 97.5])
    assert ours == pytest.approx(tuple(ref), abs=0.012)
    # treating crops as independent understates the spread
    per_crop = mean_interval(values, resamples=20000, expanded=False)
    assert (ours[1] - ours[0]) > 1.8 * (per_crop[1] - per_crop[0])


def test_a_pooled_statistic_is_recomputed_from_each_resamples_sums():
    """mIoU of summed confusions: the resampled statistic is the metric of the pooled matrices."""
    rng = np.random.default_rng(0)
    confusions = rng.integers(0, 20, size=(30, 3, 3)).astype(float) + np.eye(3) * 40

    def miou(pooled: np.ndarray) -> np.ndarray:
        tp = np.diagonal(pooled, axis1=-2, axis2=-1)
        union = pooled.sum(-1) + pooled.sum(-2) - tp
        return (tp / union).mean(-1)

    low, high = pooled_interval(confusions, miou)
    point = float(miou(confusions.sum(0, keepdims=True))[0])
    assert low < point < high and high - low < 0.2
    counts = resample_counts(30, resamples=4, seed=2)
    assert counts.shape == (4, 30) and (counts.sum(1) == 30).all()
    direct = [float(miou((c[:, None, None] * confusions).sum(0, keepdims=True))[0]) for c in counts]
    assert np.allclose(miou(np.einsum("ru,uij->rij", counts.astype(float), confusions)), direct)


def test_the_interval_covers_the_true_mean_at_its_level():
    """Coverage over 1000 simulated test sets of 10 items (SE of a coverage ~.007). Measured: the plain
    percentile bootstrap .907 (too narrow with few units), the expanded one (the default) .952; the margins:
    expanded within [.935, .97], plain at least .02 below it."""

    def coverage(expanded: bool) -> float:
        rng = np.random.default_rng(1)
        sets = [rng.normal(0.3, 0.1, size=10) for _ in range(1000)]
        hits = [contains(mean_interval(s, resamples=2000, seed=i, expanded=expanded), 0.3) for i, s in enumerate(sets)]
        return sum(hits) / len(hits)

    assert 0.935 <= coverage(True) <= 0.97
    assert coverage(False) <= coverage(True) - 0.02


def test_the_seed_interval_is_students_t_interval():
    values = [0.21, 0.25, 0.19, 0.3]
    ref = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert seed_interval(values) == pytest.approx(ref, rel=1e-9)
    assert all(np.isnan(seed_interval([0.2])))


def test_formatting_and_bad_input():
    assert with_interval(0.9523, (0.941, 0.96)) == ".952 [.941, .960]"
    assert with_interval(-0.05, (-0.12, 0.02)) == "-.050 [-.120, .020]"
    assert contains((-0.12, 0.02)) and not contains((0.01, 0.2))
    with pytest.raises(PosencError, match="units=0 is not valid"):
        resample_counts(0)
