"""Opening a run dir never runs its code (issue 22): every entry point that reads a checkpoint or a
weights file loads it with ``weights_only=True`` and refuses, in one line, a file whose pickle names
code to run. Each test plants a payload that would create a marker file, and checks it never ran."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from helpers.runs import ROOT, main_in_process, train_in_process


class Payload:
    """Unpickling this runs ``touch <marker>``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def plant(path: Path, marker: Path, like: Path | None = None) -> Path:
    """A payload checkpoint at ``path``, otherwise shaped like ``like`` (a real checkpoint)."""
    checkpoint = torch.load(like, map_location="cpu", weights_only=True) if like else {"state_dict": {}}
    checkpoint["extra"] = Payload(marker)
    torch.save(checkpoint, path)
    return path


def tool(name: str, *args: str) -> subprocess.CompletedProcess:
    """``python -m posenc.tools.<name> ARGS``, in this process (a payload would run here just the same)."""
    import importlib

    return main_in_process(importlib.import_module(f"posenc.tools.{name}").main, name, *args)


@pytest.fixture
def trained_run(trained_semseg_run: Path) -> Path:
    """The session's small trained semseg run (tests/conftest.py); every test here copies it before changing it."""
    return trained_semseg_run


@pytest.fixture
def payload_run(trained_run: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the trained run whose last.ckpt carries the payload; (run dir, marker)."""
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    marker = tmp_path / "PWNED"
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    plant(ckpt, marker, like=trained_run / "checkpoints" / "last.ckpt")
    return run_dir, marker


def assert_refused(proc: subprocess.CompletedProcess, marker: Path, path: Path) -> None:
    assert not marker.exists(), "the payload ran"
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and f"refusing to load {path}: it names code to run (posix.system)" in line
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("name", ["rank_channels", "attack"])
def test_the_analysis_commands_refuse_a_payload_checkpoint(payload_run, name):
    run_dir, marker = payload_run
    proc = tool(name, str(run_dir), "--layer", "f3")
    assert_refused(proc, marker, run_dir / "checkpoints" / "last.ckpt")


def test_resume_refuses_a_payload_checkpoint(payload_run):
    run_dir, marker = payload_run
    (run_dir / "status.json").write_text(json.dumps({"status": "running"}))
    proc = train_in_process("--resume", str(run_dir))
    assert_refused(proc, marker, run_dir / "checkpoints" / "last.ckpt")


@pytest.mark.parametrize("form", ["run_dir", "ckpt_file", "state_dict_file"])
def test_backbone_weights_refuse_a_payload(payload_run, tmp_path, form):
    run_dir, marker = payload_run
    if form == "run_dir":
        weights, path = run_dir, run_dir / "checkpoints" / "last.ckpt"
    elif form == "ckpt_file":
        weights = path = plant(tmp_path / "elsewhere.ckpt", marker)
    else:
        weights = path = plant(tmp_path / "weights.pth", marker)
    proc = train_in_process(
        "backbone=tiny",
        f"backbone.weights={weights}",
        "data.image_size=32",
        "data.num_train=8",
        "data.num_test=4",
        "trainer.max_epochs=1",
        "callbacks.progress=null",
        f"paths.output_root={tmp_path / 'out'}",
    )
    assert_refused(proc, marker, path)


def test_a_payload_in_the_ppp_reference_cache_is_refused(tmp_path):
    from posenc.errors import PosencError
    from posenc.io import safe_load

    marker = tmp_path / "PWNED"
    path = plant(tmp_path / "reference.pt", marker)
    with pytest.raises(PosencError, match="it names code to run"):
        safe_load(path, what="PPP reference cache")
    assert not marker.exists()


def test_no_torch_load_with_weights_only_false_remains():
    import re

    unsafe = re.compile(r"torch\.load\((?:[^()]|\([^()]*\))*weights_only\s*=\s*False")
    offenders = [
        str(p.relative_to(ROOT))
        for folder in ("src", "benchmarks", "tests")
        for p in (ROOT / folder).rglob("*.py")
        if unsafe.search(p.read_text())
    ]
    assert offenders == []
