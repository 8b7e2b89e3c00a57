"""A finished run, rebuilt from its run dir for the analyses that work on trained models
(channel ranking and the region-specific attack, Islam, Kowal et al. ICCV 2021): the resolved
``config.yaml`` the run wrote, its datamodule and task, and the weights of ``checkpoints/last.ckpt``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from posenc.config.groups import CONF_DIR
from posenc.config.renamed import with_current_targets
from posenc.config.trust import TRUST_FLAG, check_config
from posenc.config.validation import user_error
from posenc.errors import PosencError
from posenc.io import load_yaml, safe_load
from posenc.run.run_dir import read_status
from posenc.run.weights import RUN_CHECKPOINT, with_run_weights


def trained_tasks(conf_dir: Path = CONF_DIR) -> str:
    """``a|b|c``: the options of the ``task`` group whose task trains a backbone and head of its own
    (a :class:`~posenc.tasks.supervised.SupervisedTask`), read from ``conf/task``."""
    from posenc.tasks.supervised import SupervisedTask

    names = []
    for path in sorted((conf_dir / "task").glob("*.yaml")):
        target = OmegaConf.select(OmegaConf.load(path), "task._target_")
        try:
            if target and issubclass(get_class(target), SupervisedTask):
                names.append(path.stem)
        except (ImportError, ValueError, AttributeError, TypeError):
            continue
    return "|".join(names)


@dataclass
class LoadedRun:
    run_dir: Path
    cfg: DictConfig
    datamodule: Any
    task: Any  # a posenc.tasks.supervised.SupervisedTask in eval mode, weights loaded


def load_run(run_dir: str | Path, device: str | torch.device = "cpu", trusted: Sequence[str] = ()) -> LoadedRun:
    """Rebuild the task of ``run_dir`` with the weights it trained (one-line error when the dir
    is not a finished run of a trainable task). Its ``config.yaml`` may name only code posenc ships or
    ``trusted`` names (:mod:`posenc.config.trust`): nothing else is imported."""
    from posenc.tasks.supervised import SupervisedTask

    run_dir = Path(run_dir).expanduser()
    config, ckpt = run_dir / "config.yaml", run_dir / RUN_CHECKPOINT
    if not config.is_file() or not ckpt.is_file():
        missing = config.name if not config.is_file() else str(RUN_CHECKPOINT)
        raise PosencError(
            f"run dir {str(run_dir)!r} holds no trained model (no {missing}): expected the run dir of "
            f"`python train.py task=<{trained_tasks()}>`"
        )
    status = read_status(run_dir)
    if status is not None and status.get("status") != "completed":
        raise PosencError(
            f"run dir {str(run_dir)!r} ended {status.get('status')!r}"
            f"{': ' + status['error'] if status.get('error') else ''}; valid: a completed run"
        )
    cfg = load_yaml(config, "the resolved config train.py writes (a mapping)")
    if not isinstance(cfg, DictConfig):  # a YAML list: not the config.yaml train.py writes
        raise PosencError(f"{config} is not a run's config: expected a mapping of keys, got a list")
    # a run from before the re-layering names moved targets by their old paths (posenc.config.renamed)
    cfg = OmegaConf.create(with_current_targets(OmegaConf.to_container(cfg, resolve=False)))
    check_config(cfg, f"run dir {run_dir}", trusted)
    import lightning as L

    L.seed_everything(int(cfg.get("seed", 0)), verbose=False)  # as train() did before building the run
    try:
        datamodule = instantiate(cfg.data)
        task = instantiate(with_run_weights(cfg).task)
    except Exception as exc:  # a config the run could read once but not now (a moved dataset)
        user = user_error(exc)
        if user is None:
            raise
        raise PosencError(f"cannot rebuild the run {run_dir}: {user}") from exc
    if not isinstance(task, SupervisedTask):
        raise PosencError(
            f"run dir {str(run_dir)!r} is a run of {type(task).__name__}, which trains no model of its "
            f"own to analyse; valid: a run of task={trained_tasks()}"
        )
    task.attach_datamodule(datamodule)
    task.head = task.build_head()
    state = safe_load(ckpt).get("state_dict", {})
    missing, unexpected = task.load_state_dict(state, strict=False)
    if missing:
        raise PosencError(f"checkpoint {ckpt} does not fit the model of {config}: missing {missing[:2]}")
    return LoadedRun(run_dir, cfg, datamodule, task.to(device).eval())


def add_trust_flag(parser: Any) -> None:
    """The analysis commands' ``--trust-target`` (repeatable): code of yours the run dir may name."""
    parser.add_argument(
        TRUST_FLAG,
        dest="trusted",
        action="append",
        default=[],
        metavar="DOTTED.PATH",
        help="allow the run dir's config to name this code of yours (e.g. backbone.target); posenc refuses any "
        "other code a run dir names",
    )
