"""Fixtures and process setup shared by every test; the helpers the tests import are in tests/helpers/."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers.runs import TINY, compose_run

if os.environ.get("PYTEST_XDIST_WORKER"):  # `pytest -n 2` (pyproject): one core per worker, no oversubscription
    import torch

    torch.set_num_threads(1)


@pytest.fixture
def run_tiny(tmp_path: Path):
    """Run ``posenc.run.train.run`` on the tiny config plus ``overrides``; returns metrics."""
    from posenc.run.train import run

    def _run(*overrides: str, name: str = "run") -> dict:
        cfg = compose_run([*TINY, *overrides], tmp_path / name)
        metrics = run(cfg)
        assert metrics is not None
        return metrics

    return _run
