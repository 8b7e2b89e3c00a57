"""The GPU check's comparisons (benchmarks/gpu_check.py; the whole script runs in CI after the tests)."""

from __future__ import annotations

import importlib.util
import sys

from helpers.runs import ROOT


def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_cpu_reference_is_the_results_page_of_the_main_job():
    """Every input x target SPC of docs/results/main_job.md, as the GPU runs are compared with it."""
    check = gpu_check()
    reference = check.read_reference(check.REFERENCE)
    assert len(reference) == 4 * 5 and reference["test/black/H/spc"] == 0.0
    assert 0.9 < reference["test/natural/H/spc"] <= 1.0
    gap, key = check.max_gap({**reference, "test/natural/G/spc": reference["test/natural/G/spc"] - 0.02}, reference)
    assert key == "test/natural/G/spc" and abs(gap - 0.02) < 1e-9
