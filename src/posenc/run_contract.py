"""The run contract every task honours: in the Hydra run dir, a flat ``metrics.json``, the
resolved config, ``status.json``, figures and checkpoints; the last printed line is the run dir."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf

CONFIG_FIELDS = ("backbone", "padding", "task", "seed")


def write_json(path: Path, data: Mapping[str, Any]) -> Path:
    """Write atomically (temp file + rename), so a kill never leaves half a file."""
    tmp = path.with_suffix(path.suffix + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def config_fields(cfg: DictConfig, choices: Mapping[str, Any]) -> dict[str, Any]:
    """The chosen options (Hydra's ``runtime.choices``) of ``backbone``, ``padding``, ``task``,
    and the ``seed``."""
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
    results: Mapping[str, Any], cfg: DictConfig, choices: Mapping[str, Any], extra: Mapping[str, Any] = ()
) -> dict[str, Any]:
    metrics = {k: to_number(v) for k, v in results.items()}
    metrics.update(config_fields(cfg, choices))
    metrics.update(dict(extra))
    return metrics


def save_resolved_config(cfg: DictConfig, run_dir: Path) -> Path:
    path = run_dir / "config.yaml"
    path.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return path


def write_status(run_dir: Path, status: str, **fields: Any) -> Path:
    return write_json(run_dir / "status.json", {"status": status, **fields})


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
