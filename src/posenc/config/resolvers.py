"""OmegaConf resolvers the configs use for what Hydra only knows inside a job.

``${run_dir:}`` is the job's output dir (``hydra.runtime.output_dir``) in a run and a multirun job.
Hydra leaves that unset when it only prints the config (``--cfg job --resolve``, ``--help``), where
``${hydra:runtime.output_dir}`` would fail the typed schema; there it is the run dir Hydra would use
(``hydra.run.dir``), else a placeholder naming it. ``${help_groups:}`` is ``--help``'s list of
config groups. ``${slurm_gpus:<accelerator>,<devices>}`` is the GPUs per node a SLURM job asks for
(``hydra/launcher=slurm``): the trainer's devices with a GPU trainer, none with a CPU one.
``${if_weights:<weights>,<random init value>,<trained value>}`` picks a default by what the backbone loads
(``conf/task/posenet.yaml``: the readout's measured step budgets, docs/reference.md "Readout budget").
"""

from __future__ import annotations

from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

from posenc.config.groups import CONF_DIR, HYDRA_LAUNCHERS, group_options

UNSET_RUN_DIR = "<run dir>"  # printed by --cfg / --help where no job exists


def run_dir() -> str:
    """This job's output dir; outside a job (``--cfg``, ``--help``) ``hydra.run.dir`` or :data:`UNSET_RUN_DIR`."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return UNSET_RUN_DIR
    hydra_cfg = cast(DictConfig, HydraConfig.get())  # typed as the HydraConf schema; a DictConfig at runtime
    for key in ("runtime.output_dir", "run.dir"):  # --cfg: no output dir; run.dir set by train.py
        try:
            value = OmegaConf.select(hydra_cfg, key, default=None, throw_on_missing=False)
        except Exception:  # noqa: BLE001 - run.dir's own interpolations may need the job config
            value = None
        if value is not None:
            return str(value)
    return UNSET_RUN_DIR


HIDDEN_GROUPS = ("schema",)  # the typed schemas (posenc.config.schema): internal, never chosen by users


def help_groups() -> str:
    """``--help``'s list of config groups and their options, one line each, without the internal
    ``schema`` group (Hydra's ``$APP_CONFIG_GROUPS`` lists every group it can see)."""
    groups = {g: o for g, o in group_options(CONF_DIR).items() if g.split("/")[0] not in HIDDEN_GROUPS}
    for group, options in HYDRA_LAUNCHERS.items():
        groups[group] = sorted({*groups.get(group, []), *options})
    return "\n".join(f"{group}: {', '.join(sorted(options))}" for group, options in sorted(groups.items()))


GPU_ACCELERATORS = ("gpu", "cuda")


def slurm_gpus(accelerator: str, devices: int | str) -> int | None:
    """GPUs per node for a SLURM job: ``devices`` when the trainer runs on GPUs, else None (SLURM is not
    asked for GPUs: a CPU trainer with ``devices=2`` is 2 tasks, as ``trainer=ddp_cpu``)."""
    return int(devices) if str(accelerator).lower() in GPU_ACCELERATORS else None


def if_weights(weights: Any, random_init: Any, trained: Any) -> Any:
    """``random_init`` for a backbone built without weights (null or empty), else ``trained`` (``imagenet``,
    a state dict file, a posenc run dir or checkpoint)."""
    return random_init if weights in (None, "") else trained


def register() -> None:
    """Register ``${run_dir:}``, ``${help_groups:}``, ``${slurm_gpus:...}`` and ``${if_weights:...}`` (idempotent)."""
    OmegaConf.register_new_resolver("run_dir", run_dir, replace=True)
    OmegaConf.register_new_resolver("help_groups", help_groups, replace=True)
    OmegaConf.register_new_resolver("slurm_gpus", slurm_gpus, replace=True)
    OmegaConf.register_new_resolver("if_weights", if_weights, replace=True)


register()
