"""One run, straight through: compose -> fit -> test -> write the run contract."""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from posenc.config_validation import validate
from posenc.errors import argument_error, user_error
from posenc.reporting import print_results
from posenc.run_contract import flat_metrics, save_resolved_config, write_json, write_status

log = logging.getLogger(__name__)

# Expected and harmless here: the frozen backbone is in eval mode on purpose; Lightning's own
# pytree deprecation notice is not ours to fix.
warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")
warnings.filterwarnings("ignore", message=r".*LeafSpec.*")


class _DropLightningTips(logging.Filter):
    """Lightning advertises its cloud products on every run, as info records starting with
    "💡 Tip:" (litlogger when no LitLogger is used, litmodels for checkpoints). Drop exactly those;
    every other Lightning message and warning still shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip:")


# rank_zero_info logs through whichever of these Lightning's imports installed last
for _name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
    logging.getLogger(_name).addFilter(_DropLightningTips())


def is_rank_zero() -> bool:
    return rank_zero_only.rank == 0


def wandb_settings(cfg: DictConfig, hydra_cfg: DictConfig) -> None:
    """Fill the W&B logger's ``group`` (sweep name, else the sweep dir's name) and honour
    ``WANDB_MODE=offline|disabled`` over ``logger.wandb.offline``."""
    if "wandb" not in cfg.logger or cfg.logger.wandb is None:
        return
    with open_dict(cfg):
        if cfg.logger.wandb.get("group") is None:
            sweep = cfg.get("sweep_name")
            if sweep is None and hydra_cfg.mode == RunMode.MULTIRUN:
                sweep = Path(hydra_cfg.sweep.dir).name
            cfg.logger.wandb.group = sweep
        if os.environ.get("WANDB_MODE") in ("offline", "disabled", "dryrun"):
            cfg.logger.wandb.offline = True


def finish_loggers(loggers: list[Any]) -> None:
    """Close W&B runs so runs of a multirun never bleed into each other."""
    for logger in loggers:
        experiment = getattr(logger, "_experiment", None)
        if experiment is not None and hasattr(experiment, "finish"):
            experiment.finish()


def pin_argv_to_this_job(hydra_cfg: DictConfig) -> None:
    """Lightning's DDP launcher starts ranks > 0 by re-running ``sys.argv`` plus
    ``hydra.run.dir=<hydra.run.dir>``. In a multirun that argv would launch the whole sweep again
    from every child, in a fresh run dir; so point argv at this job's own overrides, as a single
    run, and ``hydra.run.dir`` at this job's dir."""
    if hydra_cfg.mode == RunMode.MULTIRUN:
        sys.argv = [sys.argv[0], *hydra_cfg.overrides.task]
        with read_write(hydra_cfg):
            hydra_cfg.run.dir = hydra_cfg.runtime.output_dir


@contextmanager
def isolated_distributed_state(enabled: bool) -> Iterator[None]:
    """Undo what a DDP job leaves in this process (``LOCAL_RANK``, ``MASTER_PORT``, ... in the
    environment and the process group): with them, the next job of a multirun would believe it
    is a child rank and wait for peers that never start."""
    environ = dict(os.environ)
    try:
        yield
    finally:
        if enabled:
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()
            os.environ.clear()
            os.environ.update(environ)


def train(cfg: DictConfig, run_dir: Path, choices: dict[str, Any]) -> dict[str, Any]:
    """Fit and test the task of ``cfg``; write ``metrics.json`` into ``run_dir``; return it."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)  # the seed is in metrics.json
    datamodule = instantiate(cfg.data)
    task = instantiate(cfg.task)
    if hasattr(task, "check_data"):  # task-and-data mismatches fail here, in one line, before the Trainer starts
        task.check_data(datamodule)
    loggers = [instantiate(c) for c in cfg.logger.values() if c is not None]
    callbacks = [instantiate(c) for c in cfg.callbacks.values() if c is not None]
    try:
        trainer = instantiate(cfg.trainer, logger=loggers, callbacks=callbacks, default_root_dir=str(run_dir))
    except Exception as exc:  # Lightning refusing an argument (devices=0, precision=7): the user's error
        overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
        raise (user_error(exc) or argument_error("trainer", cfg.trainer, exc, overrides)) from exc
    try:
        for logger in loggers:
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        if getattr(task, "trains", True):  # task=ppp only measures: its test pass is the whole run
            trainer.fit(task, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
        results = trainer.test(task, datamodule=datamodule, verbose=False)
    finally:
        finish_loggers(loggers)
    merged = {k: v for result in results for k, v in result.items()}
    for part in [*callbacks, task]:  # the loss curve and convergence flag (posenc.convergence); PPP's curves
        merged.update(getattr(part, "summary", {}))
    metrics = flat_metrics(merged, cfg, choices, {"status": "completed"})
    if trainer.is_global_zero:
        write_json(run_dir / "metrics.json", metrics)
    return metrics


def run(cfg: DictConfig) -> dict[str, Any] | None:
    """Hydra task function: one run with its failure recorded in ``status.json``.

    In a multirun a failed job is recorded and the sweep goes on; a single run exits 2 on a
    user error (one line) and re-raises anything else. Only rank 0 writes and prints.
    """
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    rank_zero = is_rank_zero()
    wandb_settings(cfg, hydra_cfg)
    pin_argv_to_this_job(hydra_cfg)
    start = time.time()
    try:
        validate(cfg)  # every value against its schema, before anything is written or built
        if rank_zero:
            save_resolved_config(cfg, run_dir)
            write_status(run_dir, "running")
        with isolated_distributed_state(enabled=multirun and rank_zero):
            metrics = train(cfg, run_dir, dict(hydra_cfg.runtime.choices))
    except Exception as exc:  # noqa: BLE001 - recorded, then reported per run mode
        user = user_error(exc)
        cause = user or exc
        line = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        if rank_zero:
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
    if rank_zero:
        write_status(run_dir, "completed", wall_time_s=round(time.time() - start, 2))
        print_results(metrics)
        print(run_dir)
    return metrics
