"""Location-dependent classification (Islam et al., IJCV 2024, "Position, Padding and Predictions";
the grid-canvas location task of Islam et al., ICCV 2021): a patch sits in one cell of a g x g
canvas; predict its cell (``label=location``, g^2 classes), its class (``class``) or both
(``class_and_location``, g^2 x classes). With the default ``gap_linear`` head the features are
globally pooled before the classifier, so the location can only come through the backbone, i.e.
from its padding; ``flatten_linear`` is the positive control.

Accuracy overall and per ring of cells (``ring0`` = the border cells; distance to the border).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy

from posenc.analysis.distance import BinnedMean, bin_names_rings, ring_of_cell
from posenc.backbones import TappedBackbone
from posenc.data.canvas import LABEL_MODES, location_class_label
from posenc.errors import PosencError, check_choice
from posenc.tasks.supervised import SupervisedTask


class LocationClassificationTask(SupervisedTask):
    """Classify the location (and / or class) of a pasted patch from pooled features."""

    def __init__(
        self,
        backbone: TappedBackbone,
        head: Callable[..., nn.Module],
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        label: str = "location",
        image_size: int = 96,
        max_steps: int = -1,
        max_epochs: int | None = None,
        channels_last: bool = False,
    ) -> None:
        check_choice("task.label", label, LABEL_MODES)
        super().__init__(backbone, head, optimizer, scheduler, image_size, max_steps, max_epochs, channels_last)
        self.label = label

    def _label_space(self) -> tuple[int, int]:
        dm = self.trainer.datamodule
        if not hasattr(dm, "num_cells"):
            raise PosencError(f"task=location_cls needs canvases (data=canvas), got {type(dm).__name__}")
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

    def build_metrics(self) -> None:
        grid = self.trainer.datamodule.spec.cells_per_side
        self.grid = grid
        self.ring_names = bin_names_rings(grid)
        self.accuracy = MulticlassAccuracy(num_classes=self.num_outputs(), average="micro").to(self.device)
        self.ring_accuracy = BinnedMean(len(self.ring_names)).to(self.device)

    def update_metrics(self, logits: torch.Tensor, target: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:
        self.accuracy.update(logits, target)
        correct = (logits.argmax(dim=1) == target).float()
        self.ring_accuracy.update(correct, ring_of_cell(batch["cell"], self.grid))

    def compute_metrics(self) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
        overall = {"accuracy": float(self.accuracy.compute()), "chance": 1.0 / self.num_outputs()}
        rings = self.ring_accuracy.compute().tolist()
        return overall, {"accuracy": dict(zip(self.ring_names, rings))}
