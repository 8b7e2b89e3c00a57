"""Tests for the image sources: bundled photos, synthetic inputs and image folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from posenc.data.sources.folder import IMAGE_EXTENSIONS, ImageFolderDataset, find_image_dir, list_images, load_folder
from posenc.data.sources.natural import TEST_PHOTOS, TRAIN_PHOTOS, available_photos, load_photo, natural_crops
from posenc.data.sources.synthetic import SYNTHETIC_INPUTS, synthetic_images
from posenc.errors import PosencError

# --------------------------------------------------------------------------- natural photos


def test_photo_lists_disjoint_and_installed() -> None:
    assert TRAIN_PHOTOS and TEST_PHOTOS
    assert not set(TRAIN_PHOTOS) & set(TEST_PHOTOS)
    on_disk = available_photos()
    for name in TRAIN_PHOTOS + TEST_PHOTOS:
        assert name in on_disk, name
        assert on_disk[name].is_file()


@pytest.mark.parametrize("name", ["camera", "astronaut", "china"])
def test_load_photo_is_rgb_uint8(name: str) -> None:
    arr = load_photo(name)
    assert arr.dtype == np.uint8
    assert arr.ndim == 3 and arr.shape[2] == 3
    assert min(arr.shape[:2]) >= 200


def test_load_photo_grayscale_repeated() -> None:
    arr = load_photo("camera")  # a grayscale PNG
    assert np.array_equal(arr[..., 0], arr[..., 1])
    assert np.array_equal(arr[..., 0], arr[..., 2])


def test_natural_crops_shape_dtype_and_content() -> None:
    crops = natural_crops(6, 32, TRAIN_PHOTOS, seed=0)
    assert crops.shape == (6, 3, 32, 32)
    assert crops.dtype == torch.uint8
    per_image_std = crops.float().flatten(1).std(dim=1)
    assert bool((per_image_std > 5.0).all()), per_image_std


def test_natural_crops_deterministic() -> None:
    a = natural_crops(4, 24, TEST_PHOTOS, seed=3)
    b = natural_crops(4, 24, TEST_PHOTOS, seed=3)
    c = natural_crops(4, 24, TEST_PHOTOS, seed=4)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a[0], a[1])


def test_natural_crops_zero_and_errors() -> None:
    assert natural_crops(0, 16, TRAIN_PHOTOS, seed=0).shape == (0, 3, 16, 16)
    with pytest.raises(PosencError, match="valid: .*coffee"):
        natural_crops(2, 16, ["no_such_photo"], seed=0)
    with pytest.raises(PosencError, match="num"):
        natural_crops(-1, 16, TRAIN_PHOTOS, seed=0)


def test_natural_crops_does_not_touch_global_rng() -> None:
    torch.manual_seed(123)
    np.random.seed(123)
    expected_t, expected_n = torch.rand(1), np.random.rand()
    torch.manual_seed(123)
    np.random.seed(123)
    natural_crops(2, 16, TEST_PHOTOS, seed=0)
    assert torch.equal(torch.rand(1), expected_t)
    assert np.random.rand() == expected_n


# --------------------------------------------------------------------------- synthetic inputs


def test_synthetic_black_white() -> None:
    black = synthetic_images("black", 2, 20, seed=0)
    white = synthetic_images("white", 2, 20, seed=0)
    assert black.shape == white.shape == (2, 3, 20, 20)
    assert black.dtype == white.dtype == torch.uint8
    assert int(black.max()) == 0
    assert int(white.min()) == 255


def test_synthetic_noise_statistics_and_seed() -> None:
    noise = synthetic_images("noise", 4, 64, seed=1)
    assert noise.shape == (4, 3, 64, 64) and noise.dtype == torch.uint8
    values = noise.float()
    assert abs(values.mean().item() - 127.5) < 5.0
    assert 40.0 < values.std().item() < 60.0
    assert not torch.equal(noise[0], noise[1])
    assert not torch.equal(noise[:, 0], noise[:, 1])
    assert torch.equal(noise, synthetic_images("noise", 4, 64, seed=1))
    assert not torch.equal(noise, synthetic_images("noise", 4, 64, seed=2))


@pytest.mark.parametrize("size", [224, 32])
def test_synthetic_official(size: int) -> None:
    imgs = {k: synthetic_images(k, 3, size, seed=0, source="official") for k in SYNTHETIC_INPUTS}
    for img in imgs.values():
        assert img.shape == (3, 3, size, size)
        assert img.dtype == torch.uint8
        assert torch.equal(img[0], img[2])
    assert imgs["black"].float().mean().item() < 5.0
    assert imgs["white"].float().mean().item() > 250.0
    # downsizing averages the published noise, so only require it is not flat
    assert imgs["noise"].float().std().item() > (10.0 if size == 224 else 1.0)


def test_synthetic_errors() -> None:
    with pytest.raises(PosencError, match="valid: black, white, noise"):
        synthetic_images("gray", 1, 8, seed=0)
    with pytest.raises(PosencError, match="valid: generated, official"):
        synthetic_images("black", 1, 8, seed=0, source="web")


# --------------------------------------------------------------------------- image folders


def _write_image(path: Path, size: tuple[int, int], value: int, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    channels = 3 if mode == "RGB" else 1
    arr = rng.integers(0, 256, size=(size[1], size[0], channels), dtype=np.uint8)
    Image.fromarray(arr.squeeze(-1) if channels == 1 else arr, mode=mode).save(path)


def _duts_tr(root: Path, n: int = 5) -> Path:
    for i in range(n):
        _write_image(root / "DUTS-TR-Image" / f"ILSVRC_{i:03d}.jpg", (40, 30), i)
        _write_image(root / "DUTS-TR-Mask" / f"ILSVRC_{i:03d}.png", (40, 30), 100 + i, "L")
    return root


def test_folder_duts_layout(tmp_path: Path) -> None:
    root = _duts_tr(tmp_path / "DUTS-TR")
    assert find_image_dir(root) == root / "DUTS-TR-Image"
    paths = list_images(root)
    assert [p.name for p in paths] == [f"ILSVRC_{i:03d}.jpg" for i in range(5)]
    assert all(p.parent.name == "DUTS-TR-Image" for p in paths)
    imgs = load_folder(root, 16)
    assert imgs.shape == (5, 3, 16, 16) and imgs.dtype == torch.uint8


def test_folder_pascal_layout(tmp_path: Path) -> None:
    root = tmp_path / "PASCAL-S"
    for i in range(3):
        _write_image(root / "datasets" / "imgs" / "pascal" / f"{i + 1}.jpg", (50, 20), i)
        _write_image(root / "datasets" / "masks" / "pascal" / f"{i + 1}.png", (50, 20), 9, "L")
    paths = list_images(root)
    assert len(paths) == 3
    assert all(p.suffix == ".jpg" and "imgs" in p.parts for p in paths)
    ds = ImageFolderDataset(root, 12)
    assert len(ds) == 3
    assert ds[0].shape == (3, 12, 12) and ds[0].dtype == torch.uint8


def test_folder_flat_mixed_formats(tmp_path: Path) -> None:
    _write_image(tmp_path / "a.png", (20, 20), 1, "L")
    _write_image(tmp_path / "b.BMP", (10, 30), 2)
    _write_image(tmp_path / "c.jpeg", (30, 10), 3)
    (tmp_path / "notes.txt").write_text("not an image")
    assert {p.suffix.lower() for p in list_images(tmp_path)} <= set(IMAGE_EXTENSIONS)
    imgs = load_folder(tmp_path, 8)
    assert imgs.shape == (3, 3, 8, 8)
    assert torch.equal(imgs[0, 0], imgs[0, 1])  # grayscale repeated to 3 channels


def test_folder_subset(tmp_path: Path) -> None:
    root = _duts_tr(tmp_path, n=8)
    a = ImageFolderDataset(root, 8, num=3, seed=0)
    b = ImageFolderDataset(root, 8, num=3, seed=0)
    assert len(a) == 3
    assert a.paths == b.paths == sorted(a.paths)
    assert len(set(a.paths)) == 3
    assert load_folder(root, 8, num=8).shape[0] == 8
    with pytest.raises(PosencError, match="only 8"):
        ImageFolderDataset(root, 8, num=9)


def test_folder_corrupt_image(tmp_path: Path) -> None:
    _write_image(tmp_path / "good.jpg", (10, 10), 0)
    (tmp_path / "x.jpg").write_bytes(b"this is not a jpeg \x00\x01\x02" * 10)
    ds = ImageFolderDataset(tmp_path, 8)
    with pytest.raises(PosencError, match="cannot read image .*x.jpg") as info:
        load_folder(tmp_path, 8)
    assert "\n" not in str(info.value)
    assert ds[0].shape == (3, 8, 8)


def test_folder_missing_and_empty(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(PosencError, match="data dir not found: .*nowhere"):
        list_images(missing)
    empty = tmp_path / "empty"
    (empty / "DUTS-TR-Mask").mkdir(parents=True)
    with pytest.raises(PosencError, match="DUTS-TR-Image") as info:
        ImageFolderDataset(empty, 8)
    assert str(empty) in str(info.value)
