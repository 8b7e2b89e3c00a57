"""Per-pixel classification on a backbone's taps (``task=semseg`` and ``task=location_seg``; Islam
et al., IJCV 2024, and PosENet Table 5: segmentation trained with and without padding).

Cross-entropy over pixels (``ignore_index`` = 255, VOC's void); mean IoU (torchmetrics'
``MulticlassJaccardIndex``) and pixel accuracy overall, and both per distance to the border
(:class:`posenc.metrics.binned.BinnedConfusion`): per band of pixels for ``semseg``, per ring
of the object's cell for ``location_seg``.

Each comes with its 95% interval (``<key>/ci_low``, ``/ci_high``; :mod:`posenc.tasks.supervised`): every
test image's confusion matrix per distance bin is kept, summed per independent unit (the photo a shapes
scene's background comes from, the patch a canvas shows, else the image), and the pooled metrics are
recomputed from each resample's summed confusions.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchmetrics import Metric
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from posenc.data.datamodule import ImageSize
from posenc.data.sources.segmentation_sets import VOC_CLASSES
from posenc.data.sources.shapes import SHAPE_CLASSES
from posenc.errors import PosencError
from posenc.metrics.binned import (
    BinnedConfusion,
    band_edges,
    band_of_pixels,
    bin_names_bands,
    confusion_per_bin,
    miou_per_bin,
    pixel_accuracy_per_bin,
)
from posenc.models.backbones.base import TappedBackbone
from posenc.tasks.supervised import IntervalSpec, Statistic, SupervisedTask, binned_specs
from posenc.viz.figures import save_figure, segmentation_preview

IGNORE_INDEX = 255
CONFUSION_METRICS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "miou": miou_per_bin,
    "pixel_acc": pixel_accuracy_per_bin,
}  # pooled confusion matrices [N, C, C] -> the metric [N]


def per_image_confusions(
    pred: torch.Tensor, target: torch.Tensor, bins: torch.Tensor, num_classes: int, num_bins: int
) -> torch.Tensor:
    """``[B, num_bins, C, C]``: each image's confusion matrix per distance bin (rows: target, columns:
    prediction; ``IGNORE_INDEX`` pixels left out); ``bins``: ``[B, H, W]`` or one ``[H, W]`` map."""
    bins = bins.expand_as(target)
    images = torch.arange(len(target), device=target.device).view(-1, 1, 1)
    tagged = torch.where(bins >= 0, images * num_bins + bins, -1)  # one bin per image and distance bin
    confusion = confusion_per_bin(pred, target, tagged, num_classes, len(target) * num_bins, IGNORE_INDEX)
    return confusion.view(len(target), num_bins, num_classes, num_classes)


def pooled_confusion(metric: Callable[[torch.Tensor], torch.Tensor], index: int | None = None) -> Statistic:
    """The statistic of :func:`per_image_confusions` rows: ``metric`` of distance bin ``index``'s pooled
    confusion matrix, or (None) of all bins' summed, the overall one."""

    def statistic(pooled: np.ndarray) -> np.ndarray:
        confusion = pooled.sum(axis=1) if index is None else pooled[:, index]
        return metric(torch.from_numpy(confusion)).numpy()

    return statistic


class SegmentationTask(SupervisedTask):
    """Semantic segmentation; subclasses say where targets and distance bins come from."""

    head_kind = "segmentation"
    metric_order: ClassVar[tuple[str, ...]] = ("miou", "pixel_acc")
    needs_data = ("num_classes", "data=shapes|voc|duts (segmentation masks)")

    def __init__(
        self, backbone: TappedBackbone, head: Callable[..., nn.Module], image_size: ImageSize = 64, **kwargs: Any
    ) -> None:
        """The arguments are :class:`SupervisedTask`'s; its ``distance_bands`` are equal bands of
        pixels' distance to the border here."""
        super().__init__(backbone, head, image_size=image_size, **kwargs)
        band_edges(self.image_size, self.distance_bands)  # one-line error when the bands do not fit the image
        fuse_at = getattr(head, "keywords", {}).get("fuse_at")
        if isinstance(fuse_at, int) and not 0 <= fuse_at < len(backbone.tap_names):
            raise PosencError(
                f"readout.fuse_at={fuse_at} is not valid: the backbone has {len(backbone.tap_names)} "
                f"taps; valid: 0..{len(backbone.tap_names) - 1}"
            )

    def num_outputs(self) -> int:
        return self.datamodule.num_classes

    def targets(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return batch["mask"].long()

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX)

    # distance bins: pixel bands (overridden by location_seg)
    def bin_names(self) -> list[str]:
        edges = band_edges(self.image_size, self.distance_bands)
        return bin_names_bands(edges, (self.image_size + 1) // 2 - 1)

    def bins(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        edges = band_edges(self.image_size, self.distance_bands)
        return band_of_pixels(self.image_size, self.image_size, edges).to(self.device)

    def build_metrics(self) -> None:
        self.names = self.bin_names()
        classes = self.num_outputs()
        self.miou = MulticlassJaccardIndex(num_classes=classes, ignore_index=IGNORE_INDEX).to(self.device)
        self.pixel_acc: Metric = MulticlassAccuracy(num_classes=classes, average="micro", ignore_index=IGNORE_INDEX).to(
            self.device
        )
        self.binned = BinnedConfusion(classes, len(self.names), ignore_index=IGNORE_INDEX).to(self.device)

    def update_metrics(self, logits: torch.Tensor, target: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:
        pred = logits.argmax(dim=1)
        self.miou.update(pred, target)
        self.pixel_acc.update(pred, target)
        bins = self.bins(batch)
        self.binned.update(pred, target, bins.expand_as(target) if bins.dim() == 2 else bins)
        confusions = per_image_confusions(pred, target, bins, self.binned.num_classes, self.binned.num_bins)
        self.record_test("confusion", confusions, batch)

    def compute_metrics(self) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
        per_bin = self.binned.compute()
        overall = {"miou": float(self.miou.compute()), "pixel_acc": float(self.pixel_acc.compute())}
        return overall, {name: dict(zip(self.names, per_bin[name].tolist())) for name in ("miou", "pixel_acc")}

    def interval_specs(self) -> dict[str, IntervalSpec]:
        """mIoU and pixel accuracy, overall and per distance bin, from the pooled per-image confusions."""
        specs = {}
        for metric, fn in CONFUSION_METRICS.items():
            specs[metric] = IntervalSpec("confusion", pooled_confusion(fn))
            specs.update(binned_specs(metric, "confusion", self.names, partial(pooled_confusion, fn)))
        return specs

    def class_names(self) -> list[str] | None:
        """Names of the class ids for the preview's legend: the data source's (shapes, VOC), else None."""
        return {"shapes": ["background", *SHAPE_CLASSES], "voc": list(VOC_CLASSES)}.get(
            str(getattr(self.datamodule, "source", ""))
        )

    def save_preview(self, figures: Path) -> None:
        if self.preview:
            save_figure(
                segmentation_preview(
                    self.preview["image"],
                    self.preview["target"],
                    self.preview["pred"],
                    num_classes=self.num_outputs(),
                    class_names=self.class_names(),
                ),
                figures / "predictions.png",
            )
