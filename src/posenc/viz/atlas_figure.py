"""The position atlas's figure (``atlas.png``; docs/atlas.md): per padding, how much absolute position
every tap of every model holds, at its depth. Drawn from the atlas's long-form rows
(:func:`posenc.analysis.atlas.atlas_rows`: one plain dict per cell and tap), nothing else. A square whose
H SPC's 95% interval contains 0 (``H_spc_ci_contains_0``) is crossed (:data:`ZERO_MARKER`, in the legend):
no position shown beyond its uncertainty."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import LogNorm, Normalize  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from posenc.viz.figures import INTERVAL_LABEL, padding_color  # noqa: E402
from posenc.viz.tables import CONTAINS_0  # noqa: E402

Row = Mapping[str, Any]  # one cell and tap: model, padding, weights, tap, rf_rel, H_spc, ppp_snr, ..., note
GLOBAL_GAP = 1.0  # x units between the deepest local tap and the first global one, in log2(receptive field / size)
LOG_DECADES_SHOWN = 1e-5  # the PPP panels' colour scale spans five decades below the largest value; less is darkest
PANELS = (
    ("H_spc", "PosENet H SPC", "viridis", False),
    ("ppp_rel_energy", "PPP relative energy (log)", "magma", True),
    ("ppp_snr", "PPP SNR (log)", "magma", True),
)
"""The figure's rows. PPP is read by its relative energy first (docs/ppp.md: the SNR's denominator, the
reference's variance, collapses in deep random networks, so across depths and families the SNR partly
measures that collapse); the SNR is drawn beside it."""
MARKED = ("H_spc",)  # the panels whose squares are crossed where the number's 95% interval contains 0
ZERO_MARKER: dict[str, Any] = {"marker": "x", "color": "#ff3030", "s": 22, "linewidths": 1.2}
ZERO_LABEL = f"H SPC's {INTERVAL_LABEL} contains 0"


def local_extent(rows: Sequence[Row]) -> float:
    """The deepest local tap's log2(receptive field / image size) (0 when there is none)."""
    local = [math.log2(r["rf_rel"]) for r in rows if r.get("rf_rel")]
    return max(local) if local else 0.0


def tap_positions(rows: Sequence[Row], all_taps: str) -> dict[tuple[str, str, str, str], float]:
    """x of every tap on the atlas's depth axis: log2(receptive field / image size); global taps
    after the deepest local one (:data:`GLOBAL_GAP`), spread by block index. The multi-tap readout
    (tap ``all_taps``) and a cell's tap-less row have none."""
    right = local_extent(rows) + GLOBAL_GAP
    positions = {}
    for row in rows:
        if row["tap"] in (None, all_taps):
            continue
        key = (row["model"], row["padding"], row["weights"], row["tap"])
        if row.get("rf_rel"):
            positions[key] = math.log2(row["rf_rel"])
        else:
            index = int(row["tap"][1:]) if str(row["tap"])[1:].isdigit() else 0
            positions[key] = right + 0.25 * (index - 1)
    return positions


def _norm(values: Sequence[float | None], log: bool) -> Normalize:
    if not log:
        return Normalize(vmin=0.0, vmax=1.0)
    positive = [v for v in values if v and v > 0]
    if not positive or min(positive) == max(positive):
        return LogNorm(vmin=1e-4, vmax=1.0)
    top = max(positive)  # five decades: a pattern 10^-16 of the features (ConvNeXt at init) would wash out the rest
    return LogNorm(vmin=max(min(positive), top * LOG_DECADES_SHOWN), vmax=top, clip=True)


def short_note(note: str | None) -> str:
    """A cell's note as the figure shows it (the table keeps it whole)."""
    if not note:
        return "n/a"
    if "padding-free reference" in note:
        return "PPP n/a: no padding-free reference"
    return note[:48]


def atlas_figure(rows: Sequence[Row], paddings: Sequence[str], all_taps: str) -> plt.Figure:
    """One column of panels per padding (in the order of ``paddings``) and one row per :data:`PANELS`
    metric (H SPC; PPP relative energy and SNR on log colour scales). Models are rows of squares, one per
    tap at its log2(receptive field / image size), global taps to the right, the multi-tap readout (tap
    ``all_taps``, SPC only) last. A cell without numbers shows its note. A square of a :data:`MARKED` metric
    whose 95% interval contains 0 is crossed, named in the figure's legend."""
    models = list(dict.fromkeys((r["model"], r["weights"]) for r in rows))
    positions = tap_positions(rows, all_taps)
    xs = list(positions.values()) or [0.0]
    x_all = max(xs) + 1.5
    fig, axes = plt.subplots(
        len(PANELS),
        len(paddings),
        squeeze=False,
        sharey=True,
        layout="constrained",
        figsize=(4.2 * len(paddings) + 2.5, len(PANELS) * (0.3 * len(models) + 1.3)),
    )
    right = local_extent(rows)
    ticks = list(range(math.floor(min(xs)), math.floor(right) + 1))
    has_global = any(x > right + 1e-9 for x in xs)
    tick_at = [*ticks, *([right + GLOBAL_GAP] if has_global else []), x_all]
    tick_labels = [*map(str, ticks), *(["global"] if has_global else []), "all"]
    labels = [m if w == "random init" else f"{m} ({w})" for m, w in models]
    crossed = False
    for i, (metric, title, cmap, log) in enumerate(PANELS):
        norm = _norm([r.get(metric) for r in rows], log)
        for j, padding in enumerate(paddings):
            ax = axes[i, j]
            for y, (model, weights) in enumerate(models):
                cell = [r for r in rows if (r["model"], r["weights"], r["padding"]) == (model, weights, padding)]
                placed = [(positions.get((model, padding, weights, r["tap"])), r) for r in cell]
                if metric == "H_spc":
                    placed += [(x_all, r) for r in cell if r["tap"] == all_taps]
                placed = [(x, r) for x, r in placed if x is not None and r.get(metric) is not None]
                pts = [(x, r[metric]) for x, r in placed if not log or r[metric] > 0]
                zeros = [x for x, r in placed if metric in MARKED and r.get(f"{metric}_{CONTAINS_0}")]
                if pts:
                    ax.scatter(
                        [p[0] for p in pts],
                        [y] * len(pts),
                        c=[p[1] for p in pts],
                        cmap=cmap,
                        norm=norm,
                        marker="s",
                        s=90,
                        edgecolors="white",
                        linewidths=0.5,
                    )
                if zeros:
                    ax.scatter(zeros, [y] * len(zeros), **ZERO_MARKER)
                    crossed = True
                if not pts:
                    note = next((r["note"] for r in cell if r.get("note")), "") if cell else "not run"
                    ax.text(
                        0.5,
                        y,
                        short_note(note),
                        transform=ax.get_yaxis_transform(),
                        ha="center",
                        va="center",
                        fontsize=6,
                        color="grey",
                    )
            ax.set_yticks(range(len(models)), labels, fontsize=7)
            ax.set_ylim(len(models) - 0.5, -0.5)
            ax.set_title(f"{padding}: {title}", fontsize=9, color=padding_color(padding))  # the sweep's padding colours
            ax.grid(axis="x", color="0.9")
            ax.axvline(0.0, color="0.7", lw=0.8, ls="--")  # receptive field = the image
            ax.set_xticks(tick_at, tick_labels, fontsize=7)
            if i == len(PANELS) - 1:
                ax.set_xlabel("log2(receptive field / image size); global taps, then all taps, right", fontsize=7)
        fig.colorbar(
            plt.cm.ScalarMappable(norm=norm, cmap=cmap),
            ax=axes[i, :].tolist(),
            fraction=0.015,
            label=title.replace(" (log)", ""),
        )
    if crossed:
        marker = {k: v for k, v in ZERO_MARKER.items() if k not in ("s", "linewidths")}
        handle = Line2D([], [], ls="none", markeredgewidth=ZERO_MARKER["linewidths"], label=ZERO_LABEL, **marker)
        fig.legend(handles=[handle], loc="outside lower center", fontsize=7)
    return fig
