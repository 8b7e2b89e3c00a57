"""Sweep presets (``conf/sweep/``): their names and descriptions, the groups of a grouped preset (the
position atlas), fresh sweep dirs, and the jobs a sweep's overrides expand to, in the order Hydra's basic
sweeper launches them."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from posenc.config.groups import CONF_DIR, group_options
from posenc.errors import PosencError
from posenc.io import reserve_dir

GROUPS_FILE = "groups.json"  # a grouped sweep's dir: its preset, report and groups ([label, overrides] pairs)


def list_presets(conf_dir: Path = CONF_DIR) -> dict[str, str]:
    """Sweep presets in ``conf_dir/sweep`` -> their description (first comment after the
    ``# @package`` line)."""
    presets: dict[str, str] = {}
    for path in sorted((Path(conf_dir) / "sweep").glob("*.yaml")):
        comments = [
            line.lstrip("#").strip()
            for line in path.read_text().splitlines()
            if line.startswith("#") and not line.startswith("# @package")
        ]
        presets[path.stem] = comments[0] if comments else ""
    return presets


def reserve_sweep_dir(output_root: Path, name: str, now: datetime | None = None) -> Path:
    """Create and return a fresh ``<output_root>/sweeps/<name>/<timestamp>[_k]`` (an exclusive
    mkdir, so two sweeps started in the same second get different dirs)."""
    stamp = (now or datetime.now()).strftime("%Y-%m-%d_%H-%M-%S")
    return reserve_dir(Path(output_root) / "sweeps" / name, stamp, f"paths.output_root={output_root}").resolve()


def expand_overrides(params: Mapping[str, Any], overrides: Sequence[str]) -> list[list[str]]:
    """The override lists Hydra's basic sweeper launches for sweeper ``params`` plus the command-line
    ``overrides``, in launch order: the cartesian product of every key's values, the last key varying
    fastest. A key given twice keeps its first place and takes its last value (the command line replaces
    a param). Parsed by Hydra's public override grammar; what the basic sweeper refuses (``interval()``)
    or cannot expand without a config loader (``glob()``) raises as it does."""
    arguments = [f"{k}={v}" for k, v in params.items()] + list(overrides)
    values: dict[str, list[str]] = {}  # key -> its jobs' overrides, in the order keys first appear
    for override in OverridesParser.create().parse_overrides(arguments):
        key = override.get_key_element()
        if not override.is_sweep_override():
            values[key] = [f"{key}={override.get_value_element_as_str()}"]
        elif override.is_discrete_sweep():
            values[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            kind = override.value_type.name if override.value_type is not None else "unknown"
            raise HydraException(f"BasicSweeper does not support sweep type : {kind}")
    return [list(job) for job in itertools.product(*values.values())]


def preset_groups(name: str, conf_dir: Path = CONF_DIR) -> tuple[dict[str, list[str]], str | None]:
    """``(groups, report)`` of preset ``name``: its ``groups:`` (label -> override list; each group is
    a multirun of its own, e.g. one model of the position atlas, with its own paddings) and its
    ``report:`` (a writer over all groups, :data:`posenc.sweeps.reports.REPORTS`); ``({}, None)`` for a
    plain preset."""
    path = Path(conf_dir) / "sweep" / f"{name}.yaml"
    cfg = OmegaConf.load(path) if path.is_file() else OmegaConf.create()
    assert isinstance(cfg, DictConfig), f"{path} holds a list, not a sweep preset"
    groups: Any = OmegaConf.to_container(cfg.get("groups") or OmegaConf.create(), resolve=False)
    report = cfg.get("report")
    return {str(k): [str(o) for o in v] for k, v in groups.items()}, (str(report) if report else None)


def every_group(name: str, conf_dir: Path = CONF_DIR) -> list[str]:
    """The overrides preset ``name`` puts before every group's own (its ``every_group:``; the atlas:
    ``task=atlas``), also before a group named by a backbone option."""
    path = Path(conf_dir) / "sweep" / f"{name}.yaml"
    cfg = OmegaConf.load(path) if path.is_file() else OmegaConf.create()
    found = cfg.get("every_group") if isinstance(cfg, DictConfig) else None
    return [str(o) for o in (found or [])]


def select_groups(groups: Mapping[str, list[str]], chosen: str | None) -> dict[str, list[str]]:
    """The groups ``groups=a,b`` names (a label of the preset, or any backbone option: ``[backbone=<it>]``);
    all of them when ``chosen`` is None."""
    if chosen is None:
        return dict(groups)
    backbones = group_options(CONF_DIR)["backbone"]
    picked: dict[str, list[str]] = {}
    for label in [c.strip() for c in chosen.strip("[]").split(",") if c.strip()]:
        if label in groups:
            picked[label] = list(groups[label])
        elif label in backbones:
            picked[label] = [f"backbone={label}"]
        else:
            raise PosencError(
                f"groups={chosen}: {label!r} is not valid; valid: {', '.join(groups)}, or any backbone option"
            )
    if not picked:
        raise PosencError(f"groups={chosen} names no group; valid: {', '.join(groups)}")
    return picked


def fold_overrides(name: str, overrides: Sequence[str], conf_dir: Path = CONF_DIR) -> list[str]:
    """``overrides`` with the keys preset ``name`` folds (its ``fold:``, e.g. the atlas's ``padding:
    task.paddings``) turned from a sweep into one job's list: ``padding=zeros,none`` ->
    ``task.paddings=[zeros,none]`` (one job per model measures every padding in one pass)."""
    path = Path(conf_dir) / "sweep" / f"{name}.yaml"
    cfg = OmegaConf.load(path) if path.is_file() else OmegaConf.create()
    folds = cfg.get("fold") if isinstance(cfg, DictConfig) else None
    if not folds:
        return list(overrides)
    out = []
    for override in overrides:
        key, _, value = override.partition("=")
        target = folds.get(key) if "=" in override else None
        if target is None:
            out.append(override)
            continue
        values = value.strip("[]")
        out.append(f"{target}=[{values}]")
    return out
