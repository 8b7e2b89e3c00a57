"""User-facing errors: one line that names the bad value and what would be valid."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from hydra.errors import HydraException


class PosencError(ValueError):
    """An error caused by the user's input; ``train.py`` prints its one-line message and exits 2."""


class MissingWeights(PosencError):
    """The weights a config asks for are not on this machine (its message names the file and the
    folder it belongs in). A sweep records the job as ``failed`` with this error's type, so the
    position atlas marks the cell "no weights" instead of filling it with random init."""


def require_extra(module: str, feature: str, extra: str) -> Any:
    """Import the optional ``module`` a feature needs; missing, a one-line error naming the extra that
    installs it: ``logger=wandb needs wandb: pip install 'posenc[wandb]'`` (pyproject's extras)."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        package = module.split(".")[0].replace("hydra_plugins", "hydra-submitit-launcher")
        raise PosencError(f"{feature} needs {package}: pip install 'posenc[{extra}]'") from None


def invalid_choice(kind: str, value: object, choices: Iterable[object]) -> PosencError:
    """``unknown padding 'foo'; valid: zeros, reflect, ...``"""
    listed = ", ".join(str(c) for c in choices)
    return PosencError(f"unknown {kind} {value!r}; valid: {listed}")


def check_choice(kind: str, value: object, choices: Iterable[object]) -> None:
    """Raise :func:`invalid_choice` unless ``value`` is one of ``choices``."""
    choices = list(choices)
    if value not in choices:
        raise invalid_choice(kind, value, choices)


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message (its type's name when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


def _shown(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if hasattr(value, "_metadata"):  # an OmegaConf container: show it as plain data
        from omegaconf import OmegaConf

        value = OmegaConf.to_container(value, resolve=False)
    return repr(value)


def invalid_value(key: str, value: object, reason: str) -> PosencError:
    """``data.image_size='abc' is not valid: expected an int >= 8``"""
    return PosencError(f"{key}={_shown(value)} is not valid: {reason}")


def argument_error(key: str, node: Mapping[str, Any], exc: BaseException, overrides: Sequence[str] = ()) -> PosencError:
    """One line for ``exc``, raised while building the config node ``key`` (e.g. Lightning
    refusing ``trainer.devices=0``): the argument the message mentions first, else the one the
    command line set (``overrides``), with its value and the message's first line."""
    cause = exc
    while isinstance(cause, HydraException) and cause.__cause__ is not None:
        cause = cause.__cause__  # past Hydra's InstantiationException to what the target raised
    line = first_line(cause)
    lowered = line.lower()
    names = [str(k) for k in node if not str(k).startswith("_")]
    mentioned = sorted((lowered.find(n.lower()), -len(n), n) for n in names if n.lower() in lowered)
    if mentioned:
        name = mentioned[0][2]
        return invalid_value(f"{key}.{name}", node[name], line)
    parsed = [o.lstrip("+~").partition("=") for o in overrides]
    given = [(name, value) for name, _, value in parsed if name == key or name.startswith(f"{key}.")]
    if len(given) > 1:  # several candidates: the one whose value the message quotes, if any
        given = [(n, v) for n, v in given if len(v) > 1 and v in line] or given
    if len(given) == 1:
        name, value = given[0]
        return invalid_value(name, node.get(name[len(key) + 1 :], value) if name != key else value, line)
    if given:
        return PosencError(f"{key} is not valid ({', '.join(f'{n}={v}' for n, v in given)}): {line}")
    return PosencError(f"{key} is not valid: {line}")
