"""The tables of a sweep report from its collected jobs (:mod:`posenc.sweeps.collect`): rows of swept values,
the markdown report (``results.md``: a table per test input, the trainable tasks' metrics, the published
numbers beside ours, the forward passes' wall time, the jobs that did not complete) and ``results.csv``.

The order of a task's metrics is the one its runs recorded in ``metrics.json``
(:data:`~posenc.viz.tables.REPORT_ORDER`), so a report imports no task; a run without it (one from before
it) lists its metrics in name order.

In the tables, cells over several seeds are ``mean ± std [low, high]`` (``.952 ± .010 [.939, .965]``) with
the *sample* standard deviation (``ddof=1``) and the 95% t-interval of the mean over the seeds
(:func:`~posenc.metrics.intervals.seed_interval`); a row with one value shows the value, with the 95%
bootstrap interval its run recorded over the test images (``<key>/ci_low``, ``<key>/ci_high``) when it did
(``.952 [.941, .960]``, else ``0.952``): the console's format, one formatter
(:func:`posenc.viz.tables.format_estimate`). ``n`` counts the completed jobs of a row.
"""

from __future__ import annotations

import csv
import math
import re
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from posenc.metrics.intervals import seed_interval
from posenc.sweeps.collect import JobResult, override_dict
from posenc.viz.tables import (
    REPORT_ORDER,
    format_estimate,
    interval,
    parse_distance_key,
    parse_task_key,
    parse_test_key,
)

NOT_SWEPT = ("seed", "backbone.weights")  # varied within a row (seeds: cells are mean ± std over them)


# ----------------------------------------------------------------------------- rows


@dataclass
class Row:
    """One distinct combination of swept values and its jobs (one per seed)."""

    label: str
    jobs: list[JobResult]
    values: dict[str, str] = field(default_factory=dict)  # swept key -> value

    @property
    def done(self) -> list[JobResult]:
        return [j for j in self.jobs if j.completed]

    @property
    def status(self) -> str:
        counts = Counter(j.status for j in self.jobs)
        return next(iter(counts)) if len(counts) == 1 else ", ".join(f"{n} {s}" for s, n in counts.items())

    @property
    def error(self) -> str | None:
        return next((j.error for j in self.jobs if not j.completed and j.error), None)

    def _measured(self, key: str, where: Mapping[str, str] | None = None) -> list[tuple[float, JobResult]]:
        """The finite values of ``key`` in the completed jobs (those whose overrides match ``where``, e.g. a
        pivot's value), each with its job."""
        jobs = [
            j for j in self.done if not where or all(override_dict(j.overrides).get(k) == v for k, v in where.items())
        ]
        return [
            (float(v), j)
            for j in jobs
            if isinstance(v := j.metrics.get(key), (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        ]

    def stats(self, key: str, where: Mapping[str, str] | None = None) -> tuple[float | None, float | None, int]:
        """Mean, sample std (``ddof=1``; None for fewer than 2 values) and n of ``key`` over
        the completed jobs (those whose overrides match ``where``, e.g. a pivot's value)."""
        return mean_std([v for v, _ in self._measured(key, where)])

    def interval(self, key: str, where: Mapping[str, str] | None = None) -> tuple[float, float] | None:
        """The 95% interval of the row's ``key``: over two or more seeds the t-interval of their mean, of one
        job the bootstrap interval its run recorded (None when it recorded none, or no job measured it)."""
        measured = self._measured(key, where)
        if len(measured) >= 2:
            return seed_interval([v for v, _ in measured])
        return interval(measured[0][1].metrics, key) if measured else None

    def cell(self, key: str, where: Mapping[str, str] | None = None) -> str:
        """``.952 ± .010 [.939, .965]`` over seeds, ``.952 [.941, .960]`` of one run, ``0.952`` of one run without
        an interval, ``—`` unmeasured (:func:`~posenc.viz.tables.format_estimate`, as the console shows them)."""
        mean, std, _ = self.stats(key, where)
        return "—" if mean is None else format_estimate(mean, std, self.interval(key, where))


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None, int]:
    """``(mean, sample std with ddof=1, n)``; std is None for n < 2, mean None for n = 0."""
    n = len(values)
    mean = statistics.fmean(values) if n else None
    return mean, (statistics.stdev(values) if n > 1 else None), n


def swept_keys(results: Sequence[JobResult], pivot: str | None = None) -> list[str]:
    """Override keys whose values differ between jobs (absent counts as a value), ``seed`` and
    the ``pivot`` excluded, in the order they first appear."""
    dicts = [override_dict(r.overrides) for r in results if r.overrides]
    keys = list(dict.fromkeys(k for d in dicts for k in d))
    return [k for k in keys if k not in NOT_SWEPT and k != pivot and len({d.get(k) for d in dicts}) > 1]


def pivot_values(results: Sequence[JobResult], pivot: str | None) -> list[str]:
    """The values the ``pivot`` key takes over the jobs, in launch order (``[]`` without a pivot)."""
    if not pivot:
        return []
    return list(dict.fromkeys(v for r in results if (v := override_dict(r.overrides).get(pivot)) is not None))


def build_rows(results: Sequence[JobResult], pivot: str | None = None) -> list[Row]:
    """Rows = distinct swept-value combinations (label ``key=value key=value``), in order of
    first appearance; a job dir without overrides gets a row of its own. The ``pivot`` key (a
    preset's ``pivot:``, e.g. ``task.label`` in ``channel_order``) spreads into columns instead."""
    keys = swept_keys(results, pivot)
    rows: dict[str, Row] = {}
    for r in results:
        if r.overrides:
            overrides = override_dict(r.overrides)
            values = {k: overrides.get(k, "—") for k in keys}
            label = " ".join(f"{k}={v}" for k, v in values.items()) or "all"
        else:
            values, label = {}, f"job {r.name} (no overrides)"
        rows.setdefault(label, Row(label, [], values)).jobs.append(r)
    return list(rows.values())


def _ordered(names: Iterable[str], order: Sequence[str]) -> list[str]:
    names = set(names)
    return [n for n in order if n in names] + sorted(names - set(order))


def report_order(results: Sequence[JobResult]) -> list[str]:
    """The metric names the jobs' runs recorded in report order (``metrics.json``'s
    :data:`~posenc.viz.tables.REPORT_ORDER`), merged in job order; ``[]`` when none did."""
    names: dict[str, None] = {}
    for r in results:
        recorded = r.metrics.get(REPORT_ORDER)
        if isinstance(recorded, list):
            names.update(dict.fromkeys(n for n in recorded if isinstance(n, str)))
    return list(names)


def metric_layout(results: Sequence[JobResult]) -> tuple[list[str], list[str], list[str]]:
    """The rows, columns and metrics of the ``test/<row>/<column>/<metric>`` grid keys in the jobs'
    metrics (PosENet: inputs, targets, SPC / MAE), in the order their runs recorded."""
    parsed = [p for r in results for k in r.metrics if (p := parse_test_key(k))]
    order = report_order(results)
    inputs, targets, metrics = ({p[level] for p in parsed} for level in range(3))
    return _ordered(inputs, order), _ordered(targets, order), _ordered(metrics, order)


def task_layout(results: Sequence[JobResult]) -> tuple[list[str], list[str], list[str]]:
    """The tasks' overall metrics, distance bins and per-bin metrics in the jobs."""
    keys = {k for r in results for k in r.metrics}
    order = report_order(results)
    overall = _ordered({m for k in keys if (m := parse_task_key(k))}, order)
    parsed = [p for k in keys if (p := parse_distance_key(k))]
    return overall, sorted({b for b, _ in parsed}), _ordered({m for _, m in parsed}, order)


def paper_lines(paper: Mapping[str, Any] | None, keys: Sequence[str]) -> list[str]:
    """Markdown rows of a preset's published numbers (its ``paper:`` block) under the columns
    ``keys``: one row per paper row with a number in one of them, labelled by its settings."""
    lines = []
    for entry in (paper or {}).get("rows") or []:
        metrics = entry.get("metrics") or {}
        if not any(k in metrics for k in keys):
            continue
        label = "paper: " + (" ".join(f"{k}={v}" for k, v in (entry.get("match") or {}).items()) or "all")
        cells = [f"{float(metrics[k]):.3f}" if k in metrics else "" for k in keys]
        lines.append("| " + " | ".join(_md_escape(c) for c in [label, "", "published", *cells]) + " |")
    return lines


def task_tables(
    rows: Sequence[Row], results: Sequence[JobResult], pivot: str | None = None, paper: Mapping[str, Any] | None = None
) -> list[str]:
    """Markdown: rows x overall metrics, then per binned metric rows x distance bins; with a
    ``pivot``, every column once per pivot value (``accuracy (location)``, ``accuracy (class)``)."""
    done = [r for r in results if r.completed]
    overall, bins, binned = task_layout(done)
    if not overall and not bins:
        return []
    values = pivot_values(done, pivot)
    spread_by = pivot or ""  # wheres are empty without a pivot
    wheres: list[dict[str, str]] = [{spread_by: v} for v in values] if pivot and values else [{}]
    lines: list[str] = []

    def table(title: str, columns: list[str], key: Any) -> None:
        spread = [
            (c, w)
            for c in columns
            for w in wheres
            if any(
                key(c) in j.metrics for j in done if not w or override_dict(j.overrides).get(spread_by) == w[spread_by]
            )
        ]
        names = [f"{c} ({w[spread_by]})" if w else c for c, w in spread]
        header = ["row", "n", "status", *names]
        lines.extend([f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)])
        for row in rows:
            cells = [row.cell(key(c), w) if row.done else "" for c, w in spread]
            lines.append(
                "| "
                + " | ".join(_md_escape(c) for c in [row.label, str(len(row.done)), _status_cell(row), *cells])
                + " |"
            )
        lines.extend(paper_lines(paper, [key(c) for c, _ in spread]))
        lines.append("")

    if overall:
        table("test metrics" + (f" (columns per {pivot})" if pivot else ""), overall, lambda m: f"test/{m}")
    for metric in binned:
        table(
            f"{metric} by distance to the border (bins nearest the border first)",
            bins,
            lambda b, metric=metric: f"test/by_distance/{b}/{metric}",
        )
    return lines


TIMED = re.compile(r"([^/]+)/time/([^/]+)_s")  # a task's forward-pass seconds in metrics.json: ppp/time/crops_s


def time_sections(results: Sequence[JobResult]) -> list[str]:
    """Per task, its completed jobs' run wall time against the forward passes they timed
    (``<task>/time/<part>_s``: PosENet's encoder in the atlas, PPP's crops and contexts); none when no job
    timed any."""
    spent: dict[str, dict[str, float]] = {}  # task -> part -> seconds, over its jobs
    walls: dict[str, list[float]] = {}
    for r in results:
        if not r.completed:
            continue
        timed = [
            (m[1], m[2], float(v))
            for k, v in r.metrics.items()
            if (m := TIMED.fullmatch(k)) and isinstance(v, (int, float)) and not isinstance(v, bool)
        ]
        for task in dict.fromkeys(task for task, _, _ in timed):
            walls.setdefault(task, []).append(r.wall_time_s or 0.0)
        for task, part, seconds in timed:
            parts = spent.setdefault(task, {})
            parts[part] = parts.get(part, 0.0) + seconds
    if not spent:
        return []
    lines = ["## Wall time", ""]
    for task, parts in spent.items():
        each = ", ".join(f"{part} {seconds:.1f} s" for part, seconds in parts.items())
        lines += [
            f"{len(walls[task])} {task} runs: {sum(walls[task]):.1f} s of run wall time, of which forward passes "
            f"{sum(parts.values()):.1f} s ({each}).",
            "",
        ]
    return lines


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _status_cell(row: Row) -> str:
    return row.status if row.error is None else f"{row.status}: {row.error}"


def markdown_report(
    results: Sequence[JobResult],
    title: str = "Sweep results",
    pivot: str | None = None,
    paper: Mapping[str, Any] | None = None,
) -> str:
    """Markdown: per test input a table (rows = swept values, columns = target x SPC / MAE,
    n and status; below them, rows ``paper: ...`` with a preset's published numbers), then the
    jobs that did not complete with their errors."""
    rows = build_rows(results, pivot)
    inputs, targets, grid_metrics = metric_layout([r for r in results if r.completed])
    counts = Counter(r.status for r in results)
    seeds = {override_dict(r.overrides).get("seed") for r in results}
    lines = [
        f"# {title}",
        "",
        f"{len(results)} jobs: "
        + ", ".join(f"{n} {s}" for s, n in counts.items())
        + ". "
        + (
            "Cells: mean ± sample std (ddof=1) over the seeds of a row [95% t-interval of the mean]; "
            "n = completed seeds."
            if len(seeds) > 1
            else "n = completed jobs of a row; [95% bootstrap interval over the test images] where a run recorded one."
        ),
        "",
    ]
    if paper and paper.get("rows"):
        lines += [
            f"Rows `paper: ...` are the published numbers: {paper.get('source')}."
            + (f" The paper's setting differs from this preset's: {paper['differs']}." if paper.get("differs") else ""),
            "",
        ]
    header = ["row", "n", "status"] + [f"{t} {m.upper()}" for t in targets for m in grid_metrics]
    task_lines = task_tables(rows, results, pivot, paper)
    lines += task_lines
    values = pivot_values([r for r in results if r.completed], pivot)
    wheres: list[dict[str, str]] = [{pivot: v} for v in values] if pivot and values else [{}]
    if pivot and values:
        header = ["row", "n", "status"] + [
            f"{t} {m.upper()} ({w[pivot]})" for t in targets for m in grid_metrics for w in wheres
        ]
    for name in inputs:
        lines += [f"## {name}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in rows:
            cells = [
                row.cell(f"test/{name}/{t}/{m}", w) if row.done else ""
                for t in targets
                for m in grid_metrics
                for w in wheres
            ]
            lines.append(
                "| "
                + " | ".join(_md_escape(c) for c in [row.label, str(len(row.done)), _status_cell(row), *cells])
                + " |"
            )
        lines.extend(
            paper_lines(paper, [f"test/{name}/{t}/{m}" for t in targets for m in grid_metrics for _ in wheres])
        )
        lines.append("")
    if not inputs and not task_lines:
        lines += ["No completed jobs: no metrics to tabulate.", ""]
        lines += ["| row | status |", "|---|---|"]
        lines += [f"| {_md_escape(row.label)} | {_md_escape(_status_cell(row))} |" for row in rows] + [""]
    lines += time_sections(results)
    labels = {id(j): row.label for row in rows for j in row.jobs}
    bad = [r for r in results if not r.completed]
    if bad:
        lines += ["## Jobs not completed", ""]
        lines += [f"- job {r.name or '(no dir)'} `{labels[id(r)]}`: **{r.status}** — {r.error or ''}" for r in bad] + [
            ""
        ]
    extra = [r for r in results if not r.expected]
    if extra:
        lines += ["Job dirs matching no job of multirun.yaml: " + ", ".join(r.name for r in extra), ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- files


def write_csv(path: Path, results: Sequence[JobResult]) -> Path:
    """One row per job: job, status, error, expected, every override key, every metric key
    (a metric key clashing with an earlier column is written as ``metrics.<key>``)."""
    base = ["job", "status", "error", "expected"]
    override_keys = list(dict.fromkeys(k for r in results for k in override_dict(r.overrides)))
    metric_keys = {k for r in results for k, v in r.metrics.items() if not isinstance(v, (list, dict))}  # no curves
    tests = [k for k in metric_keys if parse_test_key(k)]
    inputs, targets, grid_metrics = metric_layout(results)
    ordered_tests = [f"test/{i}/{t}/{m}" for i in inputs for t in targets for m in grid_metrics]
    ordered_tests = [k for k in ordered_tests if k in metric_keys] + sorted(set(tests) - set(ordered_tests))
    metric_cols = ordered_tests + sorted(metric_keys - set(tests))
    taken = set(base) | set(override_keys)
    metric_names = {k: f"metrics.{k}" if k in taken else k for k in metric_cols}
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(base + override_keys + [metric_names[k] for k in metric_cols])
        for r in results:
            overrides = override_dict(r.overrides)
            writer.writerow(
                [r.name, r.status, r.error or "", str(r.expected).lower()]
                + [overrides.get(k, "") for k in override_keys]
                + ["" if r.metrics.get(k) is None else r.metrics[k] for k in metric_cols]
            )
    return Path(path)
