"""The contract between a task and the framework: what :mod:`posenc.run.train` and the console report
(:mod:`posenc.viz.tables`) ask of every task, so that neither names a task or a metric. Sweep reports
(:mod:`posenc.sweeps.tables`) never import a task: what they need of one, its report order, its runs
write into ``metrics.json``. A task is a ``LightningModule`` that also subclasses :class:`PosencTask` and
overrides what differs from these defaults."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar, cast

import lightning as L
import numpy as np
import torch

from posenc.viz.tables import interval_keys


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
    - :meth:`record_per_image`, :meth:`gathered_per_image`, :meth:`record_interval`: what every task's
      95% intervals share (issue 33 §3): per-image rows kept with their independent units during the
      test pass, gathered across DDP ranks, and the interval written beside its metric.
    """

    trains: ClassVar[bool] = True
    uses_trainer: ClassVar[bool] = True  # False: :meth:`measure` is the whole run (the atlas engine's own loop)
    metric_order: ClassVar[tuple[str, ...]] = ()
    grid_order: ClassVar[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]] | None] = None

    def __init__(self) -> None:
        super().__init__()
        self.summary: dict[str, Any] = {}
        # per record, the test pass's per-image rows and their units, for the intervals (issue 33 §3)
        self.per_image: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}

    def measure(self, run_dir: Any) -> dict[str, Any]:
        """The run of a task that does not use Lightning's Trainer (``uses_trainer = False``): its metrics."""
        raise NotImplementedError(f"{type(self).__name__} runs through the Trainer")

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

    # -- the test metrics' 95% intervals (posenc.metrics.intervals) ----------------------------
    def units_of(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """The independent unit of each image of a test ``batch`` (int64 on this task's device): its
        ``"unit"`` where the dataset serves one (the photo natural crops are cut from, the patch a canvas
        shows), else its ``"index"``: every image its own unit."""
        return torch.as_tensor(batch.get("unit", batch["index"]), device=self.device).long()

    def record_per_image(self, key: str, values: torch.Tensor, units: torch.Tensor) -> None:
        """Keep one batch's per-image rows of ``key`` (``[B, ...]``: scores, or the sums a pooled metric
        adds up) with each image's unit, until :meth:`gathered_per_image`."""
        self.per_image.setdefault(key, []).append((values.detach(), units))

    def gathered_per_image(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Every record's rows (float64 ``[N, ...]``) and units (``[N]``) over the whole test set, then
        forgotten. Under DDP each rank kept its share of the images (equal shares: the distributed
        sampler pads them); every rank gathers every record, in the order the test pass made them."""
        gathered = {}
        for key, parts in self.per_image.items():
            values = torch.cat([v for v, _ in parts])
            units = torch.cat([u for _, u in parts])
            if self.trainer.world_size > 1:  # a tensor in, a tensor out: [world_size, n, ...]
                values = cast(torch.Tensor, self.all_gather(values)).flatten(0, 1)
                units = cast(torch.Tensor, self.all_gather(units)).flatten(0, 1)
            gathered[key] = (values.double().cpu().numpy(), units.cpu().numpy())
        self.per_image = {}
        return gathered

    def record_interval(self, key: str, interval: tuple[float, float]) -> None:
        """``<key>/ci_low`` and ``<key>/ci_high`` into the summary (``metrics.json``); an interval that is
        not finite (nothing to resample) is left out."""
        if all(math.isfinite(bound) for bound in interval):
            low_key, high_key = interval_keys(key)
            self.summary[low_key], self.summary[high_key] = float(interval[0]), float(interval[1])
