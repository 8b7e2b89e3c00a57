"""Frozen-backbone features are computed once and reused: same results as re-running the
backbone every step, a disk cache keyed by what determines the features, and folder datasets
(DUTS-TR / PASCAL-S layouts) run end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from posenc.data.feature_cache import cache_key, cached_features
from posenc.data.datamodule import IndexedImages

KEYS = [f"test/{i}/{t}/{m}" for i in ("natural", "noise") for t in ("H", "V", "HS") for m in ("spc", "mae")]


def test_cached_and_uncached_training_give_the_same_metrics(run_tiny):
    cached = run_tiny("task.feature_cache=memory", "trainer.max_epochs=2", name="memory")
    uncached = run_tiny("task.feature_cache=off", "trainer.max_epochs=2", name="off")
    for key in KEYS:
        assert cached[key] == pytest.approx(uncached[key], abs=1e-4), key


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
    disk = cached_features("disk", cache_key({"k": 1}), tmp_path, encode, images, 2, torch.device("cpu"))
    np.testing.assert_allclose(np.asarray(disk), memory.numpy(), rtol=0, atol=0)
    assert cached_features("off", "", tmp_path, encode, images, 2, torch.device("cpu")) is None


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
    metrics = run_tiny("data=folder", f"data.train_dir={duts}", f"data.test_dir={pascal}",
                       "data.num_train=12", "data.num_test=4")
    assert -1 <= metrics["test/natural/H/spc"] <= 1


@pytest.mark.parametrize("option", ["task.channels_last=true", "task.autocast=bf16"])
def test_backbone_layout_and_autocast_options_keep_the_features(tmp_path, option):
    """channels-last computes the same features (float round-off); bf16 autocast stays within
    bf16's precision, and both hand the readout float32."""
    from hydra.utils import instantiate

    from conftest import compose_run

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
