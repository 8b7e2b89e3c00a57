"""The rules of an option's value, stated once, on the parameter of the ``_target_`` that takes it.

A choice is the parameter's ``Literal[...]`` annotation; a range, a list's length and its items' rules, or
choices that are only known at run time (the registered backbones and paddings) are a :class:`Rule` in its
``Annotated[...]`` metadata::

    def __init__(self, augment: Literal["none", "shift"] = "none",
                 shift: Annotated[int, Rule(ge=1)] = 8,
                 targets: Annotated[Sequence[str], Rule(items=Rule(choices=TARGETS), min_items=1)] = TARGETS): ...

:func:`rules_of` turns an annotation into the rules the config validator (:mod:`posenc.config.validation`)
checks and the schemas (:mod:`posenc.config.schema`) carry as field metadata, so the value list lives where
the code that acts on it is. Written here, not with ``annotated_types``, because the validator also needs the
valid values outside a range (``also``), why a list needs its length (``why_items``) and options that apply
only beside another choice (``only_with``): the one-line errors name them.
"""

from __future__ import annotations

import collections.abc
import types
from collections.abc import Collection
from dataclasses import dataclass, fields
from typing import Annotated, Any, Literal, Union, get_args, get_origin

__all__ = ["Annotated", "Literal", "Rule", "rules_of", "choices_of"]


@dataclass(frozen=True)
class Rule:
    """What a value must be beyond its type: a range (``ge``, ``gt``, ``le``, ``lt``), ``choices`` (a
    collection, live views allowed), ``also`` (valid values outside the range, e.g. ``-1``: no cap), the rule
    of each list item (``items``), the list's length (``min_items``, ``max_items``, and ``why_items``: why),
    ``empty`` (an empty string is valid) and ``only_with=(sibling key, its choices)`` (the command line may
    set the option only beside those choices of a sibling key)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: Collection[Any] | None = None
    also: tuple[Any, ...] = ()
    items: Rule | None = None
    min_items: int | None = None
    max_items: int | None = None
    why_items: str = ""
    empty: bool = False
    only_with: tuple[str, tuple[Any, ...]] | None = None

    def as_dict(self) -> dict[str, Any]:
        """The rules that are set, as the validator reads them (``items`` as a dict too)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or value == () or value == "" or value is False:
                continue
            out[f.name] = value.as_dict() if isinstance(value, Rule) else value
        return out


def _without_none(annotation: Any) -> Any:
    """``X`` of ``X | None`` / ``Optional[X]`` (an annotation with one other member), else ``annotation``."""
    if get_origin(annotation) in (Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return members[0]
    return annotation


def choices_of(annotation: Any) -> tuple[Any, ...] | None:
    """The values of a ``Literal[...]`` annotation (inside ``Optional`` / ``Annotated`` too), else None."""
    annotation = _without_none(annotation)
    if get_origin(annotation) is Annotated:
        return choices_of(get_args(annotation)[0])
    if get_origin(annotation) is Literal:
        return get_args(annotation)
    return None


# the origins of a list-valued annotation: list[X], tuple[X, ...], Sequence[X], ...
SEQUENCES = (list, tuple, collections.abc.Sequence, collections.abc.MutableSequence, collections.abc.Collection)


def rules_of(annotation: Any) -> dict[str, Any]:
    """The rules an annotation states: its :class:`Rule` (``Annotated`` metadata), its ``Literal``
    choices (a list's item choices for ``Sequence[Literal[...]]``) and a fixed-length tuple's length
    (``tuple[float, float]``: 2 entries), as the validator's dict."""
    annotation = _without_none(annotation)
    rules: dict[str, Any] = {}
    if get_origin(annotation) is Annotated:
        base, *meta = get_args(annotation)
        for rule in meta:
            if isinstance(rule, Rule):
                rules.update(rule.as_dict())
        annotation = _without_none(base)
    choices = choices_of(annotation)
    if choices is not None:
        rules.setdefault("choices", choices)
    elif get_origin(annotation) in SEQUENCES:
        args = get_args(annotation)
        item_choices = choices_of(args[0]) if args else None
        if item_choices is not None:
            rules.setdefault("items", {}).setdefault("choices", item_choices)
        if get_origin(annotation) is tuple and args and args[-1] is not Ellipsis:
            rules.setdefault("min_items", len(args))
            rules.setdefault("max_items", len(args))
    return rules
