"""Location-dependent classification (Islam et al., IJCV 2024, "Position, Padding and Predictions";
the grid-canvas location task of Islam, Kowal et al., ICCV 2021): a patch sits in one cell of a
g x g canvas (or anywhere, ``data.canvas.grid=null``); predict its cell (``label=location``, g^2
classes), its class (``class``) or both (``class_and_location``, g^2 x classes). With the default
``gap_linear`` head the features are globally pooled before the classifier, so the location can
only come through the backbone, i.e. from its padding; ``flatten_linear`` is the positive control.

Translation invariance (ICCV 2021, Sec. "translation invariance"): ``augment=shift`` feeds two
randomly shifted views of every image (posenc.data.augment) through the same encoder; the loss is the
cross-entropy on both views (their mean) plus ``consistency_weight`` (lambda) x the MSE between the
two views' pooled latents (global average pooling of the last tap, the GAP heads' input). The
paper publishes neither lambda nor an invariance metric; ours (docs/global_pooling.md), measured on
every ``label=class`` test: ``shift_consistency``, the fraction of test images whose top-1 class is
the same under two random shifts of at most ``shift`` px, and ``shift_cosine``, the mean cosine
similarity of their pooled latents.

With ``class_and_location`` the joint accuracy is split as well: ``location_accuracy`` (the cell
is right) and ``class_accuracy`` (the class is right), so a padding that costs accuracy shows
whether it cost position or semantics.

Accuracy overall and per distance to the border: per ring of cells (``ring0`` = the border cells)
on grid canvases, per band of the object's pixel distance to the border with free placement.

Every metric but the references (``chance``, ``majority``) carries its 95% interval over the test
patches (``<key>/ci_low``, ``/ci_high``; :mod:`posenc.tasks.supervised`): the canvases showing one patch
in several cells are one unit (:class:`posenc.data.location.CanvasDataModule`); the accuracies and the
invariance metrics are means of per-image scores, those per distance means within their bins.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal, get_args

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchmetrics import CatMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from posenc.config.rules import Rule
from posenc.data.augment import random_shift
from posenc.data.canvas import LABEL_MODES, LabelMode, location_class_label, split_class_and_location
from posenc.data.datamodule import ImageSize
from posenc.errors import PosencError, check_choice, invalid_value
from posenc.metrics.binned import (
    BinnedMean,
    band_edges,
    bin_names_bands,
    bin_names_rings,
    object_distance,
    ring_of_cell,
)
from posenc.models.backbones.base import TappedBackbone
from posenc.tasks.supervised import IntervalSpec, SupervisedTask, bin_mean, binned_specs, per_image_bin_sums

JOINT_PARTS: tuple[str, ...] = ("location", "class")  # the halves of a class_and_location label
Augment = Literal["none", "shift"]  # shift: two shifted views per image (ICCV 2021)
AUGMENTS: tuple[str, ...] = get_args(Augment)


def pooled_latent(taps: list[torch.Tensor]) -> torch.Tensor:
    """The latent the invariance loss and metrics compare: global average pooling of the last tap."""
    return taps[-1].mean(dim=(2, 3))


class LocationClassificationTask(SupervisedTask):
    """Classify the location (and / or class) of a pasted patch from pooled features."""

    metric_order = ("accuracy", "chance", "majority")

    def __init__(
        self,
        backbone: TappedBackbone,
        head: Callable[..., nn.Module],
        label: LabelMode = "location",
        image_size: ImageSize = 96,
        augment: Augment = "none",
        shift: Annotated[int, Rule(ge=1)] = 8,  # pixels: the largest shift, in training and in the test's metrics
        consistency_weight: Annotated[float, Rule(ge=0)] = 0.0,  # lambda of the latent-consistency MSE
        **kwargs: Any,
    ) -> None:
        """The label, the shift augmentation and its latent consistency (ICCV 2021); the other
        arguments (the budget, the free placement's distance bands) are :class:`SupervisedTask`'s."""
        check_choice("task.label", label, LABEL_MODES)
        check_choice("task.augment", augment, AUGMENTS)
        shifted = augment == "shift" or label == "class"  # training views, or the test's invariance metrics
        if shifted and (isinstance(shift, bool) or not isinstance(shift, int) or not 1 <= shift < image_size // 2):
            raise invalid_value(
                "task.shift", shift, f"expected pixels in [1, {image_size // 2 - 1}] at data.image_size={image_size}"
            )
        if consistency_weight < 0:
            raise invalid_value("task.consistency_weight", consistency_weight, "expected a weight >= 0")
        if consistency_weight > 0 and augment != "shift":
            raise PosencError(
                f"task.consistency_weight={consistency_weight} compares two shifted views: it needs "
                f"task.augment=shift (got {augment}); valid: task.augment=shift or task.consistency_weight=0"
            )
        if augment == "shift" and label != "class":
            raise PosencError(
                f"task.augment=shift moves the patch across cells, so the label must not depend on "
                f"where it is: got task.label={label}; valid: task.label=class"
            )
        super().__init__(backbone, head, image_size=image_size, **kwargs)
        self.label, self.augment, self.shift = label, augment, shift
        self.consistency_weight = float(consistency_weight)

    needs_data = ("num_cells", "data=canvas")

    def check_data(self, datamodule: Any) -> None:
        """Canvases, and distance bands that fit them (free placement), before training starts."""
        super().check_data(datamodule)
        spec = datamodule.spec
        if spec.grid is None:
            band_edges(self.image_size - spec.patch_size + 1, self.distance_bands)

    def _label_space(self) -> tuple[int, int]:
        dm = self.datamodule
        self.check_data(dm)
        if dm.num_patch_classes is None:
            dm.setup("fit")
        return dm.num_cells, dm.num_patch_classes

    def num_outputs(self) -> int:
        cells, classes = self._label_space()
        return {"location": cells, "class": classes, "class_and_location": cells * classes}[self.label]

    def targets(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        cells, classes = self._label_space()
        return location_class_label(batch["cell"], batch["label"], cells, classes, self.label)[0]

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, target)

    # -- translation invariance --------------------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, Any]:
        if self.augment == "none":
            return super().training_step(batch, batch_idx)
        images, target = batch["image"], self.targets(batch)
        views = torch.cat([random_shift(images, self.shift), random_shift(images, self.shift)])
        taps = self.encode(views)  # one pass: both views share the BatchNorm statistics of the step
        assert self.head is not None
        ce = self.loss(self.head(taps, self.image_size), torch.cat([target, target]))  # mean over both views
        first, second = pooled_latent(taps).chunk(2)
        consistency = F.mse_loss(first, second)
        loss = ce + self.consistency_weight * consistency
        n = len(images)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=n)
        self.log("train/consistency", consistency, on_step=False, on_epoch=True, batch_size=n)
        return {"loss": loss, "losses": {"ce": ce.detach(), "consistency": consistency.detach()}}

    # -- test --------------------------------------------------------------------------------
    def build_metrics(self) -> None:
        dm = self.datamodule
        spec = dm.spec
        self.grid = spec.cells_per_side
        if spec.grid is not None:
            self.bin_names = bin_names_rings(self.grid)
            self.edges: list[int] | None = None
        else:  # free placement: the object's pixel distance to the border
            self.edges = band_edges(self.image_size - spec.patch_size + 1, self.distance_bands)
            self.bin_names = bin_names_bands(self.edges, (self.image_size + 1) // 2 - 1)
        self.accuracy = MulticlassAccuracy(num_classes=self.num_outputs(), average="micro").to(self.device)
        self.test_labels = CatMetric().to(self.device)  # for the empirical chance ("majority")
        self.distance_accuracy = BinnedMean(len(self.bin_names)).to(self.device)
        # class_and_location: which half of the joint label the network gets right (cell, class)
        self.part_accuracy = nn.ModuleDict({part: BinnedMean(len(self.bin_names)) for part in JOINT_PARTS}).to(
            self.device
        )
        self.part_overall = nn.ModuleDict({part: MeanMetric() for part in JOINT_PARTS}).to(self.device)
        self.shift_consistency = MeanMetric().to(self.device)
        self.shift_cosine = MeanMetric().to(self.device)
        # the invariance metrics' shifts: the same for every run of a seed (seed_everything seeds torch)
        self.shift_generator = torch.Generator(device=self.device).manual_seed(torch.initial_seed())

    def distance_bin_of(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.edges is None:
            return ring_of_cell(batch["cell"], self.grid)
        distance = object_distance(batch["object_mask"])
        return torch.bucketize(distance, torch.tensor(self.edges, device=distance.device), right=True) - 1

    def update_metrics(self, logits: torch.Tensor, target: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:
        self.accuracy.update(logits, target)
        self.test_labels.update(target.float())
        correct = (logits.argmax(dim=1) == target).float()
        bins = self.distance_bin_of(batch)
        self.distance_accuracy.update(correct, bins)
        self._record_correct("accuracy", correct, bins, batch)
        if self.label == "class_and_location":
            cells = self._label_space()[0]
            predicted = split_class_and_location(logits.argmax(dim=1), cells)
            for part, guess, truth in zip(JOINT_PARTS, predicted, split_class_and_location(target, cells)):
                right = guess == truth
                per_bin, overall = self._part_metrics(part)
                per_bin.update(right.float(), bins)
                overall.update(right.float())
                self._record_correct(f"{part}_accuracy", right.float(), bins, batch)
        if self.label == "class":  # where the object is does not change the label: measure invariance
            images = batch["image"]
            views = torch.cat(
                [
                    random_shift(images, self.shift, self.shift_generator),
                    random_shift(images, self.shift, self.shift_generator),
                ]
            )
            taps = self.encode(views)
            assert self.head is not None
            first, second = self.head(taps, self.image_size).argmax(dim=1).chunk(2)
            same = (first == second).float()
            self.shift_consistency.update(same)
            z1, z2 = pooled_latent(taps).chunk(2)
            cosine = F.cosine_similarity(z1, z2, dim=1)
            self.shift_cosine.update(cosine)
            self.record_test("shift_consistency", same, batch)
            self.record_test("shift_cosine", cosine, batch)

    def _record_correct(
        self, metric: str, correct: torch.Tensor, bins: torch.Tensor, batch: dict[str, torch.Tensor]
    ) -> None:
        """Each image's correctness for ``metric``'s interval, and per distance bin for its binned ones."""
        self.record_test(metric, correct, batch)
        self.record_test(f"{metric}/by_distance", per_image_bin_sums(correct, bins, len(self.bin_names)), batch)

    def compute_metrics(self) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
        labels = self.test_labels.compute().long()
        # the empirical chance: what the best image-blind guess (the most frequent test label) scores; 1 / cells
        # on the balanced test, above it when a random placement leaves some cell more often
        majority = float(torch.bincount(labels).max() / labels.numel()) if labels.numel() else float("nan")
        overall = {"accuracy": float(self.accuracy.compute()), "chance": 1.0 / self.num_outputs(), "majority": majority}
        if self.label == "class":
            overall["shift_consistency"] = float(self.shift_consistency.compute())
            overall["shift_cosine"] = float(self.shift_cosine.compute())
        per_bin = {"accuracy": dict(zip(self.bin_names, self.distance_accuracy.compute().tolist()))}
        if self.label == "class_and_location":
            for part in JOINT_PARTS:
                part_per_bin, part_overall = self._part_metrics(part)
                overall[f"{part}_accuracy"] = float(part_overall.compute())
                per_bin[f"{part}_accuracy"] = dict(zip(self.bin_names, part_per_bin.compute().tolist()))
        return overall, per_bin

    def interval_specs(self) -> dict[str, IntervalSpec]:
        """The accuracies (overall: mean correctness; per distance: within each bin) and the invariance
        metrics; ``chance`` and ``majority`` are references without one."""
        accuracies = ["accuracy", *(f"{part}_accuracy" for part in JOINT_PARTS)]
        specs = {name: IntervalSpec(name) for name in [*accuracies, "shift_consistency", "shift_cosine"]}
        for name in accuracies:
            specs.update(binned_specs(name, f"{name}/by_distance", self.bin_names, bin_mean))
        return specs

    def _part_metrics(self, part: str) -> tuple[BinnedMean, MeanMetric]:
        """The per-bin and overall accuracy of one half of the joint label (kept in nn.ModuleDicts,
        which follow the task's device)."""
        per_bin, overall = self.part_accuracy[part], self.part_overall[part]
        assert isinstance(per_bin, BinnedMean) and isinstance(overall, MeanMetric)
        return per_bin, overall
