"""The one-line promise as a property (issue 30 §4): for every option of every config group, each key
of its composed node refuses a value of the wrong type, a value out of its range and an empty value,
each in one line that names the key, before anything is built.

The cases come from the configs, not from a list: :func:`posenc.config.groups.group_options` gives
the options, composing each gives its node, and each key's schema field (type and rules,
:mod:`posenc.config.schema`) gives its three bad values. A schema field shared by several options
(``backbone.weights`` of every backbone) is tried once per group, in the first option that has it.

The bulk runs the path a run takes, minus the process: the override is applied to the composed config
the way Hydra applies a command line's overrides (its own function), a refusal there is worded by
:func:`posenc.config.validation.user_error` as ``train.py`` words it, and the rest goes through
:func:`posenc.config.validation.validate` with the override, as :func:`posenc.run.train.run`
calls it before anything is written or built. A handful of cases then run through ``train.py`` itself
(in this process): exit status 2 and exactly one ``error:`` line on stderr.

Where a kind of bad value is legitimately valid for a key, :func:`skip_reason` says so by a rule,
never silently; the rules are listed there, and the test fails if a key is neither refused nor skipped.
"""

from __future__ import annotations

import copy
import dataclasses
import typing
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from helpers.runs import CONF_DIR, compose_run, train_in_process
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from posenc.config.groups import group_options
from posenc.config.schema import target_schema
from posenc.config.validation import _fields, _unwrap_optional, user_error, validate
from posenc.errors import PosencError

# The groups whose options are the config's nodes; hydra/launcher is Hydra's, a sweep preset is a set of
# jobs of these. A global option (invariance, protocol, experiment) is tried on the task node it sets.
GROUPS = {g: options for g, options in group_options(CONF_DIR).items() if not g.startswith("hydra") and g != "sweep"}
GLOBAL_OPTIONS = ("invariance", "protocol", "experiment")
KINDS = ("type", "range", "empty")


@dataclasses.dataclass(frozen=True)
class Key:
    """One key of a composed node: its dotted path and its schema field (None: no schema types it)."""

    path: str
    owner: str | None  # the schema class that declares the field (the dedupe key, with the field's name)
    tp: Any = None
    rules: dict[str, Any] = dataclasses.field(default_factory=dict)
    interpolated: bool = False


def _schema_of(node: DictConfig) -> Any:
    """The dataclass typing ``node``: its own type, else the schema of its ``_target_`` (an optimizer),
    generated from the target's signature as the validator generates it."""
    schema = OmegaConf.get_type(node)
    if _fields(schema):
        return schema
    target = node._get_node("_target_")._value() if "_target_" in node else None
    return target_schema(target, partial="_partial_" in node) if isinstance(target, str) else None


def _declaring_class(schema: type, name: str) -> str:
    return next(c.__name__ for c in reversed(schema.__mro__) if name in getattr(c, "__annotations__", {}))


def keys_of(node: DictConfig, path: str) -> list[Key]:
    """Every leaf key of ``node`` (nested schema nodes walked: ``data.canvas``), with its schema field."""
    if node._is_none() or node._is_missing():
        return []
    schema = _schema_of(node)
    fields = _fields(schema)
    found: list[Key] = []
    for name in node.keys():
        key, child = f"{path}.{name}", node._get_node(name)
        field = fields.get(str(name))
        owner = _declaring_class(schema, str(name)) if field is not None else None
        if OmegaConf.is_interpolation(node, name):
            found.append(Key(key, owner, interpolated=True))
        elif isinstance(child, DictConfig) and (
            field is None
            or (not child._is_none() and "_target_" in child)
            or dataclasses.is_dataclass(_unwrap_optional(field[0])[0])
        ):
            found += keys_of(child, key)  # a nested schema node, or a loosely typed one with a _target_ (optimizer)
        else:
            found.append(Key(key, owner, *(field or (None, {}))))
    return found


def _is_list(tp: Any) -> bool:
    return typing.get_origin(_unwrap_optional(tp)[0]) is list


def _bound_breaker(rules: dict[str, Any]) -> Any:
    """A number just outside the declared range."""
    if "ge" in rules:
        return rules["ge"] - 1
    if "gt" in rules:
        return rules["gt"]
    if "le" in rules:
        return rules["le"] + 1
    return rules["lt"]


def skip_reason(key: Key, kind: str) -> str | None:
    """Why ``kind`` of bad value is no bad value for ``key`` (None: it must be refused). The rules:"""
    inner, _ = _unwrap_optional(key.tp)
    rules = key.rules
    ranged = "choices" in rules or any(b in rules for b in ("ge", "gt", "le", "lt"))
    if key.interpolated:
        # ${data.image_size}, ${backbone}: the key it points to is tried where it lives
        return "an interpolation of another key"
    if key.owner is None:
        # a key of a loosely typed node without a schema (a progress bar's own arguments): checked against
        # its target's signature when it is built, by the target itself
        return "no schema types it"
    if kind == "type" and inner is Any and not ranged:
        # Any: several types are valid (trainer.devices=2|auto|[0,1]; backbone.kwargs any mapping); the target
        # checks it when built (Lightning, the user's factory), in one line (test_bad_inputs)
        return "any type is valid here"
    if kind == "range":
        if _is_list(key.tp) and not rules.get("items"):
            return "its entries have no rule"  # logger.wandb.tags: any strings
        if not _is_list(key.tp) and inner is not bool and not ranged:
            # a free string or number: a name or a path checked where it is used (timm.list_models(), the
            # file system: one line each, test_cli / test_timm_backbones), or a number every value of which
            # is valid (seed, SGD's dampening)
            return "every value of its type is valid"
    if kind == "empty":
        if rules.get("empty"):
            return "empty is its default or a valid choice"  # logger.*.prefix: "", logger.csv.version: ""
        if _is_list(key.tp) and not rules.get("min_items"):
            return "an empty list is valid"  # no milestones (task.scheduler.fractions), no W&B tags
    return None


def bad_value(key: Key, kind: str) -> str:
    """The command line's text of ``kind`` of bad value for ``key``."""
    inner, _ = _unwrap_optional(key.tp)
    rules = key.rules
    if kind == "empty":
        return "[]" if _is_list(key.tp) else ""
    if kind == "type":
        return "[a,b]" if inner is str else "abc"  # a list for a string; a word for a number, a bool or a list
    if inner is bool:
        return "2"  # OmegaConf would read it as true
    if _is_list(key.tp):
        items = rules["items"]
        return "[not_a_choice]" if "choices" in items else f"[{_bound_breaker(items)}]"
    if "choices" in rules:
        numbers = all(isinstance(c, (int, float)) or c is None for c in rules["choices"])
        return str(max(c for c in rules["choices"] if c is not None) + 1) if numbers else "not_a_choice"
    if key.path.endswith("._target_"):
        return "posenc.no_such.Thing"
    return str(_bound_breaker(rules))


@cache
def composed(group: str, option: str, run_dir: str) -> DictConfig:
    return compose_run([f"{group}={option}"], Path(run_dir))


def refusal(cfg: DictConfig, override: str) -> str | None:
    """The one-line message ``override`` gets on ``cfg``, as a run would give it; None when accepted."""
    cfg = copy.deepcopy(cfg)
    try:  # Hydra's own application of a command line's overrides to the composed config
        ConfigLoaderImpl._apply_overrides_to_config(OverridesParser.create().parse_overrides([override]), cfg)
    except Exception as exc:  # noqa: BLE001 - must be a user error, which train.py words in one line
        user = user_error(exc)
        assert user is not None, f"{override} raised a traceback: {exc!r}"
        return str(user)
    try:
        validate(cfg, [override])
    except PosencError as exc:
        return str(exc)
    return None


@pytest.mark.parametrize("group", sorted(GROUPS) + ["train"])
def test_every_key_refuses_a_wrong_type_an_out_of_range_and_an_empty_value(tmp_path_factory, group):
    run_dir = str(tmp_path_factory.mktemp("compose"))
    seen: set[tuple[str, str]] = set()
    problems, tried, skipped = [], 0, []
    for option in GROUPS.get(group, ["default"]):
        if group == "train":  # the train config's own keys (seed, paths.*, ...), besides its groups
            cfg = compose_run([], Path(run_dir))
            keys = [k for name in cfg.keys() if name not in GROUPS for k in _train_keys(cfg, str(name))]
        else:
            cfg = composed(group, option, run_dir)
            node = "task" if group in GLOBAL_OPTIONS else group
            keys = keys_of(cfg[node], node)
        for key in keys:
            ident = (key.owner or key.path, key.path.rsplit(".", 1)[-1])
            if ident in seen:
                continue
            seen.add(ident)
            for kind in KINDS:
                reason = skip_reason(key, kind)
                if reason is not None:
                    skipped.append(f"{key.path} [{kind}]: {reason}")
                    continue
                tried += 1
                override = f"{key.path}={bad_value(key, kind)}"
                line = refusal(cfg, override)
                if line is None:
                    problems.append(f"{override} ({group}={option}) [{kind}]: accepted")
                elif "\n" in line or key.path not in line:
                    problems.append(f"{override} ({group}={option}) [{kind}]: {line!r} is not one line naming the key")
    assert tried, f"no case for group {group}"
    assert not problems, "\n".join(problems)


def _train_keys(cfg: DictConfig, name: str) -> list[Key]:
    """The keys of the train config's own field ``name`` (a group's node is tried in its group)."""
    fields = _fields(OmegaConf.get_type(cfg))
    node = cfg._get_node(name)
    if isinstance(node, DictConfig) and not node._is_none():
        return keys_of(node, name)
    field = fields.get(name)
    return [Key(name, "TrainSchema" if field else None, *(field or (None, {})))]


# train.py itself, in this process: a handful of the cases above, one per kind and node, end to end
CLI_CASES = [
    ["readout.sigmoid=2"],  # an int taken for a bool
    ["data.batch_size=abc"],  # the wrong type
    ["data.num_val=-1"],  # out of range
    ["backbone.weights="],  # empty, where null means none
    ["task.optimizer.betas=[0.9]"],  # a list of the wrong length
    ["trainer.precision="],  # empty, where Lightning would refuse it only once the data and task are built
    ["task=location_cls", "data.canvas.grid=0"],  # a nested node
    ["logger=tensorboard", "logger.tensorboard.log_graph=yes"],  # yes is no bool either
    ["callbacks.loss_curve.window="],
    ["task.optimizer._target_="],  # an empty target
]


@pytest.mark.parametrize("args", CLI_CASES, ids=[" ".join(a) for a in CLI_CASES])
def test_train_py_refuses_them_in_one_line(tmp_path, args):
    proc = train_in_process("backbone=tiny", *args, f"paths.output_root={tmp_path}")
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    assert args[-1].split("=", 1)[0] in lines[0], lines[0]
