"""The run contract every task honours: in the Hydra run dir, a flat ``metrics.json``, the
resolved config, ``status.json``, figures and checkpoints; the last printed line is the run dir."""

from __future__ import annotations

import json
import math
import os
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf

from posenc.errors import PosencError
from posenc.io import read_json, write_json
from posenc.viz.tables import REPORT_ORDER

CONFIG_FIELDS = ("backbone", "padding", "task", "readout", "data", "seed")


def config_fields(cfg: DictConfig, choices: Mapping[str, Any]) -> dict[str, Any]:
    """The chosen options (Hydra's ``runtime.choices``) of ``backbone``, ``padding``, ``task``,
    ``readout`` and ``data``, and the ``seed``."""
    fields = {k: choices.get(k) for k in CONFIG_FIELDS if k != "seed"}
    fields["seed"] = cfg.seed
    return fields


def to_number(value: Any) -> Any:
    """Tensors / numpy scalars -> float; NaN -> None (valid JSON)."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def flat_metrics(
    results: Mapping[str, Any],
    cfg: DictConfig,
    choices: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
    order: Sequence[str] = (),
) -> dict[str, Any]:
    """``metrics.json``: the measured ``results`` as numbers, the :func:`config_fields`, ``extra`` and,
    under :data:`~posenc.viz.tables.REPORT_ORDER`, the task's metric names in ``order`` (the one list a
    sweep report reads to order a task's columns without importing it)."""
    metrics = {k: to_number(v) for k, v in results.items()}
    metrics.update(config_fields(cfg, choices))
    metrics.update(dict(extra or {}))
    metrics[REPORT_ORDER] = list(order)
    return metrics


def save_resolved_config(cfg: DictConfig, run_dir: Path) -> Path:
    path = run_dir / "config.yaml"
    path.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return path


def write_status(run_dir: Path, status: str, **fields: Any) -> Path:
    return write_json(run_dir / "status.json", {"status": status, **fields})


def read_status(run_dir: Path) -> dict[str, Any] | None:
    return read_json(Path(run_dir) / "status.json")


def mark_metrics(run_dir: Path, status: str, keep_measured: bool = True, **fields: Any) -> Path:
    """Set ``status`` (and ``fields``) in the run's ``metrics.json``, keeping what was written so far
    (``keep_measured=False``: only the config fields survive, for a run whose numbers are invalid,
    e.g. one that diverged)."""
    metrics = read_json(run_dir / "metrics.json") or {}
    if not keep_measured:
        metrics = {k: v for k, v in metrics.items() if k in CONFIG_FIELDS}
    metrics.update({"status": status, **fields})
    return write_json(run_dir / "metrics.json", metrics)


LOCK = ".posenc.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim_run_dir(run_dir: Path, resuming: bool) -> Path:
    """Take ``run_dir`` for this process (an exclusive lock file), or refuse in one line: a dir in
    use by another live run, or one that already holds a run this one would overwrite (unless it
    is resumed). A lock left by a killed run (its process gone) is taken over."""
    lock = run_dir / LOCK
    me = {"pid": os.getpid(), "host": socket.gethostname()}
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            holder = read_json(lock) or {}
            pid, host = holder.get("pid"), holder.get("host")
            if isinstance(pid, int) and (host != me["host"] or _alive(pid)):
                raise PosencError(
                    f"hydra.run.dir={run_dir} is in use by another run (pid {pid} on {host}); "
                    "valid: a dir of its own (leave hydra.run.dir unset for a fresh one)"
                ) from None
            lock.unlink(missing_ok=True)  # its process is gone
            continue
        with os.fdopen(fd, "w") as handle:
            json.dump(me, handle)
        break
    status = read_status(run_dir)
    if status is not None and not resuming:
        lock.unlink(missing_ok=True)
        raise PosencError(
            f"hydra.run.dir={run_dir} already holds a run (status {status.get('status')}); valid: a "
            f"dir of its own, or resume that run: python train.py --resume {run_dir}"
        )
    return lock


class PartialMetricsCallback(Callback):
    """Keep ``metrics.json`` current during training (status ``running``, last epoch's metrics),
    so what was measured survives a crash or a kill; the final write replaces it."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        run_dir = Path(trainer.default_root_dir)
        metrics = {k: to_number(v) for k, v in trainer.callback_metrics.items()}
        metrics.update({"status": "running", "epoch": trainer.current_epoch})
        write_json(run_dir / "metrics.json", metrics)
