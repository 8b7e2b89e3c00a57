"""Reading the run contract's JSON and YAML files (``status.json``, ``metrics.json``, ``config.yaml``) without
importing torch or Lightning: ``sweep.py``, the command line and the run contract share it. A run dir or
sweep dir is someone's input: a damaged file is None (JSON) or one line (YAML), never a traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from posenc.core.errors import PosencError, first_line


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``; None when missing, unreadable, not a regular file (a FIFO would block
    the reader forever, a device never end) or not an object."""
    if not Path(path).is_file():  # follows a symlink: one to a FIFO or a device is no regular file either
        return None
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def load_yaml(path: Path, expected: str) -> Any:
    """``path`` read by OmegaConf; one line naming the file and what it should hold (``expected``) when
    it is not YAML."""
    import yaml
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        return OmegaConf.load(path)
    except (yaml.YAMLError, UnicodeDecodeError, OSError, OmegaConfBaseException) as exc:
        raise PosencError(f"cannot read {path}: not YAML ({first_line(exc)}); expected {expected}") from None
