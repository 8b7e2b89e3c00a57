"""What a run asks of SLURM, and what a sweep reads from it.

In a job: whether this process is a SLURM batch job (:func:`under_slurm`) or a job that submitit started
(:func:`under_submitit`, ``hydra/launcher=slurm``), how often SLURM restarted it (:func:`restart_count`), the
signals that mean *the time limit is near: checkpoint and requeue* (:func:`warning_signals`), requeueing it
(:func:`requeue`), and why a SIGTERM came (:func:`sigterm_cause`: the cluster requeueing the job, its time
limit, or a cancel).

For a sweep: the cluster's own state of its jobs (:func:`cluster_states`, from ``sacct``) and the job ids of a
submitit sweep's jobs, whether they started or not (:func:`submitit_job_ids`). Every call to a SLURM command
has a timeout and answers "unknown" (``{}`` / None) when the command is missing or fails: a sweep on a
machine without SLURM is reported from its run dirs alone.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

TIMEOUT_S = 20  # for one scontrol / sacct call: a busy controller answers in seconds, a dead one never

# sacct states: still to run or running; finished (anything else: ended without finishing)
PENDING_STATES = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SUSPENDED"}
ACTIVE_STATES = {"RUNNING", "COMPLETING", "CONFIGURING", "SIGNALING", "STAGE_OUT", "RESIZING"}


def under_slurm(env: Mapping[str, str] = os.environ) -> bool:
    """A batch job of SLURM (not an interactive ``srun --pty bash``)."""
    return bool(env.get("SLURM_JOB_ID")) and env.get("SLURM_JOB_NAME") not in ("bash", "interactive")


def under_submitit(env: Mapping[str, str] = os.environ) -> bool:
    """A job that submitit started on SLURM (``hydra/launcher=slurm`` / ``submitit_slurm``): one process per
    job, whose launcher waits for a result file that the job writes when its function returns."""
    return under_slurm(env) and env.get("SUBMITIT_EXECUTOR") == "slurm"


def restart_count(env: Mapping[str, str] = os.environ) -> int:
    """How many times SLURM restarted this job (``SLURM_RESTART_COUNT``; 0 on its first start)."""
    text = env.get("SLURM_RESTART_COUNT", "") or "0"
    return int(text) if text.isdigit() else 0


def job_ref(env: Mapping[str, str] = os.environ) -> str:
    """This job as ``scontrol`` names it: ``<array job>_<task>`` for an array task, else its job id."""
    array, task = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else env.get("SLURM_JOB_ID", "")


def warning_signals(env: Mapping[str, str] = os.environ) -> tuple[int, ...]:
    """The signals that mean *the time limit is near*: SIGUSR1 (``sbatch --signal=USR1@<s>``, Lightning's
    convention) and SIGUSR2 (submitit's ``signal_delay_s``; ``SUBMITIT_PREEMPT_SIGNAL`` names another)."""
    names = ["SIGUSR1", "SIGUSR2"]
    custom = env.get("SUBMITIT_PREEMPT_SIGNAL")
    if custom:
        names.append(custom if custom.startswith("SIG") else f"SIG{custom}")
    found = (getattr(signal, name, None) for name in names)
    return tuple(dict.fromkeys(int(s) for s in found if s is not None))


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str] | None:
    """``cmd`` with a timeout; None when its program is missing or it does not answer."""
    if shutil.which(cmd[0]) is None:
        return None
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return None


def requeue(env: Mapping[str, str] = os.environ) -> str | None:
    """``scontrol requeue`` this job; None when SLURM took it, else why not, in one line."""
    job = job_ref(env)
    done = _run(["scontrol", "requeue", job])
    if done is None:
        return "scontrol is missing or did not answer" if shutil.which("scontrol") is None else "scontrol timed out"
    if done.returncode != 0:
        reason = (done.stderr or done.stdout).strip().splitlines()
        return f"scontrol requeue {job}: " + (reason[-1] if reason else f"exit status {done.returncode}")
    return None


def job_info(job: str) -> dict[str, str]:
    """``scontrol show job -o <job>`` as ``{field: value}`` (``JobState``, ``Reason``, ``Restarts``, ...); ``{}``
    when SLURM does not answer."""
    done = _run(["scontrol", "show", "job", "-o", job])
    if done is None or done.returncode != 0:
        return {}
    return dict(word.split("=", 1) for word in done.stdout.split() if "=" in word)


def sigterm_cause(env: Mapping[str, str] = os.environ) -> str | None:
    """Why SLURM sent this job SIGTERM, as its controller tells: ``requeued`` (the cluster requeues it: a
    preemption, ``scontrol requeue``; it counts the restart before it stops the job), ``time limit``, or
    ``cancelled`` (``scancel``, or a preemption that does not requeue). None outside SLURM or when the
    controller does not answer."""
    if not under_slurm(env):
        return None
    info = job_info(job_ref(env))
    if not info:
        return None
    restarts = info.get("Restarts", "0")
    if restarts.isdigit() and int(restarts) > restart_count(env):
        return "requeued"
    if info.get("Reason") == "TimeLimit" or info.get("JobState") == "TIMEOUT":
        return "time limit"
    return "cancelled"


def cluster_states(job_ids: Iterable[str]) -> dict[str, str]:
    """The cluster's state of each job: ``COMPLETED``, ``PENDING``, ``CANCELLED``, ``OUT_OF_MEMORY``, ...,
    keyed by every id given that the cluster knows, a raw job id (``1234``, what a run records as
    ``slurm_job_id``) or an array task (``1233_0``). From the accounting (``sacct -j <ids>
    --format=JobIDRaw,JobID,State -P -n -X``; array tasks that never started are one record there,
    ``1233_[0-3%2]``), else from the queue (``squeue``: a job the accounting has no record of yet, e.g. a held
    one). ``{}`` without SLURM."""
    ids = sorted({str(i) for i in job_ids if i})
    if not ids:
        return {}
    states: dict[str, str] = {}
    whole: dict[str, str] = {}  # records of a job that is not an array task: its id -> its state
    asked = sorted({*ids, *(i.split("_")[0] for i in ids)})  # an array's id: its tasks' records, started or not
    done = _run(["sacct", "-j", ",".join(asked), "--format=JobIDRaw,JobID,State", "-P", "-n", "-X"])
    for line in done.stdout.splitlines() if done is not None and done.returncode == 0 else []:
        parts = line.split("|")
        if len(parts) < 3 or not parts[2]:
            continue
        state = parts[2].split()[0]  # "CANCELLED by 0" -> CANCELLED
        if parts[0] == parts[1]:
            whole[parts[0]] = state
        for key in (parts[0], *_array_tasks(parts[1])):
            if key in ids:
                states[key] = state
    for key in ids:  # an array cancelled before any task started may be one record under the array's id
        base = key.split("_")[0]
        if key not in states and "_" in key and base in whole:
            states[key] = whole[base]
    unknown = [i for i in ids if i not in states]
    queued = _run(["squeue", "-h", "-j", ",".join(unknown), "-o", "%A|%i|%T"]) if unknown else None
    for line in queued.stdout.splitlines() if queued is not None and queued.returncode == 0 else []:
        parts = line.split("|")
        if len(parts) == 3:
            for key in (parts[0], *_array_tasks(parts[1])):
                if key in unknown:
                    states[key] = parts[2]
    return states


def _array_tasks(job: str) -> list[str]:
    """``1233_7`` -> ``["1233_7"]``; an array's record of tasks not started, ``1233_[0-3,5%2]``, -> each task."""
    match = re.match(r"^(\d+)_\[([\d,\-]+)(?:%\d+)?\]$", job)
    if match is None:
        return [job]
    tasks: list[str] = []
    for part in match.group(2).split(","):
        first, _, last = part.partition("-")
        if first.isdigit():
            tasks += [f"{match.group(1)}_{t}" for t in range(int(first), int(last or first) + 1)]
    return tasks


_SUBMITIT_JOB = re.compile(r"^(\d+)(?:_(\d+))?$")


def submitit_job_ids(sweep_dir: Path) -> dict[int, str]:
    """Job number -> SLURM job of a sweep that hydra-submitit-launcher submitted, whether the job started or
    not: its ``.submitit/`` folder (``hydra/launcher=slurm``'s ``submitit_folder``) holds one folder per job
    with its ``<job>_submitted.pkl``, written at submission: ``<array>_<task>`` for the tasks of a job array,
    whose task id is the job number, or ``<job>`` for a sweep of one job (job number 0). The latest array
    wins when a sweep dir holds several."""
    folder = Path(sweep_dir) / ".submitit"
    found: dict[int, tuple[int, str]] = {}
    for path in folder.iterdir() if folder.is_dir() else []:
        match = _SUBMITIT_JOB.match(path.name)
        if not match or not (path / f"{path.name}_submitted.pkl").exists():
            continue  # an array's own folder holds only its submission script
        job, task = int(match.group(1)), int(match.group(2) or 0)
        if task not in found or found[task][0] < job:
            found[task] = (job, path.name)
    return {task: name for task, (_, name) in sorted(found.items())}


def submitit_error(sweep_dir: Path, job: str) -> str | None:
    """The last line a submitit job wrote to its error log (``.submitit/<job>/<job>_0_log.err``, rank 0's;
    ``<job>_log.err`` for the batch script's), if any."""
    for name in (f"{job}_0_log.err", f"{job}_log.err"):
        try:
            text = (Path(sweep_dir) / ".submitit" / job / name).read_text(errors="replace")
        except OSError:
            continue
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if lines:
            return lines[-1][:200]
    return None


def lost_job(exc: BaseException) -> str | None:
    """One line for submitit's error when a sweep job ended without a result (``UncompletedJobError``: killed by
    the OOM killer, a node failure, cancelled before it started; ``FailedJobError``: it raised before the run
    began), which stops hydra-submitit-launcher waiting for the rest of the sweep; None for any other error."""
    kind = type(exc).__name__
    if not type(exc).__module__.startswith("submitit") or kind not in ("UncompletedJobError", "FailedJobError"):
        return None
    lines = [line.strip() for line in str(exc).splitlines() if line.strip() and not line.startswith("---")]
    if kind == "UncompletedJobError":
        job = re.search(r"Job (\S+)", lines[0]) if lines else None
        state = re.search(r"\(state: ([^)]+)\)", str(exc))
        ended = f"ended {state.group(1).split()[0]}" if state else "ended"  # "CANCELLED by 0": CANCELLED
        what = f"SLURM job {job.group(1) if job else '?'} {ended} without a result"
    else:
        trace = [line for line in lines if not line.startswith(("You can check", "or at paths", "- /"))]
        what = f"a SLURM job failed before its run started: {trace[-1] if trace else kind}"
    return what.replace("  ", " ")[:300]


WAITED_STATES = {"PENDING", "REQUEUED", "REQUEUE_FED"} | ACTIVE_STATES  # will end without anyone's help


def all_ended(job_ids: Iterable[str]) -> bool:
    """The cluster knows every one of ``job_ids`` and none is pending, running or held (False without SLURM)."""
    ids = [str(i) for i in job_ids]
    states = cluster_states(ids)
    return bool(ids) and len(states) == len(ids) and not set(states.values()) & (PENDING_STATES | ACTIVE_STATES)


def wait_for_jobs(job_ids: Iterable[str], poll_s: float = 10.0) -> list[str]:
    """Wait until none of ``job_ids`` is pending or running (``sacct``); the ones it waited for. Returns at
    once without SLURM. A held or suspended job is not waited for (it needs someone to release it)."""
    ids = [str(i) for i in job_ids]
    waited: list[str] = []
    while True:
        states = cluster_states(ids)
        active = [i for i in ids if states.get(i) in WAITED_STATES]
        if not active:
            return waited
        if not waited:
            print(f"waiting for {len(active)} SLURM job(s) of the sweep: {' '.join(active)}", flush=True)
        waited = sorted(set(waited) | set(active))
        time.sleep(poll_s)


# the endings a requeued SLURM job continues from (the job id in status.json is the same)
SLURM_RESTARTABLE = ("preempted", "interrupted", "cancelled", "running")
