"""Reading the run contract's JSON files (``status.json``, ``metrics.json``) without importing
torch or Lightning: ``sweep.py``, the command line and the run contract share it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``; None when missing, unreadable or not an object."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
