"""One format for a number with its uncertainty (issue 33 §3): the console's ``.952 [.941, .960]`` is the
sweep tables' too (``results.md``), over seeds ``.920 ± .028 [.666, 1.174]``; one formatter
(:func:`posenc.viz.tables.format_estimate`), no second copy in the sweeps."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest
from rich.console import Console

import posenc.sweeps.tables as sweep_tables
from posenc.sweeps.collect import JobResult
from posenc.sweeps.tables import build_rows, markdown_report
from posenc.viz.tables import format_estimate, format_value, grid_table, with_interval

KEY = "test/natural/H/spc"
RECORDED = {KEY: 0.90, f"{KEY}/ci_low": 0.8, f"{KEY}/ci_high": 0.95}


def job(seed: int, metrics: dict[str, float]) -> JobResult:
    return JobResult(Path(f"/tmp/job{seed}"), ["padding=zeros", f"seed={seed}"], "completed", metrics=metrics)


def console_text(metrics: dict[str, float]) -> str:
    out = io.StringIO()
    Console(file=out, width=200).print(grid_table(metrics))
    return out.getvalue()


def md_cells(report: str) -> list[str]:
    line = next(line for line in report.splitlines() if line.startswith("| padding=zeros") or line.startswith("| all"))
    return line.strip("| ").split(" | ")[3:]


def test_a_run_with_its_interval_reads_the_same_in_the_console_and_the_sweep_table():
    assert format_value(RECORDED, KEY) == ".900 [.800, .950]"
    assert ".900 [.800, .950]" in console_text(RECORDED)
    (row,) = build_rows([job(0, RECORDED)])
    assert row.cell(KEY) == format_value(RECORDED, KEY)
    assert md_cells(markdown_report([job(0, RECORDED)]))[0] == ".900 [.800, .950]"


def test_a_run_without_an_interval_reads_the_same_too():
    bare = {KEY: 0.9}
    (row,) = build_rows([job(0, bare)])
    assert row.cell(KEY) == format_value(bare, KEY) == "0.900"
    assert md_cells(markdown_report([job(0, bare)]))[0] == "0.900"


def test_seeds_show_mean_std_and_the_t_interval_in_the_consoles_style():
    jobs = [job(0, {**RECORDED}), job(1, {KEY: 0.94, f"{KEY}/ci_low": 0.85, f"{KEY}/ci_high": 0.97})]
    # mean .92, sample std .0283, t(.975, df 1) = 12.706205: .92 ± 12.706205 * .0283 / sqrt(2)
    half = 12.706204736174694 * 0.02828427 / math.sqrt(2)
    assert (0.92 - half, 0.92 + half) == pytest.approx((0.666, 1.174), abs=5e-4)
    assert md_cells(markdown_report(jobs))[0] == ".920 ± .028 [.666, 1.174]"


def test_one_formatter():
    assert not hasattr(sweep_tables, "format_cell")
    assert (
        with_interval(0.9523, (0.941, 0.96)) == format_estimate(0.9523, interval=(0.941, 0.96)) == ".952 [.941, .960]"
    )
    assert format_estimate(0.952, 0.0104, (0.939, 0.965)) == ".952 ± .010 [.939, .965]"
    assert format_estimate(-0.05, None, (-0.12, 0.02)) == "-.050 [-.120, .020]"
    assert format_estimate(0.0161, None, (0.012, 0.02), spec=".2g") == ".016 [.012, .02]"
    assert format_estimate(0.952, None, (math.nan, math.nan)) == "0.952"  # no finite interval: the value alone
