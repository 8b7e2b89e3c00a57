"""The trust model for files posenc reads back: a run dir or sweep dir is input from whoever wrote it.

A run dir's ``.hydra/overrides.yaml`` (``--resume``, the probe stage), its ``config.yaml`` (the analysis
tools, ``sweep.py collect``) can name code: every ``_target_`` Hydra instantiates, and the factory of
``backbone=module`` (``backbone.target``), which posenc imports and calls itself. Such a name is used only
when it is one posenc ships (a ``_target_`` of ``conf/`` or of the typed schemas, the example model's
factory) or one the user vouched for: named on this command line, or with ``--trust-target DOTTED.PATH``.
Anything else is refused in one line naming it, before anything is imported. Hydra's own target blocklist
is not relied on: it covers a few names, and posenc's module factory does not go through Hydra.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from posenc.config.groups import CONF_DIR
from posenc.config.renamed import current_target
from posenc.errors import PosencError

TRUST_FLAG = "--trust-target"
MODULE_BUILDER = "posenc.models.backbones.module.build_module_backbone"  # takes a factory as ``target``


def _yaml_targets(node: Any) -> Iterator[str]:
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key == "_target_" and isinstance(value, str):
                yield value
            else:
                yield from _yaml_targets(value)
    elif isinstance(node, list):
        for item in node:
            yield from _yaml_targets(item)


@cache
def shipped_targets(conf_dir: Path = CONF_DIR) -> frozenset[str]:
    """Every dotted path posenc itself may instantiate or call: the ``_target_`` values of ``conf/``'s
    YAML files and of the schema dataclasses (their defaults), and the default module factory."""
    from posenc.config import schema as config_schema

    found: set[str] = set()
    for path in Path(conf_dir).rglob("*.yaml"):
        try:
            found.update(_yaml_targets(yaml.safe_load(path.read_text())))
        except yaml.YAMLError:  # a shipped file always parses; a broken one has no targets to offer
            continue
    for obj in vars(config_schema).values():
        if isinstance(obj, type) and dataclasses.is_dataclass(obj):
            for f in dataclasses.fields(obj):
                if f.name in ("_target_", "target") and isinstance(f.default, str) and "." in f.default:
                    found.add(f.default)
    return frozenset(found)


def named_code(cfg: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """``(key, dotted path)`` for every piece of code ``cfg`` names: each node's ``_target_``, and the
    ``target`` factory of a ``backbone=module`` node. ``cfg``: plain data or an OmegaConf container
    (read unresolved: a target written as an interpolation is not a shipped name, so it is refused)."""
    if hasattr(cfg, "_metadata"):
        from omegaconf import OmegaConf

        cfg = OmegaConf.to_container(cfg, resolve=False)
    if isinstance(cfg, Mapping):
        if "_target_" in cfg:
            yield (f"{path}._target_" if path else "_target_"), cfg["_target_"]
            if cfg["_target_"] == MODULE_BUILDER and "target" in cfg:
                yield (f"{path}.target" if path else "target"), cfg["target"]
        for key, value in cfg.items():
            if key != "_target_":
                yield from named_code(value, f"{path}.{key}" if path else str(key))
    elif isinstance(cfg, list):
        for i, item in enumerate(cfg):
            yield from named_code(item, f"{path}[{i}]")


def names_code(key: str) -> bool:
    """An override key whose value is code to import (the keys :func:`named_code` reads)."""
    return key.endswith("_target_") or key == "backbone.target"


def refusal(source: str, key: str, target: Any) -> PosencError:
    shown = target if isinstance(target, str) else repr(target)
    return PosencError(
        f"{source} names {key}={shown}, which posenc does not ship: refused (a run's files never choose code "
        f"to run; your own module: add {TRUST_FLAG} {shown})"
    )


def check_config(cfg: Any, source: str, trusted: Iterable[str] = ()) -> None:
    """Raise a one-line :class:`PosencError` for the first code ``cfg`` names that is neither shipped
    nor in ``trusted``; ``source`` names the file it came from."""
    allowed = shipped_targets() | set(trusted)
    for key, target in named_code(cfg):
        if not isinstance(target, str) or current_target(target) not in allowed:
            raise refusal(source, key, target)


def check_overrides(overrides: Sequence[str], source: str, trusted: Iterable[str] = ()) -> None:
    """Check the overrides read from ``source`` (a run dir's ``overrides.yaml``) before anything runs:
    they may not set Hydra's own keys (``hydra.callbacks`` are called at start-up; a run dir's
    overrides never hold them), and the code they name, as written and in the config they compose to
    (composing imports nothing), must be trusted."""
    allowed = shipped_targets() | set(trusted)
    for text in overrides:
        key, _, value = text.partition("=")
        key, value = key.lstrip("+~"), value.strip("'\"")
        if key == "hydra" or key.startswith(("hydra.", "hydra/")):
            raise PosencError(f"{source} sets {key}: refused (a run's overrides never set Hydra's own keys)")
        # as written: a config that fails to compose hides it
        if names_code(key) and current_target(value) not in allowed:
            raise refusal(source, key, value)
    check_config(compose_plain(overrides, source), source, trusted)


def compose_plain(overrides: Sequence[str], source: str) -> Any:
    """The ``train`` config ``overrides`` compose to (no Hydra runtime, nothing instantiated)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import posenc.config.schema  # noqa: F401 - registers the schemas the YAML files extend
    from posenc.config.validation import user_error

    held = GlobalHydra.instance().is_initialized()
    if held:
        GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name="train", overrides=list(overrides))
    except Exception as exc:
        user = user_error(exc)
        if user is None:
            raise
        raise PosencError(f"{source} does not compose: {user}") from exc


def user_targets(argv: Iterable[str]) -> set[str]:
    """The code the user named on this command line (``backbone.target=...``, ``x._target_=...``) and
    with ``--trust-target``: trusted, since the user typed it."""
    found = set()
    for arg in argv:
        key, eq, value = arg.partition("=")
        if eq and names_code(key.lstrip("+~")):
            found.add(value.strip("'\""))
    return found


def pop_trust_flags(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(argv without them, targets)`` of ``--trust-target X`` / ``--trust-target=X`` (repeatable)."""
    rest, targets = [], []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == TRUST_FLAG:
            if i + 1 >= len(args) or args[i + 1].startswith("-"):
                raise PosencError(f"{TRUST_FLAG} needs a dotted path: {TRUST_FLAG} mypackage.models.make_net")
            targets.append(args[i + 1])
            i += 2
            continue
        if arg.startswith(TRUST_FLAG + "="):
            targets.append(arg.split("=", 1)[1])
        else:
            rest.append(arg)
        i += 1
    return rest, targets
