"""``task.label=class_and_location`` splits its joint accuracy into the cell and the class the
network got right (``location_accuracy``, ``class_accuracy``), overall and per ring of cells: a
hand-built batch checks the decoding ``label = class * cells + cell``."""

from __future__ import annotations

from functools import partial
from types import SimpleNamespace

import pytest
import torch

from posenc.models.backbones import build_backbone
from posenc.models.heads import GapLinearHead
from posenc.tasks.location_cls import LocationClassificationTask


def test_class_and_location_accuracy_splits_into_cell_and_class() -> None:
    task = LocationClassificationTask(
        build_backbone("tiny", taps=["f5"]),
        head=partial(GapLinearHead),
        optimizer=partial(torch.optim.Adam),
        label="class_and_location",
        image_size=48,
    )
    task.attach_datamodule(
        SimpleNamespace(num_cells=9, num_patch_classes=5, spec=SimpleNamespace(cells_per_side=3, grid=3))
    )
    task.build_metrics()
    cell = torch.tensor([0, 4, 8, 4])  # border, centre, border, centre
    label = torch.tensor([1, 2, 3, 4])  # patch classes
    target = label * 9 + cell
    # predictions: all right; right cell wrong class; right class wrong cell; both wrong
    pred = torch.tensor([1 * 9 + 0, 0 * 9 + 4, 3 * 9 + 7, 0 * 9 + 0])
    logits = torch.nn.functional.one_hot(pred, 45).float()
    task.update_metrics(logits, target, {"cell": cell, "label": label})
    overall, per_bin = task.compute_metrics()
    assert overall["accuracy"] == pytest.approx(1 / 4)
    assert overall["location_accuracy"] == pytest.approx(2 / 4)
    assert overall["class_accuracy"] == pytest.approx(2 / 4)
    assert per_bin["location_accuracy"] == pytest.approx({"ring0": 1 / 2, "ring1": 1 / 2})
    assert per_bin["class_accuracy"] == pytest.approx({"ring0": 1.0, "ring1": 0.0})
    assert per_bin["accuracy"] == pytest.approx({"ring0": 1 / 2, "ring1": 0.0})
