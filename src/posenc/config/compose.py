"""Compose the project's Hydra config in-process (tests, benchmarks, notebooks) exactly as
``python train.py`` would, with Hydra's runtime set so ``${hydra:...}`` interpolations resolve."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

import posenc.config.schema  # noqa: F401 - registers the config schemas before any compose
from posenc.config.groups import CONF_DIR
from posenc.errors import PosencError, invalid_value


def compose_run(overrides: Sequence[str], run_dir: Path, conf_dir: Path = CONF_DIR) -> DictConfig:
    """The ``train`` config for ``overrides``, as the task function of a run in ``run_dir`` sees it."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)
        cfg.paths.output_root = str(run_dir.parent)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]  # a real task function sees the config without it
    return settle_logger_config(cfg)  # as posenc.run.train.run does first


def validate_job(overrides: Sequence[str], conf_dir: Path = CONF_DIR) -> None:
    """Compose one job's ``overrides`` (no sweeps) and check its config as ``train.py`` does before it builds
    anything (:func:`posenc.config.validation.validate`), without a run dir: the one-line
    :class:`~posenc.errors.PosencError` a run of it would end with, else None. ``sweep.py`` asks this
    before it makes a sweep dir."""
    from posenc.config.validation import user_error, validate

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            cfg = compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
    except Exception as exc:
        user = user_error(exc)
        if user is None:
            raise
        raise user from exc
    finally:
        GlobalHydra.instance().clear()
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(Path(cfg.paths.output_root) / "runs" / "unused")  # ${run_dir:}, unmade
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    validate(settle_logger_config(cfg), overrides)


def settle_logger_config(cfg: DictConfig) -> DictConfig:
    """Set the entries of ``cfg.logger`` that no chosen option filled (MISSING in the schema) to
    null; refuse, in one line, a config without the CSV copy (``logger=[]``, ``logger.csv=null``)."""
    if "logger" not in cfg and not OmegaConf.is_missing(cfg, "logger"):
        return cfg  # a config without the group (not posenc's train config)
    valid = "valid: logger=csv, wandb, tensorboard or a list (logger=[wandb,tensorboard]); each keeps the CSV copy"
    if OmegaConf.is_missing(cfg, "logger"):
        raise PosencError(f"logger=[] is not valid: the CSV copy of the metrics is always on; {valid}")
    if OmegaConf.is_missing(cfg.logger, "csv") or cfg.logger.csv is None:
        raise invalid_value("logger.csv", None, f"the CSV copy of the metrics is always on; {valid}")
    with read_write(cfg.logger):
        for key in list(cfg.logger.keys()):
            if key != "csv" and OmegaConf.is_missing(cfg.logger, key):
                cfg.logger[key] = None
    return cfg
