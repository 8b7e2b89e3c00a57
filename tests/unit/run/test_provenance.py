"""Provenance of measured tables (posenc.run.provenance): commit and dirty flag, command, a
hostname-free machine line, the UTC date; the markdown block; and a sweep's results.md carrying it."""

from __future__ import annotations

import json
import platform
import socket
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from helpers.sweeps import fake_job, fake_metrics, fake_multirun
from omegaconf import OmegaConf

from posenc.run.provenance import git_state, machine, provenance, provenance_lines
from posenc.sweeps.collect import COMPLETED, collect, expected_jobs
from posenc.sweeps.reports import sweep_command, write_reports


def git(root: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True, capture_output=True
    )


@pytest.fixture
def repo(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    (root / "a.txt").write_text("a\n")
    (root / ".gitignore").write_text("ignored/\n")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "first")
    return root


def test_a_clean_work_tree_gives_its_short_commit_and_is_not_dirty(repo):
    commit, dirty = git_state(repo)
    head = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert (commit, dirty) == (head, False)
    (repo / "ignored").mkdir()
    (repo / "ignored" / "out.txt").write_text("x")  # ignored output does not make it dirty
    assert git_state(repo) == (head, False)


@pytest.mark.parametrize("change", ["modify", "untracked"])
def test_uncommitted_changes_mark_it_dirty(repo, change):
    if change == "modify":
        (repo / "a.txt").write_text("b\n")
    else:
        (repo / "new.py").write_text("x = 1\n")
    assert git_state(repo)[1] is True
    info = provenance("python train.py", root=repo)
    assert info["dirty"] is True
    assert "dirty" in provenance_lines(info)[0]


def test_outside_a_git_work_tree_the_commit_is_unknown(tmp_path):
    assert git_state(tmp_path) == ("unknown", False)


def test_provenance_has_the_command_the_machine_and_the_utc_date(repo):
    now = datetime(2024, 5, 1, 14, 30, tzinfo=timezone(timedelta(hours=2)))
    info = provenance("python train.py seed=1", root=repo, now=now)
    assert set(info) == {"commit", "dirty", "command", "machine", "date"}
    assert info["command"] == "python train.py seed=1"
    assert info["date"] == "2024-05-01 12:30 UTC"
    assert platform.system() in info["machine"] and "cores" in info["machine"]
    assert "GiB RAM" in info["machine"] and "torch " in info["machine"]


def test_the_machine_line_names_no_host():
    line = machine()
    host = socket.gethostname()
    assert host and host not in line and platform.node() not in line
    assert "\n" not in line


def test_the_markdown_block_lists_commit_command_machine_date_then_extras():
    info = {
        "commit": "abc1234",
        "dirty": False,
        "command": "python sweep.py x",
        "machine": "Linux, 2 cores",
        "date": "2024-05-01 12:30 UTC",
        "jobs run by": "`python sweep.py y`",
    }
    assert provenance_lines(info) == [
        "- commit: `abc1234`",
        "- command: `python sweep.py x`",
        "- machine: Linux, 2 cores",
        "- date: 2024-05-01 12:30 UTC",
        "- jobs run by: `python sweep.py y`",
        "",
    ]
    lines = provenance_lines("python benchmarks/x.py")  # a command alone: described now
    assert lines[1] == "- command: `python benchmarks/x.py`" and lines[-1] == ""


def fake_sweep(sweep_dir: Path, task: list[str], name: str = "fake") -> Path:
    sweep = fake_multirun(sweep_dir, task)
    cfg = OmegaConf.load(sweep / "multirun.yaml")
    cfg.sweep_name = name
    OmegaConf.save(cfg, sweep / "multirun.yaml")
    for num, job in enumerate(expected_jobs(sweep)):
        fake_job(sweep, num, job, COMPLETED, metrics=fake_metrics(0.5))
    return sweep


def test_a_sweeps_results_md_carries_the_block_under_its_title(tmp_path):
    sweep = fake_sweep(
        tmp_path / "s", ["sweep=padding_study", "padding=zeros,circular", "data.num_train=8"], name="padding_study"
    )
    assert sweep_command(sweep) == "python sweep.py padding_study padding=zeros,circular data.num_train=8"
    write_reports(sweep, collect(sweep))
    lines = (sweep / "results.md").read_text().splitlines()
    assert lines[0].startswith("# Sweep padding_study")
    assert lines[2].startswith("- commit: `")
    assert lines[3] == "- command: `python sweep.py padding_study padding=zeros,circular data.num_train=8`"
    assert lines[4].startswith("- machine: ") and lines[5].endswith(" UTC")
    assert "| padding=zeros | 1 | completed |" in "\n".join(lines)
    write_reports(sweep, collect(sweep))  # collected again: the collect command, the jobs' beside it
    text = (sweep / "results.md").read_text()
    assert "- command: `python sweep.py collect " in text
    assert "- jobs run by: `python sweep.py padding_study padding=zeros,circular data.num_train=8`" in text


def test_sweep_commands_of_a_plain_multirun_a_group_and_a_probe_stage(tmp_path):
    plain = fake_multirun(tmp_path / "plain", ["padding=zeros,reflect", "backbone.taps=[f1,f2]"])
    cfg = OmegaConf.load(plain / "multirun.yaml")
    del cfg["sweep_name"]
    OmegaConf.save(cfg, plain / "multirun.yaml")
    assert sweep_command(plain) == "python train.py -m padding=zeros,reflect 'backbone.taps=[f1,f2]'"
    grouped = tmp_path / "atlas"
    fake_multirun(grouped / "vgg16", ["sweep=atlas", "backbone=vgg16"])
    (grouped / "groups.json").write_text(
        json.dumps(
            {"preset": "atlas", "report": "atlas", "groups": [["vgg16", ["backbone=vgg16"]]], "overrides": ["seed=1"]}
        )
    )
    assert sweep_command(grouped / "vgg16") == "python sweep.py atlas groups=vgg16 seed=1"
    probe = fake_sweep(tmp_path / "p", ["sweep=padding_then_probe"], name="padding_then_probe") / "probe"
    probe.mkdir()
    assert sweep_command(probe) == "python sweep.py padding_then_probe  (its probe stage)"
