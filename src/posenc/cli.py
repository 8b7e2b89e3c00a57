"""Command-line checks run before Hydra composes the config, so that a bad option gives one
line (``unknown backbone 'vgg'; valid: ...``) instead of Hydra's multi-line report."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from posenc.errors import invalid_choice

_SIMPLE_VALUES = re.compile(r"^[\w.\-]+(,[\w.\-]+)*$")


def group_options(conf_dir: Path) -> dict[str, list[str]]:
    """Config groups (sub-folders of ``conf_dir``, nested ones as ``a/b``) and their options."""
    groups: dict[str, list[str]] = {}
    for yaml in sorted(conf_dir.rglob("*.yaml")):
        group = yaml.parent.relative_to(conf_dir).as_posix()
        if group != ".":
            groups.setdefault(group, []).append(yaml.stem)
    return groups


def check_group_overrides(argv: Sequence[str], conf_dir: Path, builtin: dict[str, list[str]] | None = None) -> None:
    """Raise ``PosencError`` for ``group=option`` arguments naming an option that does not exist.

    Plain values and comma lists are checked; sweep functions (``choice(...)``, ``glob(...)``)
    and ``key.sub=value`` overrides are left to Hydra.
    """
    groups = group_options(conf_dir)
    for group, options in (builtin or {}).items():
        groups.setdefault(group, []).extend(options)
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, value = arg.split("=", 1)
        key = key.lstrip("+~")
        if key not in groups or not _SIMPLE_VALUES.match(value):
            continue
        for option in value.split(","):
            if option not in groups[key]:
                raise invalid_choice(key, option, sorted(set(groups[key])))
