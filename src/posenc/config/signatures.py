"""A ``_target_``'s signature as a Hydra structured config: the schema of the node that configures it.

:func:`schema_of` turns the keyword parameters of a class or function into a dataclass that OmegaConf types
and checks while Hydra composes: one field per parameter, in the signature's order, with its default, an
OmegaConf type (:func:`config_type`) and, as metadata, the rules its annotation states
(:func:`posenc.config.rules.rules_of`: ``Literal`` choices, ``Annotated[..., Rule(...)]`` ranges), which
:mod:`posenc.config.validation` checks. So an option written once, on the parameter that takes it, is typed,
defaulted and validated in every config that builds that target. hydra-zen's ``builds(...,
populate_full_signature=True)`` does the same, measured against this for issue 32: it types ``Optional[str]``,
path unions and unannotated parameters (W&B's) as Any and keeps tuples, so 20 of the 703 one-line errors
of the option-property cases changed or were no longer raised (here: 1, the order of a "valid:" list), at
the same compose + validate time.

A class's parameters are its ``__init__``'s and, where that forwards ``**kwargs``, its bases' in MRO order
(the validator follows the same chain); a dataclass's are its fields. What a signature cannot say (a default
that is an interpolation, a parameter the calling code supplies) is given to :func:`schema_of` by the caller,
:mod:`posenc.config.schema`, with its reason.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import os
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from functools import cache
from typing import Annotated, Any, List, Literal, Optional, Union, get_args, get_origin

from hydra.utils import get_object
from omegaconf import MISSING

from posenc.config.rules import SEQUENCES, Rule, rules_of

_SCALARS = (bool, int, float, str)
_NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def _evaluated(annotation: Any, owner: Any) -> Any:
    """``annotation``, a string one (``from __future__ import annotations``) evaluated in ``owner``'s module;
    Any when it names something that module does not hold."""
    if not isinstance(annotation, str):
        return Any if annotation is inspect.Parameter.empty else annotation
    try:
        return eval(annotation, dict(getattr(owner, "__globals__", {})))  # what typing.get_type_hints does
    except Exception:  # noqa: BLE001 - a name imported only for type checkers: nothing to type the field with
        return Any


@cache
def parameters(obj: Any) -> tuple[tuple[inspect.Parameter, ...], bool]:
    """The parameters ``obj(...)`` takes by keyword, annotations resolved, and whether it takes ``**kwargs``
    that no signature in its chain names (then any other key may be an argument too)."""
    if dataclasses.is_dataclass(obj) and isinstance(obj, type):
        hints = typing.get_type_hints(obj, include_extras=True)
        fields = [f for f in dataclasses.fields(obj) if f.init]
        return tuple(
            inspect.Parameter(
                f.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=f.default if f.default is not dataclasses.MISSING else inspect.Parameter.empty,
                annotation=hints.get(f.name, Any),
            )
            for f in fields
        ), False
    chain = [k.__dict__["__init__"] for k in obj.__mro__ if "__init__" in k.__dict__] if inspect.isclass(obj) else [obj]
    found: dict[str, inspect.Parameter] = {}
    for function in chain:
        try:
            signature = inspect.signature(function)
        except (TypeError, ValueError):  # a builtin without a signature
            return tuple(found.values()), True
        try:
            hints = typing.get_type_hints(function, include_extras=True)
        except Exception:  # noqa: BLE001 - one unresolvable annotation: each is evaluated alone below
            hints = {}
        for p in signature.parameters.values():
            if p.kind in _NAMED and p.name != "self" and p.name not in found:
                found[p.name] = p.replace(annotation=hints.get(p.name, _evaluated(p.annotation, function)))
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values()):
            return tuple(found.values()), False
    return tuple(found.values()), True


def _members(annotation: Any) -> list[Any]:
    """The members of a union (``X | Y``, ``Optional[X]``), each without its ``Annotated`` metadata;
    ``Literal[None, ...]`` counts as ``None`` plus the other values."""
    if get_origin(annotation) is Annotated:
        return _members(get_args(annotation)[0])
    if get_origin(annotation) in (Union, types.UnionType):
        return [m for a in get_args(annotation) for m in _members(a)]
    if get_origin(annotation) is Literal and None in get_args(annotation):
        rest = tuple(v for v in get_args(annotation) if v is not None)
        return [type(None), *([Literal[rest]] if rest else [])]
    return [annotation]


def _one_type(annotation: Any) -> Any:
    """The OmegaConf type of one union member: a scalar, ``str`` for a path, ``List[...]`` for a sequence,
    a nested schema for a dataclass (its fields given as a mapping), else Any."""
    origin = get_origin(annotation)
    if origin is Literal:
        kinds = {type(v) for v in get_args(annotation)}
        (kind,) = kinds if len(kinds) == 1 else (Any,)
        return kind if kind in _SCALARS else Any
    if annotation in _SCALARS:
        return annotation
    if isinstance(annotation, type) and issubclass(annotation, os.PathLike):
        return str
    if origin in SEQUENCES:
        args = [a for a in get_args(annotation) if a is not Ellipsis]
        items = {config_type(a) for a in args} or {Any}
        item = items.pop() if len(items) == 1 else Any
        return List[item if item in _SCALARS else Any]  # type: ignore[misc]
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        return nested_schema(annotation)
    return Any


def config_type(annotation: Any) -> Any:
    """The OmegaConf-typed annotation of a parameter annotated ``annotation``: one type stays that type
    (``Optional`` where ``None`` is valid); several (``int | float``, ``str | Accelerator``) become Any,
    which the target checks when built; a union holding a dataclass is that dataclass's nested schema."""
    members = _members(annotation)
    found = list(dict.fromkeys(_one_type(m) for m in members if m is not type(None)))
    nested = [t for t in found if dataclasses.is_dataclass(t)]
    if len(nested) == 1:
        return nested[0]
    if len(found) != 1:
        return Any
    return Optional[found[0]] if type(None) in members else found[0]


def _default(value: Any) -> Any:
    """A parameter's default as a config value: a tuple becomes a list, a path a string; a default no config
    can hold (an object) leaves the field required, as a parameter without a default does."""
    if isinstance(value, (tuple, list)):
        items = [_default(v) for v in value]
        return MISSING if MISSING in items else items
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return value
    return value if value is None or isinstance(value, _SCALARS) else MISSING


def _field(default: Any, metadata: Mapping[str, Any]) -> Any:
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    if isinstance(default, type) and dataclasses.is_dataclass(default):
        return dataclasses.field(default_factory=default, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


_NESTED: dict[type, type] = {}
_MODULE = __name__.rsplit(".", 1)[0] + ".schema"  # every schema is a name of posenc.config.schema (pickle finds it)


def nested_schema(cls: type) -> type:
    """The schema of a dataclass given as a mapping (``data.canvas``): its fields, no ``_target_``; one
    class per dataclass, named ``<Class>Schema``."""
    if cls not in _NESTED:
        _NESTED[cls] = schema_of(cls, f"{cls.__name__}Schema", named=False)
    return _NESTED[cls]


def nested_schemas() -> dict[str, type]:
    """Every nested schema generated so far, by its name."""
    return {schema.__name__: schema for schema in _NESTED.values()}


def schema_of(
    target: str | Callable[..., Any],
    name: str,
    *,
    named: bool = True,
    partial: bool = False,
    defaults: Mapping[str, Any] | None = None,
    retyped: Mapping[str, Any] | None = None,
    rules: Mapping[str, Rule] | None = None,
    exclude: Iterable[str] = (),
    extra: Iterable[tuple[str, Any, Any]] = (),
    doc: str = "",
) -> type:
    """The dataclass ``name`` of the node that configures ``target`` (a dotted path or the object).

    One field per keyword parameter, after ``_target_`` (``named``: the node names its target) and
    ``_partial_`` (``partial``: the code passes the rest, so a parameter without a default is left to it).
    The caller states what the signature cannot: ``defaults`` / ``retyped`` replacing a field's, ``rules``
    added to its annotation's, parameters to ``exclude``, ``extra`` fields ``(name, type, default)`` for
    arguments a ``**kwargs`` passes on."""
    obj = get_object(target) if isinstance(target, str) else target
    path = target if isinstance(target, str) else f"{obj.__module__}.{obj.__qualname__}"
    defaults, retyped, rules, skip = dict(defaults or {}), dict(retyped or {}), dict(rules or {}), set(exclude)
    extra = list(extra)
    found = parameters(obj)[0]
    stale = {*defaults, *retyped, *rules, *skip} - {p.name for p in found} - {e[0] for e in extra} - {"_target_"}
    if stale:  # an overlay naming no parameter: the target changed under it
        raise TypeError(f"schema {name}: {path} has no parameter {', '.join(sorted(stale))}")
    fields: list[tuple[str, Any, Any]] = []
    if named:
        fields.append(("_target_", str, dataclasses.field(default=defaults.pop("_target_", path))))
    if partial:
        fields.append(("_partial_", bool, dataclasses.field(default=True)))
    for p in found:
        if p.name in skip or (partial and p.default is inspect.Parameter.empty):
            continue
        tp = retyped.get(p.name, config_type(p.annotation))
        default = defaults[p.name] if p.name in defaults else _default(p.default)
        if dataclasses.is_dataclass(tp) and default in (None, MISSING):
            default = tp  # a nested node: its own fields' defaults
        metadata = rules_of(p.annotation)
        if p.name in rules:
            metadata.update(rules[p.name].as_dict())
        fields.append((p.name, tp, _field(default, metadata)))
    for extra_name, tp, default in extra:
        fields.append((extra_name, tp, _field(default, rules[extra_name].as_dict() if extra_name in rules else {})))
    doc = doc or f"The config of ``{path}``, generated from its signature (posenc.config.signatures)."
    return dataclasses.make_dataclass(
        name, fields, namespace={"__module__": _MODULE, "__qualname__": name, "__doc__": doc}
    )
