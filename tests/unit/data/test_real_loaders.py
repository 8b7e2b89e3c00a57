"""The CIFAR-10, saliency and PASCAL VOC loaders on tiny fixture trees in the published layouts."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.datasets import (
    CIFAR_CLASSES,
    PLANE_VALUES,
    cifar_labels,
    make_cifar10_tree,
    make_duts_tree,
    make_ecssd_tree,
    make_pascal_s_tree,
    make_voc_tree,
    voc_class,
    write_pickle,
)
from PIL import Image
from torch.utils.data import default_collate

from posenc.data.sources.cifar import load_cifar10
from posenc.data.sources.images import read_rgb
from posenc.data.sources.segmentation_sets import (
    SALIENCY_LAYOUTS,
    SALIENCY_SETS,
    VOC_CLASSES,
    MaskFolderDataset,
    saliency_dataset,
    voc_segmentation,
)
from posenc.errors import PosencError

S = 8  # a multiple of 4: the fixture rectangle lands on rows/columns [2, 6)
BOX = (slice(S // 4, 3 * S // 4), slice(S // 4, 3 * S // 4))


def expected_box(value: int = 1) -> torch.Tensor:
    out = torch.zeros((S, S), dtype=torch.int64)
    out[BOX] = value
    return out


def one_line_error(call, *parts: object) -> str:
    """Run ``call``; it must raise a one-line PosencError mentioning every one of ``parts``."""
    with pytest.raises(PosencError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    for part in parts:
        assert str(part) in message, message
    return message


# ---- CIFAR-10 -------------------------------------------------------------------------------


def test_cifar_train_and_test_splits(tmp_path: Path) -> None:
    root = make_cifar10_tree(tmp_path, n_per_batch=4)
    images, labels, names = load_cifar10(root, train=True)
    assert images.shape == (20, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.dtype == torch.int64
    assert labels.tolist() == [y for b in range(1, 6) for y in cifar_labels(b, 4)]
    assert names == list(CIFAR_CLASSES)
    test_images, test_labels, _ = load_cifar10(root / "cifar-10-batches-py", train=False)
    assert test_images.shape == (4, 3, 32, 32) and test_labels.tolist() == cifar_labels(0, 4)


def test_cifar_planes_decode_as_rgb_rows(tmp_path: Path) -> None:
    root = make_cifar10_tree(tmp_path, n_per_batch=2)
    images, _, _ = load_cifar10(root, train=True)
    for k, value in enumerate(PLANE_VALUES):  # the first image of every batch
        assert bool((images[::2, k] == value).all())
    # One marked pixel in the R plane: entry 1 is row 0, column 1 (row-major planes).
    data = np.repeat(np.array(PLANE_VALUES, dtype=np.uint8), 1024)[None].copy()
    data[0, 1] = 99
    write_pickle(root / "cifar-10-batches-py" / "test_batch", {b"data": data, b"labels": [7]})
    image, label, _ = load_cifar10(root, train=False)
    assert image[0, 0, 0, 1] == 99 and image[0, 0, 1, 0] == 10 and label.tolist() == [7]


def test_cifar_missing_batch_and_folder(tmp_path: Path) -> None:
    root = make_cifar10_tree(tmp_path, n_per_batch=1)
    missing = root / "cifar-10-batches-py" / "data_batch_3"
    missing.unlink()
    one_line_error(lambda: load_cifar10(root, train=True), missing, "cifar-10-python.tar.gz", root)
    assert load_cifar10(root, train=False)[0].shape[0] == 1  # the test split is whole
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line_error(lambda: load_cifar10(empty, train=True), empty / "cifar-10-batches-py")


# ---- saliency -------------------------------------------------------------------------------

TREES = {"duts": make_duts_tree, "ecssd": make_ecssd_tree, "pascal_s": make_pascal_s_tree}


@pytest.mark.parametrize("name", SALIENCY_SETS)
@pytest.mark.parametrize("split", ["train", "test"])
def test_saliency_sets_read_their_layout(tmp_path: Path, name: str, split: str) -> None:
    root = TREES[name](tmp_path, n=3)
    dataset = saliency_dataset(name, root, split, image_size=S)
    assert len(dataset) == 3
    for i in range(3):
        sample = dataset[i]
        assert sample["image"].shape == (3, S, S) and sample["image"].dtype == torch.uint8
        assert sample["mask"].dtype == torch.int64
        assert torch.equal(sample["mask"], expected_box())  # binarised, resized nearest
        rgb = read_rgb(dataset.images[i], size=S)
        assert torch.equal(sample["image"], torch.from_numpy(rgb).permute(2, 0, 1))
    assert str(dataset.images[0].parent).endswith(SALIENCY_LAYOUTS[name][split][0])
    batch = default_collate([dataset[0], dataset[1]])
    assert batch["image"].shape == (2, 3, S, S) and batch["mask"].shape == (2, S, S)


def test_duts_split_folder_as_data_dir(tmp_path: Path) -> None:
    root = make_duts_tree(tmp_path, n=2)
    dataset = saliency_dataset("duts", root / "DUTS-TE", "test", image_size=S)
    assert len(dataset) == 2 and dataset.images[0].parent == root / "DUTS-TE" / "DUTS-TE-Image"


def test_binarisation_threshold_and_other_mask_extension(tmp_path: Path) -> None:
    root = make_ecssd_tree(tmp_path, n=1)
    image = next((root / "images").iterdir())
    (root / "ground_truth_mask" / f"{image.stem}.png").unlink()
    grey = np.full((24, 32), 127, dtype=np.uint8)
    grey[:, 16:] = 128
    Image.fromarray(grey).save(root / "ground_truth_mask" / f"{image.stem}.bmp")
    mask = saliency_dataset("ecssd", root, "test", image_size=S)[0]["mask"]
    assert mask[:, : S // 2].eq(0).all() and mask[:, S // 2 :].eq(1).all()
    raw = MaskFolderDataset(root / "images", root / "ground_truth_mask", S, binary=False)[0]
    assert set(raw["mask"].unique().tolist()) == {127, 128}


def test_saliency_missing_folder_and_mask(tmp_path: Path) -> None:
    root = make_duts_tree(tmp_path, n=3)
    mask_dir = root / "DUTS-TR" / "DUTS-TR-Mask"
    lost = sorted(mask_dir.iterdir())[1]
    lost.unlink()
    image = root / "DUTS-TR" / "DUTS-TR-Image" / f"{lost.stem}.jpg"
    one_line_error(lambda: saliency_dataset("duts", root, "train", S), image, lost)
    shutil.rmtree(mask_dir)
    one_line_error(lambda: saliency_dataset("duts", root, "train", S), mask_dir, "DUTS-TR.zip")
    one_line_error(lambda: saliency_dataset("ecssd", tmp_path / "nowhere", "test", S), "nowhere")
    one_line_error(lambda: saliency_dataset("msra", root, "test", S), "msra", "duts")
    one_line_error(lambda: saliency_dataset("duts", root, "val", S), "val", "train")


def test_saliency_seeded_subsets(tmp_path: Path) -> None:
    root = make_pascal_s_tree(tmp_path, n=3)
    first = saliency_dataset("pascal_s", root, "test", S, num=2, seed=5)
    again = saliency_dataset("pascal_s", root, "test", S, num=2, seed=5)
    assert len(first) == 2 and first.images == again.images == sorted(first.images)
    assert [m.stem for m in first.masks] == [p.stem for p in first.images]
    folder = root / "datasets" / "imgs" / "pascal"
    one_line_error(lambda: saliency_dataset("pascal_s", root, "test", S, num=4), folder, "only 3")


# ---- PASCAL VOC 2012 --------------------------------------------------------------------


def test_voc_reads_palette_masks_and_keeps_void(tmp_path: Path) -> None:
    root = make_voc_tree(tmp_path, n_train=3, n_val=2)
    assert len(VOC_CLASSES) == 21 and VOC_CLASSES[0] == "background"
    for split, offset, size in (("train", 0, 3), ("test", 3, 2)):
        dataset = voc_segmentation(root, split, image_size=S)
        assert len(dataset) == size
        for i in range(size):
            sample = dataset[i]
            assert sample["image"].shape == (3, S, S) and sample["image"].dtype == torch.uint8
            expected = expected_box(voc_class(offset + i))
            expected[3 * S // 4 :] = 255
            assert sample["mask"].dtype == torch.int64 and torch.equal(sample["mask"], expected)
    inner = voc_segmentation(root / "VOCdevkit" / "VOC2012", "test", image_size=S)
    assert len(inner) == 2


def test_voc_missing_paths(tmp_path: Path) -> None:
    root = make_voc_tree(tmp_path, n_train=2, n_val=1)
    base = root / "VOCdevkit" / "VOC2012"
    lost = base / "JPEGImages" / "2007_000001.jpg"
    lost.unlink()
    one_line_error(lambda: voc_segmentation(root, "train", S), lost, "train.txt")
    shutil.rmtree(base / "ImageSets")
    one_line_error(lambda: voc_segmentation(root, "test", S), base / "ImageSets", "val.txt")
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line_error(lambda: voc_segmentation(empty, "train", S), empty / "VOCdevkit" / "VOC2012")


def test_voc_seeded_subsets(tmp_path: Path) -> None:
    root = make_voc_tree(tmp_path, n_train=3, n_val=1)
    first = voc_segmentation(root, "train", S, num=2, seed=1)
    again = voc_segmentation(root, "train", S, num=2, seed=1)
    assert len(first) == 2 and first.indices == again.indices == sorted(first.indices)
    split_file = root / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation" / "train.txt"
    one_line_error(lambda: voc_segmentation(root, "train", S, num=5), split_file, "only 3")
