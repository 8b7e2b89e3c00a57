"""``python train.py`` as a user runs it: one-line errors, the last printed line, multirun."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.runs import ROOT, TINY, train_in_process

FAST = [o for o in TINY if o != "callbacks.progress=null"] + ["data.num_train=16", "trainer.max_epochs=1"]


def train(*args: str, out: Path, check: bool = False) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "train.py"), *args, f"paths.output_root={out}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def train_here(*args: str, out: Path) -> subprocess.CompletedProcess:
    """``train`` in this process (the one-line errors: no interpreter start-up per case)."""
    return train_in_process(*args, f"paths.output_root={out}")


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, proc.stderr[-2000:]
    return lines[0]


@pytest.mark.parametrize(
    ("arg", "names"),
    [
        ("backbone=vgg", ["'vgg'", "vgg16", "resnet152", "tiny"]),
        ("padding=zero", ["'zero'", "zeros", "circular", "none_shrink"]),
        ("task=posnet", ["'posnet'", "posenet"]),
        ("-m padding=zeros,mirror", ["'mirror'", "reflect"]),
    ],
)
def test_unknown_option_is_one_line_naming_it_and_the_valid_ones(tmp_path, arg, names):
    line = one_error_line(train_here(*arg.split(), out=tmp_path))
    for name in names:
        assert name in line


def test_bad_values_are_one_line_errors(tmp_path):
    line = one_error_line(train_here(*FAST, "task.targets=[H,X]", out=tmp_path))
    assert "'X'" in line and "HS" in line
    line = one_error_line(train_here(*FAST, "readout.kernel_size=4", out=tmp_path))
    assert "4" in line and "1, 3, 5, 7" in line


def test_missing_weights_file_names_file_and_folder(tmp_path):
    env_home = tmp_path / "torch_home"
    proc = train_in_process(
        "backbone=resnet18",
        "backbone.weights=imagenet",
        "data.image_size=32",
        f"paths.output_root={tmp_path}",
        env={"TORCH_HOME": str(env_home)},
    )
    line = one_error_line(proc)
    assert "resnet18-f37072fd.pth" in line and str(env_home / "hub" / "checkpoints") in line


def test_missing_data_dir_names_the_path(tmp_path):
    missing = tmp_path / "DUTS-TR"
    line = one_error_line(
        train_here(*FAST, "data=folder", f"data.train_dir={missing}", f"data.test_dir={tmp_path}", out=tmp_path)
    )
    assert str(missing) in line


def test_too_small_for_none_shrink_says_the_minimum(tmp_path):
    line = one_error_line(train_here("backbone=tiny", "padding=none_shrink", "data.image_size=64", out=tmp_path))
    assert "140" in line and "64" in line


def test_run_prints_its_run_dir_last(tmp_path):
    proc = train(*FAST, out=tmp_path, check=True)
    run_dir = Path(proc.stdout.strip().splitlines()[-1])
    assert run_dir.parent == tmp_path / "runs"
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "completed"
    assert "SPC / MAE" in proc.stdout


def test_multirun_sweeps_paddings_into_one_sweep_dir(tmp_path):
    proc = train_here("-m", "padding=zeros,circular", *FAST, out=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweeps = list((tmp_path / "multirun").iterdir())
    assert len(sweeps) == 1
    jobs = sorted(p for p in sweeps[0].iterdir() if p.is_dir() and (p / "metrics.json").exists())
    assert [json.loads((j / "metrics.json").read_text())["padding"] for j in jobs] == ["zeros", "circular"]
    assert proc.stdout.strip().splitlines()[-1] == str(jobs[-1])


@pytest.mark.parametrize(
    "flags, expect",
    [
        (["--cfg", "job", "--resolve"], "save_dir: {root}/runs/"),  # the dirs a run would get, made by no one
        (["--cfg", "hydra", "--resolve"], "dir: {root}/runs/"),
        (["--cfg", "all", "--package", "logger"], "save_dir: ${{run_dir:}}"),
        (["--info", "defaults"], "logger/csv"),
        (["--help"], "padding: circular, none, none_shrink, partial, reflect, replicate, zeros"),
    ],
)
def test_every_hydra_flag_prints_without_running(tmp_path, flags, expect):
    """``--cfg job|hydra|all`` (with ``--resolve``, ``--package``), ``--info`` and ``--help`` print and exit 0,
    write nothing, and ``--help`` lists the groups users choose from, not the internal ``schema`` group."""
    proc = train_here(*flags, out=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert expect.format(root=tmp_path) in proc.stdout
    assert "Traceback" not in proc.stderr and not list(tmp_path.iterdir())  # nothing written, no dir reserved
    if flags == ["--help"]:
        groups = proc.stdout.split("== Config groups (group=option) ==")[1].split("==")[0]
        assert "\nschema:" not in groups and "\nhydra/launcher: basic, slurm, submitit_local, submitit_slurm" in groups
