"""95% intervals of PPP's strengths (issue 33; Lin et al., ICML 2023, our definition in docs/ppp.md): a
bootstrap over groups of test images (posenc.metrics.ppp.ppp_intervals) equal to a plain loop over the
resamples, written for every tap by ``task=ppp``, and a reference cache of the old layout never read."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers.runs import compose_run

from posenc.metrics.intervals import expanded_tail, resample_counts
from posenc.metrics.ppp import ppp_from_moments, ppp_groups, ppp_intervals, ppp_stats
from posenc.viz.tables import interval_keys

SMALL = ["task=ppp", "backbone=tiny", "data.image_size=32", "data.batch_size=4", "callbacks.progress=null"]
LAYERS = ("f1", "f2", "f3", "f4", "f5")
STATS = ("snr", "rel_energy", "energy", "variance")


def group_sums(features: torch.Tensor, reference: torch.Tensor, groups: int):
    """Per-group sums of images ``i`` in group ``i mod groups``, as task=ppp keeps them."""
    index = torch.arange(len(features)) % groups
    zeros = torch.zeros(groups, *features.shape[1:], dtype=torch.float64)
    return (
        zeros.index_add(0, index, features),
        zeros.index_add(0, index, reference),
        zeros.index_add(0, index, reference * reference),
        torch.bincount(index, minlength=groups),
    )


def loop_interval(features, reference, groups: int, resamples: int) -> dict[str, tuple[float, float]]:
    """The basic interval (2 t - q_high, 2 t - q_low) at the expanded percentile levels, by a plain loop: per
    resample, pool the drawn groups' images and recompute PPP with ppp_from_moments (and, for the first
    resamples, ppp_stats of the images themselves); t is ppp_stats of all images."""
    f_sum, r_sum, q_sum, counts = group_sums(features, reference, groups)
    index = torch.arange(len(features)) % groups
    values: dict[str, list[float]] = {name: [] for name in STATS}
    for row, draws in enumerate(resample_counts(groups, resamples)):
        weight = torch.as_tensor(draws, dtype=torch.float64)
        total = float(weight @ counts.double())
        pooled = [torch.tensordot(weight, s, dims=1) / total for s in (f_sum, r_sum, q_sum)]
        stats = ppp_from_moments(*pooled)
        if row < 5:  # the same numbers from the resampled images themselves
            images = torch.cat([torch.nonzero(index == g).flatten().repeat(int(n)) for g, n in enumerate(draws)])
            direct = ppp_stats(features[images], reference[images])
            assert direct["snr"] == pytest.approx(stats["snr"], rel=1e-9)
        for name in STATS:
            values[name].append(stats[name])
    tail = expanded_tail(0.95, groups)
    point = ppp_stats(features, reference)
    intervals = {}
    for name, v in values.items():
        low, high = np.percentile(v, [tail, 100.0 - tail])
        intervals[name] = (2 * point[name] - high, 2 * point[name] - low)
    return intervals


@pytest.mark.parametrize(("images", "groups"), [(13, 5), (6, 6)])
def test_the_interval_equals_a_plain_loop_bootstrap_over_the_groups(images, groups):
    torch.manual_seed(images)
    reference = (1.0 + torch.randn(images, 3, 5, 4)).double()
    features = reference + 0.2 + 0.4 * torch.randn(images, 3, 5, 4).double()
    features[..., 0, :] += 0.5  # a border pattern
    got = ppp_intervals(*group_sums(features, reference, groups), resamples=400)
    expected = loop_interval(features, reference, groups, resamples=400)
    for name in STATS:
        assert got[name] == pytest.approx(expected[name], rel=1e-9, abs=1e-12), name
        assert got[name][0] < got[name][1], name


def test_a_pattern_the_images_cannot_tell_from_noise_gets_an_interval_that_holds_zero():
    """No border pattern at all, only image-to-image noise: the plug-in energy is positive (a squared norm of
    noise), the percentile interval (its bias counted twice) lies wholly above 0, and the basic interval
    holds 0: it is an interval for the pattern's energy, which the biased plug-in value may exceed."""
    torch.manual_seed(3)
    reference = (1.0 + torch.randn(32, 4, 6, 6)).double()
    features = reference + 0.3 * torch.randn(32, 4, 6, 6).double()
    got = ppp_intervals(*group_sums(features, reference, 16))
    value = ppp_stats(features, reference)
    for name in ("energy", "snr", "rel_energy"):
        assert value[name] > 0 and got[name][0] < 0 < got[name][1], name
        percentile_low = 2 * value[name] - got[name][1]
        assert percentile_low > 0, name


def test_no_pattern_has_the_interval_zero_and_one_group_has_none():
    reference = torch.randn(8, 2, 4, 4).double()
    got = ppp_intervals(*group_sums(reference, reference, 4))
    assert got["energy"] == (0.0, 0.0) and got["snr"] == (0.0, 0.0)
    assert ppp_intervals(*group_sums(reference, reference, 1)) == {}
    assert ppp_groups(64) == 16 and ppp_groups(5) == 5


def run(tmp_path, name: str, *overrides: str) -> dict:
    from posenc.run.train import run as run_job

    metrics = run_job(compose_run([*SMALL, f"paths.cache_dir={tmp_path / 'cache'}", *overrides], tmp_path / name))
    assert metrics is not None and metrics["status"] == "completed"
    return metrics


def test_a_ppp_run_writes_an_interval_around_every_strength(tmp_path):
    """20 images: 16 groups of one or two images (index mod 16)."""
    metrics = run(tmp_path, "zeros", "padding=zeros", "data.num_test=20")
    on_disk = json.loads((tmp_path / "zeros" / "metrics.json").read_text())
    assert metrics["ppp/groups"] == 16
    for layer in LAYERS:
        keys = [f"test/ppp_snr_{layer}", f"test/ppp_rel_energy_{layer}"]
        keys += [f"ppp/{layer}/{name}" for name in STATS]
        for key in keys:
            low_key, high_key = interval_keys(key)
            assert on_disk[low_key] <= on_disk[key] <= on_disk[high_key], key
            assert on_disk[low_key] < on_disk[high_key], key
        assert on_disk[f"test/ppp_snr_{layer}/ci_low"] == on_disk[f"ppp/{layer}/snr/ci_low"]


def test_an_old_layout_reference_cache_is_recomputed_not_read(tmp_path):
    """A cache file holding pooled means (posenc before the intervals) at this run's key: recomputed
    and replaced, with the same numbers as a fresh run."""
    first = run(tmp_path, "first", "padding=zeros", "data.num_test=8")
    (path,) = (tmp_path / "cache" / "ppp_reference").glob("*.pt")
    fresh = torch.load(path, weights_only=True)
    old = {f"{layer}/{part}": fresh[f"{layer}/{part}"][0] for layer in LAYERS for part in ("reference",)}
    old.update({f"{layer}/reference_sq": fresh[f"{layer}/reference_sq"] / 8 for layer in LAYERS})
    torch.save(old, path)
    second = run(tmp_path, "second", "padding=zeros", "data.num_test=8")
    assert not second["ppp/reference_cached"] and second["ppp/time/contexts_s"] > 0.0
    for layer in LAYERS:
        for key in (f"ppp/{layer}/snr", *interval_keys(f"ppp/{layer}/snr")):
            assert second[key] == pytest.approx(first[key], rel=1e-12), key
    assert torch.load(path, weights_only=True)["format"] == fresh["format"]  # replaced by the new layout
    third = run(tmp_path, "third", "padding=reflect", "data.num_test=8")
    assert third["ppp/reference_cached"]
    assert third["ppp/f3/variance/ci_low"] == pytest.approx(first["ppp/f3/variance/ci_low"], rel=1e-12)
