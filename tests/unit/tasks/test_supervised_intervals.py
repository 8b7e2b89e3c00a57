"""The padding study's tasks give every test metric its 95% interval (issue 33 §3): ``test/<metric>/ci_low``
and ``/ci_high`` (and per distance bin) from a bootstrap over the test set's independent units, checked
against a plain loop over the same seeded resamples, on the units the datasets serve (the patch a canvas
shows, the photo a shapes scene's background is cut from)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

CANVAS = [
    "data.image_size=48",
    "data.canvas.patch_size=16",
    "data.num_train=64",
    "data.num_val=0",
    "data.num_test=12",
    "data.batch_size=16",
    "trainer.max_epochs=2",
    "callbacks.progress=null",
]
SCENES = [
    "data.image_size=32",
    "data.num_train=32",
    "data.num_val=0",
    "data.num_test=24",
    "data.batch_size=16",
    "trainer.max_epochs=2",
    "callbacks.progress=null",
]


def captured_run(tmp_path, *overrides: str) -> tuple[dict, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """A run's metrics, with the per-image records (rows, units) its intervals were computed from."""
    from helpers.runs import compose_run

    from posenc.run.train import run
    from posenc.tasks.base import PosencTask

    captured: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    original = PosencTask.gathered_per_image

    def capture(self):
        records = original(self)
        captured.update(records)
        return records

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(PosencTask, "gathered_per_image", capture)
        metrics = run(compose_run(list(overrides), tmp_path))
    assert metrics is not None
    return metrics, captured


@pytest.fixture(scope="module")
def location_run(tmp_path_factory):
    return captured_run(tmp_path_factory.mktemp("location_cls"), "task=location_cls", *CANVAS)


@pytest.fixture(scope="module")
def semseg_run(tmp_path_factory):
    return captured_run(tmp_path_factory.mktemp("semseg"), "task=semseg", *SCENES)


def plain_bootstrap(units: np.ndarray, metric, level: float = 0.95) -> tuple[float, float]:
    """The expanded percentile interval by a loop: for each seeded resample (posenc's counts), the images of
    every drawn unit, each as often as it was drawn, and ``metric`` of those images' indices."""
    from posenc.metrics.intervals import expanded_tail, resample_counts

    labels = np.unique(units)
    members = [np.flatnonzero(units == label) for label in labels]
    values = []
    for counts in resample_counts(len(labels)):
        drawn = [index for unit, times in zip(members, counts) for _ in range(times) for index in unit]
        values.append(metric(np.array(drawn)))
    values = np.array([v for v in values if math.isfinite(v)])
    tail = expanded_tail(level, len(labels))
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def plain_miou(confusion: np.ndarray) -> float:
    """Mean over the classes present (in target or prediction) of TP / (TP + FP + FN), class by class."""
    ious = []
    for c in range(confusion.shape[0]):
        tp = confusion[c, c]
        union = confusion[c, :].sum() + confusion[:, c].sum() - tp
        if union > 0:
            ious.append(tp / union)
    return float(np.mean(ious)) if ious else math.nan


def test_location_cls_accuracy_interval_is_the_plain_cluster_bootstrap(location_run):
    metrics, records = location_run
    correct, units = records["accuracy"]
    assert correct.mean() == pytest.approx(metrics["test/accuracy"], abs=1e-6)
    assert len(units) == 12 * 9 and len(np.unique(units)) == 12  # 12 test patches, each in the 9 cells of 3x3
    low, high = plain_bootstrap(units, lambda drawn: correct[drawn].mean())
    assert metrics["test/accuracy/ci_low"] == pytest.approx(low, abs=1e-9)
    assert metrics["test/accuracy/ci_high"] == pytest.approx(high, abs=1e-9)


def test_location_cls_writes_intervals_beside_its_metrics_but_not_the_references(location_run):
    metrics, _ = location_run
    for key in ["test/accuracy", *(k for k in metrics if k.startswith("test/by_distance/") and "/ci_" not in k)]:
        assert metrics[f"{key}/ci_low"] <= metrics[key] + 1e-6 <= metrics[f"{key}/ci_high"] + 2e-6, key
    assert "test/chance/ci_low" not in metrics and "test/majority/ci_low" not in metrics


def test_location_cls_per_distance_interval_is_the_plain_bootstrap_within_its_bin(location_run):
    metrics, records = location_run
    correct, units = records["accuracy"]
    per_bin, _ = records["accuracy/by_distance"]
    ring = per_bin[:, 0, 1] > 0  # the images in ring0: the 8 border cells of the 3x3 grid
    assert ring.sum() == 12 * 8

    def accuracy_in_ring0(drawn: np.ndarray) -> float:
        kept = drawn[ring[drawn]]
        return correct[kept].mean() if len(kept) else math.nan

    low, high = plain_bootstrap(units, accuracy_in_ring0)
    assert metrics["test/by_distance/ring0/accuracy/ci_low"] == pytest.approx(low, abs=1e-9)
    assert metrics["test/by_distance/ring0/accuracy/ci_high"] == pytest.approx(high, abs=1e-9)


@pytest.mark.parametrize(
    ("label", "names"),
    [("class_and_location", ["location_accuracy", "class_accuracy"]), ("class", ["shift_consistency", "shift_cosine"])],
)
def test_the_part_accuracies_and_invariance_metrics_carry_intervals(tmp_path, label, names):
    metrics, records = captured_run(tmp_path, "task=location_cls", f"task.label={label}", *CANVAS)
    for name in names:
        values, units = records[name]
        assert values.mean() == pytest.approx(metrics[f"test/{name}"], abs=1e-6)
        low, high = plain_bootstrap(units, lambda drawn, values=values: values[drawn].mean())
        assert metrics[f"test/{name}/ci_low"] == pytest.approx(low, abs=1e-9), name
        assert metrics[f"test/{name}/ci_high"] == pytest.approx(high, abs=1e-9), name


def test_semseg_miou_interval_is_the_plain_cluster_bootstrap(semseg_run):
    metrics, records = semseg_run
    confusions, units = records["confusion"]
    overall = confusions.sum(axis=1)  # [images, C, C]: every pixel is in one distance band
    assert plain_miou(overall.sum(axis=0)) == pytest.approx(metrics["test/miou"], abs=1e-6)
    low, high = plain_bootstrap(units, lambda drawn: plain_miou(overall[drawn].sum(axis=0)))
    assert metrics["test/miou/ci_low"] == pytest.approx(low, abs=1e-9)
    assert metrics["test/miou/ci_high"] == pytest.approx(high, abs=1e-9)
    assert metrics["test/miou/ci_low"] <= metrics["test/miou"] + 1e-6 <= metrics["test/miou/ci_high"] + 2e-6
    band = confusions[:, 0]  # the outermost band of pixels
    low, high = plain_bootstrap(units, lambda drawn: plain_miou(band[drawn].sum(axis=0)))
    name = next(k for k in metrics if k.startswith("test/by_distance/px00-") and k.endswith("/miou"))
    assert metrics[f"{name}/ci_low"] == pytest.approx(low, abs=1e-9)
    assert metrics[f"{name}/ci_high"] == pytest.approx(high, abs=1e-9)
    for key in ("test/pixel_acc", *(k for k in metrics if k.startswith("test/by_distance/") and "/ci_" not in k)):
        assert f"{key}/ci_low" in metrics and f"{key}/ci_high" in metrics, key


def test_semseg_units_are_the_photos_of_the_scenes_backgrounds(semseg_run):
    from posenc.data.sources.natural import TEST_PHOTOS, TRAIN_PHOTOS, natural_crops

    metrics, records = semseg_run
    _, units = records["confusion"]
    # the test scenes' backgrounds (seed + 1) are crops of all bundled photos (data.backgrounds=shared)
    _, photos = natural_crops(24, 32, TRAIN_PHOTOS + TEST_PHOTOS, seed=metrics["seed"] + 1, return_labels=True)
    np.testing.assert_array_equal(units, photos.numpy())


def test_saliency_metrics_carry_intervals(tmp_path):
    metrics, records = captured_run(tmp_path, "task=saliency", *SCENES)
    for name in ("max_f", "mae", "s_measure", "pixel_acc"):
        low, high = metrics[f"test/{name}/ci_low"], metrics[f"test/{name}/ci_high"]
        assert low <= high, name
    for name in ("mae", "pixel_acc"):  # the per-image and pooled means hold their value
        key = f"test/{name}"
        assert metrics[f"{key}/ci_low"] <= metrics[key] + 1e-6 <= metrics[f"{key}/ci_high"] + 2e-6, name
    assert records["mae"][0].mean() == pytest.approx(metrics["test/mae"], abs=1e-6)
    assert records["s_measure"][0].mean() == pytest.approx(metrics["test/s_measure"], abs=1e-6)
    curves = records["f_curve"][0]
    assert (curves[:, :-1].sum(0) / curves[:, -1].sum()).max() == pytest.approx(metrics["test/max_f"], abs=1e-6)
    assert any(k.startswith("test/by_distance/") and k.endswith("/mae/ci_low") for k in metrics)


def test_the_cells_showing_one_patch_are_one_unit():
    from posenc.data.location import CanvasDataModule

    dm = CanvasDataModule(image_size=48, canvas={"grid": 3, "patch_size": 16}, num_train=4, num_test=5, batch_size=4)
    dm.setup("test")
    test = dm.test_sets["canvas"]
    items = [test[i] for i in range(len(test))]
    assert len(items) == 5 * 9  # balanced: every patch in every cell
    first, second = items[0], items[1]
    assert int(first["cell"]) != int(second["cell"])
    # the same patch: its pixels where it was pasted are the same in both canvases
    assert torch.equal(first["image"][:, first["object_mask"]], second["image"][:, second["object_mask"]])
    assert first["unit"].dtype == torch.int64 and int(first["unit"]) == int(second["unit"])
    units = torch.stack([item["unit"] for item in items])
    assert torch.equal(units, torch.arange(5).repeat_interleave(9))  # shapes: each patch its own source


def test_crops_of_one_photo_are_one_unit():
    from posenc.data.location import CanvasDataModule

    dm = CanvasDataModule(
        source="photos",
        image_size=48,
        canvas={"grid": 2},
        num_train=4,
        num_test=6,
        batch_size=4,
        test_placement="random",
    )
    dm.setup("test")
    test = dm.test_sets["canvas"]
    for i in range(len(test)):
        assert int(test[i]["unit"]) == int(test[i]["label"])  # the photo the crop is cut from


def test_per_image_rows_sum_to_the_binned_metrics():
    from posenc.metrics.binned import binned_sums, confusion_per_bin
    from posenc.tasks.segmentation import per_image_confusions
    from posenc.tasks.supervised import per_image_bin_sums

    gen = torch.Generator().manual_seed(0)
    values = torch.rand(3, 5, 5, generator=gen)
    bins = torch.randint(-1, 2, (3, 5, 5), generator=gen)
    rows = per_image_bin_sums(values, bins, 2)
    sums, counts = binned_sums(values, bins, 2)
    assert torch.allclose(rows.sum(0)[:, 0], sums) and torch.equal(rows.sum(0)[:, 1], counts.double())
    pred, target = torch.randint(0, 3, (3, 5, 5), generator=gen), torch.randint(0, 3, (3, 5, 5), generator=gen)
    target[0, 0, 0] = 255
    band = torch.randint(0, 2, (5, 5), generator=gen)
    confusions = per_image_confusions(pred, target, band, 3, 2)
    assert confusions.shape == (3, 2, 3, 3)
    assert torch.equal(confusions.sum(0), confusion_per_bin(pred, target, band, 3, 2))
    assert torch.equal(confusions[1], confusion_per_bin(pred[1:2], target[1:2], band, 3, 2))
