"""posenc on a real SLURM cluster (``scripts/slurm_cluster.sh up``: one node, slurmctld + slurmd, accounting
through slurmdbd so that ``sacct`` answers): sweeps as job arrays, DDP as srun tasks, and every ending of a
job as the cluster meant it (issue 31): the time-limit warning requeues and resumes, ``scancel`` stays
cancelled, ``scontrol requeue`` resumes and is recorded, a crash is reported failed and the launch returns.

Marked ``slurm`` (not in the default run): ``pytest -n 0 -m slurm tests/integration/test_slurm_cluster.py``. Skipped in
one line where no cluster answers, unless POSENC_REQUIRE_SLURM=1 (CI), where that fails instead.

SLURM holds a requeued job for two minutes before it may start again; the tests release it at once
(``scontrol update StartTime=now``), which changes when it restarts, not how.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers.runs import ROOT, sweep_in_process, train_in_process
from helpers.sweeps import TWO_STAGE_SMALL

from posenc.run.slurm import cluster_states, submitit_job_ids

pytestmark = pytest.mark.slurm

# the cluster is one node with the machine's cores: one core per job, so that two jobs run at once
CLUSTER = [
    "hydra/launcher=slurm",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
    "hydra.launcher.timeout_min=20",
    "hydra.launcher.array_parallelism=2",
]
TINY = [
    "backbone=tiny",
    "data.image_size=32",
    "data.num_train=16",
    "data.num_val=0",
    "data.num_test=4",
    "data.batch_size=8",
    "trainer.max_epochs=1",
    "callbacks.progress=null",
]
# long enough to be stopped mid-training (a checkpoint every 4 steps), short enough to finish in seconds
STEPS = 120
SIGNALLED = [
    "backbone=tiny",
    "data.image_size=32",
    "data.num_train=128",
    "data.num_val=0",
    "data.num_test=8",
    "data.batch_size=16",
    "callbacks.checkpoint.every_n_steps=4",
    "callbacks.progress=null",
    "seed=3",
]
TEST_KEYS = [
    f"test/{i}/{t}/{m}"
    for i in ("natural", "white", "noise")
    for t in ("H", "V", "G", "HS", "VS")
    for m in ("spc", "mae")
]
TOL = 1e-4  # benchmarks/gpu_check.py's --ddp-tol


def _cluster_problem() -> str | None:
    for cmd in (["sinfo", "-h", "-o", "%t"], ["sacct", "-n", "-X", "-S", "now"]):
        if shutil.which(cmd[0]) is None:
            return f"{cmd[0]} not found"
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
        except subprocess.TimeoutExpired:
            return f"{cmd[0]} does not answer"
        if done.returncode != 0:
            return f"{cmd[0]}: {(done.stderr.strip().splitlines() or [f'exit {done.returncode}'])[-1]}"
    return None


@pytest.fixture(scope="module", autouse=True)
def cluster():
    problem = _cluster_problem()
    if problem is not None:
        reason = f"no SLURM cluster answers ({problem}); start one: sudo bash scripts/slurm_cluster.sh up"
        if os.environ.get("POSENC_REQUIRE_SLURM") == "1":
            pytest.fail(f"POSENC_REQUIRE_SLURM=1: {reason}", pytrace=False)
        pytest.skip(reason)


@pytest.fixture
def launcher(tmp_path):
    """Start ``train.py -m`` sweeps on the cluster (``launcher(sweep_dir, *overrides)``: the process, its output
    in ``<sweep_dir>.log``); at the end of the test the launchers still running are killed and the jobs still
    on the cluster cancelled, so that a failing test leaves the cluster empty."""
    started: list[tuple[subprocess.Popen, Path]] = []

    def start(sweep: Path, *overrides: str) -> subprocess.Popen:
        cmd = [
            sys.executable,
            str(ROOT / "train.py"),
            "-m",
            *CLUSTER,
            *overrides,
            f"hydra.sweep.dir={sweep}",
            f"paths.output_root={sweep.parent}",
        ]
        log = open(f"{sweep}.log", "w")  # noqa: SIM115 - closed when the process ends
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True)
        log.close()
        started.append((proc, sweep))
        return proc

    yield start
    for proc, sweep in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        jobs = list(submitit_job_ids(sweep).values())
        if jobs:
            subprocess.run(["scancel", *jobs], capture_output=True, timeout=30)


def finish(proc: subprocess.Popen, sweep: Path, timeout: float = 600) -> tuple[int, str]:
    """Wait for a launcher; its exit status and output."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        log = Path(f"{sweep}.log").read_text()[-3000:]
        pytest.fail(f"the launcher of {sweep} still waits after {timeout:.0f}s: {log}")
    return proc.returncode, Path(f"{sweep}.log").read_text()


def wait_for(what: str, check: Callable[[], object], timeout: float = 300, every: float = 0.25) -> object:
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")


def read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def ckpt_step(job_dir: Path) -> int:
    import torch

    try:
        return int(
            torch.load(job_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["global_step"]
        )
    except Exception:  # noqa: BLE001 - not written yet, or being replaced
        return 0


def settled(jobs) -> dict[str, str]:
    """The cluster's final state of ``jobs`` (the accounting records a job's end a moment after it ends)."""
    busy = {"PENDING", "RUNNING", "COMPLETING", "REQUEUED", "CONFIGURING"}
    return wait_for(
        f"jobs {' '.join(jobs)} to end",
        lambda: (s := cluster_states(jobs)) and len(s) == len(jobs) and not set(s.values()) & busy and s,
        timeout=120,
    )


def run_seconds(job: str) -> int | None:
    """How long the job has run (``squeue %M``: ``M:SS`` or ``H:MM:SS``)."""
    text = subprocess.run(["squeue", "-h", "-j", job, "-o", "%M"], capture_output=True, text=True, timeout=30)
    parts = text.stdout.strip().replace("-", ":").split(":")
    if not all(p.isdigit() for p in parts) or len(parts) < 2:
        return None
    seconds = 0
    for part in parts:
        seconds = seconds * 60 + int(part)
    return seconds


def squeue_state(job: str) -> str:
    done = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True, timeout=30)
    return done.stdout.strip()


def release(job: str) -> None:
    """Start a requeued job now (SLURM holds it for two minutes)."""
    wait_for(f"job {job} to be pending again", lambda: squeue_state(job) == "PENDING", timeout=120)
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True, timeout=30)


def sacct_records(job: str) -> list[str]:
    """The job's records in the accounting, every start included (``sacct -D``): e.g. REQUEUED, COMPLETED."""
    settled([job])
    done = subprocess.run(
        ["sacct", "-j", job, "-D", "-X", "-n", "-P", "--format=State"], capture_output=True, text=True, timeout=30
    )
    return [line.split()[0] for line in done.stdout.splitlines() if line.strip()]


def metrics_of(path: Path) -> dict:
    metrics = read(path / "metrics.json")
    return {k: metrics[k] for k in TEST_KEYS}


def assert_equal_metrics(got: dict, want: dict) -> None:
    gaps = {k: abs(got[k] - want[k]) for k in TEST_KEYS}
    worst = max(gaps, key=gaps.get)
    assert gaps[worst] <= TOL, f"{worst}: {got[worst]} vs {want[worst]}"


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def tables(md: Path) -> list[str]:
    """The table rows of a results.md (its provenance header names the command and the date)."""
    return [line for line in md.read_text().splitlines() if line.startswith("|")]


_references: dict[tuple[str, ...], dict] = {}


def reference(tmp_path: Path, *overrides: str) -> dict:
    """The test metrics of an uninterrupted run of ``overrides`` in this process (once per module)."""
    if overrides not in _references:
        proc = train_in_process(*overrides, f"paths.output_root={tmp_path / 'reference'}")
        assert proc.returncode == 0, proc.stderr[-3000:]
        _references[overrides] = metrics_of(Path(proc.stdout.strip().splitlines()[-1]))
    return _references[overrides]


# ----------------------------------------------------------------------------- sweeps


def test_a_padding_sweep_runs_as_a_job_array_and_collects_like_the_basic_launcher(tmp_path, launcher):
    sweep = tmp_path / "slurm"
    rc, out = finish(launcher(sweep, *TINY, "padding=zeros,none"), sweep)
    assert rc == 0, out[-3000:]
    script = next((sweep / ".submitit").glob("*/*_submission.sh")).read_text()
    assert "#SBATCH --array=0-1%2" in script and "#SBATCH --signal=USR2@120" in script
    assert "gpus" not in script  # a CPU trainer asks SLURM for no GPU
    jobs = submitit_job_ids(sweep)
    assert sorted(jobs) == [0, 1]
    assert set(settled(list(jobs.values())).values()) == {"COMPLETED"}
    for num in jobs:
        status = read(sweep / str(num) / "status.json")
        assert status["status"] == "completed" and status["slurm_job_id"], status
    collected = sweep_in_process("collect", str(sweep))
    assert collected.returncode == 0, collected.stderr[-3000:]

    basic = tmp_path / "basic"
    proc = train_in_process(
        "-m", *TINY, "padding=zeros,none", f"hydra.sweep.dir={basic}", f"paths.output_root={tmp_path}"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sweep_in_process("collect", str(basic)).returncode == 0
    assert tables(sweep / "results.md") == tables(basic / "results.md")
    assert len(tables(sweep / "results.md")) > 4
    drop = {"job", "wall_time_s", "run_dir"}
    rows = [
        {k: v for k, v in r.items() if k not in drop and not k.startswith("paths.")}
        for r in read_csv(sweep / "results.csv")
    ]
    assert rows == [
        {k: v for k, v in r.items() if k not in drop and not k.startswith("paths.")}
        for r in read_csv(basic / "results.csv")
    ]


def test_ddp_cpu_runs_as_two_srun_tasks_and_ends_like_one_process(tmp_path, launcher):
    small = [*TINY, "data.num_test=8", "trainer.max_epochs=3"]
    sweep = tmp_path / "ddp"
    rc, out = finish(launcher(sweep, *small, "trainer=ddp_cpu", "trainer.devices=2", "data.batch_size=8"), sweep)
    assert rc == 0, out[-3000:]
    script = next((sweep / ".submitit").glob("*/*_submission.sh")).read_text()
    assert "#SBATCH --ntasks-per-node=2" in script and "\nsrun " in script
    (job,) = submitit_job_ids(sweep).values()
    assert settled([job]) == {job: "COMPLETED"}
    steps = subprocess.run(
        ["sacct", "-j", job, "-n", "-P", "--format=JobID,NTasks,State"], capture_output=True, text=True, timeout=30
    ).stdout.splitlines()
    assert any(line.split("|")[1:] == ["2", "COMPLETED"] for line in steps if ".0|" in line), steps
    assert read(sweep / "0" / "status.json")["status"] == "completed"
    one = reference(tmp_path, *small, "data.batch_size=16")
    assert one["test/natural/H/spc"] > 0.5
    assert_equal_metrics(metrics_of(sweep / "0"), one)


# ----------------------------------------------------------------------------- endings


def test_scancel_stays_cancelled_and_scontrol_requeue_resumes(tmp_path, launcher):
    """Two jobs at once, stopped mid-training: ``scancel`` ends one for good (SIGTERM: a checkpoint,
    ``interrupted``, never requeued; ``--resume`` continues it by hand); ``scontrol requeue`` sends the other
    SIGTERM too, and SLURM restarts it: recorded ``preempted`` by the cluster, then resumed to ``completed``
    with ``requeued: true``. Both end with the metrics of an uninterrupted run."""
    config = [*SIGNALLED, f"task.max_steps={STEPS}"]
    cancel_sweep, requeue_sweep = tmp_path / "cancel", tmp_path / "requeue"
    cancelled = launcher(cancel_sweep, *config)
    requeued = launcher(requeue_sweep, *config)
    stopped: dict[str, str] = {}
    waiting = {"scancel": cancel_sweep / "0", "requeue": requeue_sweep / "0"}

    def stop_the_trained() -> bool:  # each job as soon as it has a checkpoint past step 8
        for how, job_dir in list(waiting.items()):
            if ckpt_step(job_dir) >= 8:
                job = read(job_dir / "status.json")["slurm_job_id"]
                cmd = ["scancel", job] if how == "scancel" else ["scontrol", "requeue", job]
                subprocess.run(cmd, check=True, timeout=30)
                stopped[how] = job
                del waiting[how]
        return not waiting

    wait_for("a checkpoint past step 8 in both runs", stop_the_trained, timeout=300, every=0.1)

    # scancel: interrupted with a checkpoint, cancelled on the cluster, and nothing left to run
    rc, out = finish(cancelled, cancel_sweep)
    assert rc == 0, out[-3000:]
    status = read(cancel_sweep / "0" / "status.json")
    assert status["status"] == "interrupted" and status["signal"] == "SIGTERM" and status["cause"] == "cancelled"
    assert status["requeued"] is False and status["checkpoint_step"] >= 8, status
    job = stopped["scancel"]
    time.sleep(3)
    assert squeue_state(job) == "" and sacct_records(job) == ["CANCELLED"]
    collected = sweep_in_process("collect", str(cancel_sweep))
    assert collected.returncode == 1
    (row,) = read_csv(cancel_sweep / "results.csv")
    assert row["status"] == "cancelled" and "--resume" in row["error"], row

    # scontrol requeue: the cluster requeued it; recorded so before it restarts, then resumed to completed
    job = stopped["requeue"]
    wait_for("the requeued run's record", lambda: read(requeue_sweep / "0" / "status.json").get("status") != "running")
    status = read(requeue_sweep / "0" / "status.json")
    assert status["status"] == "preempted" and status["requeued"] is True and status["requeued_by"] == "cluster"
    wait_for(f"job {job} to be pending again", lambda: squeue_state(job) == "PENDING", timeout=120)
    assert sweep_in_process("collect", str(requeue_sweep)).returncode == 1
    (row,) = read_csv(requeue_sweep / "results.csv")
    assert row["status"] == "requeued" and "resumes from its checkpoint" in row["error"], row
    release(job)
    rc, out = finish(requeued, requeue_sweep)
    assert rc == 0, out[-3000:]
    done = read(requeue_sweep / "0" / "status.json")
    assert done["status"] == "completed" and done["requeued"] is True and done["restarts"] == 1, done
    assert done["resumed_from_step"] == status["checkpoint_step"]
    assert sacct_records(job) == ["REQUEUED", "COMPLETED"]

    # the cancelled run continues by hand, here, from its checkpoint
    resumed = train_in_process("--resume", str(cancel_sweep / "0"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert read(cancel_sweep / "0" / "status.json")["status"] == "completed"
    want = reference(tmp_path, *config)
    assert_equal_metrics(metrics_of(requeue_sweep / "0"), want)
    assert_equal_metrics(metrics_of(cancel_sweep / "0"), want)


def test_the_time_limit_warning_checkpoints_requeues_and_resumes(tmp_path, launcher):
    """A 2-minute limit with the warning 45 s before it. SLURM checks time limits every 30 s, so the warning
    comes 45 to 75 s into the job, at a moment no test can choose: the run is paused mid-training (SIGSTOP,
    after a checkpoint past step 8) until that moment has passed; SLURM's warning continues it (SLURM sends
    SIGCONT with it). The run checkpoints at the end of its batch, requeues its job itself (``preempted``,
    ``requeued_by: posenc``), and the restarted job (given a longer limit, so that it is warned once)
    resumes from the checkpoint and completes with the metrics of an uninterrupted run."""
    config = [*SIGNALLED, f"task.max_steps={STEPS}"]
    sweep = tmp_path / "warned"
    limit, lead = 120, 45
    proc = launcher(
        sweep, *config, f"hydra.launcher.timeout_min={limit // 60}", f"hydra.launcher.signal_delay_s={lead}"
    )
    job_dir = sweep / "0"
    wait_for("a checkpoint past step 8", lambda: ckpt_step(job_dir) >= 8, timeout=300, every=0.1)
    running = read(job_dir / "status.json")
    job, pid = running["slurm_job_id"], running["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        elapsed = wait_for("the job's run time", lambda: run_seconds(job), timeout=30)
        early = limit - lead - 30  # the earliest the warning can come
        assert elapsed < early, f"the job ran {elapsed}s before it trained: the warning may have come first"
        time.sleep(limit - lead - elapsed + 5)  # SLURM's warning is due by now (and has continued the run)
    finally:
        with contextlib.suppress(ProcessLookupError):  # SLURM's SIGCONT came first, and the run ended
            os.kill(pid, signal.SIGCONT)
    ended = ("preempted", "interrupted", "failed", "completed")
    wait_for("the warning's record", lambda: read(job_dir / "status.json").get("status") in ended, timeout=120)
    status = read(job_dir / "status.json")
    assert status["status"] == "preempted", status
    assert status["signal"] == "SIGUSR2" and status["cause"] == "time-limit warning"
    assert status["requeued"] is True and status["requeued_by"] == "posenc"
    assert status["checkpoint_step"] >= 8, status
    subprocess.run(["scontrol", "update", f"JobId={job}", "TimeLimit=20"], check=True, timeout=30)
    release(job)
    rc, out = finish(proc, sweep)
    assert rc == 0, out[-3000:]
    done = read(job_dir / "status.json")
    assert done["status"] == "completed" and done["requeued"] is True and done["restarts"] == 1, done
    assert done["resumed_from_step"] == status["checkpoint_step"]
    assert sacct_records(job) == ["REQUEUED", "COMPLETED"]
    assert_equal_metrics(metrics_of(job_dir), reference(tmp_path, *config))


def test_a_crashed_job_is_failed_in_the_report_and_the_launch_returns(tmp_path, launcher):
    """Four jobs: two complete; one fails inside the run (a ``_target_`` that only the job finds it cannot
    import), recorded by posenc; one dies before Python starts (its batch script exits 3: as a job the OOM killer or a
    node failure ends, it leaves no record of its own). The launcher stops waiting with one line, exit 1;
    the report says each job's ending, the cluster's state for the one that could not say."""
    sweep = tmp_path / "crash"
    targets = "task._target_=posenc.tasks.posenet.PosENetTask,posenc.tasks.posenet.NoSuchTask"
    dies = 'hydra.launcher.setup=["test $SLURM_ARRAY_TASK_ID != 3 || exit 3"]'  # task 3's batch script exits 3
    rc, out = finish(launcher(sweep, *TINY, targets, "seed=0,1", dies), sweep)
    assert rc == 1, out[-3000:]
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "ended FAILED without a result" in errors[0], out[-3000:]
    assert "Traceback" not in out
    collected = sweep_in_process("collect", str(sweep))
    assert collected.returncode == 1
    rows = read_csv(sweep / "results.csv")
    assert [r["status"] for r in rows] == ["completed", "completed", "failed", "failed"], rows
    assert "NoSuchTask" in rows[2]["error"] and "cannot import it" in rows[2]["error"], rows[2]
    assert rows[3]["job"] == "" and "SLURM job" in rows[3]["error"] and "FAILED" in rows[3]["error"], rows[3]


def test_jobs_that_never_started_are_reported_pending_then_cancelled(tmp_path):
    """Held jobs (``sbatch --hold``) have no run dir: the report finds them in the submitit folder and asks the
    cluster (``pending``). Cancelled before they started, they are reported ``cancelled``, and ``sweep.py``
    returns: the accounting may record such an array under its own id only, where submitit's launcher would
    wait for its tasks for ever, so sweep.py stops a launcher that still waits a minute after the cluster
    ended every job."""
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        str(ROOT / "sweep.py"),
        "padding_study",
        *TINY,
        "padding=zeros,none",
        *CLUSTER,
        "+hydra.launcher.additional_parameters.hold=true",
        f"paths.output_root={out}",
    ]
    with open(tmp_path / "sweep.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True)
    jobs: dict[int, str] = {}
    try:

        def submitted() -> tuple[Path, dict[int, str]] | None:
            assert proc.poll() is None, (tmp_path / "sweep.log").read_text()[-3000:]
            sweeps = list(out.glob("sweeps/padding_study/*"))
            jobs = submitit_job_ids(sweeps[0]) if sweeps else {}
            return (sweeps[0], jobs) if len(jobs) == 2 and (sweeps[0] / "multirun.yaml").exists() else None

        sweep, jobs = wait_for("the submitted jobs", submitted)
        assert sweep_in_process("collect", str(sweep)).returncode == 1
        rows = read_csv(sweep / "results.csv")
        assert [(r["job"], r["status"]) for r in rows] == [("", "pending"), ("", "pending")], rows
        assert all("not started yet" in r["error"] for r in rows)
        subprocess.run(["scancel", *jobs.values()], check=True, timeout=30)
        proc.wait(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            subprocess.run(["scancel", *jobs.values()], capture_output=True, timeout=30)
    log = (tmp_path / "sweep.log").read_text()
    assert proc.returncode == 1, log[-3000:]
    assert [r["status"] for r in read_csv(sweep / "results.csv")] == ["cancelled", "cancelled"], log[-3000:]
    assert log.strip().splitlines()[-1] == str(sweep)


def test_padding_then_probe_runs_both_stages_on_the_cluster(tmp_path):
    small = TWO_STAGE_SMALL
    proc = sweep_in_process(
        "padding_then_probe", "padding=zeros,circular", *CLUSTER, *small, f"paths.output_root={tmp_path}"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    probe_dir = Path(proc.stdout.strip().splitlines()[-1])
    sweep = probe_dir.parent
    for stage in (sweep, probe_dir):
        jobs = submitit_job_ids(stage)
        assert sorted(jobs) == [0, 1], stage
        assert set(settled(list(jobs.values())).values()) == {"COMPLETED"}, stage
        rows = read_csv(stage / "results.csv")
        assert sorted((r["padding"], r["status"]) for r in rows) == [("circular", "completed"), ("zeros", "completed")]


def test_the_atlas_runs_one_cluster_job_per_model(tmp_path):
    """``sweep.py atlas hydra/launcher=slurm`` (issue 34): each model of the zoo is one SLURM job running the atlas
    engine over its paddings and seeds; the atlas is collected from them as from local jobs."""
    small = ["task.max_steps=60", "task.ppp_contexts=4", "data.num_train=32", "data.num_val=0", "task.seeds=[0,1]"]
    proc = sweep_in_process(
        "atlas", "groups=tiny,tiny_bn", "padding=zeros,none", *CLUSTER, *small, f"paths.output_root={tmp_path}"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = Path(proc.stdout.strip().splitlines()[-1])
    ids = []
    for model in ("tiny", "tiny_bn"):
        jobs = submitit_job_ids(sweep / model)
        assert sorted(jobs) == [0], model  # one job per model
        ids.extend(jobs.values())
        status = read(sweep / model / "0" / "status.json")
        assert status["status"] == "completed" and status["slurm_job_id"], status
    assert len(set(ids)) == 2 and set(settled(ids).values()) == {"COMPLETED"}
    rows = read_csv(sweep / "atlas.csv")
    cells = {(r["model"], r["padding"]) for r in rows if r["tap"] == "all"}
    assert cells == {(m, p) for m in ("tiny", "tiny_bn") for p in ("zeros", "none")}
    assert all(r["n_seeds"] == "2" for r in rows if r["tap"] == "all")
    assert "job time / forward passes" in (sweep / "atlas.md").read_text()
