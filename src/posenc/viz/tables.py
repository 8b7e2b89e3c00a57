"""Console tables of a run's results, built from its metric keys alone: a grid (``test/<row>/<column>/
<metric>``: PosENet's input x target x SPC / MAE, like Table 1 of Islam et al. 2020) or the overall
metrics, then per distance to the border; and the parsing of metric keys that sweep reports
share. Which table a task shows is its own choice (``PosencTask.console_tables``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

BY_DISTANCE = "by_distance"


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
    fmt = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
    table.add_row("all", *(fmt(overall.get(n)) for n in names))
    for i, name in enumerate(next(iter(bins.values()), [])):
        table.add_row(f"{BY_DISTANCE} {name}", *(fmt(values[n][i]) if n in values else "" for n in names))
    return table


def grid_table(metrics: Mapping[str, Any], title: str = "Test metrics (SPC / MAE)") -> Table:
    cells: dict[str, dict[str, dict[str, float]]] = {}
    targets: list[str] = []
    for key, value in metrics.items():
        parsed = parse_test_key(key)
        if parsed is None:
            continue
        name, target, metric = parsed
        cells.setdefault(name, {}).setdefault(target, {})[metric] = value
        if target not in targets:
            targets.append(target)
    table = Table(title=title)
    table.add_column("input")
    for target in targets:
        table.add_column(target, justify="right")
    for name, row in cells.items():
        table.add_row(name, *(_cell(row.get(t, {})) for t in targets))
    return table


def _cell(values: Mapping[str, float]) -> str:
    spc, mae = values.get("spc"), values.get("mae")
    fmt = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
    return f"{fmt(spc)} / {fmt(mae)}"


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
