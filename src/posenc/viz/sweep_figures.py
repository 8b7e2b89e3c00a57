"""Figures of a sweep report, drawn from the numbers :mod:`posenc.sweeps.reports` computes per row (one
row per combination of swept values): SPC bars per row and target, and the rows' distance-to-border
curves overlaid. When the sweep varies the padding, a row's padding is its colour
(:func:`posenc.viz.figures.padding_color`), as in every figure of the sweep. Error bars are 95% intervals
(over seeds the t-interval of the mean, of one run the bootstrap interval it recorded), drawn from their
low to their high end: asymmetric about the value where the interval is."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.container import BarContainer  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from posenc.viz.figures import INTERVAL_LABEL, by_distance_figure, interval_bars, padding_color  # noqa: E402

HATCHES = ("", "///", "...", "xxx", "\\\\\\", "ooo", "---", "+++")  # targets' bars when colour shows the padding
LINESTYLES = ("-", "--", ":", "-.")  # rows of one padding with other swept values
ERROR_BARS: dict[str, Any] = {"ecolor": "black", "elinewidth": 0.8, "capsize": 2}  # the bars' 95% intervals
Interval = tuple[float, float]
Bar = tuple[float | None, Interval | None]  # a row's mean and its 95% interval (None: no value, no interval)


def spc_figure(
    name: str,
    labels: Sequence[str],
    paddings: Sequence[str | None],
    bars: Mapping[str, Sequence[Bar]],
    xlabel: str = "",
) -> plt.Figure:
    """Grouped bars: one group per row (``labels``), one bar per target (``bars``: target -> one
    ``(mean, 95% interval)`` per row), SPC on test input ``name`` on a fixed -1..1 scale, each bar with its
    interval as an error bar from its low to its high end (:func:`~posenc.viz.figures.interval_bars`; none
    where a row has none). ``paddings``: each row's padding, None where the sweep does not vary it; with
    any, a bar's colour is its row's padding and the targets are told apart by hatching, else by colour."""
    targets = list(bars)
    by_padding = any(p is not None for p in paddings)
    width = 0.8 / max(len(targets), 1)
    fig, ax = plt.subplots(
        figsize=(min(40.0, max(6.0, 1.5 + 0.15 * len(labels) * max(1, len(targets)))), 5.0), layout="constrained"
    )
    with_intervals = False
    for j, target in enumerate(targets):
        means = [m if m is not None else 0.0 for m, _ in bars[target]]
        xs = [i - 0.4 + width * (j + 0.5) for i in range(len(labels))]
        style: dict[str, Any] = {"label": target}
        if by_padding:
            style = {
                "color": [padding_color(p or "?") for p in paddings],
                "hatch": HATCHES[j % len(HATCHES)],
                "edgecolor": "white",
                "linewidth": 0,
            }
        container = ax.bar(xs, means, width, **style)
        errors = interval_bars(ax, xs, [ci if m is not None else None for m, ci in bars[target]], **ERROR_BARS)
        if errors is not None:
            container.errorbar, with_intervals = errors, True  # the bars' own error bars, as ax.bar(yerr=) sets
    ax.set_xticks(range(len(labels)), labels, fontsize=7, rotation=30, ha="right")
    ax.set_xlabel(xlabel)
    ax.axhline(0.0, color="black", linewidth=0.6)
    ax.set_ylim(-1.0, 1.0)
    ax.set_ylabel("SPC")
    ax.set_title(f"SPC on {name} inputs" + (f"; error bars: {INTERVAL_LABEL}" if with_intervals else ""))
    if not by_padding:
        interval_handles = [Line2D([], [], color="black", marker="_", label=INTERVAL_LABEL)] if with_intervals else []
        bar_handles: list[Any] = [c for c in ax.containers if isinstance(c, BarContainer)]
        ax.legend(handles=[*bar_handles, *interval_handles], fontsize=7, ncols=min(len(bar_handles) + 1, 5))
        return fig
    shown = list(dict.fromkeys(p for p in paddings if p is not None))
    handles = [Patch(facecolor=padding_color(p), label=p) for p in shown]  # the title names the error bars
    legend = ax.legend(
        handles=handles, fontsize=7, ncols=min(len(handles), 4), loc="lower left", title="padding", title_fontsize=7
    )
    if len(targets) > 1:
        ax.add_artist(legend)
        ax.legend(
            handles=[
                Patch(facecolor="white", edgecolor="black", hatch=HATCHES[j % len(HATCHES)], label=t)
                for j, t in enumerate(targets)
            ],
            fontsize=7,
            ncols=min(len(targets), 5),
            loc="lower right",
            title="target",
            title_fontsize=7,
        )
    return fig


def distance_curves_figure(
    bins: Mapping[str, list[str]],
    curves: Mapping[str, Mapping[str, list[float]]],
    looks: Mapping[str, tuple[str | None, tuple[str, ...]]],
    intervals: Mapping[str, Mapping[str, Sequence[Interval | None]]] | None = None,
) -> plt.Figure:
    """The rows' distance-to-border curves overlaid (``curves``: label -> panel -> one value per bin of
    ``bins[panel]``), one panel per metric (:func:`~posenc.viz.figures.by_distance_figure`), each value with
    its 95% interval (``intervals``, shaped like ``curves``) as an error bar. ``looks``: a curve's padding
    (None: not swept) and its other swept values; a padded curve takes its padding's colour and one line
    style per distinct other values."""
    styles: dict[str, dict[str, Any]] = {}
    others: dict[tuple[str, ...], int] = {}  # other values -> line style, in order of first appearance
    for label, (padding, other) in looks.items():
        if padding is not None:
            style = others.setdefault(other, len(others))
            styles[label] = {"color": padding_color(padding), "ls": LINESTYLES[style % len(LINESTYLES)]}
    return by_distance_figure(dict(bins), {}, {k: dict(v) for k, v in curves.items()}, styles, intervals)
