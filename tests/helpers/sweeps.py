"""Fake sweep dirs as Hydra and train.py leave them (only the files ``sweep.py collect`` reads)."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import OmegaConf

TARGETS = ("H", "V", "G", "HS", "VS")

# the two-stage preset (padding_then_probe) at a size that runs in seconds, locally and on the cluster
TWO_STAGE_SMALL = [
    "data.image_size=32",
    "data.num_train=16",
    "data.num_val=8",
    "data.num_test=8",
    "data.batch_size=8",
    "trainer.max_steps=4",
    "callbacks.progress=null",
]


def fake_multirun(sweep_dir: Path, task: list[str], params: dict[str, str] | None = None) -> Path:
    """A minimal ``multirun.yaml`` as Hydra writes it (only the keys collect reads)."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    cfg = {
        "sweep_name": "fake",
        "hydra": {
            "sweeper": {
                "_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
                "max_batch_size": None,
                "params": params or {},
            },
            "overrides": {"hydra": [f"hydra.sweep.dir={sweep_dir}"], "task": task},
        },
    }
    OmegaConf.save(OmegaConf.create(cfg), sweep_dir / "multirun.yaml")
    return sweep_dir


INPUTS = ("natural", "noise")


def fake_metrics(value: float) -> dict[str, float | str | list[str]]:
    """A PosENet run's ``metrics.json``: SPC / MAE per input x target, and its task's report order."""
    metrics: dict[str, float | str | list[str]] = {
        "status": "completed",
        "seed": 0,
        "report_order": [*INPUTS, *TARGETS, "spc", "mae"],
    }
    for name in INPUTS:
        for i, target in enumerate(TARGETS):
            metrics[f"test/{name}/{target}/spc"] = value + i / 10
            metrics[f"test/{name}/{target}/mae"] = 1 - value
    return metrics


def fake_job(
    sweep_dir: Path,
    num: int,
    overrides: list[str],
    status: str | None,
    error: str | None = None,
    metrics: dict | None = None,
) -> Path:
    job = sweep_dir / str(num)
    (job / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(overrides), job / ".hydra" / "overrides.yaml")
    if status is not None:
        data = {"status": status, **({"error": error} if error else {})}
        (job / "status.json").write_text(json.dumps(data))
    if metrics is not None:
        (job / "metrics.json").write_text(json.dumps(metrics))
    return job
