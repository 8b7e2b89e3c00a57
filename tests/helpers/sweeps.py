"""Fake sweep dirs as Hydra and train.py leave them (only the files ``sweep.py collect`` reads)."""

from __future__ import annotations

import json
from collections.abc import Callable
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


# ----------------------------------------------------------------------------- a fake position atlas

ATLAS_PARAMS = {"experiment": "atlas_posenet,atlas_ppp"}  # conf/sweep/atlas.yaml's swept key besides the padding


def atlas_metrics(
    kind: str, padding: str, seed: int, values: dict[str, float], half_width: float | None = None
) -> dict[str, object]:
    """A fake atlas run's ``metrics.json`` (``kind``: ``posenet`` or ``ppp``): its task, padding and seed,
    ``values`` (metric key -> number: ``test/natural/H/spc``, ``tap/f1/natural/H/spc``, ``ppp/f1/snr``, ...),
    each with the 95% interval value ± ``half_width`` when given, and each tap's depth (PosENet) or test metric
    (PPP)."""
    metrics: dict[str, object] = {"task": kind, "padding": padding, "seed": seed, **values}
    if half_width is not None:
        for key, value in values.items():
            metrics[f"{key}/ci_low"], metrics[f"{key}/ci_high"] = value - half_width, value + half_width
    taps = {key.split("/")[1] for key in values if key.startswith(("tap/", "ppp/"))}
    for i, tap in enumerate(sorted(taps), start=1):
        if kind == "posenet":
            metrics.update({f"tap/{tap}/rf_px": 5 * i, f"tap/{tap}/stride": i, f"tap/{tap}/rf_rel": 0.1 * i})
        elif f"ppp/{tap}/rel_energy" in values:  # what a PPP run logs as its test metrics
            metrics[f"test/ppp_rel_energy_{tap}"] = values[f"ppp/{tap}/rel_energy"]
    return metrics


def fake_atlas(
    sweep_dir: Path,
    models: list[str],
    paddings: list[str],
    seeds: list[int],
    metrics_of: Callable[[str, str, str, int], dict[str, object] | None],
) -> Path:
    """A grouped atlas sweep dir as ``python sweep.py atlas groups=<models> padding=<paddings>
    seed=<seeds>`` leaves it: ``groups.json``, one multirun per model, and one job per experiment x padding x
    seed in Hydra's launch order, completed with the ``metrics.json`` ``metrics_of(model, kind, padding, seed)``
    gives (kind ``posenet`` / ``ppp``), or failed (``E: x``) where it gives None."""
    from posenc.sweeps.presets import expand_overrides

    spec = {"preset": "atlas", "report": "atlas", "groups": [[m, [f"backbone={m}"]] for m in models], "overrides": []}
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / "groups.json").write_text(json.dumps(spec))
    task = [f"padding={','.join(paddings)}", f"seed={','.join(map(str, seeds))}"]
    for model in models:
        group = fake_multirun(sweep_dir / model, task, params=dict(ATLAS_PARAMS))
        for num, job in enumerate(expand_overrides(ATLAS_PARAMS, task)):
            settings = dict(o.split("=", 1) for o in job)
            kind = settings["experiment"].removeprefix("atlas_")
            metrics = metrics_of(model, kind, settings["padding"], int(settings["seed"]))
            ending = {"status": "completed", "wall_time_s": 2.0} if metrics else {"status": "failed", "error": "E: x"}
            (fake_job(group, num, job, None, metrics=metrics) / "status.json").write_text(json.dumps(ending))
    return sweep_dir
