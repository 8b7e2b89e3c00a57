"""The contract between a task and the framework: what :mod:`posenc.run.train` and the console report
(:mod:`posenc.viz.tables`) ask of every task, so that neither names a task or a metric. Sweep reports
(:mod:`posenc.sweeps.tables`) never import a task: what they need of one, its report order, its runs
write into ``metrics.json``. A task is a ``LightningModule`` that also subclasses :class:`PosencTask` and
overrides what differs from these defaults."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import lightning as L


class PosencTask(L.LightningModule):
    """A posenc task.

    - ``trains``: False for a measurement whose test pass is the whole run (PPP): no ``fit``.
    - ``metric_order``: the order reports show the task's overall ``test/<metric>`` keys (and
      ``test/by_distance/<bin>/<metric>``) in; metrics not listed follow, sorted.
    - ``grid_order``: for tasks whose test keys are ``test/<row>/<column>/<metric>`` (PosENet:
      input x target x SPC / MAE), the order of rows, columns and metrics.
    - :meth:`report_order`: both orders as one list of names, which a run writes into ``metrics.json``
      (``report_order``) for the sweep reports.
    - ``summary``: metrics the task computed outside Lightning's logging (merged into ``metrics.json``).
    - :meth:`check_data`: one-line errors for a datamodule that does not fit, before the Trainer starts.
    - :meth:`console_tables`: the rich tables printed at the end of a run.
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
    def report_order(cls) -> list[str]:
        """The names of :attr:`metric_order`, then of every level of :attr:`grid_order`, each once: a report
        ordering one kind of name (metrics, a grid's rows or columns) takes that kind's from this list."""
        levels = cls.grid_order or ((), (), ())
        return list(dict.fromkeys([*cls.metric_order, *(name for level in levels for name in level)]))
