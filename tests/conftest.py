"""Shared test helpers: compose the real configs with Hydra's compose API and shrink them."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
SHARED_REFERENCE = ROOT.parent / "shared" / "reference" / "posenet_official"

# A run that finishes in seconds on 2 CPU cores: tiny backbone, 64 px images.
TINY = [
    "backbone=tiny",
    "data.image_size=64",
    "data.num_train=48",
    "data.num_test=8",
    "data.batch_size=16",
    "trainer.max_epochs=4",
    "callbacks.progress=null",
]


def compose_run(overrides: list[str], run_dir: Path) -> DictConfig:
    """The composed ``train`` config with Hydra's runtime set as in a real run in ``run_dir``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)
        cfg.paths.output_root = str(run_dir.parent)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]  # the task function of a real run sees the config without it
    return cfg


@pytest.fixture
def run_tiny(tmp_path: Path):
    """Run ``posenc.training.run`` on the tiny config plus ``overrides``; returns metrics."""
    from posenc.training import run

    def _run(*overrides: str, name: str = "run") -> dict:
        cfg = compose_run([*TINY, *overrides], tmp_path / name)
        metrics = run(cfg)
        assert metrics is not None
        return metrics

    return _run
