"""What the trainable tasks of the padding study share (Islam et al., IJCV 2024, "Position, Padding
and Predictions"): a backbone (any ``backbone=`` and ``padding=``; trained with the task unless
``backbone.trainable=false``) and a head (``readout=``) trained end to end on labelled data.

The head is built in ``setup`` once the datamodule says how many classes there are and a dry run
of the backbone gives the taps' shapes. Every step returns its loss for the loss curve and the
convergence flag (:mod:`posenc.run.convergence`); the held-out set logs ``val/loss``. Test metrics are
torchmetrics objects (synchronised across DDP ranks); every task also reports them per distance to
the image border (``test/by_distance/<bin>/<metric>``, :mod:`posenc.metrics.binned`) and draws
that curve (``figures/by_distance.png``).

Every test metric but a reference (chance) carries its 95% interval (``<key>/ci_low``, ``<key>/ci_high``;
issue 33 §3): a bootstrap over the test set's independent units (:mod:`posenc.metrics.intervals`), the
source several test images share where they share one (the patch a canvas shows, the photo a scene's
background is cut from), else each image. A task records per-image rows during the test pass
(:meth:`SupervisedTask.record_test`) and says in :meth:`SupervisedTask.interval_specs` how each metric
follows from them: the mean of per-image scores (accuracy, MAE), or a statistic of rows summed over the
images (mIoU of a pooled confusion matrix), which is recomputed from each resample's pooled sums.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import lightning as L
import numpy as np
import torch
import torch.nn as nn

from posenc.config.rules import Rule
from posenc.data.datamodule import ImageSize
from posenc.errors import PosencError
from posenc.io import atomic_save
from posenc.metrics.binned import binned_sums
from posenc.metrics.intervals import mean_interval, pooled_interval
from posenc.models.backbones.base import TappedBackbone
from posenc.tasks.base import PosencTask
from posenc.tasks.schedules import MaxEpochs, MaxSteps
from posenc.viz.figures import by_distance_figure, save_figure
from posenc.viz.tables import interval

Statistic = Callable[[np.ndarray], np.ndarray]  # pooled sums [resamples, ...] -> the metric per resample [resamples]


@dataclass(frozen=True)
class IntervalSpec:
    """How a test metric's 95% interval follows from the per-image rows of ``record``
    (:meth:`SupervisedTask.record_test`): ``statistic`` None, the metric is the mean of per-image values
    (:func:`~posenc.metrics.intervals.mean_interval`); else it is ``statistic`` of the rows summed over the
    images (a confusion matrix, ``[sum, count]``), recomputed per resample of the units' sums
    (:func:`~posenc.metrics.intervals.pooled_interval`)."""

    record: str
    statistic: Statistic | None = None


def unit_sums(rows: np.ndarray, units: np.ndarray) -> np.ndarray:
    """Each unit's sum of its images' ``rows`` (``[N, ...]`` -> ``[units, ...]``), units in sorted order."""
    _, unit_of = np.unique(units, return_inverse=True)
    sums = np.zeros((int(unit_of.max()) + 1, *rows.shape[1:]))
    np.add.at(sums, unit_of, rows)
    return sums


def unit_interval(rows: np.ndarray, units: np.ndarray, statistic: Statistic | None) -> tuple[float, float]:
    """The 95% interval of a metric over resampled ``units``: the mean of per-image values (``statistic``
    None; non-finite values left out), else ``statistic`` of the pooled rows; NaNs below two units."""
    counted = units[np.isfinite(rows)] if statistic is None else units
    if len(np.unique(counted)) < 2:
        return (math.nan, math.nan)
    if statistic is None:
        return mean_interval(rows, units)
    return pooled_interval(unit_sums(rows, units), statistic)


def ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator``, NaN where the denominator is 0 (a resample without such pixels, which
    :func:`~posenc.metrics.intervals.pooled_interval` leaves out)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return numerator / denominator


def pooled_ratio(pooled: np.ndarray) -> np.ndarray:
    """The statistic of ``[sum, count]`` rows (pixel accuracy: ``[correct, valid]``): pooled sum / count."""
    return ratio(pooled[:, 0], pooled[:, 1])


def bin_mean(index: int) -> Statistic:
    """The statistic of :func:`per_image_bin_sums` rows: the mean of distance bin ``index``."""
    return lambda pooled: ratio(pooled[:, index, 0], pooled[:, index, 1])


def per_image_bin_sums(values: torch.Tensor, bins: torch.Tensor, num_bins: int) -> torch.Tensor:
    """``[B, num_bins, 2]``: each image's sum and count of ``values`` per distance bin (float64; a bin < 0 is
    left out), the rows a binned mean is pooled from. ``values``, ``bins``: ``[B, ...]``, one shape."""
    images = torch.arange(len(values), device=bins.device).view(-1, *[1] * (bins.dim() - 1))
    tagged = torch.where(bins >= 0, images * num_bins + bins, -1)  # one bin per image and distance bin
    sums, counts = binned_sums(values, tagged, len(values) * num_bins)
    return torch.stack([sums, counts.double()], dim=1).view(len(values), num_bins, 2)


def binned_specs(
    metric: str, record: str, bin_names: list[str], statistic: Callable[[int], Statistic]
) -> dict[str, IntervalSpec]:
    """``{by_distance/<bin>/<metric>: IntervalSpec(record, statistic(bin index))}`` for every bin."""
    return {f"by_distance/{name}/{metric}": IntervalSpec(record, statistic(i)) for i, name in enumerate(bin_names)}


class SupervisedTask(PosencTask):
    """Backbone + head trained on ``batch["image"]``; subclasses define targets, loss and metrics."""

    head_kind = "classification"  # which heads fit: their ``kind`` attribute (posenc.models.heads)
    converged_loss = 0.01  # cross-entropy (nats) at which nothing is left to learn (posenc.run.convergence)

    def __init__(
        self,
        backbone: TappedBackbone,
        head: Callable[..., nn.Module],
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        image_size: ImageSize = 96,
        max_steps: MaxSteps = -1,
        max_epochs: MaxEpochs = None,
        channels_last: bool = False,
        distance_bands: Annotated[int, Rule(ge=1)] = 4,
    ) -> None:
        """``max_steps`` / ``max_epochs``: the budget; the trainer config reads them
        (``trainer.max_steps: ${task.max_steps}``), the task only records them. ``distance_bands``:
        the bands of distance to the border the test metrics are split into (IJCV 2024's
        accuracy by distance; subclasses say what a band holds)."""
        super().__init__()
        backbone.check_input_size(image_size)
        self.backbone = backbone
        self.head_factory = head
        self.head: nn.Module | None = None
        kind = getattr(getattr(head, "func", head), "kind", None)
        if kind != self.head_kind:
            name = getattr(getattr(head, "func", head), "__name__", type(head).__name__)
            valid = (
                "gap_linear, gap_permute, gapnet or flatten_linear"
                if self.head_kind == "classification"
                else "pixel_decoder"
            )
            raise PosencError(
                f"readout={name} is a {kind or 'PosENet'} head; this task needs a {self.head_kind} "
                f"head (readout={valid})"
            )
        # PermuteNet's permutation point must exist in this backbone: say so now, not after the Trainer starts
        self.backbone.set_channel_permutation(getattr(head, "keywords", {}).get("permute_at"))
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.image_size = image_size
        self.budget = {"max_steps": max_steps, "max_epochs": max_epochs}
        self.channels_last = channels_last
        if channels_last:
            self.backbone.to(memory_format=torch.channels_last)
        self.distance_bands = distance_bands
        self.by_distance: dict[str, list[float]] = {}  # metric -> value per distance bin (the last test)
        self.distance_bins: dict[str, list[str]] = {}  # metric -> its bins' names, nearest the border first
        self.preview: dict[str, torch.Tensor] = {}

    @property
    def datamodule(self) -> Any:
        """The attached Trainer's datamodule, else the one given to :meth:`attach_datamodule`
        (analyses of a finished run without a Trainer: posenc.cli.runs)."""
        if self._trainer is not None:
            # set on every Trainer by Lightning's _DataConnector, but not declared on the class
            return self._trainer.datamodule  # type: ignore[attr-defined]
        return getattr(self, "_offline_datamodule", None)

    # what the datamodule must provide, and which data options do (checked before the Trainer starts)
    needs_data: tuple[str, str] | None = None  # (attribute, "data=a|b")

    def check_data(self, datamodule: L.LightningDataModule) -> None:
        """One line, before anything is built, when ``datamodule`` cannot feed this task."""
        if self.needs_data is not None and not hasattr(datamodule, self.needs_data[0]):
            raise PosencError(
                f"{type(self).__name__} cannot train on {type(datamodule).__name__}; valid: {self.needs_data[1]}"
            )

    def attach_datamodule(self, datamodule: L.LightningDataModule) -> None:
        self._offline_datamodule = datamodule

    # -- to define in a task ---------------------------------------------------------------
    def num_outputs(self) -> int:
        """Output channels of the head (classes), from the attached datamodule."""
        raise NotImplementedError

    def targets(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def build_metrics(self) -> None:
        """Create the test metrics (modules, so they follow the device and sync under DDP)."""
        raise NotImplementedError

    def update_metrics(self, logits: torch.Tensor, target: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError

    def compute_metrics(self) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
        """``({metric: value}, {metric: {distance bin: value}})`` over the whole test set."""
        raise NotImplementedError

    def interval_specs(self) -> dict[str, IntervalSpec]:
        """The test metrics that carry a 95% interval (their names under ``test/``: ``accuracy``,
        ``by_distance/<bin>/<metric>``) and the records they follow from (default: none)."""
        return {}

    # -- model -----------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if self.head is None:
            self.head = self.build_head()
        if stage == "test":
            self.build_metrics()

    def build_head(self) -> nn.Module:
        """The ``readout=`` head for this backbone's tap shapes and the datamodule's classes."""
        was_training = self.backbone.training
        self.backbone.eval()
        with torch.no_grad():
            taps = self.backbone(torch.zeros(1, 3, self.image_size, self.image_size, device=self.device))
        self.backbone.train(was_training)
        head = self.head_factory(
            tap_channels=[t.shape[1] for t in taps],
            tap_sizes=[tuple(t.shape[-2:]) for t in taps],
            num_classes=self.num_outputs(),
        )
        # PermuteNet: the head's permutation acts inside the backbone (posenc.models.permutation)
        self.backbone.set_channel_permutation(getattr(head, "permute_at", None))
        return head.to(self.device)

    def encode(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The backbone's taps (with gradients only when the backbone trains)."""
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.backbone.trainable):
            return self.backbone(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        assert self.head is not None, "setup() builds the head"
        return self.head(self.encode(images), self.image_size)

    # -- training --------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        """Keep the trainable backbone's initial weights (``checkpoints/init.ckpt``, once: a resumed
        run keeps the first), so the same backbone can be measured before and after training
        (``backbone.weights=<run dir>/checkpoints/init.ckpt``; the ppp_artifact preset)."""
        path = Path(self.trainer.default_root_dir) / "checkpoints" / "init.ckpt"
        if not self.backbone.trainable or not self.trainer.is_global_zero or path.exists() or self.global_step:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {f"backbone.{k}": v.detach().cpu().clone() for k, v in self.backbone.state_dict().items()}
        atomic_save({"state_dict": state}, path)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, Any]:
        loss = self.loss(self(batch["image"]), self.targets(batch))
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(batch["image"]))
        return {"loss": loss}

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        """The held-out loss the convergence flag watches (posenc.run.convergence)."""
        loss = self.loss(self(batch["image"]), self.targets(batch))
        self.log("val/loss", loss, on_step=False, on_epoch=True, batch_size=len(batch["image"]), sync_dist=True)

    def configure_optimizers(self) -> Any:
        """The optimizer over every trainable parameter (the head, and the backbone when trainable);
        the scheduler factory gets the run's optimizer-step count (``total_steps``)."""
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = self.optimizer_factory(params=params)
        if self.scheduler_factory is None:
            return optimizer
        total = int(self.trainer.estimated_stepping_batches)
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler_factory(optimizer=optimizer, total_steps=total)}

    # -- testing ---------------------------------------------------------------------------
    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        logits = self(batch["image"])
        self.update_metrics(logits, self.targets(batch), batch)
        if batch_idx == 0 and not self.preview:
            self.preview = {
                "image": batch["image"][:4].detach().cpu(),
                "target": self.targets(batch)[:4].cpu(),
                "pred": self.predictions(logits[:4]).detach().cpu(),
            }

    def predictions(self, logits: torch.Tensor) -> torch.Tensor:
        """What a preview shows: the predicted class (per image or per pixel)."""
        return logits.argmax(dim=1)

    def record_test(self, record: str, rows: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:
        """Keep ``rows`` (``[B, ...]``: one per test image of ``batch``) of ``record`` with the images'
        independent units, for the intervals of :meth:`interval_specs`. A batch that names no image (not
        served by a dataset: no ``"unit"``, no ``"index"``) has no units to resample: nothing is kept."""
        if "unit" in batch or "index" in batch:
            self.record_per_image(record, rows, self.units_of(batch))

    def on_test_epoch_start(self) -> None:
        self.per_image = {}

    def on_test_epoch_end(self) -> None:
        overall, binned = self.compute_metrics()
        logged = set()
        for name, value in overall.items():
            self.log(f"test/{name}", value)
            logged.add(f"test/{name}")
        self.by_distance, self.distance_bins = {}, {metric: list(bins) for metric, bins in binned.items()}
        for metric, bins in binned.items():
            for bin_name, value in bins.items():
                if not math.isnan(value):
                    self.log(f"test/by_distance/{bin_name}/{metric}", value)
                    logged.add(f"test/by_distance/{bin_name}/{metric}")
                self.by_distance.setdefault(metric, []).append(value)
        self.record_intervals(logged)

    def record_intervals(self, logged: Collection[str]) -> None:
        """The 95% interval of every ``logged`` metric :meth:`interval_specs` names, into the summary
        (``metrics.json``), from the records of every DDP rank (``PosencTask.gathered_per_image``)."""
        records = self.gathered_per_image()
        for name, spec in self.interval_specs().items():
            key = f"test/{name}"
            if key in logged and spec.record in records:
                self.record_interval(key, unit_interval(*records[spec.record], spec.statistic))

    def on_test_end(self) -> None:
        if not self.trainer.is_global_zero or not self.by_distance:
            return
        figures = Path(self.trainer.default_root_dir) / "figures"
        # every logger gets figures/*.png at the end of the run (posenc.run.loggers.publish)
        intervals = {
            metric: [interval(self.summary, f"test/by_distance/{b}/{metric}") for b in bins]
            for metric, bins in self.distance_bins.items()
        }
        figure = by_distance_figure(self.distance_bins, self.by_distance, intervals={"": intervals})
        save_figure(figure, figures / "by_distance.png")
        self.save_preview(figures)

    def save_preview(self, figures: Path) -> None:
        """A figure of a few test predictions (segmentation tasks draw theirs)."""
