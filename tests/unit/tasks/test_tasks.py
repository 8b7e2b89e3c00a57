"""The padding study's trainable tasks (Islam et al., IJCV 2024): every task runs on the embedded data
and on the real loaders' fixture trees, honours the run contract, reports per distance to the
border, refuses bad input with one line, and a trained backbone can be probed by PosENet."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch
from helpers.datasets import make_cifar10_tree, make_duts_tree, make_ecssd_tree, make_pascal_s_tree, make_voc_tree
from helpers.runs import compose_run, train_in_process

QUIET = ["callbacks.progress=null", "trainer.max_epochs=2"]
CANVAS = [
    "data.image_size=48",
    "data.canvas.patch_size=16",
    "data.num_train=64",
    "data.num_val=16",
    "data.num_test=32",
    "data.batch_size=16",
    *QUIET,
]
SCENES = ["data.image_size=32", "data.num_train=32", "data.num_val=8", "data.num_test=16", "data.batch_size=16", *QUIET]
SMALL = {"location_cls": CANVAS, "location_seg": CANVAS, "semseg": SCENES, "saliency": SCENES}
METRICS = {
    "location_cls": ["accuracy", "chance"],
    "location_seg": ["miou", "pixel_acc"],
    "semseg": ["miou", "pixel_acc"],
    "saliency": ["max_f", "mae", "s_measure", "pixel_acc"],
}
BINS = {
    "location_cls": ["ring0", "ring1"],
    "location_seg": ["ring0", "ring1"],
    "semseg": ["px00-03", "px04-07", "px08-11", "px12-15"],
    "saliency": ["px00-03", "px04-07", "px08-11", "px12-15"],
}


def run(tmp_path: Path, *overrides: str) -> dict:
    from posenc.run.train import run as run_job

    metrics = run_job(compose_run(list(overrides), tmp_path))
    assert metrics is not None
    return metrics


@pytest.mark.parametrize("task", sorted(SMALL))
def test_every_task_runs_on_the_embedded_data_and_writes_the_run_contract(tmp_path, task):
    metrics = run(tmp_path, f"task={task}", *SMALL[task])
    for name in METRICS[task]:
        assert 0.0 <= metrics[f"test/{name}"] <= 1.0, name
    binned = [k for k in metrics if k.startswith("test/by_distance/")]
    assert sorted({k.split("/")[2] for k in binned}) == BINS[task]
    backbone = "tiny_bn" if task in ("semseg", "saliency") else "tiny"  # each task's default (docs/tasks.md)
    assert metrics["task"] == task and metrics["backbone"] == backbone and metrics["status"] == "completed"
    assert "train/converged" in metrics and metrics["train/loss_curve/loss"]
    run_dir = tmp_path
    for name in (
        "metrics.json",
        "config.yaml",
        "status.json",
        "figures/loss_curve.png",
        "figures/by_distance.png",
        "checkpoints/last.ckpt",
        "checkpoints/init.ckpt",
    ):
        assert (run_dir / name).is_file(), name
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert any(k.startswith("backbone.") for k in state)  # a trainable backbone is checkpointed


@pytest.mark.parametrize("trainable", [False, True])
def test_a_frozen_backbone_keeps_its_weights_and_a_trainable_one_learns(tmp_path, trainable):
    """The run's checkpointed backbone against the same seeded init the run started from."""
    import lightning as L
    from hydra.utils import instantiate

    overrides = ["task=location_cls", f"backbone.trainable={str(trainable).lower()}", *CANVAS]
    run(tmp_path / "r", *overrides)
    cfg = compose_run(overrides, tmp_path / "init")
    L.seed_everything(cfg.seed, verbose=False)  # as posenc.run.train.train does before building
    instantiate(cfg.data)
    initial = instantiate(cfg.task)
    assert initial.backbone.training is trainable and all(
        p.requires_grad is trainable for p in initial.backbone.parameters()
    )
    state = torch.load(tmp_path / "r" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    same = [torch.equal(v, state["state_dict"][f"backbone.{k}"]) for k, v in initial.backbone.state_dict().items()]
    assert all(same) is not trainable
    if trainable:  # checkpoints/init.ckpt holds exactly the weights training started from (ppp_artifact)
        init = torch.load(tmp_path / "r" / "checkpoints" / "init.ckpt", map_location="cpu", weights_only=True)
        assert all(
            torch.equal(v, init["state_dict"][f"backbone.{k}"]) for k, v in initial.backbone.state_dict().items()
        )


# each real loader's fixture tree: (what builds it, the task and data it feeds, the sizes it has)
REAL_TREES = {
    "voc": (make_voc_tree, ["task=semseg", "data=voc", "data.num_train=3", "data.num_val=2", "data.num_test=2"]),
    "cifar10": (
        make_cifar10_tree,
        [
            "task=location_cls",
            "data.source=cifar10",
            "task.label=class_and_location",
            "data.image_size=48",
            "data.canvas.patch_size=16",
            "data.num_train=16",
            "data.num_val=4",
            "data.num_test=4",
            "data.batch_size=4",
        ],
    ),
    "duts": (make_duts_tree, ["task=saliency", "data=duts", "data.num_train=3", "data.num_val=2", "data.num_test=3"]),
}
TEST_TREES = {"ecssd": make_ecssd_tree, "pascal_s": make_pascal_s_tree}


@pytest.mark.parametrize("case", ["voc", "duts", "duts->ecssd", "duts->pascal_s", "cifar10"])
def test_tasks_run_on_the_real_loaders_fixture_trees(tmp_path, case):
    train_set, _, test_set = case.partition("->")
    make_tree, overrides = REAL_TREES[train_set]
    extra = [f"data.data_dir={make_tree(tmp_path / train_set)}"]
    if test_set:
        extra += [f"data.test_source={test_set}", f"data.test_dir={TEST_TREES[test_set](tmp_path / test_set)}"]
    metrics = run(tmp_path / "r", "data.image_size=32", "data.batch_size=2", *QUIET, *overrides, *extra)
    if train_set == "voc":
        assert 0.0 <= metrics["test/miou"] <= 1.0
    elif train_set == "cifar10":
        assert metrics["test/chance"] == pytest.approx(1 / 90)
    else:
        assert 0.0 <= metrics["test/max_f"] <= 1.0 and 0.0 <= metrics["test/s_measure"] <= 1.0


def test_posenet_measures_the_backbone_a_task_trained(tmp_path):
    """ "Train with padding P, then measure its position information" is two commands."""
    from hydra.utils import instantiate

    from posenc.run.weights import with_run_weights

    run(tmp_path / "trained", "task=location_cls", "padding=reflect", *CANVAS)
    cfg = compose_run(
        ["backbone=tiny", "padding=reflect", f"backbone.weights={tmp_path / 'trained'}", "data.image_size=48"],
        tmp_path / "probe",
    )
    probe = instantiate(with_run_weights(cfg).backbone)  # the run layer turns the run dir into its checkpoint
    state = torch.load(tmp_path / "trained" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)[
        "state_dict"
    ]
    for key, value in probe.state_dict().items():
        assert torch.equal(value, state[f"backbone.{key}"]), key
    assert not probe.trainable and not probe.training
    metrics = run(
        tmp_path / "p",
        "backbone=tiny",
        "padding=reflect",
        f"backbone.weights={tmp_path / 'trained'}",
        "data.image_size=48",
        "data.num_train=16",
        "data.num_test=4",
        "data.num_val=0",
        "data.batch_size=8",
        "task.max_steps=4",
        "callbacks.progress=null",
    )
    assert -1.0 <= metrics["test/natural/H/spc"] <= 1.0


BAD = {
    "grid": (
        ["task=location_cls", "data.image_size=100"],
        ["data.canvas.grid=3", "data.image_size=100", "multiple of 3"],
    ),
    "patch": (
        ["task=location_cls", "data.image_size=100", "data.canvas.patch_size=32"],
        ["data.canvas.grid=3", "data.image_size=100", "multiple of 3, e.g. 99"],
    ),
    "patch_over_cell": (
        ["task=location_cls", "data.canvas.patch_size=40"],
        ["data.canvas.patch_size=40", "32 px cell", "valid: 1..32"],
    ),
    "frame": (["data.image_size=64", "data.canvas.margin=40"], ["data.canvas.margin=40", "valid: 0..28"]),
    "head": (
        ["task=location_cls", "readout=pixel_decoder", "data.num_train=8", "data.num_test=8"],
        ["PixelDecoder", "classification head"],
    ),
    "posenet_head": (["readout=gap_linear"], ["task=posenet needs readout=posenet"]),
    "label": (["task=location_cls", "task.label=where"], ["task.label='where'", "location", "class_and_location"]),
    "voc": (["task=semseg", "data=voc", "data.data_dir=/nonexistent/voc"], ["/nonexistent/voc"]),
    "cifar": (["task=location_cls", "data.source=cifar10", "data.data_dir=/nonexistent/cifar"], ["/nonexistent/cifar"]),
    "trainable_posenet": (["backbone.trainable=true"], ["backbone.trainable=false"]),
    "permute_at": (
        [
            "task=location_cls",
            "readout=gap_permute",
            "readout.permute_at=2",
            "backbone.taps=[f4,f5]",
            "data.num_train=8",
            "data.num_test=8",
            "data.num_val=0",
        ],
        ["readout.permute_at=2", "valid: 4, 5"],
    ),
    "consistency": (
        ["task=location_cls", "task.consistency_weight=1"],
        ["task.consistency_weight=1.0", "task.augment=shift"],
    ),
    "augment_label": (["invariance=shift", "task.label=location"], ["task.augment=shift", "task.label=class"]),
}


@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """Each case as ``python train.py`` would end it (run in this process: each stops before training)."""
    out = tmp_path_factory.mktemp("bad")
    return {
        case: train_in_process(*args, "callbacks.progress=null", f"paths.output_root={out / case}")
        for case, (args, _) in BAD.items()
    }


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_task_input_is_one_line_and_exit_2(bad_runs, case):
    proc = bad_runs[case]
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    for word in BAD[case][1]:
        assert word in lines[0], lines[0]
