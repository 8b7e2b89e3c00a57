"""One run, straight through: compose -> fit -> test -> write the run contract."""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
import traceback
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from posenc.config.compose import settle_logger_config
from posenc.config.validation import user_error, validate
from posenc.errors import PosencError, argument_error, invalid_value
from posenc.io import read_json, safe_load
from posenc.run.checkpointing import LAST, AtomicCheckpointIO
from posenc.run.convergence import TrainingDiverged
from posenc.run.interruption import Interruption, RunInterrupted
from posenc.run.loggers import build_loggers, end_loggers, finish_loggers
from posenc.run.run_dir import (
    claim_run_dir,
    flat_metrics,
    mark_metrics,
    read_status,
    save_resolved_config,
    write_json,
    write_status,
)
from posenc.run.slurm import SLURM_RESTARTABLE, requeue, restart_count, sigterm_cause, under_slurm, under_submitit
from posenc.run.weights import with_run_weights
from posenc.tasks.atlas import KEPT as KEPT_CELLS
from posenc.tasks.base import PosencTask
from posenc.viz.tables import print_results

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
    return rank_zero_only.rank == 0  # type: ignore[attr-defined]  # set on the function by Lightning at import


def wandb_settings(cfg: DictConfig, hydra_cfg: DictConfig) -> None:
    """Fill the W&B logger's ``group`` (sweep name, else the sweep dir's name) and honour
    ``WANDB_MODE=offline|disabled`` over ``logger.wandb.offline``."""
    if OmegaConf.select(cfg, "logger.wandb", default=None, throw_on_missing=False) is None:
        return  # W&B not chosen (posenc.config.compose.settle_logger_config makes that null)
    with open_dict(cfg):
        if cfg.logger.wandb.get("group") is None:
            sweep = cfg.get("sweep_name")
            if sweep is None and hydra_cfg.mode == RunMode.MULTIRUN:
                sweep = Path(hydra_cfg.sweep.dir).name
            cfg.logger.wandb.group = sweep
        if os.environ.get("WANDB_MODE") in ("offline", "disabled", "dryrun"):
            cfg.logger.wandb.offline = True


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


def resume_checkpoint(cfg: DictConfig, run_dir: Path) -> tuple[Path | None, int | None]:
    """The checkpoint ``ckpt_path`` names (``last``: this run dir's ``checkpoints/last.ckpt``),
    checked before anything is built: it exists, loads without running code, and was written by a
    run of this task, with the global step it holds; ``(None, None)`` for a fresh run. A SLURM job
    that was requeued (by itself or by the cluster) resumes the run dir it stopped in."""
    given = cfg.get("ckpt_path")
    last = run_dir / "checkpoints" / LAST
    if given is None and slurm_restart_of(run_dir) and last.is_file():
        given = "last"
    if given is None:
        return None, None
    path = last if given == "last" else Path(str(given)).expanduser()
    kept = run_dir / "checkpoints" / KEPT_CELLS
    if given == "last" and not path.is_file() and kept.is_file():
        return kept, 0  # task=atlas keeps its cells, not a Lightning checkpoint: the rerun takes the kept ones
    if not path.is_file():
        if given == "last":
            raise PosencError(
                f"cannot resume {run_dir}: it has no checkpoint ({path} is missing: the run stopped "
                "before its first one, see callbacks.checkpoint.every_n_steps); start it again"
            )
        raise invalid_value(
            "ckpt_path",
            given,
            "no such file; valid: last (the run dir's checkpoints/last.ckpt) or the path of a .ckpt file",
        )
    header = safe_load(path)
    if not isinstance(header, dict) or "state_dict" not in header:
        raise invalid_value("ckpt_path", str(path), "not a Lightning checkpoint (no state_dict)")
    written_by = (header.get("posenc") or {}).get("task")
    expected = str(cfg.task.get("_target_", "")).rsplit(".", 1)[-1]
    if written_by is not None and written_by != expected:
        raise invalid_value("ckpt_path", str(path), f"a checkpoint of {written_by}; this run's task builds {expected}")
    return path, int(header.get("global_step", 0))


def slurm_restart_of(run_dir: Path) -> bool:
    """This process is SLURM's restart of the job that ran in ``run_dir`` (``SLURM_RESTART_COUNT`` > 0 and
    the dir's ``status.json`` records this job id, stopped by a signal or killed while running)."""
    if not under_slurm() or restart_count() == 0:
        return False
    status = read_status(run_dir) or {}
    return status.get("slurm_job_id") == os.environ.get("SLURM_JOB_ID") and status.get("status") in SLURM_RESTARTABLE


def slurm_fields() -> dict[str, Any]:
    """What ``status.json`` records of the SLURM job a run is in: its id and, in a job that SLURM
    restarted (a requeue, by the run itself or by the cluster), ``requeued: true`` and ``restarts``."""
    if not under_slurm():
        return {}
    fields: dict[str, Any] = {"slurm_job_id": os.environ["SLURM_JOB_ID"]}
    if restart_count():
        fields.update(requeued=True, restarts=restart_count())
    return fields


SRUN_HINT = r"The `srun` command is available on your system but is not used"


@contextmanager
def srun_hint_outside_slurm() -> Iterator[None]:
    """Lightning warns that ``srun`` "is available but not used" on every machine where SLURM's
    commands are installed, whenever it looks for a cluster (building the Trainer, starting fit and
    test); that is right only inside a SLURM job started without ``srun``, so while a run trains and
    tests the warning is dropped where no job is (no ``SLURM_JOB_ID``)."""
    with warnings.catch_warnings():
        if not os.environ.get("SLURM_JOB_ID"):
            warnings.filterwarnings("ignore", message=SRUN_HINT)
        yield


def trainer_plugins(cfg: DictConfig) -> list[Any]:
    """Atomic checkpoint writes and code-free loads for every checkpoint the Trainer touches; under
    SLURM, Lightning's auto-requeue (a SIGUSR1 handler that requeues without a word) is off: posenc decides
    whether a job is requeued (:func:`_interrupted`: on the time-limit warning, after a checkpoint and with
    the run's status recorded; never on SIGTERM)."""
    plugins: list[Any] = [AtomicCheckpointIO()]
    from lightning.fabric.plugins.environments import SLURMEnvironment

    if under_slurm() and SLURMEnvironment.detect():
        plugins.append(SLURMEnvironment(auto_requeue=False))
    return plugins


def fit_error(exc: BaseException, ckpt: Path | None) -> PosencError | None:
    """A checkpoint that does not fit the model (Lightning's multi-line state-dict report) as one line."""
    text = str(exc)
    if ckpt is not None and isinstance(exc, RuntimeError) and "loading state_dict" in text:
        detail = next((line.strip() for line in text.splitlines()[1:] if line.strip()), "")
        return invalid_value("ckpt_path", str(ckpt), f"does not fit this run's model ({detail[:160]})")
    return None


def train(
    cfg: DictConfig, run_dir: Path, choices: dict[str, Any], ckpt: Path | None = None, loggers: list[Any] | None = None
) -> dict[str, Any]:
    """Fit (from ``ckpt`` when resuming) and test the task of ``cfg``; write ``metrics.json`` into
    ``run_dir``; return it. The loggers it builds are appended to ``loggers``, left open for the
    caller to tell them how the run ended and close them (:func:`run`); without a list they are
    closed here."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)  # the seed is in metrics.json
    built = with_run_weights(cfg)  # backbone.weights=<run dir>: its checkpoint, or one line if it did not complete
    datamodule = instantiate(built.data)
    task = instantiate(built.task)
    if not isinstance(task, PosencTask):
        raise invalid_value(
            "task._target_",
            cfg.task.get("_target_"),
            f"builds a {type(task).__name__}; valid: a subclass of posenc.tasks.base.PosencTask (docs/extending.md)",
        )
    task.check_data(datamodule)  # task-and-data mismatches fail here, in one line, before the Trainer starts
    owned = loggers is None
    loggers = [] if loggers is None else loggers
    loggers.extend(build_loggers(cfg.logger))
    if not task.uses_trainer:  # a measurement with its own loop (the atlas engine): no Trainer to build
        try:
            for logger in loggers:
                logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
            merged = task.measure(run_dir)
            numbers = {
                k: float(v) for k, v in merged.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            }
            for logger in loggers:
                logger.log_metrics(numbers, step=0)
        finally:
            if owned:
                finish_loggers(loggers)
        metrics = flat_metrics(merged, cfg, choices, {"status": "completed"}, order=task.report_order())
        if is_rank_zero():
            write_json(run_dir / "metrics.json", metrics)
            print_results(metrics, task.console_tables(metrics))
        return metrics
    callbacks = [instantiate(c) for c in cfg.callbacks.values() if c is not None]
    try:
        trainer = instantiate(
            cfg.trainer,
            logger=loggers,
            callbacks=callbacks,
            default_root_dir=str(run_dir),
            plugins=trainer_plugins(cfg),
        )
    except Exception as exc:  # Lightning refusing an argument (devices=0, precision=7): the user's error
        overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
        raise (user_error(exc) or argument_error("trainer", cfg.trainer, exc, overrides)) from exc
    interruption = Interruption.active
    if interruption is not None:
        interruption.trainer = trainer
    try:
        for logger in loggers:
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        if task.trains:  # a measurement (PPP) has no fit: its test pass is the whole run
            try:
                trainer.fit(task, datamodule=datamodule, ckpt_path=str(ckpt) if ckpt else None)
            except RuntimeError as exc:
                mismatch = fit_error(exc, ckpt)
                if mismatch is None:
                    raise
                raise mismatch from exc
        results = trainer.test(task, datamodule=datamodule, verbose=False)
    finally:
        if owned:
            finish_loggers(loggers)
    merged = {k: v for result in results for k, v in result.items()}
    for part in [*callbacks, task]:  # the loss curve and convergence flag (posenc.run.convergence); the task's own
        merged.update(getattr(part, "summary", {}))
    converted = getattr(getattr(task, "backbone", None), "padding_report", {})  # convs converted per class
    merged.update({f"padding/converted/{cls}": count for cls, count in converted.items()})
    if converted:
        log.info("padding %s: %s", choices.get("padding"), ", ".join(f"{n} {c}" for c, n in converted.items()))
    metrics = flat_metrics(merged, cfg, choices, {"status": "completed"}, order=task.report_order())
    if trainer.is_global_zero:
        write_json(run_dir / "metrics.json", metrics)
        print_results(metrics, task.console_tables(metrics))
    return metrics


def run(cfg: DictConfig) -> dict[str, Any] | None:
    """Hydra task function: one run with its ending recorded in ``status.json`` (and ``metrics.json``):
    ``completed``; ``failed`` with the error line (``error.log``: the traceback; a diverged run keeps
    no metric); stopped by a signal with a checkpoint (:func:`_interrupted`): ``interrupted`` (SIGTERM,
    SIGINT), ``preempted`` when the job was requeued (by the run on SLURM's time-limit warning, or by the
    cluster), exit ``128 + signal``. Under SLURM every status also records the job id (and, in a restarted
    job, ``requeued`` and ``restarts``).

    In a multirun a failed job is recorded and the sweep goes on; a single run exits 2 on a
    user error (one line) and re-raises anything else. Only rank 0 writes and prints.
    """
    hydra_cfg = cast(DictConfig, HydraConfig.get())  # typed as the HydraConf schema; a DictConfig at runtime
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    rank_zero = is_rank_zero()
    wandb_settings(cfg, hydra_cfg)
    pin_argv_to_this_job(hydra_cfg)
    start = time.time()
    lock: Path | None = None
    resumed: dict[str, Any] = {}
    loggers: list[Any] = []  # filled by train(); told the run's ending below, whatever it is
    try:
        with Interruption() as interruption:
            try:
                settle_logger_config(cfg)  # the logger entries no logger= option chose: null
                # every value against its schema (and what the command line typed: readout.sigmoid=2 is
                # no bool), before anything is written or built
                validate(cfg, list(hydra_cfg.overrides.task))
                ckpt, step = resume_checkpoint(cfg, run_dir)
                if rank_zero:
                    restarted = slurm_restart_of(run_dir)  # a requeued job takes its dir again, checkpoint or not
                    lock = claim_run_dir(run_dir, resuming=ckpt is not None or restarted)
                    save_resolved_config(cfg, run_dir)
                    resumed = {"resumed_from_step": step, "resumed_from": str(ckpt)} if ckpt else {}
                    write_status(run_dir, "running", pid=os.getpid(), **slurm_fields(), **resumed)
                    if ckpt is not None:
                        print(f"resuming {run_dir} from step {step} ({ckpt})", file=sys.stderr)
                with isolated_distributed_state(enabled=multirun and rank_zero), srun_hint_outside_slurm():
                    metrics = train(cfg, run_dir, dict(hydra_cfg.runtime.choices), ckpt, loggers)
            finally:
                interruption.defer = False
    except RunInterrupted as stop:
        code = _interrupted(stop, run_dir, rank_zero, loggers)
        if code is None:  # a submitit job that ends here: its function returns, so its launcher gets a result
            return None
        raise SystemExit(code) from None
    except Exception as exc:  # noqa: BLE001 - recorded, then reported per run mode
        # a dir that holds another run (refused by claim_run_dir) keeps that run's record
        owner = lock is not None or read_status(run_dir) is None
        _failed(exc, run_dir, rank_zero and owner, multirun, loggers)
        return None
    finally:
        if lock is not None:
            lock.unlink(missing_ok=True)
    ending = {"wall_time_s": round(time.time() - start, 2), **resumed, **slurm_fields()}
    if rank_zero:
        write_status(run_dir, "completed", **ending)
    end_loggers(loggers, metrics, {"status": "completed", **ending} if rank_zero else None, run_dir / "figures")
    if rank_zero:
        print(run_dir)
    return metrics


def _checkpoint_step(run_dir: Path) -> int | None:
    path = run_dir / "checkpoints" / LAST
    if not path.is_file():
        return None
    try:
        step = (safe_load(path).get("posenc") or {}).get("global_step")
        return None if step is None else int(step)
    except (PosencError, TypeError, ValueError):
        return None


def _interrupted(stop: RunInterrupted, run_dir: Path, rank_zero: bool, loggers: list[Any]) -> int | None:
    """Record a run a signal stopped and tell its loggers; the exit status (``128 + signal``), or None where
    the process should end by returning instead (below).

    - SIGINT, or SIGTERM outside SLURM: ``interrupted``, resumable by hand (``--resume``).
    - SLURM's time-limit warning (:func:`posenc.run.slurm.warning_signals`): the run requeues its job
      (``scontrol requeue``) and records ``preempted``, ``requeued: true``; the restarted job resumes this
      run dir from its checkpoint. A requeue that fails says why in one line and records ``interrupted``.
    - SIGTERM under SLURM: the job is being ended, and the run never requeues it. Its controller says why
      (:func:`posenc.run.slurm.sigterm_cause`): the cluster requeueing it (a preemption, ``scontrol
      requeue``: ``preempted``, ``requeued: true``, ``requeued_by: cluster``; it resumes when it restarts),
      its time limit or a cancel (``interrupted``, with that ``cause``).

    In a submitit job (``hydra/launcher=slurm``) that is not requeued, the process ends by returning, so
    that submitit records a result and the sweep's launcher stops waiting for the job; a requeued one exits
    without a result, and the launcher waits for its restart.
    """
    slurm = under_slurm()
    cause: str | None
    refused: str | None
    if stop.warning:
        cause = "time-limit warning"
        if rank_zero:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the requeue ends this job with a SIGTERM: finish first
            refused = requeue()
        else:
            refused = None  # rank 0 requeues the job
    elif stop.signum == signal.SIGTERM and slurm:
        cause = sigterm_cause()  # None: the controller did not answer
        refused = None
    else:
        cause, refused = None, None
    requeued = (stop.warning and refused is None) or cause == "requeued"
    if rank_zero:
        step = _checkpoint_step(run_dir)
        status = "preempted" if requeued else "interrupted"
        fields: dict[str, Any] = {"signal": stop.name, "checkpoint_step": step, "requeued": requeued}
        if slurm:
            fields.update({k: v for k, v in slurm_fields().items() if k not in ("requeued",)})
            fields["cause"] = cause
            if requeued:
                fields["requeued_by"] = "cluster" if cause == "requeued" else "posenc"
            if refused is not None:
                fields["requeue_error"] = refused
        write_status(run_dir, status, **fields)
        mark_metrics(run_dir, status, **fields)
        end_loggers(
            loggers,
            read_json(run_dir / "metrics.json") or {},
            {"status": status, **fields},
            run_dir / "figures",
            stop.exit_code,
        )
        where = f"checkpoint at step {step}" if step is not None else "no checkpoint (stopped before training)"
        if requeued:
            then = f"SLURM job {os.environ.get('SLURM_JOB_ID')} requeued: it resumes from there when it restarts"
        else:
            then = f"resume: python train.py --resume {run_dir}"
            if refused is not None:
                then = f"not requeued ({refused}); {then}"
        why = f" ({cause})" if cause and cause != "requeued" else ""
        print(f"interrupted by {stop.name}{why}: {where}; {then}", file=sys.stderr)
        print(run_dir)
    else:
        end_loggers(loggers, {}, None, run_dir / "figures", stop.exit_code)
    if slurm and under_submitit() and not requeued:
        return None
    return stop.exit_code


def _failed(exc: BaseException, run_dir: Path, record: bool, multirun: bool, loggers: list[Any]) -> None:
    """Record a failed run (``record``: this process owns the run dir) and tell its loggers; exit 2
    on a user error in a single run, re-raise a bug."""
    user = user_error(exc)
    cause = user or exc
    line = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    fields: dict[str, Any] = {"error": f"{type(cause).__name__}: {line}", **slurm_fields()}
    if isinstance(cause, TrainingDiverged):
        fields["step"] = cause.step
    recorded = record and run_dir.is_dir()
    if recorded:
        write_status(run_dir, "failed", **fields)
        if (run_dir / "config.yaml").exists():  # the run had started: keep what it wrote, marked failed
            mark_metrics(run_dir, "failed", keep_measured=not isinstance(cause, TrainingDiverged), **fields)
        (run_dir / "error.log").write_text(traceback.format_exc())
    metrics = (read_json(run_dir / "metrics.json") or {}) if recorded else {}
    end_loggers(loggers, metrics, {"status": "failed", **fields} if recorded else None, run_dir / "figures")
    if user is not None:
        print(f"error: {line}", file=sys.stderr)
        if not multirun:
            sys.exit(2)
    elif not multirun:
        raise exc
    log.error("job failed (%s); see %s", line, run_dir / "error.log")
    print(run_dir)
    return None
