"""Fixtures and process setup shared by every test; the helpers the tests import are in tests/helpers/."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers.runs import TINY, compose_run, train_in_process

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


@pytest.fixture(scope="module")
def root(tmp_path_factory, request) -> str:
    """A folder per test module for the runs its tests share (``helpers.runs.cached_run``)."""
    return str(tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1]))


@pytest.fixture(scope="session")
def trained_semseg_run(tmp_path_factory) -> Path:
    """A small completed ``task=semseg`` run, trained once per test process and shared: the run dir the
    trust and safe-loading tests copy and then plant their payloads in."""
    out = tmp_path_factory.mktemp("trained_semseg")
    proc = train_in_process(
        "task=semseg",
        "data.image_size=32",
        "data.num_train=32",
        "data.num_val=0",
        "data.num_test=8",
        "trainer.max_epochs=1",
        "callbacks.progress=null",
        f"paths.output_root={out}",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return Path(proc.stdout.strip().splitlines()[-1])
