"""Every test metric carries its 95% interval (issue 33 §3): PosENet's ``test/<input>/<target>/<metric>``
gets ``/ci_low`` and ``/ci_high`` from a bootstrap over the test set's units (the photo each natural crop
comes from; every other image on its own), checked here against an independent recomputation from the
same per-image scores; the console table and the sweep report show them."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A tiny PosENet run, with the per-image scores and units its intervals were computed from."""
    from helpers.runs import TINY, compose_run

    from posenc.run.train import run
    from posenc.tasks.posenet import PosENetTask

    captured: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    original = PosENetTask.on_test_epoch_end

    def capture(self):
        for key, parts in self.per_image.items():
            values = np.concatenate([v.double().cpu().numpy() for v, _ in parts])
            captured[key] = (values, np.concatenate([u.cpu().numpy() for _, u in parts]))
        original(self)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(PosENetTask, "on_test_epoch_end", capture)
        metrics = run(compose_run([*TINY, "data.test_inputs=[natural,black,noise]"], tmp_path_factory.mktemp("ci")))
    assert metrics is not None
    return metrics, captured


def reference_interval(values: np.ndarray, units: np.ndarray, resamples: int = 20000) -> tuple[float, float]:
    """Hesterberg's expanded percentile interval of the mean over resampled units, written apart from
    posenc.metrics.intervals (another generator, scipy's t and normal quantiles)."""
    labels = np.unique(units)
    sums = np.array([values[units == u].sum() for u in labels])
    counts = np.array([(units == u).sum() for u in labels], dtype=float)
    n = len(labels)
    draws = np.random.default_rng(12345).integers(n, size=(resamples, n))
    means = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    tail = 100 * stats.norm.cdf(-math.sqrt(n / (n - 1)) * stats.t.ppf(0.975, n - 1))
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def test_every_spc_key_lies_in_its_interval(tiny_run):
    metrics, _ = tiny_run
    spc = [k for k in metrics if k.startswith("test/") and k.endswith("/spc")]
    with_ci = [k for k in spc if f"{k}/ci_low" in metrics]
    assert {k.split("/")[1] for k in with_ci} == {"natural", "noise"}  # black: one image, nothing to resample
    for key in with_ci:
        assert metrics[f"{key}/ci_low"] <= metrics[key] + 1e-6
        assert metrics[key] <= metrics[f"{key}/ci_high"] + 1e-6
    for key in [k for k in metrics if k.endswith("/mae") and f"{k}/ci_low" in metrics]:
        assert metrics[f"{key}/ci_low"] <= metrics[key] + 1e-6 <= metrics[f"{key}/ci_high"] + 2e-6


def test_intervals_match_an_independent_bootstrap_of_the_same_scores(tiny_run):
    from posenc.data.sources.natural import TEST_PHOTOS, natural_crops

    metrics, captured = tiny_run
    # the natural crops' units are the photos they were cut from (the test set's seed: run seed + 1)
    _, photos = natural_crops(8, 64, TEST_PHOTOS, seed=metrics.get("seed", 0) + 1, return_labels=True)
    # each crop shown in its four mirrored views, all four of its photo (data.mirror=both, posenc.data.mirror)
    np.testing.assert_array_equal(captured["test/natural/H/spc"][1], photos.numpy().repeat(4))
    np.testing.assert_array_equal(captured["test/noise/H/spc"][1], np.arange(8))
    checked = 0
    for key, (values, units) in captured.items():
        assert values.mean() == pytest.approx(metrics[key], abs=1e-5)  # the scores behind the logged mean
        if len(np.unique(units)) < 2:
            assert f"{key}/ci_low" not in metrics
            continue
        low, high = reference_interval(values, units)
        tolerance = 0.15 * (high - low) + 1e-6  # Monte Carlo: 2000 resamples against 20000
        assert metrics[f"{key}/ci_low"] == pytest.approx(low, abs=tolerance), key
        assert metrics[f"{key}/ci_high"] == pytest.approx(high, abs=tolerance), key
        checked += 1
    assert checked == 2 * 5 * 2  # natural and noise x 5 targets x SPC / MAE


def test_console_table_shows_the_intervals(tiny_run):
    from rich.console import Console

    from posenc.tasks.posenet import PosENetTask

    metrics, _ = tiny_run
    out = io.StringIO()
    console = Console(file=out, width=400)
    for table in PosENetTask.console_tables(metrics):
        console.print(table)
    text = out.getvalue()
    assert "[" in text and "ci_low" not in text and "ci_high" not in text
    natural = next(line for line in text.splitlines() if "natural" in line)
    spc = metrics["test/natural/H/spc"]
    assert f"{spc:.3f}".lstrip("0") + " [" in natural


def test_task_table_shows_an_interval_and_lists_no_ci_metric():
    from rich.console import Console

    from posenc.viz.tables import task_table

    metrics = {"test/acc": 0.9, "test/acc/ci_low": 0.85, "test/acc/ci_high": 0.94, "test/loss": 0.3}
    table = task_table(metrics)
    assert table is not None
    assert [c.header for c in table.columns] == ["pixels / cells", "acc", "loss"]
    out = io.StringIO()
    Console(file=out, width=200).print(table)
    assert ".900 [.850, .940]" in out.getvalue() and "0.300" in out.getvalue()


def _job(seed: int, metrics: dict) -> object:
    from posenc.sweeps.collect import JobResult

    return JobResult(Path(f"/tmp/job{seed}"), ["padding=zeros", f"seed={seed}"], "completed", metrics=metrics)


def test_a_sweep_row_over_two_seeds_shows_the_seed_interval():
    from posenc.metrics.intervals import seed_interval
    from posenc.sweeps.tables import markdown_report

    jobs = [
        _job(0, {"test/natural/H/spc": 0.90, "test/natural/H/spc/ci_low": 0.8, "test/natural/H/spc/ci_high": 0.95}),
        _job(1, {"test/natural/H/spc": 0.94, "test/natural/H/spc/ci_low": 0.85, "test/natural/H/spc/ci_high": 0.97}),
    ]
    report = markdown_report(jobs)
    low, high = seed_interval([0.90, 0.94])
    assert (round(low, 3), round(high, 3)) == (0.666, 1.174)  # t(.975, 1) = 12.706
    assert ".920 ± .028 [.666, 1.174]" in report
    assert "CI_LOW" not in report and "ci_low" not in report  # the interval keys are no metrics of their own


def test_a_single_seed_row_shows_its_runs_bootstrap_interval():
    from posenc.sweeps.tables import markdown_report

    job = _job(0, {"test/natural/H/spc": 0.90, "test/natural/H/spc/ci_low": 0.8, "test/natural/H/spc/ci_high": 0.95})
    bare = _job(0, {"test/natural/H/spc": 0.90})
    assert ".900 [.800, .950]" in markdown_report([job])
    assert "| 0.900 |" in markdown_report([bare])
