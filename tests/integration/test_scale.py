"""Running the study at scale: DDP (also inside a Hydra multirun), the submitit launcher,
resume after SIGKILL, determinism, W&B grouping, unique output dirs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
import torch
from helpers.runs import CONF_DIR, ROOT, compose_run, train_in_process
from hydra.utils import instantiate

from posenc.cli.argv import with_output_dir

SMALL = ["backbone=tiny", "data.image_size=32", "data.num_train=16", "data.num_test=8", "callbacks.progress=null"]
TEST_KEYS = [
    f"test/{i}/{t}/{m}"
    for i in ("natural", "white", "noise")
    for t in ("H", "V", "G", "HS", "VS")
    for m in ("spc", "mae")
]


def same_threads_env() -> dict[str, str]:
    """A child's environment that computes with this process's torch threads (bit-comparable results)."""
    return {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}


def train(*args: str, out: Path, timeout: int = 600, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args, f"paths.output_root={out}"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def train_here(*args: str, out: Path) -> subprocess.CompletedProcess:
    """``train`` in this process (helpers.runs.train_in_process): no interpreter start-up."""
    proc = train_in_process(*args, f"paths.output_root={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def metrics_of(proc: subprocess.CompletedProcess) -> dict:
    return json.loads((Path(proc.stdout.strip().splitlines()[-1]) / "metrics.json").read_text())


def test_ddp_cpu_two_processes_end_like_one(tmp_path):
    """2 gloo ranks x batch 8 (readout BN statistics over both ranks, test sets split between
    the ranks and reduced) end with the metrics of 1 process x batch 16."""
    one = metrics_of(train(*SMALL, "data.batch_size=16", "trainer.max_epochs=3", out=tmp_path / "one"))
    two = metrics_of(
        train(*SMALL, "trainer=ddp_cpu", "data.batch_size=8", "trainer.max_epochs=3", out=tmp_path / "two")
    )
    assert one["test/natural/H/spc"] > 0.8
    for key in TEST_KEYS:
        assert two[key] == pytest.approx(one[key], abs=1e-4), key


def test_ddp_inside_a_multirun_does_not_relaunch_the_sweep(tmp_path):
    proc = train(
        "-m",
        "trainer=ddp_cpu",
        "padding=zeros,circular",
        *SMALL,
        "data.batch_size=8",
        "trainer.max_epochs=1",
        out=tmp_path,
    )
    assert proc.stdout.count("Launching 2 jobs") + proc.stderr.count("Launching 2 jobs") == 1
    (sweep,) = (tmp_path / "multirun").iterdir()
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["0", "1"]
    for job in jobs:
        assert json.loads((sweep / job / "status.json").read_text())["status"] == "completed"
        assert (sweep / job / "train_ddp_process_1.log").exists()  # rank 1 ran inside the job dir
    assert not (tmp_path / "runs").exists()  # no child rank opened a run of its own


def test_same_seed_same_config_gives_identical_metrics_json(tmp_path):
    """The same seed gives the same bytes in a fresh process (``b``, on this process's torch threads) and
    in this one after whatever ran here before (``a``): nothing but the seed decides a run, neither
    per-process state (hash seeds, set order) nor what an earlier run left behind; another seed differs."""
    a = train_here(*SMALL, "trainer.max_epochs=2", out=tmp_path / "a")
    b = train(*SMALL, "trainer.max_epochs=2", out=tmp_path / "b", env=same_threads_env())
    c = train_here(*SMALL, "trainer.max_epochs=2", "seed=1", out=tmp_path / "c")
    read = lambda p: (Path(p.stdout.strip().splitlines()[-1]) / "metrics.json").read_bytes()  # noqa: E731
    assert read(a) == read(b)
    assert read(c) != read(a)


# Each case checkpoints every 4 steps, so that most checkpoints fall inside an epoch (mid-epoch
# resume: the loader skips the batches already trained on, the RNG states come back).
RESUME_CASES = {
    # frozen backbone (PosENet readout) over cached features: 6 batches an epoch
    "posenet": (
        [
            "backbone=tiny",
            "data.image_size=64",
            "data.num_train=192",
            "data.num_val=16",
            "data.num_test=8",
            "data.batch_size=32",
            "task.max_steps=60",
            "trainer.val_check_interval=10",
            "task.scheduler.fractions=[0.5]",
        ],
        6,
    ),
    # a trainable backbone with shift augmentation: weights, optimizer state and the task's generator come back
    "location_cls": (
        [
            "task=location_cls",
            "data.image_size=48",
            "data.canvas.patch_size=16",
            "data.num_train=128",
            "data.num_val=16",
            "data.num_test=32",
            "data.batch_size=16",
            "task.max_steps=48",
            "task.label=class",
            "task.augment=shift",
            "task.shift=4",
            "trainer.val_check_interval=8",
            "task.scheduler.fractions=[0.5]",
        ],
        8,
    ),
    # segmentation with its pixel decoder
    "semseg": (
        [
            "task=semseg",
            "data.image_size=32",
            "data.num_train=96",
            "data.num_val=16",
            "data.num_test=16",
            "data.batch_size=16",
            "task.max_steps=36",
            "trainer.val_check_interval=6",
        ],
        6,
    ),
}


def _checkpoint_step(path: Path) -> int:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])
    except Exception:  # noqa: BLE001 - being replaced right now: not yet
        return 0


@pytest.mark.parametrize("case", sorted(RESUME_CASES))
def test_resume_after_sigkill_ends_like_an_uninterrupted_run(tmp_path, case):
    args, per_epoch = RESUME_CASES[case]
    args = [*args, "callbacks.checkpoint.every_n_steps=4", "callbacks.progress=null"]
    reference = metrics_of(train_here(*args, out=tmp_path / "ref"))  # uninterrupted, in this process

    # the killed run needs a process of its own; it computes with this process's torch threads (the
    # reference's and the resumed run's), so that the three are comparable to the last bit
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *args, f"paths.output_root={out}"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=same_threads_env(),
    )
    deadline, step = time.time() + 300, 0
    while time.time() < deadline and proc.poll() is None:
        ckpts = list(out.glob("runs/*/checkpoints/last.ckpt"))
        step = _checkpoint_step(ckpts[0]) if ckpts else 0
        if step >= 8 and step % per_epoch:  # a checkpoint inside an epoch
            break
        time.sleep(0.02)
    assert proc.poll() is None, "run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    (run_dir,) = (p.parent for p in out.glob("runs/*/status.json"))
    assert json.loads((run_dir / "status.json").read_text())["status"] == "running"  # SIGKILL: nothing recorded it
    at_kill = _checkpoint_step(run_dir / "checkpoints" / "last.ckpt")
    assert at_kill > 0

    resumed = train_in_process("--resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.strip().splitlines()[-1] == str(run_dir)
    status = json.loads((run_dir / "status.json").read_text())
    # it restored the checkpoint (a silent restart from step 0 would fail here, whatever its metrics)
    assert status["status"] == "completed" and status["resumed_from_step"] == at_kill > 0
    assert f"from step {at_kill}" in resumed.stderr
    final = json.loads((run_dir / "metrics.json").read_text())
    assert sum(k.startswith("test/") for k in reference) >= 3
    # the same metrics and the same training record: test metrics, loss curves, the flag, every train/* and val/*
    assert set(final) == set(reference)
    differ = sorted(k for k, v in reference.items() if final[k] != pytest.approx(v, abs=1e-6))
    assert not differ, {k: (final[k], reference[k]) for k in differ[-6:]}


def test_wandb_run_carries_group_tags_job_type_and_stays_offline(tmp_path, monkeypatch):
    from hydra.core.hydra_config import HydraConfig

    from posenc.run.train import wandb_settings

    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose_run(
        ["logger=wandb", "logger.wandb.offline=false", "sweep=padding_study", "padding=circular", "backbone=tiny"],
        tmp_path / "r",
    )
    wandb_settings(cfg, HydraConfig.get())
    logger = instantiate(cfg.logger.wandb)
    init = logger._wandb_init
    assert init["group"] == "padding_study"
    assert set(init["tags"]) == {"posenet", "tiny", "circular"}
    assert init["job_type"] == "posenet"
    assert logger._offline is True


def test_two_runs_started_in_the_same_second_get_different_dirs(tmp_path):
    now = datetime(2026, 1, 1, 12, 0, 0)
    argv = ["backbone=tiny", f"paths.output_root={tmp_path}"]
    first, second = with_output_dir(argv, now)[-1], with_output_dir(argv, now)[-1]
    assert first != second
    sweep_a, sweep_b = with_output_dir(["-m", *argv], now)[-1], with_output_dir(["-m", *argv], now)[-1]
    assert sweep_a != sweep_b and "multirun" in sweep_a


def test_slurm_launcher_config_ties_tasks_to_trainer_devices(tmp_path):
    from hydra.core.hydra_config import HydraConfig

    compose_run(
        [
            "hydra/launcher=slurm",
            "trainer=ddp",
            "trainer.devices=4",
            "hydra.launcher.partition=gpu",
            "hydra.launcher.timeout_min=600",
        ],
        tmp_path / "r",
    )
    launcher = HydraConfig.get().launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.tasks_per_node == 4 and launcher.gpus_per_node == 4
    assert launcher.partition == "gpu" and launcher.timeout_min == 600


def test_a_two_node_four_gpu_request_reaches_sbatch(tmp_path, monkeypatch):
    """``trainer=ddp trainer.num_nodes=2 trainer.devices=4``: the sbatch script submitit writes asks for
    2 nodes x 4 tasks x 4 GPUs, the 8 ranks Lightning's SLURM environment then reads."""
    import submitit
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from omegaconf import OmegaConf, open_dict

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            config_name="train",
            return_hydra_config=True,
            overrides=[
                "hydra/launcher=slurm",
                "trainer=ddp",
                "trainer.num_nodes=2",
                "trainer.devices=4",
                "hydra.launcher.partition=gpu",
                f"hydra.sweep.dir={tmp_path}",
            ],
        )
    with open_dict(cfg):
        cfg.hydra.job.name = "train"  # set by Hydra when it launches
    assert (cfg.trainer.num_nodes, cfg.trainer.devices, cfg.trainer.strategy) == (2, 4, "ddp")
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert params["_target_"].endswith("SlurmLauncher")
    # as the plugin hands them to submitit: its base queue keys as they are, the others prefixed slurm_
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 2))  # as if srun were here
    executor = submitit.AutoExecutor(folder=params["submitit_folder"], cluster="slurm")
    executor.update_parameters(
        **{
            k if k in base else f"slurm_{k}": v
            for k, v in params.items()
            if k not in ("_target_", "submitit_folder", "max_num_timeout")
        }
    )
    sbatch = executor._executor._make_submission_file_text("python -m job", "uid")
    for line in (
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=4",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --partition=gpu",
    ):
        assert line in sbatch, sbatch


def test_wandb_runs_of_a_multirun_stay_apart(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "train.py"),
            "-m",
            "logger=wandb",
            "padding=zeros,circular",
            *SMALL,
            "trainer.max_epochs=1",
            f"paths.output_root={tmp_path}",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        env={**os.environ, "WANDB_SILENT": "true"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = (tmp_path / "multirun").iterdir()
    runs = [list((sweep / job / "wandb").glob("offline-run-*")) for job in ("0", "1")]
    assert [len(r) for r in runs] == [1, 1]  # one W&B run per job, each in its own job dir
    assert runs[0][0].name != runs[1][0].name
