"""User-facing errors: one line that names the bad value and what would be valid."""

from __future__ import annotations

from collections.abc import Iterable


class PosencError(ValueError):
    """An error caused by the user's input; ``train.py`` prints its one-line message and exits 2."""


def invalid_choice(kind: str, value: object, choices: Iterable[object]) -> PosencError:
    """``unknown padding 'foo'; valid: zeros, reflect, ...``"""
    listed = ", ".join(str(c) for c in choices)
    return PosencError(f"unknown {kind} {value!r}; valid: {listed}")


def check_choice(kind: str, value: object, choices: Iterable[object]) -> None:
    """Raise :func:`invalid_choice` unless ``value`` is one of ``choices``."""
    choices = list(choices)
    if value not in choices:
        raise invalid_choice(kind, value, choices)


def user_error(exc: BaseException) -> PosencError | None:
    """The ``PosencError`` behind ``exc`` (Hydra's ``instantiate`` wraps it), if any."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, PosencError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
