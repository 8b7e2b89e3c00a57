"""Collecting a sweep: every job a Hydra multirun's sweep dir holds or should hold, read from its job dirs
(``.hydra/overrides.yaml``, ``status.json``, ``metrics.json``) and, for a SLURM sweep, from what the cluster
says of the jobs that recorded no ending. Reads files only: no Trainer, no task, no torch.

Every job Hydra's basic sweeper would launch (reconstructed from the sweep dir's ``multirun.yaml``)
appears exactly once in :func:`collect`: matched to its job dir by its overrides, or ``missing`` when it
never started. Job dirs matching no expected job are kept too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from posenc.errors import PosencError
from posenc.io import load_yaml, read_json
from posenc.run.slurm import ACTIVE_STATES, PENDING_STATES, cluster_states, submitit_error, submitit_job_ids
from posenc.sweeps.presets import GROUPS_FILE, expand_overrides
from posenc.viz.tables import has_test_metrics

COMPLETED, FAILED, RUNNING, MISSING = "completed", "failed", "running", "missing"
INTERRUPTED, PREEMPTED = "interrupted", "preempted"  # stopped by a signal, with a checkpoint (posenc.run.interruption)
# what a SLURM sweep's jobs can be besides, as the cluster tells (with_cluster_states)
CANCELLED, REQUEUED, PENDING = "cancelled", "requeued", "pending"
STATUS_NOTE = {
    RUNNING: "unfinished: status running (killed, or still running)",
    INTERRUPTED: "unfinished: interrupted (resume: python train.py --resume <job dir>)",
    PREEMPTED: "unfinished: preempted and requeued",
    MISSING: "never started: no job dir",
}
PROBE_DIR = "probe"  # a two-stage preset's second stage (padding_then_probe), inside the sweep dir
PROBE_GROUP = "probe_job"  # the probe stage's jobs: one generated config each, a group of its own
PROBE_JOBS_FILE = "probe_jobs.json"  # inside the probe dir: each probe job's overrides, as its report shows them


# ----------------------------------------------------------------------------- expected jobs


def plain(node: Any, resolve: bool = False) -> Any:
    """``OmegaConf.to_container`` typed as what it gives here: the caller knows the node's shape."""
    return OmegaConf.to_container(node, resolve=resolve)


def load_multirun(sweep_dir: Path) -> Any:
    """The sweep dir's ``multirun.yaml`` (a DictConfig), None when it has none; one line when it is not
    the mapping Hydra writes."""
    path = Path(sweep_dir) / "multirun.yaml"
    if not path.is_file():
        return None
    cfg = load_yaml(path, "the config Hydra writes for a multirun")
    if not isinstance(cfg, DictConfig):
        raise PosencError(f"cannot read {path}: a list, not the config Hydra writes for a multirun (a mapping)")
    return cfg


def expected_jobs(sweep_dir: Path) -> list[list[str]]:
    """The override lists of the jobs of ``sweep_dir``, rebuilt from its ``multirun.yaml``
    (``hydra.overrides.task`` + ``hydra.sweeper.params``); ``[]`` when it has none."""
    cfg = load_multirun(sweep_dir)
    if cfg is None:
        return []
    sweeper = OmegaConf.select(cfg, "hydra.sweeper", default=None)
    target = OmegaConf.select(sweeper, "_target_", default="") if sweeper is not None else ""
    if target and not target.endswith("BasicSweeper"):
        raise PosencError(f"cannot rebuild the jobs of {sweep_dir}: sweeper {target} is not Hydra's basic sweeper")
    params = plain(sweeper.params, resolve=False) if sweeper is not None and sweeper.get("params") else {}
    task = plain(OmegaConf.select(cfg, "hydra.overrides.task", default=[]) or [], resolve=False)
    try:
        return expand_overrides(params, task)
    except Exception as exc:  # e.g. glob() sweeps need Hydra's config loader, interval() ones another sweeper
        raise PosencError(f"cannot rebuild the jobs of {sweep_dir}: {exc}") from exc


# ----------------------------------------------------------------------------- collect


@dataclass(frozen=True)
class JobResult:
    """One job of a sweep: its dir (None when it never started), overrides, status
    (completed / failed / running / missing), one-line error, and ``metrics.json``."""

    job_dir: Path | None
    overrides: list[str]
    status: str
    error: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    expected: bool = True  # False: a job dir that matches none of multirun.yaml's jobs
    wall_time_s: float | None = None  # status.json's, for a completed job
    slurm_job: str | None = None  # its SLURM job (status.json's slurm_job_id; a submitit array task without a dir)

    @property
    def name(self) -> str:
        """The job dir's name (Hydra's job number), ``""`` when there is none."""
        return self.job_dir.name if self.job_dir is not None else ""

    @property
    def completed(self) -> bool:
        return self.status == COMPLETED


def override_dict(overrides: Iterable[str]) -> dict[str, str]:
    """``["a=1", "b.c=x"]`` -> ``{"a": "1", "b.c": "x"}`` (a bare ``~key`` maps to ``""``)."""
    pairs = (o.split("=", 1) if "=" in o else (o, "") for o in overrides)
    return {k: v for k, v in pairs}


def _job_overrides(job_dir: Path) -> list[str] | None:
    path = job_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return None
    listed = load_yaml(path, "the list of key=value overrides Hydra writes for a job")
    if isinstance(listed, DictConfig) and not listed:
        return None  # an empty file: killed while Hydra wrote it, matched by job number like a missing one
    if not isinstance(listed, ListConfig) or not all(isinstance(o, str) for o in plain(listed)):
        raise PosencError(f"cannot read {path}: not the list of key=value overrides Hydra writes for a job")
    return [str(o) for o in plain(listed)]


def read_job(job_dir: Path, overrides: list[str] | None = None, expected: bool = True) -> JobResult:
    """The :class:`JobResult` of one job dir, from its ``status.json`` and ``metrics.json``."""
    overrides = _job_overrides(job_dir) if overrides is None else overrides
    metrics = read_json(job_dir / "metrics.json") or {}
    status_path = job_dir / "status.json"
    data = read_json(status_path)
    error: str | None
    if data is None:
        status, error = (FAILED, "status.json unreadable") if status_path.exists() else (RUNNING, STATUS_NOTE[RUNNING])
    else:
        status, error = str(data.get("status")), (str(data["error"]) if data.get("error") else None)
        if status in (RUNNING, INTERRUPTED, PREEMPTED):
            error = error or STATUS_NOTE[status]
        elif status == COMPLETED and not has_test_metrics(metrics):
            status, error = FAILED, "status completed but metrics.json has no test metrics"
        elif status not in (COMPLETED, FAILED):
            status, error = FAILED, f"unknown status {status!r} in status.json"
        elif status == FAILED and not error:
            error = "failed (no error recorded)"
    wall = data.get("wall_time_s") if data is not None else None
    slurm_job = data.get("slurm_job_id") if data is not None else None
    return JobResult(
        job_dir,
        list(overrides or []),
        status,
        error,
        metrics,
        expected,
        float(wall) if isinstance(wall, (int, float)) else None,
        str(slurm_job) if slurm_job else None,
    )


def _job_dirs(sweep_dir: Path) -> list[Path]:
    dirs = [
        p
        for p in Path(sweep_dir).iterdir()
        if p.is_dir() and any((p / f).exists() for f in (".hydra", "status.json", "metrics.json"))
    ]
    return sorted(dirs, key=lambda p: (0, int(p.name), "") if p.name.isdigit() else (1, 0, p.name))


def collect(sweep_dir: Path) -> list[JobResult]:
    """Every expected job of ``sweep_dir`` once, in launch order (``missing`` when it has no
    dir), then the job dirs that match no expected job."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise PosencError(f"no sweep dir {str(sweep_dir)!r}")
    expected = expected_jobs(sweep_dir)
    dirs = _job_dirs(sweep_dir)
    if not expected and not dirs:
        raise PosencError(f"not a sweep dir {str(sweep_dir)!r}: no multirun.yaml and no job dirs")
    by_key: dict[tuple[str, ...], list[tuple[Path, list[str]]]] = {}
    unknown: dict[str, Path] = {}  # job dirs without .hydra/overrides.yaml, by job number
    submitted = submitit_job_ids(sweep_dir)  # job number -> SLURM array task, for a submitit sweep
    for d in dirs:
        overrides = _job_overrides(d)
        if overrides is None:
            unknown[d.name] = d
        else:
            by_key.setdefault(tuple(sorted(overrides)), []).append((d, overrides))
    results = []
    for num, job in enumerate(expected):
        candidates = by_key.get(tuple(sorted(job)))
        if candidates:
            results.append(read_job(*candidates.pop(0)))
        elif str(num) in unknown:  # killed before Hydra wrote its overrides: match by job number
            results.append(read_job(unknown.pop(str(num)), job))
        else:
            job_id = submitted.get(num)  # a SLURM sweep's job that has no dir (yet): its array task
            results.append(JobResult(None, list(job), MISSING, STATUS_NOTE[MISSING], slurm_job=job_id))
    leftovers = [d for pairs in by_key.values() for d, _ in pairs] + list(unknown.values())
    results += [read_job(d, expected=False) for d in sorted(leftovers, key=lambda p: dirs.index(p))]
    return probe_overrides(sweep_dir, with_cluster_states(sweep_dir, results))


# what the cluster's state of a job (sacct) makes of a job that did not record an ending of its own
ENDED_BADLY = {"FAILED", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE", "PREEMPTED", "TIMEOUT"}


def with_cluster_states(sweep_dir: Path, results: list[JobResult]) -> list[JobResult]:
    """The jobs of a SLURM sweep as what the cluster says they are (``sacct``, one call), where their run dir
    cannot tell: a job that completed or failed says so itself; one whose dir says ``running``,
    ``interrupted`` or ``preempted``, or that has no dir, is ``pending`` (waiting to start), ``requeued``
    (requeued and waiting to restart: it resumes from its checkpoint), ``running``, ``cancelled``
    (``scancel``; resumable by hand from its checkpoint), or ``failed`` with the cluster's state when it
    ended without recording an ending (killed by the OOM killer, a node failure, a crash before posenc's
    handlers: ``FAILED``, ``OUT_OF_MEMORY``, ``NODE_FAIL``, ...). Unchanged without SLURM (no sacct)."""
    undecided = (RUNNING, INTERRUPTED, PREEMPTED, MISSING)
    states = cluster_states(r.slurm_job for r in results if r.slurm_job and r.status in undecided)
    if not states:
        return results
    out = []
    for r in results:
        state = states.get(r.slurm_job or "") if r.status in undecided else None
        if state is None:
            out.append(r)
            continue
        job = f"SLURM job {r.slurm_job}"
        status, error = r.status, r.error
        if state in PENDING_STATES:
            if r.job_dir is None:
                status, error = PENDING, f"not started yet: {job} is {state}"
            else:
                status, error = REQUEUED, f"unfinished: requeued, {job} {state}: it resumes from its checkpoint"
        elif state in ACTIVE_STATES:
            status, error = RUNNING, f"unfinished: {job} {state}"
        elif state == "CANCELLED":
            status = CANCELLED
            error = f"{job} cancelled" + (
                f" (resume: python train.py --resume {r.job_dir})" if r.status in (INTERRUPTED, PREEMPTED) else ""
            )
        elif r.status == INTERRUPTED and state in ("TIMEOUT", "COMPLETED"):
            error = f"{r.error} ({job} {state})"
        elif state in ENDED_BADLY or r.status in (RUNNING, MISSING):
            cause = submitit_error(sweep_dir, r.slurm_job or "") if r.job_dir is None else None
            status = FAILED
            error = f"{job} ended {state} without recording an ending" + (f": {cause}" if cause else "")
        out.append(replace(r, status=status, error=error))
    return out


def probe_overrides(sweep_dir: Path, results: list[JobResult]) -> list[JobResult]:
    """A probe stage's jobs with the overrides of :data:`PROBE_JOBS_FILE` in place of ``+probe_job=<name>``,
    so that its report's rows read ``padding=zeros`` like any sweep's."""
    described = read_json(Path(sweep_dir) / PROBE_JOBS_FILE)
    if not described:
        return results
    prefix = f"+{PROBE_GROUP}="
    out = []
    for r in results:
        names = [o[len(prefix) :] for o in r.overrides if o.startswith(prefix)]
        rest = [o for o in r.overrides if not o.startswith(prefix)]
        out.append(replace(r, overrides=[*described[names[0]], *rest]) if names and names[0] in described else r)
    return out


def group_results(sweep_dir: Path) -> dict[str, list[JobResult]] | None:
    """Every group's jobs of a grouped sweep (:data:`GROUPS_FILE`), in the preset's order; None for a
    plain sweep. A group that never started has no dir and no entry."""
    spec = read_json(Path(sweep_dir) / GROUPS_FILE)
    if spec is None:
        return None
    for label, _ in spec.get("groups", []):  # a label names a folder inside the sweep dir, and no other
        if not isinstance(label, str) or Path(label).name != label or label in ("", ".", ".."):
            raise PosencError(f"{Path(sweep_dir) / GROUPS_FILE} names group {label!r}: refused (not a folder name)")
    return {
        label: collect(Path(sweep_dir) / label)
        for label, _ in spec.get("groups", [])
        if (Path(sweep_dir) / label / "multirun.yaml").is_file()
    }
