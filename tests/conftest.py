"""Shared test helpers: compose the real configs with Hydra's compose API and shrink them."""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

import pytest

from posenc.core.compose import CONF_DIR, compose_run  # noqa: F401 - re-exported for the tests

ROOT = Path(__file__).resolve().parents[1]

if os.environ.get("PYTEST_XDIST_WORKER"):  # `pytest -n 2` (pyproject): one core per worker, no oversubscription
    import torch

    torch.set_num_threads(1)

# A run that finishes in seconds on 2 CPU cores: tiny backbone, 64 px images.
TINY = [
    "backbone=tiny",
    "data.image_size=64",
    "data.num_train=48",
    "data.num_test=8",
    "data.batch_size=16",
    "trainer.max_epochs=4",
    "callbacks.progress=null",
]


@pytest.fixture
def run_tiny(tmp_path: Path):
    """Run ``posenc.core.training.run`` on the tiny config plus ``overrides``; returns metrics."""
    from posenc.core.training import run

    def _run(*overrides: str, name: str = "run") -> dict:
        cfg = compose_run([*TINY, *overrides], tmp_path / name)
        metrics = run(cfg)
        assert metrics is not None
        return metrics

    return _run


@lru_cache(maxsize=None)
def cached_run(tmp_root: str, *overrides: str) -> dict:
    """Metrics of one composed run, trained once per worker and shared by the effect tests of a
    module (``tmp_root`` from a module-scoped ``tmp_path_factory`` dir)."""
    from posenc.core.training import run

    # a readable run dir name, short enough for any file system: the last overrides + a digest of all
    name = "_".join(o.replace("=", "-").replace(".", "-") for o in overrides[-2:]) or "default"
    name = f"{name[:60]}_{hashlib.sha1(repr(overrides).encode()).hexdigest()[:8]}"
    metrics = run(compose_run(list(overrides), f"{tmp_root}/{name}"))
    assert metrics is not None
    return metrics
