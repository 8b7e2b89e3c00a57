"""The error bars of a sweep's figures are 95% intervals (issue 33 §3): over seeds the t-interval of the
mean, of one run the bootstrap interval it recorded, none without one; drawn from the interval's low to its
high end, whatever the bar's height, and named "95% interval". Pure figure functions on fake rows; no torch."""

from __future__ import annotations

import statistics

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.container import BarContainer, ErrorbarContainer  # noqa: E402

from posenc.sweeps.collect import JobResult  # noqa: E402
from posenc.sweeps.reports import row_curves, spc_bars  # noqa: E402
from posenc.sweeps.tables import Row  # noqa: E402
from posenc.viz.sweep_figures import distance_curves_figure, spc_figure  # noqa: E402

T_975_DF2 = 4.302653  # Student's t, 97.5% quantile, 2 degrees of freedom

try:
    from scipy import stats

    T_975_DF2 = float(stats.t.ppf(0.975, 2))
except ImportError:  # pragma: no cover - scipy is a dev dependency
    pass


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def t_interval(values: list[float]) -> tuple[float, float]:
    """The 95% t-interval of the mean of three values, computed here apart from posenc."""
    assert len(values) == 3
    half = T_975_DF2 * statistics.stdev(values) / np.sqrt(len(values))
    return statistics.fmean(values) - half, statistics.fmean(values) + half


def job(padding: str, seed: int, metrics: dict[str, float]) -> JobResult:
    overrides = [f"padding={padding}", f"seed={seed}"]
    return JobResult(None, overrides, "completed", metrics={"status": "completed", "seed": seed, **metrics})


SEEDED = {"test/natural/H/spc": [0.62, 0.70, 0.81], "test/natural/V/spc": [0.40, 0.44, 0.39]}
CURVES = {"test/by_distance/ring0/accuracy": [0.52, 0.61, 0.58], "test/by_distance/ring1/accuracy": [0.8, 0.9, 0.7]}
ONE_RUN = {  # one seed: its value and the (asymmetric) bootstrap interval it recorded
    "test/natural/H/spc": 0.85,
    "test/natural/H/spc/ci_low": 0.5,
    "test/natural/H/spc/ci_high": 0.9,
    "test/by_distance/ring0/accuracy": 0.4,
    "test/by_distance/ring0/accuracy/ci_low": 0.35,
    "test/by_distance/ring0/accuracy/ci_high": 0.6,
    "test/by_distance/ring1/accuracy": 0.7,
}


def rows() -> list[Row]:
    """zeros: three seeds; reflect: one run with recorded intervals; none: one run that recorded none."""
    zeros = [job("zeros", s, {k: v[s] for k, v in {**SEEDED, **CURVES}.items()}) for s in range(3)]
    reflect = [job("reflect", 0, ONE_RUN)]
    bare = [job("none", 0, {"test/natural/H/spc": 0.1, "test/natural/V/spc": 0.0, **dict.fromkeys(CURVES, 0.2)})]
    return [
        Row(f"padding={p}", jobs, {"padding": p})
        for p, jobs in (("zeros", zeros), ("reflect", reflect), ("none", bare))
    ]


def segments(container: ErrorbarContainer) -> list[tuple[float, float, float]]:
    """``(x, low, high)`` of each error bar of ``container`` (its vertical line collection)."""
    (lines,) = container.lines[2]
    return [(float(seg[0][0]), float(seg[0][1]), float(seg[1][1])) for seg in lines.get_segments()]


def test_the_spc_bars_error_bars_are_the_rows_intervals():
    fig = spc_figure("natural", *spc_bars(rows(), "natural", ["H", "V"]))
    ax = fig.axes[0]
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    errors = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 2 and len(errors) == 2
    h_bars, h_errors = bars[0], segments(bars[0].errorbar)  # a bar container carries its error bars
    assert h_errors == segments(errors[0])
    expected = [t_interval(SEEDED["test/natural/H/spc"]), (0.5, 0.9)]  # no bar for the run without an interval
    np.testing.assert_allclose([(low, high) for _, low, high in h_errors], expected)
    centres = [p.get_x() + p.get_width() / 2 for p in h_bars.patches]
    assert [x for x, _, _ in h_errors] == pytest.approx(centres[:2])
    assert [p.get_height() for p in h_bars.patches] == pytest.approx(
        [statistics.fmean(SEEDED["test/natural/H/spc"]), 0.85, 0.1]
    )
    v_errors = segments(bars[1].errorbar)
    np.testing.assert_allclose([(low, high) for _, low, high in v_errors], [t_interval(SEEDED["test/natural/V/spc"])])
    assert "95% interval" in ax.get_title()


def test_an_error_bar_is_asymmetric_where_the_interval_is():
    (reflect,) = [r for r in rows() if r.values["padding"] == "reflect"]
    run = Row("one run", reflect.jobs, {})  # no padding swept: the legend names the targets and the error bars
    fig = spc_figure("natural", *spc_bars([run], "natural", ["H"]))
    ax = fig.axes[0]
    (bar,) = [c for c in ax.containers if isinstance(c, BarContainer)]
    ((_, low, high),) = segments(bar.errorbar)
    height = bar.patches[0].get_height()
    assert (low, height, high) == pytest.approx((0.5, 0.85, 0.9))  # .35 below the bar, .05 above it
    legend = ax.get_legend()
    assert legend is not None and "95% interval" in [t.get_text() for t in legend.get_texts()]


def test_no_error_bars_without_intervals():
    (bare,) = [r for r in rows() if r.values["padding"] == "none"]
    ax = spc_figure("natural", *spc_bars([bare], "natural", ["H"])).axes[0]
    assert not [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert "interval" not in ax.get_title()


def test_the_distance_curves_error_bars_are_the_rows_intervals():
    fig = distance_curves_figure(*row_curves(rows()))
    ax = fig.axes[0]
    errors = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(errors) == 2  # zeros (both bins) and reflect (ring0); none recorded no interval
    zeros, reflect = (segments(e) for e in errors)
    ring0, ring1 = (t_interval(CURVES[f"test/by_distance/{b}/accuracy"]) for b in ("ring0", "ring1"))
    np.testing.assert_allclose(zeros, [(0.0, *ring0), (1.0, *ring1)])
    np.testing.assert_allclose(reflect, [(0.0, 0.35, 0.6)])
    assert len(ax.get_lines()) == 3  # one line per curve: the error bars add none
    texts = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
    assert any("95% interval" in t for t in texts)
