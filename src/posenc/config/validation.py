"""Check a composed config against the schemas of :mod:`posenc.config.schema`, and word every
config mistake as one line: ``data.image_size='abc' is not valid: expected an int >= 8``.

OmegaConf checks types and unknown keys while Hydra composes; :func:`validate` checks the rest
right after compose, before anything is built: the ranges and choices in the schema fields'
metadata (the rules the targets' signatures state, :mod:`posenc.config.rules`), values left ``???``,
interpolations that do not resolve, loosely typed nodes against the schema of their ``_target_``
(:func:`posenc.config.schema.target_schema`) and every ``_target_`` node's keys against the arguments
of what it builds (which catches ``+key=value`` additions). A Hydra composition error is worded from
its cause (OmegaConf's exception: key, value, schema) and the override Hydra was applying, never
from the text of Hydra's message.

The checker is hand-written on purpose: OmegaConf has no range constraints, and pydantic (or
any other validation library) would need a second copy of every schema in its own terms.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import typing
from collections.abc import Iterator, Sequence
from typing import Any

import yaml
from hydra.core.override_parser.types import Override
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, Node, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    InterpolationResolutionError,
    MissingMandatoryValue,
    OmegaConfBaseException,
    ValidationError,
)

from posenc.config.schema import target_schema
from posenc.config.signatures import parameters
from posenc.errors import PosencError, first_line, invalid_value

# Keys of a ``_target_`` node that are Hydra's, not arguments of the target.
INSTANTIATE_KEYS = frozenset({"_target_", "_partial_", "_recursive_", "_convert_", "_args_"})
_NO_FIELD = object()


# -- what a field expects ---------------------------------------------------------------------
def _join_or(words: Sequence[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _show(value: Any) -> str:
    """A value as the command line writes it: ``null``, ``true``, ``abc``, ``0.5``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    args = typing.get_args(tp)
    if typing.get_origin(tp) is typing.Union and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else Any), True
    return tp, False


def _range_words(rules: dict[str, Any]) -> str:
    low = ("(", rules["gt"]) if "gt" in rules else ("[", rules["ge"]) if "ge" in rules else None
    high = (")", rules["lt"]) if "lt" in rules else ("]", rules["le"]) if "le" in rules else None
    if low and high:
        return f"in {low[0]}{_show(low[1])}, {_show(high[1])}{high[0]}"
    if low:
        return f"{'>' if low[0] == '(' else '>='} {_show(low[1])}"
    if high:
        return f"{'<' if high[0] == ')' else '<='} {_show(high[1])}"
    return ""


_TYPE_WORDS = {int: "an int", float: "a number", bool: "true or false", str: "a string"}


def _length_words(rules: dict[str, Any]) -> str:
    """`` of 2 entries`` / `` of at least 1 entry`` for a list field's ``min_items`` / ``max_items``."""
    low, high = rules.get("min_items"), rules.get("max_items")
    if low is None and high is None:
        return ""
    if low == high:
        count, bound = low, ""
    else:
        count, bound = (low, "at least ") if high is None else (high, "at most ") if low is None else (None, "")
    if count is None:
        return f" of {low} to {high} entries"
    return f" of {bound}{count} entr{'y' if count == 1 else 'ies'}"


def describe(tp: Any, rules: dict[str, Any]) -> str:
    """``expected ...`` for a field of type ``tp`` with metadata ``rules``."""
    tp, optional = _unwrap_optional(tp)
    if "choices" in rules:
        base = "one of " + ", ".join(_show(c) for c in rules["choices"])
    elif typing.get_origin(tp) in (list, list, Sequence):
        (item,) = typing.get_args(tp) or (Any,)
        each = describe(item, rules.get("items", {}))
        base = f"a list{_length_words(rules)}" + (f", each entry {each}" if each != "any value" else "")
    elif dataclasses.is_dataclass(tp):
        base = "a config with keys " + ", ".join(f.name for f in dataclasses.fields(tp))
    else:
        kind = _TYPE_WORDS.get(tp, "a number" if _range_words(rules) else "")
        base = " ".join(w for w in (kind, _range_words(rules)) if w)
    alternatives = [base] if base else []
    alternatives += [_show(a) for a in rules.get("also", ())]
    if optional and None not in rules.get("choices", ()):
        alternatives.append("null")
    return _join_or(alternatives) if alternatives else "any value"


def _fields(schema: Any) -> dict[str, tuple[Any, dict[str, Any]]]:
    """``name -> (type, rules)`` of a schema dataclass (types resolved from their annotations)."""
    if not (isinstance(schema, type) and dataclasses.is_dataclass(schema)):
        return {}
    hints = typing.get_type_hints(schema)
    found = {}
    for f in dataclasses.fields(schema):
        rules = dict(f.metadata)
        if f.default == "":  # an empty default (a logger's prefix): an empty value is a valid choice
            rules.setdefault("empty", True)
        found[f.name] = (hints[f.name], rules)
    return found


def expected(schema: Any, key: Any) -> str | None:
    """``expected ...`` for ``key`` of ``schema``, or None when the schema has no such field."""
    found = _fields(schema).get(str(key))
    return None if found is None else "expected " + describe(*found)


# -- checking a value against its rules --------------------------------------------------------
def _same(a: Any, b: Any) -> bool:
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def _breaks(value: Any, rules: dict[str, Any]) -> bool:
    """True when ``value`` breaks ``rules`` (None and lists are handled by the caller)."""
    if any(_same(value, a) for a in rules.get("also", ())):
        return False
    if "choices" in rules and not any(_same(value, c) for c in rules["choices"]):
        return True
    bounds = [(k, rules[k]) for k in ("ge", "gt", "le", "lt") if k in rules]
    if not bounds:
        return False
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return True
    return not all({"ge": value >= b, "gt": value > b, "le": value <= b, "lt": value < b}[k] for k, b in bounds)


def _check_value(key: str, value: Any, tp: Any, rules: dict[str, Any]) -> None:
    inner, optional = _unwrap_optional(tp)
    if value is None:
        return  # OmegaConf already refused None where the type is not Optional / Any
    if isinstance(value, str) and not value and not rules.get("empty"):
        # `key=` on the command line: never a path, a name or a choice (null is the way to say "none")
        raise invalid_value(key, value, "an empty value; expected " + describe(tp, rules))
    if isinstance(value, ListConfig):
        low, high = rules.get("min_items", 0), rules.get("max_items")
        if len(value) < low or (high is not None and len(value) > high):
            reason = rules.get("why_items")
            raise invalid_value(key, value, (f"{reason}; valid: " if reason else "expected ") + describe(tp, rules))
        item_rules = rules.get("items")
        if item_rules:
            (item_tp,) = typing.get_args(inner) or (Any,)
            for i, item in enumerate(value):
                if _breaks(item, item_rules):
                    raise invalid_value(f"{key}[{i}]", item, "expected " + describe(item_tp, item_rules))
        return
    if _breaks(value, rules):
        raise invalid_value(key, value, "expected " + describe(tp, rules))


def _did_you_mean(key: str, keys: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, keys, n=1)
    return f" (did you mean {close[0]}?)" if close else "; valid: " + ", ".join(keys)


def _target_parameters(path: str, target: Any) -> dict[str, inspect.Parameter] | None:
    """The arguments of ``_target_`` (None when it takes ``**kwargs`` or has no signature)."""
    if not isinstance(target, str) or not target.strip():
        raise invalid_value(f"{path}._target_", target, "expected a dotted import path")
    try:
        obj = get_object(target)
    except ImportError as exc:
        # hydra's _locate wraps every import failure; only a name that is not there is the
        # user's mistake (a module failing to import is a bug and keeps its traceback)
        if not isinstance(exc.__cause__, (ModuleNotFoundError, AttributeError)):
            raise
        raise invalid_value(f"{path}._target_", target, "cannot import it") from exc
    found, takes_more = parameters(obj)  # a class's __init__ and, through **kwargs, its bases' (MRO)
    return None if takes_more else {p.name: p for p in found}


def _raw_target(node: DictConfig) -> Any:
    """``node._target_`` unresolved; the caller checked that ``node`` has one."""
    target = node._get_node("_target_")
    assert target is not None, "_raw_target() of a node without _target_"
    return target._value()


def _check_arguments(node: DictConfig, path: str) -> None:
    """Every key of a ``_target_`` node must be an argument of its target."""
    params = _target_parameters(path, _raw_target(node))
    if params is None:
        return
    for key in node:
        if key not in INSTANTIATE_KEYS and key not in params:
            name = str(node["_target_"]).rsplit(".", 1)[-1]
            hint = _did_you_mean(str(key), [p for p in params if not p.startswith("_")])
            raise invalid_value(f"{path}.{key!s}", _raw(node, key), f"{name} has no argument {key!r}{hint}")


def _raw(node: DictConfig | ListConfig, key: Any) -> Any:
    """``node[key]`` unresolved: an interpolation stays ``${...}``; containers become plain."""
    child = node._get_node(key)
    if isinstance(child, (DictConfig, ListConfig)):
        return OmegaConf.to_container(child, resolve=False)
    assert isinstance(child, Node), f"_raw() of a key {key!r} that is not in the node"  # one key, never a slice
    return child._value()


def _value(node: DictConfig | ListConfig, key: Any, full_key: str) -> Any:
    if OmegaConf.is_missing(node, key):
        raise invalid_value(full_key, "???", "a value is required here")
    try:
        return node[key]
    except InterpolationResolutionError as exc:
        raise invalid_value(full_key, _raw(node, key), first_line(exc)) from exc


def _children(node: DictConfig | ListConfig, path: str) -> Iterator[tuple[Any, str]]:
    keys = range(len(node)) if isinstance(node, ListConfig) else list(node.keys())
    for key in keys:
        full = f"{path}[{key!s}]" if isinstance(node, ListConfig) else (f"{path}.{key!s}" if path else str(key))
        yield key, full


def _target_schema_of(node: DictConfig) -> type | None:
    """The schema of a loosely typed ``_target_`` node (``task.optimizer``, a task of the user's own):
    generated from its target's signature (a partial leaves the arguments without a default to its caller)."""
    target = _raw_target(node)
    return target_schema(target, partial="_partial_" in node) if isinstance(target, str) else None


def _typed(typed: DictConfig, name: str, value: Any, path: str) -> Any:
    """``value`` of a loosely typed node's key ``name``, converted to its field of ``typed`` (the target's
    schema) as OmegaConf converts a composed value (``'3'`` for an int is 3); a value of the wrong type is
    refused in one line."""
    tp, rules = _fields(OmegaConf.get_type(typed))[name]
    listed = typing.get_origin(_unwrap_optional(tp)[0]) is list
    if listed and value is not None and not isinstance(value, ListConfig):
        raise invalid_value(f"{path}.{name}", value, "expected " + describe(tp, rules))
    plain = OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value
    try:
        typed[name] = plain
    except OmegaConfBaseException as exc:
        raise omegaconf_error(exc, prefix=path) from exc
    return typed[name]


def _check_node(node: DictConfig | ListConfig, path: str) -> None:
    fields: dict[str, tuple[Any, dict[str, Any]]] = {}
    typed: DictConfig | None = None  # a loosely typed node's values, converted to its target's schema
    if isinstance(node, DictConfig):
        fields = _fields(OmegaConf.get_type(node))
        if "_target_" in node:
            _check_arguments(node, path)
            schema = None if fields else _target_schema_of(node)
            if schema is not None:
                fields, typed = _fields(schema), OmegaConf.structured(schema)
    for key, full in _children(node, path):
        interpolated = OmegaConf.is_interpolation(node, key)
        value = _value(node, key, full)
        if str(key) in fields:
            checked = value if typed is None else _typed(typed, str(key), value, path)
            _check_value(full, checked, *fields[str(key)])
        if not interpolated and isinstance(value, (DictConfig, ListConfig)):
            _check_node(value, full)  # an interpolated node is checked where it lives


def validate(cfg: DictConfig, overrides: Sequence[str] = ()) -> None:
    """Raise :class:`PosencError` (one line naming key, value and what is expected) for the first
    value of ``cfg`` that breaks its schema, or the first of the command line's ``overrides`` that
    :func:`check_overrides` refuses; return None when every value is valid."""
    check_overrides(cfg, overrides)
    _check_node(cfg, "")


def _field_of(cfg: DictConfig, key: str) -> tuple[Any, dict[str, Any], DictConfig] | None:
    """``(type, rules, parent node)`` of the schema field ``key`` of ``cfg`` names; None when
    no schema types it (a group choice, a loosely typed node, a key of Hydra's)."""
    parent_key, _, name = key.rpartition(".")
    try:
        parent = OmegaConf.select(cfg, parent_key, throw_on_missing=False) if parent_key else cfg
    except OmegaConfBaseException:
        return None  # an interpolation that does not resolve: _check_node names it
    if not isinstance(parent, DictConfig) or parent._is_none() or parent._is_missing():
        return None
    fields = _fields(OmegaConf.get_type(parent))
    if not fields and "_target_" in parent:
        fields = _fields(_target_schema_of(parent))
    found = fields.get(name)
    return None if found is None else (*found, parent)


def check_overrides(cfg: DictConfig, overrides: Sequence[str]) -> None:
    """What the composed ``cfg`` no longer shows about the command line's ``key=value`` overrides:

    - a bool field takes ``true`` or ``false`` only (and ``null`` where optional). OmegaConf would
      read ``2``, ``0``, ``yes`` or ``off`` as a bool; ``readout.sigmoid=2`` is a typo, not a yes.
    - a field whose schema says it applies only with another choice (``only_with``: the name of a
      sibling key and its choices, e.g. ``padding.none_upsample`` with ``padding.name=none``) is
      refused when the command line sets it beside any other choice. A preset may still set it for
      every choice (``protocol=gps``): it is checked only where the user typed it.
    - the key typed is checked before the keys that follow it by interpolation, so the one line names
      ``data.image_size=7``, not ``task.image_size`` (``${data.image_size}``).
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for text in overrides:
        try:
            override = parser.parse_override(text)
        except Exception:  # noqa: BLE001 - Hydra parsed the same line before composing: not ours to word
            continue
        if override.is_sweep_override() or override.is_delete() or override.package is not None:
            continue
        key = override.key_or_group
        found = _field_of(cfg, key)
        if found is None:
            continue
        tp, rules, parent = found
        value = override.value()
        inner, optional = _unwrap_optional(tp)
        if inner is bool and not isinstance(value, bool) and not (optional and value is None):
            raise invalid_value(key, value, "expected " + describe(tp, rules))
        name = key.rpartition(".")[2]
        if not OmegaConf.is_interpolation(parent, name):  # the key typed is named first, not a key following it
            _check_value(key, _value(parent, name, key), tp, rules)
        only_with = rules.get("only_with")
        if only_with is not None:
            sibling, choices = only_with
            chosen = parent.get(sibling)
            if chosen not in choices:
                owner = key.rpartition(".")[0]
                allowed = "|".join(str(c) for c in choices)
                raise invalid_value(
                    key,
                    value,
                    f"it applies only with {owner}.{sibling}={allowed}, and {owner}.{sibling}={_show(chosen)} "
                    f"here; valid: {owner}.{sibling}={allowed}, or leave {key} unset",
                )


# -- OmegaConf / Hydra errors as one line -----------------------------------------------------
def omegaconf_error(exc: OmegaConfBaseException, prefix: str = "", override: Override | None = None) -> PosencError:
    """One line for an OmegaConf error: the key, the value, and the schema's ``expected ...``
    (else OmegaConf's own first line). ``prefix`` is prepended to its key; ``override`` is the
    command line's override that caused it, named when the error does not carry the value."""
    full_key = str(getattr(exc, "full_key", "") or "")
    key = ".".join(k for k in (prefix, full_key) if k) or "config"
    schema, field = getattr(exc, "object_type", None), getattr(exc, "key", None)
    if isinstance(exc, (ConfigAttributeError, ConfigKeyError)) and field is not None:
        keys = [k for k in _fields(schema) if not k.startswith("_")]
        owner = key.rsplit(".", 1)[0] if "." in key else "the config"
        reason = f"{owner} has no key {str(field)!r}" + (_did_you_mean(str(field), keys) if keys else "")
    elif isinstance(exc, MissingMandatoryValue) and key.startswith("logger.") and key.count(".") == 1:
        entry = key.split(".", 1)[1]  # a logger no logger= option chose (posenc.run.loggers)
        reason = f"logger {entry} is not chosen; valid: logger={entry} or a list with it (logger=[csv,{entry}])"
    else:
        reason = (expected(schema, field) if isinstance(exc, ValidationError) else None) or first_line(exc)
    if getattr(exc, "value", None) is not None:
        return invalid_value(key, exc.value, reason)
    if override is not None and override.input_line is not None:
        # what the command line set (a key below ``key``), its value as typed and read as YAML: 3, not '3'
        text = override.input_line.partition("=")[2]
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        return invalid_value(override.key_or_group, value, reason)
    return PosencError(f"{key} is not valid: {reason}")


def _applied_override(exc: BaseException, cause: OmegaConfBaseException) -> Override | None:
    """The override Hydra was applying when it raised ``exc``: the parsed :class:`Override` its loop over
    the command line holds, the innermost on the traceback (Hydra's error has no field for it), kept
    only when its key is the key ``cause`` names or one above or below it."""
    found, tb = None, exc.__traceback__
    while tb is not None:
        found = next((v for v in tb.tb_frame.f_locals.values() if isinstance(v, Override)), found)
        tb = tb.tb_next
    if found is None:
        return None
    key, failed = found.key_or_group, str(getattr(cause, "full_key", "") or "")
    related = key == failed or failed.startswith(key + ".") or key.startswith(failed + ".")
    return found if related else None


def compose_error(exc: ConfigCompositionException | OverrideParseException) -> PosencError:
    """One line for an error Hydra raised while composing (a bad override or config): worded from its
    cause, OmegaConf's exception, and the override being applied, never from Hydra's message text."""
    if isinstance(exc, OverrideParseException):
        return PosencError(f"cannot parse override {exc.override!r}: {first_line(exc)}")
    cause = exc.__cause__
    if isinstance(cause, OmegaConfBaseException):
        return omegaconf_error(cause, override=_applied_override(exc, cause))
    if isinstance(exc, MissingConfigException) and exc.options:
        return PosencError(f"{first_line(exc)}; valid: {', '.join(exc.options)}")
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return PosencError(" ".join(lines[:2]) if lines else type(exc).__name__)


def user_error(exc: BaseException) -> PosencError | None:
    """The user's error behind ``exc``, as a ``PosencError`` with a one-line message, if any:
    a ``PosencError`` (Hydra's ``instantiate`` wraps it), or a config Hydra could not compose
    (a bad override, a wrong type, an unknown key), worded by ``posenc.config.validation``."""
    seen: BaseException | None = exc
    visited: set[int] = set()
    while seen is not None and id(seen) not in visited:  # a chain can loop (``raise e from e``)
        visited.add(id(seen))
        if isinstance(seen, PosencError):
            return seen
        if isinstance(seen, (ConfigCompositionException, OverrideParseException)):
            return compose_error(seen)
        seen = seen.__cause__ or seen.__context__
    return None
