"""A rich bar over a long loop outside the Trainer (feature extraction, PPP's context passes, the
ranking and attack passes), shown on rank zero unless ``POSENC_PROGRESS=0``. Written here (not rich's
``track``) for that one switch; Lightning is imported only when a bar asks for the rank."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def enabled() -> bool:
    """Bars outside training: on rank zero, unless ``POSENC_PROGRESS=0``."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    rank = rank_zero_only.rank  # type: ignore[attr-defined]  # set on the function by Lightning at import
    return rank == 0 and os.environ.get("POSENC_PROGRESS", "1") != "0"


def track(iterable: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Yield from ``iterable`` under a rich bar on stderr: ``description``, done / total, elapsed and
    remaining time. In a log file (no terminal) rich writes the finished bar once."""
    if not enabled():
        yield from iterable
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True)) as progress:
        yield from progress.track(iterable, total=total, description=description)
