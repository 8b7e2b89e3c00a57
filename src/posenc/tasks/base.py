"""The contract between a task and the framework: what :mod:`posenc.run.train`, the console report
(:mod:`posenc.viz.tables`) and the sweep reports (:mod:`posenc.sweeps.collect`) ask of every task, so that
none of them names a task or a metric. A task is a ``LightningModule`` that also subclasses
:class:`PosencTask` and overrides what differs from these defaults."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import lightning as L


class PosencTask(L.LightningModule):
    """A posenc task.

    - ``trains``: False for a measurement whose test pass is the whole run (PPP): no ``fit``.
    - ``metric_order``: the order reports show the task's overall ``test/<metric>`` keys (and
      ``test/by_distance/<bin>/<metric>``) in; metrics not listed follow, sorted.
    - ``grid_order``: for tasks whose test keys are ``test/<row>/<column>/<metric>`` (PosENet:
      input x target x SPC / MAE), the order of rows, columns and metrics.
    - ``summary``: metrics the task computed outside Lightning's logging (merged into ``metrics.json``).
    - :meth:`check_data`: one-line errors for a datamodule that does not fit, before the Trainer starts.
    - :meth:`console_tables`: the rich tables printed at the end of a run.
    - :meth:`sweep_sections`: extra markdown lines for a sweep report over the task's jobs.
    """

    trains: ClassVar[bool] = True
    metric_order: ClassVar[tuple[str, ...]] = ()
    grid_order: ClassVar[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]] | None] = None

    def __init__(self) -> None:
        super().__init__()
        self.summary: dict[str, Any] = {}

    def check_data(self, datamodule: Any) -> None:
        """Raise a one-line ``PosencError`` if ``datamodule`` cannot feed this task (default: any can)."""

    @classmethod
    def console_tables(cls, metrics: Mapping[str, Any]) -> list[Any]:
        """The tables :func:`posenc.viz.tables.print_results` shows: the overall metrics and, where
        the task bins them, per distance to the border; the grid of ``grid_order`` tasks."""
        from posenc.viz.tables import grid_table, task_table

        table = task_table(metrics) if cls.grid_order is None else grid_table(metrics)
        return [table] if table is not None else []

    @classmethod
    def sweep_sections(cls, metrics: Sequence[Mapping[str, Any]], wall_times: Sequence[float]) -> list[str]:
        """Markdown lines about this task's completed jobs (their metrics and wall times) that a
        sweep report adds after its tables (default: none)."""
        return []
