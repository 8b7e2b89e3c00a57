"""A torch device named on the command line (``data.device=cuda:1``, a tool's ``--device``), checked
against this machine before anything runs on it: one line, never torch's traceback."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from posenc.errors import PosencError


def check_device(key: str, name: str, also: Sequence[str] = ()) -> torch.device:
    """The device ``name`` (``key`` is how the user set it: ``data.device``, ``--device``); one line
    when torch cannot parse it or this machine has no such device (``also``: other values the key takes,
    named among the valid ones)."""
    valid = ", ".join([*also, "cpu"])
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        alternatives = "".join(f"{a} or " for a in also)
        raise PosencError(
            f"{key}={name!r} is not valid: expected {alternatives}a torch device (cpu, cuda, cuda:1, mps)"
        ) from None
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if not available.get(device.type, False):
        raise PosencError(f"{key}={name!r} is not valid: no {device.type} device on this machine; valid: {valid}")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise PosencError(f"{key}={name!r} is not valid: this machine has {torch.cuda.device_count()} GPU(s)")
    return device
