"""One run, straight through: compose -> fit -> test -> write the run contract."""

from __future__ import annotations

import logging
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from posenc.errors import user_error
from posenc.reporting import print_results
from posenc.run_contract import flat_metrics, save_resolved_config, write_json, write_status

log = logging.getLogger(__name__)

# Expected and harmless here: the frozen backbone is in eval mode on purpose; Lightning's own
# pytree deprecation notice is not ours to fix.
warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")
warnings.filterwarnings("ignore", message=r".*LeafSpec.*")


def finish_loggers(loggers: list[Any]) -> None:
    """Close W&B runs so runs of a multirun never bleed into each other."""
    for logger in loggers:
        experiment = getattr(logger, "_experiment", None)
        if experiment is not None and hasattr(experiment, "finish"):
            experiment.finish()


def train(cfg: DictConfig, run_dir: Path, choices: dict[str, Any]) -> dict[str, Any]:
    """Fit and test the task of ``cfg``; write ``metrics.json`` into ``run_dir``; return it."""
    start = time.time()
    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    task = instantiate(cfg.task)
    loggers = [instantiate(c) for c in cfg.logger.values() if c is not None]
    callbacks = [instantiate(c) for c in cfg.callbacks.values() if c is not None]
    trainer = instantiate(cfg.trainer, logger=loggers, callbacks=callbacks, default_root_dir=str(run_dir))
    try:
        for logger in loggers:
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        trainer.fit(task, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
        results = trainer.test(task, datamodule=datamodule, verbose=False)
    finally:
        finish_loggers(loggers)
    merged = {k: v for result in results for k, v in result.items()}
    metrics = flat_metrics(merged, cfg, choices,
                           {"status": "completed", "wall_time_s": round(time.time() - start, 2)})
    if trainer.is_global_zero:
        write_json(run_dir / "metrics.json", metrics)
    return metrics


def run(cfg: DictConfig) -> dict[str, Any] | None:
    """Hydra task function: one run with its failure recorded in ``status.json``.

    In a multirun a failed job is recorded and the sweep goes on; a single run exits 2 on a
    user error (one line) and re-raises anything else.
    """
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    save_resolved_config(cfg, run_dir)
    write_status(run_dir, "running")
    try:
        metrics = train(cfg, run_dir, dict(hydra_cfg.runtime.choices))
    except Exception as exc:  # noqa: BLE001 - recorded, then reported per run mode
        user = user_error(exc)
        cause = user or exc
        line = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        write_status(run_dir, "failed", error=f"{type(cause).__name__}: {line}")
        (run_dir / "error.log").write_text(traceback.format_exc())
        if user is not None:
            print(f"error: {line}", file=sys.stderr)
            if not multirun:
                sys.exit(2)
        elif not multirun:
            raise
        log.error("job failed (%s); see %s", line, run_dir / "error.log")
        print(run_dir)
        return None
    write_status(run_dir, "completed")
    print_results(metrics)
    print(run_dir)
    return metrics
