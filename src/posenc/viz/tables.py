"""Console tables of a run's results, built from its metric keys alone: a grid (``test/<row>/<column>/
<metric>``: PosENet's input x target x SPC / MAE, like Table 1 of Islam et al. 2020) or the overall
metrics, then per distance to the border; and what sweep reports share of ``metrics.json``: the parsing
of its metric keys, and :data:`REPORT_ORDER`, where a run records its task's order. Which table a task
shows is its own choice (``PosencTask.console_tables``).

A metric with its 95% interval in ``<key>/ci_low`` and ``<key>/ci_high`` (posenc.metrics.intervals) is
shown as ``.952 [.941, .960]``; those keys are no metrics of their own (the parsers skip them). Every table
of posenc writes a number with its uncertainty by :func:`format_estimate`: the console, the sweep tables
(``.952 ± .010 [.939, .965]`` over seeds) and the atlas."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

BY_DISTANCE = "by_distance"
REPORT_ORDER = "report_order"  # metrics.json: the task's metric names in the order reports show them (a list)
CI_LOW, CI_HIGH = "ci_low", "ci_high"  # <key>/ci_low, <key>/ci_high: the 95% interval of metric <key>
CONTAINS_0 = "ci_contains_0"  # a table's <column>_ci_contains_0: whether <column>'s 95% interval holds 0


def interval_keys(key: str) -> tuple[str, str]:
    """Where a run records metric ``key``'s 95% interval: ``<key>/ci_low``, ``<key>/ci_high``."""
    return f"{key}/{CI_LOW}", f"{key}/{CI_HIGH}"


def interval(metrics: Mapping[str, Any], key: str) -> tuple[float, float] | None:
    """The 95% interval a run recorded for metric ``key`` (:func:`interval_keys`), None when it recorded
    none (or not numbers)."""
    low, high = (metrics.get(k) for k in interval_keys(key))
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high))
    return (float(low), float(high)) if numbers else None  # type: ignore[arg-type]  # numbers, checked above


def short_number(x: float, spec: str = ".3f") -> str:
    """``x`` formatted by ``spec`` with its leading 0 dropped (``.952``, ``-.050``, ``.016``); ``nan`` when not
    finite."""
    if not math.isfinite(x):
        return "nan"
    text = format(x, spec)
    return text.replace("0.", ".", 1) if text.startswith(("0.", "-0.")) else text


def format_estimate(
    value: float, std: float | None = None, interval: tuple[float, float] | None = None, spec: str = ".3f"
) -> str:
    """The one format of a number with its uncertainty (the console, the sweep tables, the atlas):
    ``.952 ± .010 [.939, .965]`` (a mean over seeds ± their sample std [its 95% interval]), ``.952 [.941,
    .960]`` (one run's value [its 95% interval]); without a std or a finite interval, the value alone as
    ``format(value, spec)`` (``0.952``)."""
    finite = interval is not None and all(math.isfinite(x) for x in interval)
    if std is None and not finite:
        return format(value, spec)
    text = short_number(value, spec) + ("" if std is None else f" ± {short_number(std, spec)}")
    if interval is not None and finite:
        text += f" [{short_number(interval[0], spec)}, {short_number(interval[1], spec)}]"
    return text


def with_interval(value: float, interval: tuple[float, float], digits: int = 3) -> str:
    """``.952 [.941, .960]``: a value and its interval as the tables show them (:func:`format_estimate`)."""
    return format_estimate(value, interval=interval, spec=f".{digits}f")


def format_value(metrics: Mapping[str, Any], key: str) -> str:
    """A console cell: ``—`` when absent, ``0.952`` alone, ``.952 [.941, .960]`` with its interval."""
    value = metrics.get(key)
    if value is None:
        return "—"
    return format_estimate(value, interval=interval(metrics, key))


def parse_test_key(key: str) -> tuple[str, str, str] | None:
    """A PosENet key ``test/<input>/<target>/<metric>`` -> ``(input, target, metric)``."""
    parts = key.split("/")
    ok = len(parts) == 4 and parts[0] == "test" and parts[1] != BY_DISTANCE
    return (parts[1], parts[2], parts[3]) if ok else None


def parse_task_key(key: str) -> str | None:
    """A trainable task's overall metric ``test/<metric>`` -> ``metric``."""
    parts = key.split("/")
    return parts[1] if len(parts) == 2 and parts[0] == "test" else None


def parse_distance_key(key: str) -> tuple[str, str] | None:
    """``test/by_distance/<bin>/<metric>`` -> ``(bin, metric)`` (bins: nearest the border first)."""
    parts = key.split("/")
    return (parts[2], parts[3]) if len(parts) == 4 and parts[:2] == ["test", BY_DISTANCE] else None


def has_test_metrics(metrics: Mapping[str, Any]) -> bool:
    return any(k.startswith("test/") for k in metrics)


def distance_curves(metrics: Mapping[str, Any]) -> tuple[dict[str, list[str]], dict[str, list[float]]]:
    """``({metric: [bins]}, {metric: [values]})`` of a run's ``test/by_distance/*`` keys, bins in
    their natural order (ring0, ring1, ... / px00-07, px08-15, ...)."""
    bins: dict[str, list[str]] = {}
    values: dict[str, list[float]] = {}
    for key in sorted(k for k in metrics if parse_distance_key(k)):
        name, metric = parse_distance_key(key)  # type: ignore[misc]
        bins.setdefault(metric, []).append(name)
        values.setdefault(metric, []).append(metrics[key])
    return bins, values


def task_table(metrics: Mapping[str, Any], title: str = "Test metrics") -> Table | None:
    """A trainable task's metrics: the overall row, then one row per distance-to-border bin."""
    overall = {m: v for k, v in metrics.items() if (m := parse_task_key(k))}
    bins, values = distance_curves(metrics)
    if not overall and not bins:
        return None
    names = list(dict.fromkeys([*overall, *bins]))
    table = Table(title=title)
    table.add_column("pixels / cells")
    for name in names:
        table.add_column(name, justify="right")
    table.add_row("all", *(format_value(metrics, f"test/{n}") for n in names))
    for name in next(iter(bins.values()), []):
        table.add_row(
            f"{BY_DISTANCE} {name}",
            *(format_value(metrics, f"test/{BY_DISTANCE}/{name}/{n}") if n in values else "" for n in names),
        )
    return table


def grid_table(metrics: Mapping[str, Any], title: str = "Test metrics (SPC / MAE)") -> Table:
    cells: dict[str, dict[str, dict[str, str]]] = {}
    targets: list[str] = []
    for key in metrics:
        parsed = parse_test_key(key)
        if parsed is None:
            continue
        name, target, metric = parsed
        cells.setdefault(name, {}).setdefault(target, {})[metric] = format_value(metrics, key)
        if target not in targets:
            targets.append(target)
    table = Table(title=title)
    table.add_column("input")
    for target in targets:
        table.add_column(target, justify="right")
    for name, row in cells.items():
        table.add_row(name, *(_cell(row.get(t, {})) for t in targets))
    return table


def _cell(values: Mapping[str, str]) -> str:
    return f"{values.get('spc', '—')} / {values.get('mae', '—')}"


def convergence_line(metrics: Mapping[str, Any]) -> str | None:
    """``training: 1000 steps, converged (largest relative change -0.4%)`` (posenc.run.convergence;
    negative: the loss fell)."""
    if "train/converged" not in metrics:
        return None
    changes = [v for k, v in metrics.items() if k.endswith("/rel_decrease") and v is not None]
    worst = f"largest relative change {-100 * max(changes, key=abs):+.1f}%" if changes else "too few steps to tell"
    state = "converged" if metrics["train/converged"] else "NOT converged"
    return f"training: {metrics.get('train/steps')} steps, {state} ({worst}); curve in figures/loss_curve.png"


def print_results(metrics: Mapping[str, Any], tables: Sequence[Table]) -> None:
    """``tables`` (the task's ``console_tables``), then the convergence line."""
    console = Console(width=120)
    for table in tables:
        console.print(table)
    line = convergence_line(metrics)
    if line is not None:
        console.print(line, highlight=False)
