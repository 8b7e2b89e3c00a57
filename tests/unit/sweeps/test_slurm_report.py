"""What a SLURM sweep's report makes of the cluster's answers, without a cluster: fake ``sacct`` / ``squeue``
on PATH (tests/integration/test_slurm_cluster.py runs the same against real daemons). A job that recorded no ending of
its own is reported as the cluster says: pending, requeued, running, cancelled, or failed with the
cluster's state; submitit's "job ended without a result" becomes one line."""

from __future__ import annotations

import json
import os
from pathlib import Path

from omegaconf import OmegaConf

from posenc.run.slurm import cluster_states, lost_job, submitit_job_ids
from posenc.sweeps.collect import CANCELLED, FAILED, PENDING, REQUEUED, RUNNING, collect


def fake_slurm(tmp_path: Path, monkeypatch, sacct: str, squeue: str = "") -> None:
    """``sacct`` and ``squeue`` that print the given lines, whatever they are asked."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, out in (("sacct", sacct), ("squeue", squeue)):
        (bin_dir / name).write_text(f"#!/bin/sh\ncat <<'EOF'\n{out}\nEOF\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")


def sweep_dir(tmp_path: Path, statuses: dict[int, dict | None], array: int = 40) -> Path:
    """A submitit sweep of ``padding=a,b,c,d``: array ``array``, task i = job i; ``statuses[i]`` is job i's
    status.json (None: the job has no dir)."""
    sweep = tmp_path / "sweep"
    paddings = ["zeros", "none", "circular", "reflect"][: len(statuses)]
    cfg = {
        "hydra": {
            "sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper", "params": {}},
            "overrides": {"hydra": [], "task": [f"padding={','.join(paddings)}"]},
        }
    }
    sweep.mkdir()
    OmegaConf.save(OmegaConf.create(cfg), sweep / "multirun.yaml")
    (sweep / ".submitit" / str(array)).mkdir(parents=True)  # the array's own folder: its script only
    for num, status in statuses.items():
        task = sweep / ".submitit" / f"{array}_{num}"
        task.mkdir()
        (task / f"{array}_{num}_submitted.pkl").write_bytes(b"")
        (task / f"{array}_{num}_0_log.err").write_text("loading\nKilled: out of memory\n")
        if status is None:
            continue
        job = sweep / str(num)
        (job / ".hydra").mkdir(parents=True)
        OmegaConf.save(OmegaConf.create([f"padding={paddings[num]}"]), job / ".hydra" / "overrides.yaml")
        (job / "status.json").write_text(json.dumps(status))
    return sweep


def test_unfinished_jobs_are_reported_as_the_cluster_says(tmp_path, monkeypatch):
    sweep = sweep_dir(
        tmp_path,
        {
            0: {"status": "preempted", "slurm_job_id": "41", "requeued": True},  # requeued, pending again
            1: {"status": "interrupted", "slurm_job_id": "42", "cause": "cancelled"},  # scancel
            2: {"status": "running", "slurm_job_id": "43"},  # killed by the OOM killer
            3: None,  # never started
        },
    )
    fake_slurm(
        tmp_path, monkeypatch, "41|40_0|PENDING\n42|40_1|CANCELLED by 0\n43|40_2|OUT_OF_MEMORY\n40|40_[3]|PENDING"
    )
    results = collect(sweep)
    assert [r.status for r in results] == [REQUEUED, CANCELLED, FAILED, PENDING]
    assert "resumes from its checkpoint" in results[0].error
    assert f"--resume {sweep / '1'}" in results[1].error
    assert results[2].error == "SLURM job 43 ended OUT_OF_MEMORY without recording an ending"
    assert results[3].job_dir is None and results[3].slurm_job == "40_3" and "not started yet" in results[3].error


def test_a_job_that_died_before_it_started_is_failed_with_its_last_words(tmp_path, monkeypatch):
    sweep = sweep_dir(tmp_path, {0: {"status": "completed", "slurm_job_id": "41"}, 1: None})
    fake_slurm(tmp_path, monkeypatch, "42|40_1|FAILED")
    results = collect(sweep)
    assert results[0].status == FAILED  # completed without test metrics: posenc's own check, sacct not asked
    assert results[1].status == FAILED
    assert results[1].error == "SLURM job 40_1 ended FAILED without recording an ending: Killed: out of memory"


def test_a_job_the_accounting_has_not_seen_yet_is_asked_of_the_queue(tmp_path, monkeypatch):
    fake_slurm(tmp_path, monkeypatch, "", squeue="44|40_0|PENDING\n45|40_1|RUNNING")
    assert cluster_states(["40_0", "45"]) == {"40_0": "PENDING", "45": "RUNNING"}
    sweep = sweep_dir(tmp_path, {0: None, 1: {"status": "running", "slurm_job_id": "45"}})
    assert [r.status for r in collect(sweep)] == [PENDING, RUNNING]


def test_without_slurm_the_report_is_the_run_dirs_alone(tmp_path, monkeypatch):
    sweep = sweep_dir(tmp_path, {0: {"status": "interrupted", "slurm_job_id": "41"}, 1: None})
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    assert [r.status for r in collect(sweep)] == ["interrupted", "missing"]


def test_submitit_folders_name_the_jobs_a_single_job_and_the_latest_array(tmp_path):
    folder = tmp_path / ".submitit"
    for name in ("7", "8_0", "8_1", "9_1", "9"):  # "9": an array's own folder, no submitted pickle
        (folder / name).mkdir(parents=True)
        if name != "9":
            (folder / name / f"{name}_submitted.pkl").write_bytes(b"")
    assert submitit_job_ids(tmp_path) == {0: "8_0", 1: "9_1"}
    assert submitit_job_ids(tmp_path / "none") == {}


def test_submitits_job_errors_become_one_line():
    from submitit.core.utils import FailedJobError, UncompletedJobError

    lost = UncompletedJobError(
        "Job 12_3 (task: 0) with path /x/12_3_0_result.pkl\nhas not produced any output "
        "(state: OUT_OF_MEMORY)\nError stream produced:\n----\nKilled"
    )
    assert lost_job(lost) == "SLURM job 12_3 ended OUT_OF_MEMORY without a result"
    failed = FailedJobError(
        "Job (task=0) failed during processing with trace:\n----------------------\n"
        "Traceback (most recent call last):\n  File x\nImportError: no module posenc\n"
        "----------------------\nYou can check full logs with 'job.stderr(0)'"
    )
    assert lost_job(failed) == "a SLURM job failed before its run started: ImportError: no module posenc"
    assert lost_job(ValueError("x")) is None


def test_a_recorded_ending_is_never_asked_about(tmp_path, monkeypatch):
    """What a run recorded as its end stands: the cluster is asked only about the jobs that did not."""
    sweep = sweep_dir(tmp_path, {0: {"status": FAILED, "slurm_job_id": "41", "error": "ValueError: x"}})
    calls = tmp_path / "calls"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sacct").write_text(f"#!/bin/sh\necho called >> {calls}\n")
    (bin_dir / "sacct").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    collect(sweep)
    assert not calls.exists()


def test_sweep_py_stops_a_launcher_that_waits_for_jobs_the_cluster_ended(tmp_path, monkeypatch):
    """submitit's launcher waits for ever on an array the accounting records under its own id only (cancelled
    before any task started); sweep.py stops it once the cluster has ended every job of the sweep."""
    from helpers.runs import _script

    sweep = sweep_dir(tmp_path, {0: None, 1: None})
    fake_slurm(tmp_path, monkeypatch, "40|40|CANCELLED by 0")
    sweep_py = _script("sweep")
    monkeypatch.setattr(sweep_py, "LAUNCHER_GRACE_S", 0)
    monkeypatch.setattr(sweep_py.subprocess.Popen, "wait", _quick_wait)
    rc, interrupted = sweep_py.launch(["sleep", "600"], sweep)
    assert (rc, interrupted) == (1, False)


_real_wait = __import__("subprocess").Popen.wait


def _quick_wait(self, timeout=None):
    """``Popen.wait`` with the launcher's 10 s polls cut to 0.1 s."""
    return _real_wait(self, timeout=None if timeout is None else min(timeout, 0.1))


def interrupted_run(tmp_path: Path, monkeypatch, signum: int, scontrol: str, submitit: bool = False):
    """``posenc.run.train._interrupted`` for a run stopped by ``signum`` in SLURM job 4242, with a fake
    ``scontrol`` (its shell body); the exit status it returns and the run's status.json."""
    import signal

    from posenc.run.interruption import RunInterrupted
    from posenc.run.train import _interrupted

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    (bin_dir / "scontrol").write_text(f"#!/bin/sh\n{scontrol}\n")
    (bin_dir / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    for key in ("SLURM_RESTART_COUNT", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SUBMITIT_EXECUTOR"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_JOB_NAME", "posenc")
    if submitit:
        monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    previous = signal.getsignal(signal.SIGTERM)
    try:
        code = _interrupted(RunInterrupted(signum), run_dir, True, [])
    finally:
        signal.signal(signal.SIGTERM, previous)  # the warning's path ignores SIGTERM until the process exits
    return code, json.loads((run_dir / "status.json").read_text())


def test_a_refused_requeue_says_why_and_records_interrupted(tmp_path, monkeypatch, capsys):
    import signal

    refuse = 'echo "scontrol: error: Requested operation is presently disabled for job 4242" >&2; exit 1'
    code, status = interrupted_run(tmp_path, monkeypatch, signal.SIGUSR1, refuse)
    assert code == 128 + signal.SIGUSR1
    assert status["status"] == "interrupted" and status["requeued"] is False
    assert (
        status["requeue_error"] == "scontrol requeue 4242: scontrol: error: Requested operation is presently "
        "disabled for job 4242"
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not requeued (scontrol requeue 4242: " in err[0] and "--resume" in err[0], err


def test_sigterm_asks_the_controller_why(tmp_path, monkeypatch):
    """A cancel (the job's restart count unchanged) is ``interrupted``, and a submitit job then returns (its
    launcher gets a result); the cluster requeueing the job (its restart count already raised) is
    ``preempted``, ``requeued_by: cluster``, and exits without a result (the launcher waits for the restart)."""
    import signal

    code, status = interrupted_run(
        tmp_path / "a",
        monkeypatch,
        signal.SIGTERM,
        "echo JobId=4242 JobState=COMPLETING Restarts=0 Reason=None",
        submitit=True,
    )
    assert code is None and status["status"] == "interrupted" and status["cause"] == "cancelled"
    code, status = interrupted_run(
        tmp_path / "b",
        monkeypatch,
        signal.SIGTERM,
        "echo JobId=4242 JobState=COMPLETING Restarts=1 Reason=None",
        submitit=True,
    )
    assert code == 143 and status["status"] == "preempted" and status["requeued_by"] == "cluster"
    code, status = interrupted_run(
        tmp_path / "c", monkeypatch, signal.SIGTERM, "echo JobId=4242 JobState=COMPLETING Restarts=0 Reason=TimeLimit"
    )
    assert code == 143 and status["status"] == "interrupted" and status["cause"] == "time limit"
