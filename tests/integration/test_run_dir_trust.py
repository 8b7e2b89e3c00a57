"""A run dir or sweep dir someone sent you never makes posenc import or call code it does not ship
(issue 30 §1, posenc.config.trust): every entry point that reads a run's config is given a payload that
would create a marker file, and must refuse it in one line (exit 2) with the marker never created."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers.runs import main_in_process, sweep_in_process, train_in_process

from posenc.errors import PosencError


@pytest.fixture
def trained_run(trained_semseg_run: Path) -> Path:
    """The session's small trained semseg run (tests/conftest.py); every test here copies it before changing it."""
    return trained_semseg_run


@pytest.fixture
def evil_module(tmp_path: Path, monkeypatch) -> tuple[str, Path]:
    """An importable module whose import, and whose factory's call, touch a marker: the code a foreign
    run dir could name (an installed package with side effects, or any callable)."""
    marker = tmp_path / "PWNED"
    package = tmp_path / "site"
    package.mkdir()
    (package / "posenc_evil_payload.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).touch()\n"
        "def make_net(**kwargs):\n    import torch.nn as nn\n    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1))\n"
        "class Task:\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(package))
    sys.modules.pop("posenc_evil_payload", None)
    yield "posenc_evil_payload", marker
    sys.modules.pop("posenc_evil_payload", None)


def copy_run(trained_run: Path, tmp_path: Path, status: str = "interrupted") -> Path:
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    (run_dir / "status.json").write_text(json.dumps({"status": status}))
    return run_dir


def edit_overrides(run_dir: Path, *extra: str) -> None:
    path = run_dir / ".hydra" / "overrides.yaml"
    path.write_text(yaml.safe_dump([*yaml.safe_load(path.read_text()), *extra]))


def assert_one_line_refusal(proc: subprocess.CompletedProcess, marker: Path, named: str) -> None:
    assert not marker.exists(), "the payload ran"
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and named in line and "does not ship" in line, line


PAYLOADS = {
    # the reported hole: posenc's own module factory, called with the run dir's kwargs
    "module_factory": ("backbone=module", "backbone.target=os.system", "backbone.kwargs={command:'touch MARKER'}"),
    "task_target": ("task._target_=os.system", "+task.command='touch MARKER'"),
    "callback_target": ("+callbacks.evil._target_=os.system", "+callbacks.evil.command='touch MARKER'"),
    "optimizer_target": ("task.optimizer._target_=os.system",),
}


@pytest.mark.parametrize("payload", sorted(PAYLOADS))
def test_resume_refuses_code_named_by_the_run_dir(trained_run, tmp_path, payload):
    run_dir = copy_run(trained_run, tmp_path)
    marker = tmp_path / "MARKER"
    edit_overrides(run_dir, *(o.replace("MARKER", str(marker)) for o in PAYLOADS[payload]))
    proc = train_in_process("--resume", str(run_dir))
    assert_one_line_refusal(proc, marker, "os.system")


def test_resume_refuses_hydra_keys_from_the_run_dir(trained_run, tmp_path):
    """Hydra calls ``hydra.callbacks`` at start-up, before any posenc code: refused from the file."""
    run_dir = copy_run(trained_run, tmp_path)
    marker = tmp_path / "MARKER"
    edit_overrides(
        run_dir, "+hydra.callbacks.evil._target_=os.system", f"+hydra.callbacks.evil.command='touch {marker}'"
    )
    proc = train_in_process("--resume", str(run_dir))
    assert not marker.exists()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "sets hydra.callbacks.evil._target_: refused" in proc.stderr.strip().splitlines()[-1]


def test_resume_refuses_an_importable_module_until_trusted(trained_run, tmp_path, evil_module):
    """Not even an import: a module whose import has effects is named by the run dir. With the user's
    explicit ``--trust-target`` the same run dir passes the check (their own module)."""
    from posenc.cli.argv import resume_argv

    name, marker = evil_module
    run_dir = copy_run(trained_run, tmp_path)
    edit_overrides(run_dir, "backbone=module", f"backbone.target={name}.make_net", "backbone.taps=[0]")
    proc = train_in_process("--resume", str(run_dir))
    assert_one_line_refusal(proc, marker, f"backbone.target={name}.make_net")
    assert f"--trust-target {name}.make_net" in proc.stderr
    argv = resume_argv(run_dir, trusted=[f"{name}.make_net"])  # opted in: the check passes, nothing imported yet
    assert f"backbone.target={name}.make_net" in argv and argv[-1] == "ckpt_path=last"
    assert not marker.exists()


@pytest.mark.parametrize("text", ["{not: [yaml", "a: mapping", "[1, 2]"])
def test_resume_of_a_run_dir_whose_overrides_are_not_a_list_is_one_line(trained_run, tmp_path, text):
    run_dir = copy_run(trained_run, tmp_path)
    (run_dir / ".hydra" / "overrides.yaml").write_text(text)
    proc = train_in_process("--resume", str(run_dir))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: cannot resume {run_dir}: ")


def tool(name: str, *args: str) -> subprocess.CompletedProcess:
    import importlib

    return main_in_process(importlib.import_module(f"posenc.tools.{name}").main, name, *args)


def edit_config(run_dir: Path, edit) -> None:
    path = run_dir / "config.yaml"
    cfg = yaml.safe_load(path.read_text())
    edit(cfg)
    path.write_text(yaml.safe_dump(cfg))


@pytest.mark.parametrize("name", ["rank_channels", "attack"])
@pytest.mark.parametrize("where", ["data", "module_factory", "import"])
def test_analysis_tools_refuse_code_named_by_the_run_config(trained_run, tmp_path, evil_module, name, where):
    module, import_marker = evil_module
    run_dir = copy_run(trained_run, tmp_path, status="completed")
    marker = tmp_path / "MARKER"
    if where == "data":
        named = "os.system"
        edit_config(run_dir, lambda c: c["data"].update({"_target_": "os.system", "command": f"touch {marker}"}))
    elif where == "module_factory":
        named = "os.system"

        def module_backbone(c):
            c["task"]["backbone"].update(
                {
                    "_target_": "posenc.models.backbones.module.build_module_backbone",
                    "target": "os.system",
                    "kwargs": {"command": f"touch {marker}"},
                }
            )

        edit_config(run_dir, module_backbone)
    else:
        named, marker = f"{module}.Task", import_marker
        edit_config(run_dir, lambda c: c["task"].update({"_target_": f"{module}.Task"}))
    proc = tool(name, str(run_dir), "--layer", "f3")
    assert_one_line_refusal(proc, marker, named)


def test_analysis_tool_runs_trusted_code_only_when_named(trained_run, tmp_path):
    """``--trust-target`` lets a run dir name that one dotted path (the check passes; the tool then
    fails on the config for its own reason, in one line), and no other."""
    from posenc.cli.runs import load_run

    run_dir = copy_run(trained_run, tmp_path, status="completed")
    edit_config(run_dir, lambda c: c["task"]["optimizer"].update({"_target_": "torch.optim.AdamW"}))
    with pytest.raises(PosencError, match="torch.optim.AdamW, which posenc does not ship"):
        load_run(run_dir)
    loaded = load_run(run_dir, trusted=["torch.optim.AdamW"])
    assert loaded.cfg.task.optimizer._target_ == "torch.optim.AdamW"


def test_weights_from_a_run_dir_never_read_its_config(trained_run, tmp_path, evil_module):
    """``backbone.weights=<run dir>`` takes the run's checkpoint (weights only) and status; what its
    config and overrides name is never imported."""
    module, marker = evil_module
    run_dir = copy_run(trained_run, tmp_path, status="completed")
    edit_overrides(run_dir, "backbone=module", f"backbone.target={module}.make_net")
    edit_config(run_dir, lambda c: c["task"].update({"_target_": f"{module}.Task"}))
    proc = train_in_process(
        "backbone=tiny_bn",
        f"backbone.weights={run_dir}",
        "data.image_size=32",
        "data.num_train=8",
        "data.num_test=4",
        "task.max_steps=2",
        "callbacks.progress=null",
        f"paths.output_root={tmp_path / 'out'}",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not marker.exists()


def sweep_of(trained_run: Path, tmp_path: Path) -> tuple[Path, Path]:
    sweep_dir = tmp_path / "sweep"
    job = sweep_dir / "0"
    shutil.copytree(trained_run, job)
    (job / "status.json").write_text(json.dumps({"status": "completed"}))
    return sweep_dir, job


def test_sweep_collect_never_imports_what_a_job_config_names(trained_run, tmp_path, evil_module):
    """collect never reads a job's config.yaml (the report order is in its metrics.json): the job is
    reported, and the task its config names is never imported."""
    module, marker = evil_module
    sweep_dir, job = sweep_of(trained_run, tmp_path)
    edit_config(job, lambda c: c["task"].update({"_target_": f"{module}.Task"}))
    proc = sweep_in_process("collect", str(sweep_dir))
    assert not marker.exists(), "the payload ran"
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert (sweep_dir / "results.md").is_file()  # the sweep is still reported


def test_probe_stage_refuses_code_named_by_a_job_dir(trained_run, tmp_path):
    from posenc.sweeps.collect import collect
    from posenc.sweeps.probe import probe_jobs

    sweep_dir, job = sweep_of(trained_run, tmp_path)
    overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
    overrides += ["backbone.target=os.system", "backbone.kwargs={command:'touch M'}"]
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    multirun = {"hydra": {"overrides": {"task": overrides}}, "probe": ["task=posenet"]}
    (sweep_dir / "multirun.yaml").write_text(yaml.safe_dump(multirun))
    metrics = json.loads((job / "metrics.json").read_text())
    (job / "metrics.json").write_text(json.dumps({**metrics, "backbone": "module"}))
    results = [r for r in collect(sweep_dir) if r.job_dir == job]
    with pytest.raises(PosencError, match=r"job dir .* names backbone.target=os.system, which posenc does not ship"):
        probe_jobs(sweep_dir, results)
    assert probe_jobs(sweep_dir, results, trusted=["os.system"])  # what the user named on the command line


def test_grouped_sweep_dir_cannot_point_collect_outside_itself(tmp_path):
    from posenc.sweeps.collect import group_results
    from posenc.sweeps.presets import GROUPS_FILE

    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    (sweep_dir / GROUPS_FILE).write_text(json.dumps({"groups": [["../elsewhere", []]]}))
    with pytest.raises(PosencError, match=r"names group '../elsewhere': refused \(not a folder name\)"):
        group_results(sweep_dir)


@pytest.mark.parametrize("text", ["{not: [yaml", "[1, 2]"])
def test_sweep_collect_of_a_damaged_job_config_reports_the_job(trained_run, tmp_path, text):
    """collect reads a job's metrics.json and status.json, never its config.yaml: damage there changes nothing."""
    sweep_dir, job = sweep_of(trained_run, tmp_path)
    (job / "config.yaml").write_text(text)
    proc = sweep_in_process("collect", str(sweep_dir))
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert (sweep_dir / "results.md").is_file()


# -- run dirs from before the re-layering (issue 32): old target paths are read as the new ones ------------
def test_a_moved_target_is_read_at_its_new_path_and_nothing_else_is(tmp_path):
    from hydra.utils import get_object

    from posenc.cli.argv import resume_argv
    from posenc.config.renamed import RENAMED_TARGETS, with_current_targets
    from posenc.config.trust import check_config, shipped_targets

    for old, new in RENAMED_TARGETS.items():
        assert new in shipped_targets(), new
        assert callable(get_object(new)), new
        check_config({"task": {"_target_": old}}, "an old run dir")  # read as the new path: not refused
    with pytest.raises(PosencError, match="posenc.core.os_system, which posenc does not ship"):
        check_config({"task": {"_target_": "posenc.core.os_system"}}, "an old run dir")
    old_cfg = {"callbacks": {"checkpoint": {"_target_": "posenc.core.checkpointing.RunCheckpoint", "dirpath": "x"}}}
    assert with_current_targets(old_cfg)["callbacks"]["checkpoint"]["_target_"] == (
        "posenc.run.checkpointing.RunCheckpoint"
    )
    run_dir = tmp_path / "old_run"
    (run_dir / ".hydra").mkdir(parents=True)
    old = "task.scheduler._target_=posenc.core.schedules.multistep_at_fractions"
    (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["backbone=tiny", old]))
    argv = resume_argv(run_dir)
    assert "task.scheduler._target_=posenc.tasks.schedules.multistep_at_fractions" in argv and old not in argv
