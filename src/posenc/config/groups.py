"""Where the configs are and which groups and options they hold (no Hydra needed to read them)."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

# Options of hydra/launcher that come from Hydra and hydra-submitit-launcher, not from conf/.
HYDRA_LAUNCHERS = {"hydra/launcher": ["basic", "submitit_local", "submitit_slurm"]}


def _conf_dir() -> Path:
    """The checkout's ``conf/`` (an editable install, tests, ``python train.py``), else the copy an
    installed posenc ships as the package ``posenc.conf``."""
    checkout = Path(__file__).resolve().parents[3] / "conf"
    if (checkout / "train.yaml").is_file():
        return checkout
    return Path(str(importlib.resources.files("posenc.conf")))


CONF_DIR = _conf_dir()


def group_options(conf_dir: Path = CONF_DIR) -> dict[str, list[str]]:
    """Config groups (sub-folders of ``conf_dir``, nested ones as ``a/b``) and their options."""
    groups: dict[str, list[str]] = {}
    for config_file in sorted(conf_dir.rglob("*.yaml")):
        group = config_file.parent.relative_to(conf_dir).as_posix()
        if group != ".":
            groups.setdefault(group, []).append(config_file.stem)
    return groups
