"""Frozen-backbone features are computed once and reused: same results as re-running the
backbone every step, a disk cache keyed by what determines the features, the ``auto`` cache
choosing memory within its budget and a float16 file over it, and folder datasets (DUTS-TR /
PASCAL-S layouts) run end to end without preloading their images."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from posenc.data.datamodule import IndexedFeatures, IndexedImages
from posenc.data.feature_cache import FeatureFile, cache_key, cached_features, plan_cache
from posenc.errors import PosencError

KEYS = [f"test/{i}/{t}/{m}" for i in ("natural", "noise") for t in ("H", "V", "HS") for m in ("spc", "mae")]


def test_cached_and_uncached_training_give_the_same_metrics(tmp_path, run_tiny):
    """And the default ``auto`` cache over a tiny budget trains on a float16 file under
    paths.cache_dir, within float16's effect of the float32 memory cache's metrics."""
    cached = run_tiny("task.feature_cache=memory", "trainer.max_epochs=2", name="memory")
    uncached = run_tiny("task.feature_cache=off", "trainer.max_epochs=2", name="off")
    for key in KEYS:
        assert cached[key] == pytest.approx(uncached[key], abs=1e-4), key
    half = run_tiny("task.cache_memory_fraction=1e-12", "trainer.max_epochs=2", name="auto")
    (file,) = (tmp_path / ".feature_cache").glob("*.npy")
    assert file.name.endswith("-float16.npy")
    for key in KEYS:
        assert half[key] == pytest.approx(cached[key], abs=2e-2), key


def test_disk_cache_is_written_once_and_reused(tmp_path, run_tiny):
    first = run_tiny("task.feature_cache=disk", name="a")
    files = list((tmp_path / ".feature_cache").glob("*.npy"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    second = run_tiny("task.feature_cache=disk", name="b")
    assert files[0].stat().st_mtime_ns == stamp
    assert first["test/natural/H/spc"] == pytest.approx(second["test/natural/H/spc"], abs=1e-5)
    run_tiny("task.feature_cache=disk", "padding=circular", name="c")
    assert len(list((tmp_path / ".feature_cache").glob("*.npy"))) == 2  # padding is in the key


def test_disk_features_equal_memory_features(tmp_path):
    images = IndexedImages((torch.rand(5, 3, 16, 16) * 255).to(torch.uint8))
    encode = lambda x: x.mean(dim=1, keepdim=True) * 2  # noqa: E731
    memory = cached_features("memory", "", tmp_path, encode, images, 2, torch.device("cpu"))
    disk = cached_features("disk", cache_key({"k": 1}), tmp_path, encode, images, 2, torch.device("cpu"), "float32")
    assert memory.dtype == torch.float32 and isinstance(disk, FeatureFile) and disk.dtype == np.float32
    np.testing.assert_allclose(np.asarray(disk), memory.numpy(), rtol=0, atol=0)
    np.testing.assert_array_equal(np.load(disk.path), memory.numpy())  # a plain .npy
    assert cached_features("off", "", tmp_path, encode, images, 2, torch.device("cpu")) is None


def _encode(x: torch.Tensor) -> torch.Tensor:
    """A stand-in encoder: [B, 3, 16, 16] -> [B, 2, 8, 8]."""
    pooled = torch.nn.functional.avg_pool2d(x, 2)
    return torch.cat([pooled.mean(dim=1, keepdim=True), pooled.amax(dim=1, keepdim=True) * 3], dim=1)


def _images(n: int = 7) -> IndexedImages:
    return IndexedImages((torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8))


def _cache(tmp_path, caplog, *args, **kwargs):
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="posenc.data.feature_cache"):
        out = cached_features(
            *args[:1],
            "key",
            tmp_path,
            _encode,
            _images(),
            3,
            torch.device("cpu"),
            *args[1:],
            what="stand-in, f1",
            **kwargs,
        )
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("feature cache:")]
    return out, lines


def test_auto_keeps_features_in_memory_within_the_budget(tmp_path, caplog):
    features, lines = _cache(tmp_path, caplog, "auto")
    assert isinstance(features, torch.Tensor) and features.dtype == torch.float32
    assert tuple(features.shape) == (7, 8, 8, 2)
    (line,) = lines
    assert line.startswith("feature cache: memory float32, ") and "(7 x 8 x 8 x 2)" in line
    assert "within the memory budget" in line and "task.cache_memory_fraction=0.25" in line
    assert not list(tmp_path.glob("*.npy"))


def test_auto_over_the_budget_writes_a_float16_file_equal_to_memory(tmp_path, caplog):
    memory, _ = _cache(tmp_path, caplog, "memory")
    disk, (line,) = _cache(tmp_path, caplog, "auto", "auto", 1e-12)  # a budget of no bytes: disk
    assert isinstance(disk, FeatureFile) and disk.dtype == np.float16 and disk.shape == (7, 8, 8, 2)
    assert disk.path == tmp_path / "key-float16.npy" and np.load(disk.path).dtype == np.float16
    assert line.startswith("feature cache: disk float16, ") and "would exceed the memory budget" in line
    assert str(disk.path) in line
    np.testing.assert_allclose(np.asarray(disk), memory.numpy(), rtol=1e-3, atol=1e-4)  # float16's precision
    # served as float32 batches, in sorted order, equal to the memory cache's to float16 tolerance
    from_disk, from_memory = IndexedFeatures(disk)[[5, 0, 2, 3]], IndexedFeatures(memory)[[5, 0, 2, 3]]
    assert from_disk["index"].tolist() == [0, 2, 3, 5] and from_disk["features"].dtype == torch.float32
    torch.testing.assert_close(from_disk["features"], from_memory["features"], rtol=1e-3, atol=1e-4)
    _, (again,) = _cache(tmp_path, caplog, "auto", "auto", 1e-12)
    assert again.endswith("(reused)")


def test_explicit_dtype_and_mode_win_over_auto(tmp_path, caplog):
    exact, (line,) = _cache(tmp_path, caplog, "auto", "float32", 1e-12)
    assert (
        isinstance(exact, FeatureFile) and exact.dtype == np.float32 and line.startswith("feature cache: disk float32")
    )
    half, _ = _cache(tmp_path, caplog, "auto", "float16")
    assert isinstance(half, torch.Tensor) and half.dtype == torch.float16  # within the budget: memory, in float16
    disk, (line,) = _cache(tmp_path, caplog, "disk")
    assert disk.dtype == np.float16 and "task.feature_cache=disk" in line  # disk's auto dtype
    assert plan_cache("memory", "auto", (10, 4)).dtype == "float32"
    big = plan_cache("auto", "auto", (1000, 1000), 0.5, available=8_000_000)  # 4 MB at float32 <= 4 MB
    assert (big.mode, big.dtype, big.nbytes, big.budget) == ("memory", "float32", 4_000_000, 4_000_000)
    over = plan_cache("auto", "auto", (1001, 1000), 0.5, available=8_000_000)
    assert (over.mode, over.dtype, over.nbytes, over.memory_nbytes) == ("disk", "float16", 2_002_000, 4_004_000)


def test_auto_without_a_known_memory_size_keeps_the_old_default(monkeypatch):
    monkeypatch.setattr("posenc.data.feature_cache.available_memory", lambda: None)
    plan = plan_cache("auto", "auto", (10**6, 10**6))
    assert (plan.mode, plan.dtype, plan.budget) == ("memory", "float32", None)
    assert "available memory unknown" in plan.describe()


CACHE_REFUSALS = [  # (override, what its one line names)
    ("task.cache_memory_fraction=-0.5", ["task.cache_memory_fraction=-0.5", "in (0, 1]"]),
    ("task.cache_memory_fraction=1.5", ["task.cache_memory_fraction=1.5", "in (0, 1]"]),
    ("task.feature_cache=ram", ["task.feature_cache='ram'", "auto, memory, disk, off"]),
    ("task.cache_dtype=bf16", ["task.cache_dtype='bf16'", "auto, float32, float16"]),
]


@pytest.mark.parametrize(
    ("override", "names"),
    CACHE_REFUSALS,
)
def test_bad_cache_settings_are_one_line_errors_at_compose_time(tmp_path, override, names):
    from helpers.runs import compose_run

    from posenc.config.validation import user_error, validate

    try:
        validate(compose_run(["backbone=tiny", override], tmp_path))
    except Exception as exc:  # noqa: BLE001 - must be a user error, raised before anything is built
        line = str(user_error(exc) or exc)
    else:
        pytest.fail(f"{override} was accepted")
    assert "\n" not in line
    for name in names:
        assert name in line, line
    with pytest.raises(PosencError, match="cache_memory_fraction"):
        plan_cache("auto", "auto", (4, 4), -0.5)


def test_disk_cache_is_read_without_mapping_it(tmp_path, caplog):
    """Rows are read with pread: the file never shows among the process's mappings, so reading a
    cache larger than RAM leaves the resident size flat."""
    disk, _ = _cache(tmp_path, caplog, "disk")
    served = IndexedFeatures(disk)
    for rows in ([0, 1, 2], [6, 4], [3]):
        served[rows]
    maps = Path("/proc/self/maps")
    if maps.exists():
        assert str(disk.path) not in maps.read_text()


def _write_images(folder, n, seed):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(folder / f"im{i}.jpg")


def test_folder_data_in_published_layouts_runs(tmp_path, run_tiny):
    duts, pascal = tmp_path / "DUTS-TR", tmp_path / "PASCAL-S"
    _write_images(duts / "DUTS-TR-Image", 12, 0)
    _write_images(duts / "DUTS-TR-Mask", 12, 1)
    _write_images(pascal / "datasets" / "imgs" / "pascal", 4, 2)
    metrics = run_tiny(
        "data=folder", f"data.train_dir={duts}", f"data.test_dir={pascal}", "data.num_train=12", "data.num_test=4"
    )
    assert -1 <= metrics["test/natural/H/spc"] <= 1


def test_folder_images_are_read_when_served_not_preloaded(tmp_path):
    """A folder dataset holds its file paths only (DUTS-TR: 10,553 images); each item is read from
    disk as uint8 when asked for, and the PosENet datamodule keeps it that way."""
    from posenc.data.datamodule import PositionDataModule
    from posenc.data.sources.folder import ImageFolderDataset

    _write_images(tmp_path / "train", 12, 0)
    _write_images(tmp_path / "test", 4, 1)
    dm = PositionDataModule(
        source="folder",
        train_dir=str(tmp_path / "train"),
        test_dir=str(tmp_path / "test"),
        num_train=12,
        num_val=4,
        num_test=4,
        image_size=32,
    )
    dm.setup("fit")
    folder = dm.train_set.images
    assert isinstance(folder, ImageFolderDataset) and len(dm.train_set) == 12
    held = [v for v in vars(folder).values() if isinstance(v, (torch.Tensor, np.ndarray))]
    assert held == [] and all(isinstance(p, Path) for p in folder.paths)
    folder.paths[3].unlink()  # read on access: a file removed after setup is missed only then
    assert dm.train_set[0]["image"].shape == (3, 32, 32) and dm.train_set[0]["image"].dtype == torch.float32
    assert folder[0].dtype == torch.uint8
    with pytest.raises(PosencError, match="cannot read image"):
        folder[3]


@pytest.mark.parametrize("option", ["task.channels_last=true", "task.autocast=bf16"])
def test_backbone_layout_and_autocast_options_keep_the_features(tmp_path, option):
    """channels-last computes the same features (float round-off); bf16 autocast stays within
    bf16's precision, and both hand the readout float32."""
    from helpers.runs import compose_run
    from hydra.utils import instantiate

    images = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    base = ["backbone=tiny", "data.image_size=64", "task.channels_last=false"]  # NCHW, fp32: the reference
    torch.manual_seed(0)
    plain = instantiate(compose_run(base, tmp_path / "plain").task).encode(images)
    torch.manual_seed(0)
    task = instantiate(compose_run([*base, option], tmp_path / "opt").task)
    feats = task.encode(images)
    assert feats.dtype == torch.float32 and feats.shape == plain.shape
    tol = 1e-5 if "channels_last" in option else 3e-2
    assert ((feats - plain).abs().max() / plain.abs().max()).item() < tol
    if "autocast" in option:
        assert not torch.equal(feats, plain)  # it did run in bf16
