"""The convergence flag every run records, as pure functions over loss curves (the criterion is
stated in :mod:`posenc.run.convergence`, whose ``LossCurve`` callback records a Lightning run's curves;
the atlas engine, :mod:`posenc.engine`, records its own and judges them here)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from posenc.errors import PosencError

CURVE_POINTS = 100  # at most this many points of each curve go into metrics.json
MIN_WINDOW = 20  # steps: a shorter window's mean is mostly batch-to-batch noise (measured: +-2-3%)
MIN_VAL_WINDOW = 3  # validation checks (each already a mean over the held-out set)


def window_steps(num_steps: int, window: float, min_window: int = MIN_WINDOW) -> int:
    """Steps in one window: ``window`` of the run, at least ``min_window``."""
    return max(min_window, round(window * num_steps))


def relative_decrease(losses: Sequence[float], w: int) -> float:
    """Relative decrease of the mean loss from the ``w`` steps before the last ``w`` to the last
    ``w``; ``nan`` when ``losses`` is shorter than ``2 w`` (too short to tell)."""
    n = len(losses)
    if w < 1 or n < 2 * w:
        return math.nan
    last = sum(losses[n - w :]) / w
    before = sum(losses[n - 2 * w : n - w]) / w
    return (before - last) / before if before > 0 else 0.0


def constant_lr_phases(lrs: Sequence[float]) -> list[tuple[int, int]]:
    """``[start, end)`` of every run of equal learning rates."""
    bounds = [0] + [i for i in range(1, len(lrs)) if lrs[i] != lrs[i - 1]] + [len(lrs)]
    return [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def convergence(
    curves: Mapping[str, Sequence[float]],
    lrs: Sequence[float] | None = None,
    window: float = 0.1,
    tol: float = 0.02,
    min_window: int = MIN_WINDOW,
    prefix: str = "train",
    floor: float | None = None,
) -> dict[str, Any]:
    """Flat summary of ``curves`` (name -> losses, one per point; ``lrs``: the learning rate at
    each point): ``train/converged`` (every curve within ``tol`` at the end of every long-enough
    lr phase; False when too short to tell) and every curve's largest relative decrease,
    ``<prefix>/<name>/rel_decrease`` (None when too short). ``floor``: a curve whose last window
    averages at most this is converged whatever its relative change (a cross-entropy that has
    reached ~1e-4 keeps halving as the logits grow, while nothing left to learn)."""
    if not 0 < window <= 0.5:
        raise PosencError(f"convergence window {window} is not valid: expected a fraction in (0, 0.5]")
    summary: dict[str, Any] = {}
    converged = bool(curves)
    for name, losses in curves.items():
        w = window_steps(len(losses), window, min_window)
        spans = [(a, b) for a, b in constant_lr_phases(lrs or []) if b - a >= 2 * w] or [(0, len(losses))]
        # the largest change either way: a held-out loss that rises by more than tol (the readout
        # drifting or overfitting) depends on the budget as much as one that still falls
        change = max(
            (relative_decrease(losses[a:b], w) for a, b in spans), key=lambda d: math.inf if math.isnan(d) else abs(d)
        )
        summary[f"{prefix}/{name}/rel_decrease"] = None if math.isnan(change) else change
        settled = floor is not None and len(losses) >= 2 * w and sum(losses[-w:]) / w <= floor
        converged &= settled or (not math.isnan(change) and abs(change) <= tol)
    summary["train/converged"] = converged
    return summary


def downsample(values: Sequence[float], points: int = CURVE_POINTS) -> tuple[list[int], list[float]]:
    """``(steps, means)``: the curve averaged over at most ``points`` equal bins of steps; each
    bin is labelled with its last step (1-based)."""
    n = len(values)
    bins = max(1, min(points, n))
    edges = [round(i * n / bins) for i in range(bins + 1)]
    steps = [edges[i + 1] for i in range(bins) if edges[i + 1] > edges[i]]
    means = [
        sum(values[edges[i] : edges[i + 1]]) / (edges[i + 1] - edges[i]) for i in range(bins) if edges[i + 1] > edges[i]
    ]
    return steps, means


def _span(steps: Sequence[float], a: int, b: int) -> tuple[float, float]:
    """x-extent of the points ``steps[a:b]``, widened halfway to their neighbours (not past the ends)."""
    left = (steps[a - 1] + steps[a]) / 2 if a > 0 else steps[a]
    right = (steps[b - 1] + steps[b]) / 2 if b < len(steps) else steps[b - 1]
    return left, right


def convergence_windows(
    curves: Mapping[str, Sequence[float]],
    window: float = 0.1,
    val: tuple[Sequence[float], Mapping[str, Sequence[float]]] | None = None,
    lrs: Sequence[float] | None = None,
) -> tuple[list[tuple[tuple[float, float], tuple[float, float]]], int, str]:
    """The windows the convergence flag compares (:func:`posenc.run.convergence.convergence`), in
    optimizer steps: ``([(before, last), ...], w, unit)`` -- the held-out checks' last two windows of
    ``w`` checks when ``val`` is given (what :class:`~posenc.run.convergence.LossCurve` judges then),
    else the training loss's last two windows of ``w`` steps at the end of every long-enough lr phase;
    ``[]`` when the run is too short to tell."""
    if val is not None and val[1]:
        steps = [float(s) for s in val[0]]
        w = window_steps(len(steps), window, MIN_VAL_WINDOW)
        if len(steps) < 2 * w:
            return [], w, "checks"
        return (
            [(_span(steps, len(steps) - 2 * w, len(steps) - w), _span(steps, len(steps) - w, len(steps)))],
            w,
            "checks",
        )
    n = max(len(v) for v in curves.values())
    w = window_steps(n, window, MIN_WINDOW)
    spans = [(a, b) for a, b in constant_lr_phases(lrs or []) if b - a >= 2 * w] or [(0, n)]
    steps = [float(s) for s in range(1, n + 1)]
    windows = [(_span(steps, b - 2 * w, b - w), _span(steps, b - w, b)) for a, b in spans if b - a >= 2 * w]
    return windows, w, "steps"
