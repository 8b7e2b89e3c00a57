"""Every option of every config group composes, and every option that can run here runs."""

from __future__ import annotations

import json

import pytest
import torch
from helpers.runs import CONF_DIR, compose_run
from hydra.utils import instantiate

from posenc.config.groups import group_options

GROUPS = group_options(CONF_DIR)
ALL_OPTIONS = [(g, o) for g, options in GROUPS.items() for o in options if not g.startswith("hydra")]
SMALL = ["data.num_train=4", "data.num_test=2", "data.batch_size=4", "trainer.max_epochs=1", "callbacks.progress=null"]


def test_groups_are_the_documented_ones():
    assert {"backbone", "padding", "task", "readout", "trainer", "data", "logger"} <= set(GROUPS)
    assert set(GROUPS["padding"]) == {"zeros", "reflect", "replicate", "circular", "partial", "none", "none_shrink"}
    assert set(GROUPS["backbone"]) == {
        "vgg16",
        "vgg16_bn",
        "vgg11_bn",
        "resnet18",
        "resnet50",
        "resnet152",
        "resnet18_cifar",
        "tiny",
        "tiny_bn",
        "none",
        "timm",
        "module",
        "vit_tiny",
        # the position atlas's timm families (backbone=timm with their name)
        "resnet18d",
        "regnetx_002",
        "efficientnet_b0",
        "mobilenetv3_small_100",
        "convnext_atto",
    }
    assert set(GROUPS["task"]) == {"posenet", "location_cls", "location_seg", "semseg", "saliency", "ppp", "atlas"}
    assert set(GROUPS["readout"]) == {
        "posenet",
        "gap_linear",
        "gap_permute",
        "gapnet",
        "flatten_linear",
        "pixel_decoder",
    }
    assert set(GROUPS["invariance"]) == {"none", "shift", "shift_mse_0.1", "shift_mse_1", "shift_mse_10"}
    assert set(GROUPS["protocol"]) == {"gps"}
    assert set(GROUPS["experiment"]) == {"atlas_posenet", "atlas_ppp"}
    assert {"natural", "folder", "canvas", "shapes", "voc", "duts", "contexts"} <= set(GROUPS["data"])


@pytest.mark.parametrize(("group", "option"), ALL_OPTIONS)
def test_every_option_composes(tmp_path, group, option):
    extra = (
        {
            "folder": ["data.train_dir=x", "data.test_dir=y"],
            "voc": ["data.data_dir=x"],
            "duts": ["data.data_dir=x"],
        }.get(option, [])
        if group == "data"
        else []
    )
    cfg = compose_run([f"{group}={option}", *extra], tmp_path)
    if group == "sweep":  # presets are global: they name themselves and set the sweeper
        assert cfg.sweep_name == option
    elif group == "invariance":  # global: a location_cls run on free-placement canvases
        assert cfg.task.label == "class" and cfg.task.augment == ("none" if option == "none" else "shift")
    elif group == "protocol":  # global: a paper's protocol over the task, backbone, readout and data groups
        assert cfg.task._target_.endswith("LocationClassificationTask") and cfg.data.train_placement == "resample"
    elif group == "experiment":  # global: the atlas's two runs of a cell
        assert cfg.task._target_.endswith({"atlas_posenet": "PosENetTask", "atlas_ppp": "PPPTask"}[option])
        assert cfg.data.image_size == 64
    else:
        assert cfg[group] is not None


@pytest.mark.parametrize("backbone", sorted(GROUPS["backbone"]))
def test_every_backbone_runs(tmp_path, backbone):
    from posenc.run.train import run

    metrics = run(compose_run([f"backbone={backbone}", "data.image_size=32", *SMALL], tmp_path / "r"))
    assert metrics["backbone"] == backbone
    assert -1.0 <= metrics["test/natural/H/spc"] <= 1.0


@pytest.mark.parametrize("padding", sorted(GROUPS["padding"]))
def test_every_padding_runs(tmp_path, padding):
    from posenc.run.train import run

    size = 140 if padding == "none_shrink" else 48  # 140: minimum of tiny without padding
    metrics = run(
        compose_run(["backbone=tiny", f"padding={padding}", f"data.image_size={size}", *SMALL], tmp_path / "r")
    )
    assert metrics["padding"] == padding


def test_wandb_logger_runs_offline_and_keeps_the_csv_copy(tmp_path, monkeypatch):
    from posenc.run.train import run

    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = tmp_path / "r"
    run(compose_run(["logger=wandb", "backbone=tiny", "data.image_size=32", *SMALL], run_dir))
    assert list((run_dir / "wandb").glob("offline-run-*")), "no offline W&B run written"
    assert (run_dir / "csv" / "metrics.csv").is_file()


def test_gpu_trainer_composes_and_targets_a_gpu(tmp_path):
    cfg = compose_run(["trainer=gpu"], tmp_path)
    assert cfg.trainer.accelerator == "gpu"
    if torch.cuda.is_available():
        assert instantiate(cfg.trainer).num_devices == 1


def test_run_contract_files(tmp_path, run_tiny):
    metrics = run_tiny("trainer.max_epochs=2")
    run_dir = tmp_path / "run"
    on_disk = json.loads((run_dir / "metrics.json").read_text())
    assert on_disk == metrics
    assert {"backbone", "padding", "task", "readout", "data", "seed"} <= set(on_disk)
    assert on_disk["task"] == "posenet" and on_disk["padding"] == "zeros" and on_disk["seed"] == 0
    assert on_disk["readout"] == "posenet" and on_disk["data"] == "natural"  # every option a sweep report groups by
    for name in ("natural", "black", "white", "noise"):
        for target in ("H", "V", "G", "HS", "VS"):
            assert isinstance(on_disk[f"test/{name}/{target}/spc"], float)
            assert isinstance(on_disk[f"test/{name}/{target}/mae"], float)
    assert (run_dir / "config.yaml").read_text().count("_target_") > 3
    assert (run_dir / "figures" / "predictions.png").stat().st_size > 10_000
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert json.loads((run_dir / "status.json").read_text())["status"] == "completed"


def test_target_subset_and_official_inputs_and_maps(run_tiny):
    metrics = run_tiny(
        "task.targets=[H,G]",
        "task.target_source=official",
        "data.synthetic_source=official",
        "data.test_inputs=[natural,noise]",
        "trainer.max_epochs=2",
    )
    keys = {k for k in metrics if k.startswith("test/") and not k.endswith(("/ci_low", "/ci_high"))}
    assert keys == {f"test/{i}/{t}/{m}" for i in ("natural", "noise") for t in ("H", "G") for m in ("spc", "mae")}
    assert metrics["test/natural/H/spc"] > 0.5
