"""Console tables of a run's results (rows = test input, columns = target x SPC / MAE, like
Table 1 of Islam et al. 2020)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.table import Table


def parse_test_key(key: str) -> tuple[str, str, str] | None:
    """``test/<input>/<target>/<metric>`` -> ``(input, target, metric)``."""
    parts = key.split("/")
    return (parts[1], parts[2], parts[3]) if len(parts) == 4 and parts[0] == "test" else None


def results_table(metrics: Mapping[str, Any], title: str = "PosENet readout (SPC / MAE)") -> Table:
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
    """``training: 1000 steps, converged (largest relative decrease 0.4%)`` (posenc.convergence)."""
    if "train/converged" not in metrics:
        return None
    changes = [v for k, v in metrics.items() if k.endswith("/rel_decrease") and v is not None]
    worst = f"largest relative decrease {100 * max(changes):.1f}%" if changes else "too few steps to tell"
    state = "converged" if metrics["train/converged"] else "NOT converged"
    return f"training: {metrics.get('train/steps')} steps, {state} ({worst}); curve in figures/loss_curve.png"


def print_results(metrics: Mapping[str, Any]) -> None:
    console = Console(width=120)
    console.print(results_table(metrics))
    line = convergence_line(metrics)
    if line is not None:
        console.print(line, highlight=False)
