"""Every ending of a run is recorded as what it was (issue 22): SIGTERM / SIGINT leave a checkpoint,
``status: interrupted`` and exit 128 + signal (SLURM's time-limit warning: requeued, ``preempted``; a
SLURM job's SIGTERM is never requeued by the run; the restarted job resumes the same run dir); a full
disk fails in one line with the previous checkpoint intact; a non-finite loss fails with its step and no
metric; unfinished runs are never used as weights; a run dir holds one run; resume refuses what it
cannot resume, in one line."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers.runs import ROOT, compose_run, train_in_process

# 64 px tiny PosENet, 6 batches an epoch, a checkpoint every 4 steps; long enough to be stopped mid-training
LONG = [
    "backbone=tiny",
    "data.image_size=64",
    "data.num_train=192",
    "data.num_val=0",
    "data.num_test=8",
    "data.batch_size=32",
    "task.max_steps=3000",
    "callbacks.checkpoint.every_n_steps=4",
    "callbacks.progress=null",
]
SHORT = [
    "backbone=tiny",
    "data.image_size=32",
    "data.num_train=32",
    "data.num_val=0",
    "data.num_test=4",
    "data.batch_size=16",
    "trainer.max_epochs=2",
    "callbacks.progress=null",
]


def train_py(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python train.py ARGS`` in this process (helpers.runs.train_in_process); the signal tests start real ones."""
    return train_in_process(*args, env=env)


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def ckpt_step(path: Path) -> int:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])
    except Exception:  # noqa: BLE001 - not written yet, or being replaced
        return 0


def start_and_signal(out: Path, signum: int, env: dict | None = None) -> tuple[subprocess.Popen, Path, str]:
    """Start a long run, wait for a checkpoint past step 8, send ``signum``; (process, run dir, stderr)."""
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *LONG, f"paths.output_root={out}"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        ckpts = list(out.glob("runs/*/checkpoints/last.ckpt"))
        if ckpts and ckpt_step(ckpts[0]) >= 8:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=300)
    (run_dir,) = (p.parent for p in out.glob("runs/*/status.json"))
    return proc, run_dir, stderr


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_leaves_a_checkpoint_and_status_interrupted(tmp_path, signum, code):
    proc, run_dir, stderr = start_and_signal(tmp_path, signum)
    assert proc.returncode == code, stderr[-2000:]
    status = read(run_dir / "status.json")
    name = signal.Signals(signum).name
    assert status["status"] == "interrupted" and status["signal"] == name
    step = status["checkpoint_step"]
    assert step >= 8 and ckpt_step(run_dir / "checkpoints" / "last.ckpt") == step
    assert read(run_dir / "metrics.json")["status"] == "interrupted"
    assert f"interrupted by {name}: checkpoint at step {step}" in stderr
    assert not list(run_dir.rglob("*.tmp"))
    if signum == signal.SIGTERM:  # and it resumes from there
        resumed = train_py("--resume", str(run_dir), "task.max_steps=40")
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        done = read(run_dir / "status.json")
        assert done["status"] == "completed" and done["resumed_from_step"] == step


@pytest.mark.parametrize("signum", [signal.SIGUSR1, signal.SIGTERM])
def test_slurm_warning_requeues_sigterm_does_not_and_the_restarted_job_resumes(tmp_path, signum):
    """Under SLURM (a fake ``scontrol``: tests/integration/test_slurm_cluster.py has the real one), the time-limit warning
    (SIGUSR1) checkpoints and requeues the job (``preempted``); SIGTERM (a cancel) checkpoints and never
    requeues (``interrupted``). Either way SLURM's restart of the job (SLURM_RESTART_COUNT=1) continues the
    run dir and records ``requeued``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scontrol_calls"
    (bin_dir / "scontrol").write_text(
        f'#!/bin/sh\necho "$@" >> {calls}\n[ "$1" = show ] && echo JobId=4242 JobState=COMPLETING Restarts=0\nexit 0\n'
    )
    (bin_dir / "scontrol").chmod(0o755)
    slurm = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "posenc", "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    proc, run_dir, stderr = start_and_signal(tmp_path / "out", signum, env=slurm)
    assert proc.returncode == 128 + signum, stderr[-2000:]
    status = read(run_dir / "status.json")
    assert status["slurm_job_id"] == "4242" and status["checkpoint_step"] >= 8
    if signum == signal.SIGUSR1:
        assert status["status"] == "preempted" and status["requeued"] is True and status["requeued_by"] == "posenc"
        assert calls.read_text().split() == ["requeue", "4242"]
        assert "SLURM job 4242 requeued" in stderr
    else:
        assert status["status"] == "interrupted" and status["requeued"] is False and status["cause"] == "cancelled"
        assert "requeue" not in calls.read_text()
        assert f"resume: python train.py --resume {run_dir}" in stderr
    # SLURM starts the same command again, with SLURM_RESTART_COUNT=1: it continues this run dir
    again = train_py(
        *LONG, "task.max_steps=40", f"paths.output_root={tmp_path / 'out'}", env={**slurm, "SLURM_RESTART_COUNT": "1"}
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.strip().splitlines()[-1] == str(run_dir)
    done = read(run_dir / "status.json")
    assert done["status"] == "completed" and done["resumed_from_step"] == status["checkpoint_step"]
    assert done["requeued"] is True and done["restarts"] == 1 and done["slurm_job_id"] == "4242"
    assert len(list((tmp_path / "out" / "runs").iterdir())) == 1


def test_lightnings_srun_hint_shows_only_inside_a_slurm_job(tmp_path, monkeypatch):
    """Lightning's "srun is available but not used" is right in a SLURM job started without srun, and noise
    on every other machine where SLURM's commands are installed."""
    import warnings

    from lightning.fabric.plugins.environments import SLURMEnvironment

    from posenc.run.train import srun_hint_outside_slurm

    (tmp_path / "srun").write_text("#!/bin/sh\n")
    (tmp_path / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    for key in ("SLURM_JOB_ID", "SLURM_NTASKS", "SLURM_JOB_NAME"):
        monkeypatch.delenv(key, raising=False)

    def hints() -> int:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            with srun_hint_outside_slurm():
                SLURMEnvironment.detect()
        return sum("`srun` command is available" in str(w.message) for w in seen)

    assert hints() == 0
    monkeypatch.setenv("SLURM_JOB_ID", "7")  # sbatch without srun: the hint is right
    assert hints() == 1


def test_disk_full_at_the_final_checkpoint_fails_in_one_line_and_keeps_the_previous(tmp_path, monkeypatch, capsys):
    import posenc.run.checkpointing as checkpointing
    from posenc.run.train import run

    saves = []
    real_save = torch.save

    def save(obj, handle, *args, **kwargs):
        saves.append(getattr(handle, "name", handle))
        if len(saves) == 3:  # epoch 3's checkpoint, the last one
            handle.write(b"x" * 1000)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, handle, *args, **kwargs)

    monkeypatch.setattr(checkpointing.torch, "save", save)
    cfg = compose_run([*SHORT, "trainer.max_epochs=3", "callbacks.checkpoint.every_n_steps=0"], tmp_path / "r")
    with pytest.raises(SystemExit) as exit_info:
        run(cfg)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()  # in-process: Lightning's own info lines come first
    assert err[-1].startswith("error: disk full while writing") and "previous file is intact" in err[-1]
    assert not [line for line in err if "Traceback" in line]
    run_dir = tmp_path / "r"
    status = read(run_dir / "status.json")
    assert status["status"] == "failed" and "DiskFullError" in status["error"]
    assert ckpt_step(run_dir / "checkpoints" / "last.ckpt") == 4  # epoch 2 of 2 batches each: intact
    assert not list(run_dir.rglob("*.tmp"))


def test_divergence_fails_with_its_step_and_reports_no_metric(tmp_path):
    proc = train_py(*SHORT, "trainer.max_epochs=20", "task.optimizer.lr=1e12", f"paths.output_root={tmp_path}")
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()[-1]
    assert err.startswith("error: training diverged: loss is nan at step"), proc.stderr[-2000:]
    (run_dir,) = (p.parent for p in tmp_path.glob("runs/*/status.json"))
    status = read(run_dir / "status.json")
    assert status["status"] == "failed" and status["step"] >= 1
    metrics = read(run_dir / "metrics.json")
    assert metrics["status"] == "failed" and not [k for k in metrics if k.startswith(("test/", "train/", "val/"))]
    # nor can what it left be used as weights
    probe = train_py(*SHORT, f"backbone.weights={run_dir}", f"paths.output_root={tmp_path / 'probe'}")
    assert probe.returncode == 2
    assert probe.stderr.strip().splitlines() == [
        f"error: backbone.weights={run_dir} is not valid: its run {run_dir} ended 'failed': TrainingDiverged: "
        f"{err.removeprefix('error: ')}; valid: a completed run (or its checkpoints/init.ckpt)"
    ]


def test_a_run_dir_holds_one_run_and_a_completed_run_is_not_resumed(tmp_path):
    first = train_py(*SHORT, f"hydra.run.dir={tmp_path / 'r'}")
    assert first.returncode == 0, first.stderr[-2000:]
    run_dir = tmp_path / "r"
    before = {p.name: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}

    second = train_py(*SHORT, "seed=1", f"hydra.run.dir={run_dir}")
    assert second.returncode == 2
    assert second.stderr.strip().splitlines() == [
        f"error: hydra.run.dir={run_dir} already holds a run; valid: a dir of its own, or resume that run: "
        f"python train.py --resume {run_dir}"
    ]

    again = train_py("--resume", str(run_dir))
    assert again.returncode == 0
    assert again.stderr.strip().splitlines() == [
        f"run {run_dir} is complete: nothing to resume (its metrics.json is final)"
    ]
    assert again.stdout.strip().splitlines()[-1] == str(run_dir)
    assert {p.name: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before  # untouched


def test_a_live_run_holds_its_dir_and_a_dead_one_does_not(tmp_path):
    from posenc.errors import PosencError
    from posenc.run.run_dir import LOCK, claim_run_dir

    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        import socket

        (tmp_path / LOCK).write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname()}))
        with pytest.raises(PosencError, match=f"is in use by another run \\(pid {holder.pid} on"):
            claim_run_dir(tmp_path, resuming=False)
    finally:
        holder.kill()
        holder.wait()
    lock = claim_run_dir(tmp_path, resuming=False)  # the holder is gone: its lock is stale
    assert read(lock)["pid"] == os.getpid()


def test_two_ppp_runs_fill_one_fresh_reference_cache(tmp_path):
    args = [
        "task=ppp",
        "backbone=tiny",
        "data.image_size=32",
        "data.num_test=8",
        "callbacks.progress=null",
        f"paths.output_root={tmp_path}",
    ]
    procs = [
        subprocess.Popen(
            [sys.executable, str(ROOT / "train.py"), *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [r[1][-1500:] for r in results]
    assert len(list(tmp_path.glob(".feature_cache/ppp_reference/*.pt"))) == 1
    assert not list(tmp_path.rglob("*.tmp"))


def test_resume_refuses_what_it_cannot_resume_in_one_line(tmp_path):
    done = train_py(*SHORT, f"paths.output_root={tmp_path}")
    assert done.returncode == 0, done.stderr[-2000:]
    run_dir = Path(done.stdout.strip().splitlines()[-1])
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    (run_dir / "status.json").write_text(json.dumps({"status": "running"}))  # as a killed run leaves it

    ckpt.write_bytes(ckpt.read_bytes()[:500])  # truncated
    proc = train_py("--resume", str(run_dir))
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: cannot read checkpoint {ckpt} (corrupt or truncated?)")

    ckpt.unlink()  # killed before its first checkpoint
    proc = train_py("--resume", str(run_dir))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: cannot resume {run_dir}: it has no checkpoint ({ckpt} is missing: the run stopped before its first "
        "one, see callbacks.checkpoint.every_n_steps); start it again"
    ]

    proc = train_py(*SHORT, "ckpt_path=/nonexistent.ckpt", f"paths.output_root={tmp_path}")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: ckpt_path='/nonexistent.ckpt' is not valid: no such file; valid: last (the run dir's "
        "checkpoints/last.ckpt) or the path of a .ckpt file"
    ]


def test_a_checkpoint_of_another_task_is_refused_before_training(tmp_path):
    other = train_py(
        "task=location_cls",
        "data.image_size=48",
        "data.canvas.patch_size=16",
        "data.num_train=32",
        "data.num_val=0",
        "data.num_test=8",
        "trainer.max_epochs=1",
        "callbacks.progress=null",
        f"paths.output_root={tmp_path}",
    )
    assert other.returncode == 0, other.stderr[-2000:]
    ckpt = Path(other.stdout.strip().splitlines()[-1]) / "checkpoints" / "last.ckpt"
    proc = train_py(*SHORT, f"ckpt_path={ckpt}", f"paths.output_root={tmp_path}")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: ckpt_path='{ckpt}' is not valid: a checkpoint of LocationClassificationTask; this run's task "
        "builds PosENetTask"
    ]
