"""The loss-curve figure of a run (``figures/loss_curve.png``): training and held-out losses per
optimizer step, with the two windows the convergence flag compared (:mod:`posenc.run.convergence`
computes the flag and the windows) shaded and named."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _window_labels(w: int, unit: str, on: str, tol: float, floor: float | None, phases: int) -> tuple[str, str]:
    """Legend text of the two shaded windows: what the flag compared, and when it says converged."""
    where = " at the end of each lr phase" if phases > 1 else ""
    loss = "held-out (val)" if on == "val" else "training"
    before = f"previous {w} {unit} ({loss} loss){where}"
    last = (
        f"last {w} {unit}: converged if the mean of every {loss} curve changed by at most "
        f"{100 * tol:.0f}% from the previous window" + (f", or is at most {floor:g}" if floor is not None else "")
    )
    return before, last


Windows = tuple[list[tuple[tuple[float, float], tuple[float, float]]], int, str]  # convergence_windows()


def loss_curve_figure(
    curves: dict[str, list[float]],
    windows: Windows,
    val: tuple[Sequence[float], dict[str, list[float]]] | None = None,
    tol: float = 0.02,
    floor: float | None = None,
    converged: bool | None = None,
) -> plt.Figure:
    """Training loss per optimizer step (log scale; the total and every named part) and, when
    given, the held-out losses at their steps (dashed, markers), with the two windows the
    convergence flag compares shaded and named in the legend (``windows``, from
    :func:`posenc.run.convergence.convergence_windows`; the
    held-out curve when ``val`` is given, as :mod:`posenc.run.convergence` judges it); the
    flag's verdict (``converged``) in the title."""
    fig, ax = plt.subplots(figsize=(7.5, 4.4), layout="constrained")
    on = "val" if val is not None and val[1] else "train"
    spans, w, unit = windows
    labels = _window_labels(w, unit, on, tol, floor, len(spans))
    for k, (before, last) in enumerate(spans):
        ax.axvspan(*before, color="#deebf7", lw=0, label=labels[0] if k == 0 else None)
        ax.axvspan(*last, color="#fde0c5", lw=0, label=labels[1] if k == 0 else None)
    if not spans:
        ax.plot([], [], " ", label=f"too short to tell: fewer than two windows of {w} {unit} ({on} loss)")
    colors = {}
    for name, values in curves.items():
        (line,) = ax.plot(
            range(1, len(values) + 1),
            values,
            lw=1.6 if name == "loss" else 0.7,
            label=f"train {name}",
            color="black" if name == "loss" else None,
            alpha=0.8,
        )
        colors[name] = line.get_color()
    if val is not None:
        steps, losses = val
        for name, values in losses.items():
            ax.plot(steps, values, "--o", ms=2.5, lw=1.2, color=colors.get(name), label=f"val {name}")
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    handles, names = ax.get_legend_handles_labels()
    shaded = [(h, t) for h, t in zip(handles, names) if not t.startswith(("train ", "val "))]
    lines = [(h, t) for h, t in zip(handles, names) if t.startswith(("train ", "val "))]
    ax.legend(*zip(*lines), fontsize=6, ncol=3)
    fig.legend(
        *zip(*shaded), loc="outside lower center", fontsize=7, title=f"convergence flag ({on} loss)", title_fontsize=7
    )
    if converged is not None:
        ax.set_title(f"training: {'converged' if converged else 'not converged'} (flag on the {on} loss)", fontsize=9)
    return fig
