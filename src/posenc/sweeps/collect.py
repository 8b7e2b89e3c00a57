"""Sweeps: named presets (``conf/sweep/``), and collecting a Hydra multirun's job dirs into
reports (``results.csv``, ``results.md``, SPC bar charts for PosENet, and for the trainable tasks a
table of their metrics per row plus the rows' distance-to-border curves overlaid in one figure).
Pure functions, no Trainer needed.

Every job Hydra's basic sweeper would launch (reconstructed from the sweep dir's
``multirun.yaml``) appears exactly once in :func:`collect`: matched to its job dir by its
overrides, or ``missing`` when it never started. Job dirs matching no expected job are kept too.

In the tables, cells over several seeds are ``mean ± std`` with the *sample* standard deviation
(``ddof=1``); a row with one value shows the value alone. ``n`` counts the completed jobs of a row.
"""

from __future__ import annotations

import csv
import json
import math
import re
import shlex
import statistics
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig, ListConfig, OmegaConf

from posenc.config.groups import CONF_DIR
from posenc.config.trust import refusal, shipped_targets
from posenc.errors import PosencError
from posenc.io import load_yaml, reserve_dir
from posenc.io import read_json as _read_json
from posenc.run.provenance import provenance, provenance_lines
from posenc.run.slurm import ACTIVE_STATES, PENDING_STATES, cluster_states, submitit_error, submitit_job_ids
from posenc.tasks.base import PosencTask
from posenc.viz.tables import distance_curves, has_test_metrics, parse_distance_key, parse_task_key, parse_test_key

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
NOT_SWEPT = ("seed", "backbone.weights")  # varied within a row (seeds: cells are mean ± std over them)
PROBE_DIR = "probe"  # a two-stage preset's second stage (padding_then_probe), inside the sweep dir


# ----------------------------------------------------------------------------- presets


def list_presets(conf_dir: Path = CONF_DIR) -> dict[str, str]:
    """Sweep presets in ``conf_dir/sweep`` -> their description (first comment after the
    ``# @package`` line)."""
    presets: dict[str, str] = {}
    for path in sorted((Path(conf_dir) / "sweep").glob("*.yaml")):
        comments = [
            line.lstrip("#").strip()
            for line in path.read_text().splitlines()
            if line.startswith("#") and not line.startswith("# @package")
        ]
        presets[path.stem] = comments[0] if comments else ""
    return presets


def reserve_sweep_dir(output_root: Path, name: str, now: datetime | None = None) -> Path:
    """Create and return a fresh ``<output_root>/sweeps/<name>/<timestamp>[_k]`` (an exclusive
    mkdir, so two sweeps started in the same second get different dirs)."""
    stamp = (now or datetime.now()).strftime("%Y-%m-%d_%H-%M-%S")
    return reserve_dir(Path(output_root) / "sweeps" / name, stamp, f"paths.output_root={output_root}").resolve()


# ----------------------------------------------------------------------------- expected jobs


def expand_overrides(params: Mapping[str, Any], overrides: Sequence[str]) -> list[list[str]]:
    """The override lists Hydra's basic sweeper launches for sweeper ``params`` plus the
    command-line ``overrides`` (which replace a param of the same key), in launch order."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    arguments = [f"{k}={v}" for k, v in params.items()] + list(overrides)
    parsed = OverridesParser.create().parse_overrides(arguments)
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def _plain(node: Any, resolve: bool = False) -> Any:
    """``OmegaConf.to_container`` typed as what it gives here: the caller knows the node's shape."""
    return OmegaConf.to_container(node, resolve=resolve)


def _load_multirun(sweep_dir: Path) -> Any:
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
    cfg = _load_multirun(sweep_dir)
    if cfg is None:
        return []
    sweeper = OmegaConf.select(cfg, "hydra.sweeper", default=None)
    target = OmegaConf.select(sweeper, "_target_", default="") if sweeper is not None else ""
    if target and not target.endswith("BasicSweeper"):
        raise PosencError(f"cannot rebuild the jobs of {sweep_dir}: sweeper {target} is not Hydra's basic sweeper")
    params = _plain(sweeper.params, resolve=False) if sweeper is not None and sweeper.get("params") else {}
    task = _plain(OmegaConf.select(cfg, "hydra.overrides.task", default=[]) or [], resolve=False)
    try:
        return expand_overrides(params, task)
    except Exception as exc:  # e.g. glob() sweeps need Hydra's config loader
        raise PosencError(f"cannot rebuild the jobs of {sweep_dir}: {exc}") from exc


INIT_CHECKPOINT = Path("checkpoints") / "init.ckpt"  # a trainable task's backbone before training
PROBE_GROUP = "probe_job"  # the probe stage's jobs: one generated config each, a group of its own
PROBE_CONF = ".conf"  # inside the probe dir: the search path holding PROBE_GROUP
PROBE_JOBS_FILE = "probe_jobs.json"  # inside the probe dir: each probe job's overrides, as its report shows them
# Keys of a first stage's command line that do not carry over to its probe stage: the first stage's task and
# what it trained with, and what the probe takes from each trained job (its backbone, padding and seed).
STAGE_ONE_ONLY = {
    "task",
    "readout",
    "invariance",
    "protocol",
    "experiment",
    "sweep",
    "sweep_name",
    "probe",
    "probe_init",
    "probe_stage",
    "pivot",
    "groups",
    "report",
    "ckpt_path",
}
PROBE_IDENTITY = {
    "backbone",
    "padding",
    "seed",
    "data",
    "backbone.weights",
    "backbone.trainable",
    "hydra.sweep.dir",
    "hydra.sweep.subdir",
    "hydra.run.dir",
}


def probe_settings(sweep_dir: Path) -> tuple[list[list[str]], bool]:
    """``(probes, init)`` of a two-stage preset: its ``probe:`` (one override list, or a list of
    them) and ``probe_init:`` (also probe every job's backbone at initialisation)."""
    cfg = _load_multirun(sweep_dir)
    probe = OmegaConf.select(cfg, "probe", default=None) if cfg is not None else None
    if not probe:
        return [], False
    probe = _plain(probe, resolve=False)
    probes = [list(p) for p in probe] if all(isinstance(p, list) for p in probe) else [list(probe)]
    return [[str(o) for o in p] for p in probes], bool(OmegaConf.select(cfg, "probe_init", default=False))


@dataclass(frozen=True)
class ProbeJob:
    """One run of a probe stage: its job dir's name and its overrides (the probe's, then what it
    takes from the trained job: backbone and its architecture keys, padding, seed, weights)."""

    name: str
    overrides: list[str]

    @property
    def config(self) -> str:
        """Its generated config's name (``job<name>``: a bare job number would parse as an int)."""
        return f"job{self.name}"


def probe_jobs(sweep_dir: Path, results: Sequence[JobResult], trusted: Iterable[str] = ()) -> list[ProbeJob]:
    """The second stage of a two-stage preset (``probe:`` in its config, e.g. padding_then_probe,
    ppp_artifact): for every completed job and every probe, a run on the backbone that job trained
    (same backbone, its ``backbone.*`` overrides, padding and seed; ``backbone.weights=<job dir>``,
    ``probe_stage=trained``) and, with ``probe_init: true``, on the same backbone at initialisation
    (the job's ``checkpoints/init.ckpt``, ``probe_stage=init``), named ``<job>[_<k>][_init]``.
    ``[]`` when the preset has no probe stage. What a job's files say is checked first: it may name only
    code posenc ships or ``trusted`` names (:mod:`posenc.config.trust`)."""
    from posenc.config.trust import check_overrides

    probes, init = probe_settings(sweep_dir)
    jobs = []
    for r in results:
        if not r.completed or r.job_dir is None:
            continue
        m = r.metrics
        architecture = [
            o
            for o in r.overrides
            if o.split("=", 1)[0].startswith("backbone.")
            and o.split("=", 1)[0] not in ("backbone.weights", "backbone.trainable", "backbone.download")
        ]
        taken = [f"backbone={m['backbone']}", *architecture, f"padding={m['padding']}", f"seed={m['seed']}"]
        if probes:
            check_overrides(taken, f"job dir {r.job_dir}", trusted)
        stages = [("trained", str(r.job_dir))] + ([("init", str(r.job_dir / INIT_CHECKPOINT))] if init else [])
        for k, probe in enumerate(probes):
            for stage, weights in stages:
                name = r.name + (f"_{k}" if len(probes) > 1 else "") + ("_init" if stage == "init" else "")
                jobs.append(
                    ProbeJob(
                        name,
                        [
                            *probe,
                            *taken,
                            f"backbone.weights={weights}",
                            "backbone.trainable=false",
                            *([f"probe_stage={stage}"] if init else []),
                        ],
                    )
                )
    return jobs


def overrides_config(overrides: Sequence[str], conf_dir: Path = CONF_DIR) -> dict[str, Any]:
    """A ``@package _global_`` config equal to ``overrides``: group choices become ``override /<group>``
    entries of its defaults list, every other key its value (parsed by Hydra's override grammar).
    Sweeps and deletions have no config form and are refused."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from posenc.config.groups import group_options

    groups = set(group_options(conf_dir)) | {"hydra/launcher"}
    cfg = OmegaConf.create({"defaults": []})
    for text, parsed in zip(overrides, OverridesParser.create().parse_overrides(list(overrides))):
        if parsed.is_sweep_override() or parsed.is_delete():
            raise PosencError(f"probe override {text!r} is not valid: a probe states single values (no sweep, no ~)")
        key = parsed.key_or_group
        if key in groups:
            cfg.defaults.append({f"override /{key}": parsed.value()})
        else:
            OmegaConf.update(cfg, key, parsed.value(), force_add=True)
    return _plain(cfg)


def carried_overrides(overrides: Sequence[str]) -> list[str]:
    """The first stage's command-line overrides that apply to its probe stage too: the launcher and its
    settings, the trainer, loggers, callbacks, data sizes, paths, the backbone's architecture keys
    (``hydra/launcher=submitit_slurm trainer=gpu data.num_train=64``). Not carried: the first stage's
    task and what it trained with (``task``, ``task.*``, ``readout``, ``invariance``, ...), what each probe
    takes from its trained job (:data:`PROBE_IDENTITY`), and sweeps (a probe runs once per trained job)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    carried = []
    for text, parsed in zip(overrides, OverridesParser.create().parse_overrides(list(overrides))):
        key = parsed.key_or_group
        if key in PROBE_IDENTITY or key.split(".")[0] in STAGE_ONE_ONLY or parsed.is_sweep_override():
            continue
        carried.append(text)
    return carried


def write_probe_stage(sweep_dir: Path, jobs: Sequence[ProbeJob]) -> Path:
    """Write the probe stage of ``sweep_dir`` as a Hydra multirun's inputs: one config per job
    (``probe/.conf/probe_job/job<name>.yaml``: its overrides, and its job dir's name) and
    ``probe/probe_jobs.json``; return the probe dir."""
    probe_dir = Path(sweep_dir) / PROBE_DIR
    group = probe_dir / PROBE_CONF / PROBE_GROUP
    group.mkdir(parents=True, exist_ok=True)
    for job in jobs:
        cfg = overrides_config(job.overrides)
        cfg["hydra"] = {"sweep": {"subdir": job.name}}
        (group / f"{job.config}.yaml").write_text(
            "# @package _global_\n# generated by sweep.py: one run of the "
            f"probe stage\n{OmegaConf.to_yaml(OmegaConf.create(cfg))}"
        )
    (probe_dir / PROBE_JOBS_FILE).write_text(json.dumps({j.config: j.overrides for j in jobs}, indent=1))
    return probe_dir


def probe_command(sweep_dir: Path, jobs: Sequence[ProbeJob], overrides: Sequence[str]) -> list[str]:
    """``train.py -m`` arguments of the probe stage: one multirun over the generated configs
    (``+probe_job=<names>``) into ``SWEEP_DIR/probe``, through the same launcher, with the first stage's
    :func:`carried_overrides`. The command line wins over a probe's own values, as it does over a preset's."""
    probe_dir = Path(sweep_dir).resolve() / PROBE_DIR
    multirun = _load_multirun(sweep_dir)
    name = OmegaConf.select(multirun, "sweep_name", default=None) if multirun is not None else None
    return [
        "-m",
        f"hydra.searchpath=['file://{probe_dir / PROBE_CONF}']",
        f"+{PROBE_GROUP}={','.join(j.config for j in jobs)}",
        f"hydra.sweep.dir={probe_dir}",
        *([f"sweep_name={name}"] if name else []),
        *carried_overrides(overrides),
    ]


def probe_overrides(sweep_dir: Path, results: list[JobResult]) -> list[JobResult]:
    """A probe stage's jobs with the overrides of :data:`PROBE_JOBS_FILE` in place of ``+probe_job=<name>``,
    so that its report's rows read ``padding=zeros`` like any sweep's."""
    described = _read_json(Path(sweep_dir) / PROBE_JOBS_FILE)
    if not described:
        return results
    prefix = f"+{PROBE_GROUP}="
    out = []
    for r in results:
        names = [o[len(prefix) :] for o in r.overrides if o.startswith(prefix)]
        rest = [o for o in r.overrides if not o.startswith(prefix)]
        out.append(replace(r, overrides=[*described[names[0]], *rest]) if names and names[0] in described else r)
    return out


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
    if not isinstance(listed, ListConfig) or not all(isinstance(o, str) for o in _plain(listed)):
        raise PosencError(f"cannot read {path}: not the list of key=value overrides Hydra writes for a job")
    return [str(o) for o in _plain(listed)]


def read_job(job_dir: Path, overrides: list[str] | None = None, expected: bool = True) -> JobResult:
    """The :class:`JobResult` of one job dir, from its ``status.json`` and ``metrics.json``."""
    overrides = _job_overrides(job_dir) if overrides is None else overrides
    metrics = _read_json(job_dir / "metrics.json") or {}
    status_path = job_dir / "status.json"
    data = _read_json(status_path)
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


# ----------------------------------------------------------------------------- tables


@dataclass
class Row:
    """One distinct combination of swept values and its jobs (one per seed)."""

    label: str
    jobs: list[JobResult]
    values: dict[str, str] = field(default_factory=dict)  # swept key -> value

    @property
    def done(self) -> list[JobResult]:
        return [j for j in self.jobs if j.completed]

    @property
    def status(self) -> str:
        counts = Counter(j.status for j in self.jobs)
        return next(iter(counts)) if len(counts) == 1 else ", ".join(f"{n} {s}" for s, n in counts.items())

    @property
    def error(self) -> str | None:
        return next((j.error for j in self.jobs if not j.completed and j.error), None)

    def stats(self, key: str, where: Mapping[str, str] | None = None) -> tuple[float | None, float | None, int]:
        """Mean, sample std (``ddof=1``; None for fewer than 2 values) and n of ``key`` over
        the completed jobs (those whose overrides match ``where``, e.g. a pivot's value)."""
        jobs = [
            j for j in self.done if not where or all(override_dict(j.overrides).get(k) == v for k, v in where.items())
        ]
        values = [
            float(v)
            for j in jobs
            if isinstance(v := j.metrics.get(key), (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        ]
        return mean_std(values)


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None, int]:
    """``(mean, sample std with ddof=1, n)``; std is None for n < 2, mean None for n = 0."""
    n = len(values)
    mean = statistics.fmean(values) if n else None
    return mean, (statistics.stdev(values) if n > 1 else None), n


def swept_keys(results: Sequence[JobResult], pivot: str | None = None) -> list[str]:
    """Override keys whose values differ between jobs (absent counts as a value), ``seed`` and
    the ``pivot`` excluded, in the order they first appear."""
    dicts = [override_dict(r.overrides) for r in results if r.overrides]
    keys = list(dict.fromkeys(k for d in dicts for k in d))
    return [k for k in keys if k not in NOT_SWEPT and k != pivot and len({d.get(k) for d in dicts}) > 1]


def pivot_values(results: Sequence[JobResult], pivot: str | None) -> list[str]:
    """The values the ``pivot`` key takes over the jobs, in launch order (``[]`` without a pivot)."""
    if not pivot:
        return []
    return list(dict.fromkeys(v for r in results if (v := override_dict(r.overrides).get(pivot)) is not None))


def build_rows(results: Sequence[JobResult], pivot: str | None = None) -> list[Row]:
    """Rows = distinct swept-value combinations (label ``key=value key=value``), in order of
    first appearance; a job dir without overrides gets a row of its own. The ``pivot`` key (a
    preset's ``pivot:``, e.g. ``task.label`` in ``channel_order``) spreads into columns instead."""
    keys = swept_keys(results, pivot)
    rows: dict[str, Row] = {}
    for r in results:
        if r.overrides:
            overrides = override_dict(r.overrides)
            values = {k: overrides.get(k, "—") for k in keys}
            label = " ".join(f"{k}={v}" for k, v in values.items()) or "all"
        else:
            values, label = {}, f"job {r.name} (no overrides)"
        rows.setdefault(label, Row(label, [], values)).jobs.append(r)
    return list(rows.values())


def _ordered(names: Iterable[str], order: Sequence[str]) -> list[str]:
    names = set(names)
    return [n for n in order if n in names] + sorted(names - set(order))


def task_class(result: JobResult) -> type[PosencTask] | None:
    """The task class a job ran (``task._target_`` of the resolved ``config.yaml`` in its dir)."""
    path = result.job_dir / "config.yaml" if result.job_dir is not None else None
    if path is None or not path.is_file():
        return None
    return _task_class_of(str(path), path.stat().st_mtime_ns)


@cache
def _task_class_of(path: str, mtime_ns: int) -> type[PosencTask] | None:
    """:func:`task_class` of one ``config.yaml``, read once per version of the file (a report asks for
    every job's class from its tables, its CSV and its task sections)."""
    cfg = load_yaml(Path(path), "the resolved config train.py writes (a mapping)")
    if not isinstance(cfg, DictConfig):
        raise PosencError(f"cannot read {path}: a list, not the resolved config train.py writes (a mapping)")
    target = OmegaConf.select(cfg, "task._target_")
    if target and target not in shipped_targets():  # a job dir's file never makes posenc import code
        print(
            f"warning: {refusal(f'job dir {Path(path).parent}', 'task._target_', target)}; its metrics are "
            "reported in name order",
            file=sys.stderr,
        )
        return None
    try:
        cls = get_class(target) if target else None
    except (ImportError, ValueError, AttributeError):  # a task of another version of posenc
        return None
    return cls if isinstance(cls, type) and issubclass(cls, PosencTask) else None


def _task_orders(results: Sequence[JobResult]) -> tuple[list[str], list[list[str]]]:
    """The ``metric_order`` and the ``grid_order`` levels the jobs' tasks declare, merged in order."""
    classes = list(dict.fromkeys(c for r in results if (c := task_class(r)) is not None))
    overall = list(dict.fromkeys(m for c in classes for m in c.metric_order))
    grid: list[list[str]] = [[], [], []]
    for c in classes:
        for level, names in zip(grid, c.grid_order or ((), (), ())):
            level.extend(n for n in names if n not in level)
    return overall, grid


def metric_layout(results: Sequence[JobResult]) -> tuple[list[str], list[str], list[str]]:
    """The rows, columns and metrics of the ``test/<row>/<column>/<metric>`` grid keys in the jobs'
    metrics (PosENet: inputs, targets, SPC / MAE), in the order their tasks declare."""
    parsed = [p for r in results for k in r.metrics if (p := parse_test_key(k))]
    _, order = _task_orders(results)
    return [_ordered({p[level] for p in parsed}, order[level]) for level in range(3)]  # type: ignore[return-value]


def task_layout(results: Sequence[JobResult]) -> tuple[list[str], list[str], list[str]]:
    """The tasks' overall metrics, distance bins and per-bin metrics in the jobs."""
    keys = {k for r in results for k in r.metrics}
    order, _ = _task_orders(results)
    overall = _ordered({m for k in keys if (m := parse_task_key(k))}, order)
    parsed = [p for k in keys if (p := parse_distance_key(k))]
    return overall, sorted({b for b, _ in parsed}), _ordered({m for _, m in parsed}, order)


def paper_lines(paper: Mapping[str, Any] | None, keys: Sequence[str]) -> list[str]:
    """Markdown rows of a preset's published numbers (its ``paper:`` block) under the columns
    ``keys``: one row per paper row with a number in one of them, labelled by its settings."""
    lines = []
    for entry in (paper or {}).get("rows") or []:
        metrics = entry.get("metrics") or {}
        if not any(k in metrics for k in keys):
            continue
        label = "paper: " + (" ".join(f"{k}={v}" for k, v in (entry.get("match") or {}).items()) or "all")
        cells = [f"{float(metrics[k]):.3f}" if k in metrics else "" for k in keys]
        lines.append("| " + " | ".join(_md_escape(c) for c in [label, "", "published", *cells]) + " |")
    return lines


def task_tables(
    rows: Sequence[Row], results: Sequence[JobResult], pivot: str | None = None, paper: Mapping[str, Any] | None = None
) -> list[str]:
    """Markdown: rows x overall metrics, then per binned metric rows x distance bins; with a
    ``pivot``, every column once per pivot value (``accuracy (location)``, ``accuracy (class)``)."""
    done = [r for r in results if r.completed]
    overall, bins, binned = task_layout(done)
    if not overall and not bins:
        return []
    values = pivot_values(done, pivot)
    spread_by = pivot or ""  # wheres are empty without a pivot
    wheres: list[dict[str, str]] = [{spread_by: v} for v in values] if pivot and values else [{}]
    lines: list[str] = []

    def table(title: str, columns: list[str], key: Any) -> None:
        spread = [
            (c, w)
            for c in columns
            for w in wheres
            if any(
                key(c) in j.metrics for j in done if not w or override_dict(j.overrides).get(spread_by) == w[spread_by]
            )
        ]
        names = [f"{c} ({w[spread_by]})" if w else c for c, w in spread]
        header = ["row", "n", "status", *names]
        lines.extend([f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)])
        for row in rows:
            cells = [format_cell(*row.stats(key(c), w)[:2]) if row.done else "" for c, w in spread]
            lines.append(
                "| "
                + " | ".join(_md_escape(c) for c in [row.label, str(len(row.done)), _status_cell(row), *cells])
                + " |"
            )
        lines.extend(paper_lines(paper, [key(c) for c, _ in spread]))
        lines.append("")

    if overall:
        table("test metrics" + (f" (columns per {pivot})" if pivot else ""), overall, lambda m: f"test/{m}")
    for metric in binned:
        table(
            f"{metric} by distance to the border (bins nearest the border first)",
            bins,
            lambda b, metric=metric: f"test/by_distance/{b}/{metric}",
        )
    return lines


def task_sections(results: Sequence[JobResult]) -> list[str]:
    """Each task's own lines about its completed jobs (``PosencTask.sweep_sections``)."""
    by_class: dict[type[PosencTask], list[JobResult]] = {}
    for r in results:
        if r.completed and (cls := task_class(r)) is not None:
            by_class.setdefault(cls, []).append(r)
    return [
        line
        for cls, jobs in by_class.items()
        for line in cls.sweep_sections([j.metrics for j in jobs], [j.wall_time_s or 0.0 for j in jobs])
    ]


def format_cell(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "—"
    return f"{mean:.3f}" if std is None else f"{mean:.3f} ± {std:.3f}"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _status_cell(row: Row) -> str:
    return row.status if row.error is None else f"{row.status}: {row.error}"


def markdown_report(
    results: Sequence[JobResult],
    title: str = "Sweep results",
    pivot: str | None = None,
    paper: Mapping[str, Any] | None = None,
) -> str:
    """Markdown: per test input a table (rows = swept values, columns = target x SPC / MAE,
    n and status; below them, rows ``paper: ...`` with a preset's published numbers), then the
    jobs that did not complete with their errors."""
    rows = build_rows(results, pivot)
    inputs, targets, grid_metrics = metric_layout([r for r in results if r.completed])
    counts = Counter(r.status for r in results)
    seeds = {override_dict(r.overrides).get("seed") for r in results}
    lines = [
        f"# {title}",
        "",
        f"{len(results)} jobs: "
        + ", ".join(f"{n} {s}" for s, n in counts.items())
        + ". "
        + (
            "Cells: mean ± sample std (ddof=1) over the seeds of a row; n = completed seeds."
            if len(seeds) > 1
            else "n = completed jobs of a row."
        ),
        "",
    ]
    if paper and paper.get("rows"):
        lines += [
            f"Rows `paper: ...` are the published numbers: {paper.get('source')}."
            + (f" The paper's setting differs from this preset's: {paper['differs']}." if paper.get("differs") else ""),
            "",
        ]
    header = ["row", "n", "status"] + [f"{t} {m.upper()}" for t in targets for m in grid_metrics]
    task_lines = task_tables(rows, results, pivot, paper)
    lines += task_lines
    values = pivot_values([r for r in results if r.completed], pivot)
    wheres: list[dict[str, str]] = [{pivot: v} for v in values] if pivot and values else [{}]
    if pivot and values:
        header = ["row", "n", "status"] + [
            f"{t} {m.upper()} ({w[pivot]})" for t in targets for m in grid_metrics for w in wheres
        ]
    for name in inputs:
        lines += [f"## {name}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in rows:
            cells = [
                format_cell(*row.stats(f"test/{name}/{t}/{m}", w)[:2]) if row.done else ""
                for t in targets
                for m in grid_metrics
                for w in wheres
            ]
            lines.append(
                "| "
                + " | ".join(_md_escape(c) for c in [row.label, str(len(row.done)), _status_cell(row), *cells])
                + " |"
            )
        lines.extend(
            paper_lines(paper, [f"test/{name}/{t}/{m}" for t in targets for m in grid_metrics for _ in wheres])
        )
        lines.append("")
    if not inputs and not task_lines:
        lines += ["No completed jobs: no metrics to tabulate.", ""]
        lines += ["| row | status |", "|---|---|"]
        lines += [f"| {_md_escape(row.label)} | {_md_escape(_status_cell(row))} |" for row in rows] + [""]
    lines += task_sections(results)
    labels = {id(j): row.label for row in rows for j in row.jobs}
    bad = [r for r in results if not r.completed]
    if bad:
        lines += ["## Jobs not completed", ""]
        lines += [f"- job {r.name or '(no dir)'} `{labels[id(r)]}`: **{r.status}** — {r.error or ''}" for r in bad] + [
            ""
        ]
    extra = [r for r in results if not r.expected]
    if extra:
        lines += ["Job dirs matching no job of multirun.yaml: " + ", ".join(r.name for r in extra), ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- files


def write_csv(path: Path, results: Sequence[JobResult]) -> Path:
    """One row per job: job, status, error, expected, every override key, every metric key
    (a metric key clashing with an earlier column is written as ``metrics.<key>``)."""
    base = ["job", "status", "error", "expected"]
    override_keys = list(dict.fromkeys(k for r in results for k in override_dict(r.overrides)))
    metric_keys = {k for r in results for k, v in r.metrics.items() if not isinstance(v, (list, dict))}  # no curves
    tests = [k for k in metric_keys if parse_test_key(k)]
    inputs, targets, grid_metrics = metric_layout(results)
    ordered_tests = [f"test/{i}/{t}/{m}" for i in inputs for t in targets for m in grid_metrics]
    ordered_tests = [k for k in ordered_tests if k in metric_keys] + sorted(set(tests) - set(ordered_tests))
    metric_cols = ordered_tests + sorted(metric_keys - set(tests))
    taken = set(base) | set(override_keys)
    metric_names = {k: f"metrics.{k}" if k in taken else k for k in metric_cols}
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(base + override_keys + [metric_names[k] for k in metric_cols])
        for r in results:
            overrides = override_dict(r.overrides)
            writer.writerow(
                [r.name, r.status, r.error or "", str(r.expected).lower()]
                + [overrides.get(k, "") for k in override_keys]
                + ["" if r.metrics.get(k) is None else r.metrics[k] for k in metric_cols]
            )
    return Path(path)


def row_padding(row: Row) -> str | None:
    """The padding of a row when the sweep varies it (``padding=<name>`` among its swept values)."""
    return row.values.get("padding")


HATCHES = ("", "///", "...", "xxx", "\\\\\\", "ooo", "---", "+++")  # targets' bars when colour shows the padding


def spc_figure(rows: Sequence[Row], name: str, targets: Sequence[str]) -> Any:
    """Grouped bars: one group per row, one bar per target (SPC on test input ``name``, fixed -1..1),
    with std error bars where a row has several seeds. When the sweep varies the padding, a bar's
    colour is its row's padding (:func:`posenc.viz.figures.padding_color`, as in every figure of
    the sweep) and the targets are told apart by hatching; else by colour."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from posenc.viz.figures import padding_color

    by_padding = any(row_padding(row) is not None for row in rows)
    width = 0.8 / max(len(targets), 1)
    fig, ax = plt.subplots(
        figsize=(min(40.0, max(6.0, 1.5 + 0.15 * len(rows) * max(1, len(targets)))), 5.0), layout="constrained"
    )
    for j, target in enumerate(targets):
        stats = [row.stats(f"test/{name}/{target}/spc") for row in rows]
        means = [m if m is not None else 0.0 for m, _, _ in stats]
        errs = [s if s is not None else 0.0 for _, s, _ in stats]
        xs = [i - 0.4 + width * (j + 0.5) for i in range(len(rows))]
        style: dict[str, Any] = {"label": target}
        if by_padding:
            style = {
                "color": [padding_color(row_padding(row) or "?") for row in rows],
                "hatch": HATCHES[j % len(HATCHES)],
                "edgecolor": "white",
                "linewidth": 0,
            }
        ax.bar(xs, means, width, yerr=errs if any(errs) else None, capsize=2, **style)
    labels = [
        (" ".join(row.values.values()) if row.values else row.label) + ("" if row.done else f" ({row.status})")
        for row in rows
    ]
    ax.set_xticks(range(len(rows)), labels, fontsize=7, rotation=30, ha="right")
    keys = list(dict.fromkeys(k for row in rows for k in row.values))
    ax.set_xlabel(" ".join(keys))
    ax.axhline(0.0, color="black", linewidth=0.6)
    ax.set_ylim(-1.0, 1.0)
    ax.set_ylabel("SPC")
    ax.set_title(f"SPC on {name} inputs")
    if by_padding:
        paddings = list(dict.fromkeys(p for row in rows if (p := row_padding(row)) is not None))
        handles = [Patch(facecolor=padding_color(p), label=p) for p in paddings]
        legend = ax.legend(
            handles=handles, fontsize=7, ncols=min(len(handles), 4), loc="lower left", title="padding", title_fontsize=7
        )
        if len(targets) > 1:
            ax.add_artist(legend)
            ax.legend(
                handles=[
                    Patch(facecolor="white", edgecolor="black", hatch=HATCHES[j % len(HATCHES)], label=t)
                    for j, t in enumerate(targets)
                ],
                fontsize=7,
                ncols=min(len(targets), 5),
                loc="lower right",
                title="target",
                title_fontsize=7,
            )
    else:
        ax.legend(fontsize=7, ncols=min(len(targets), 5))
    return fig


def plot_spc(path: Path, rows: Sequence[Row], name: str, targets: Sequence[str]) -> Path:
    """:func:`spc_figure` saved to ``path``."""
    from posenc.viz.figures import save_figure

    return save_figure(spc_figure(rows, name, targets), path)


LINESTYLES = ("-", "--", ":", "-.")  # rows of one padding with other swept values


def distance_curves_figure(rows: Sequence[Row], pivot: str | None = None) -> Any | None:
    """Every row's distance-to-border curves (mean over its seeds; one per pivot value) overlaid,
    one panel per metric; a row's padding (when swept) sets its colour
    (:func:`posenc.viz.figures.padding_color`), its other values the line style. None without curves."""
    from posenc.viz.figures import by_distance_figure, padding_color

    runs: dict[str, dict[str, list[float]]] = {}
    styles: dict[str, dict[str, Any]] = {}
    others: dict[tuple[str, ...], int] = {}  # non-padding values (and pivot value) -> line style
    bins: dict[str, list[str]] = {}
    for row in rows:
        pivoted: list[str | None] = [*pivot_values(row.done, pivot)] or [None]
        for value in pivoted:
            where = {pivot: value} if pivot and value is not None else None
            jobs = [j for j in row.done if not where or override_dict(j.overrides).get(pivot or "") == value]
            if not jobs:
                continue
            row_bins, _ = distance_curves(jobs[0].metrics)
            label = (" ".join(row.values.values()) if row.values else row.label) + (f" ({value})" if where else "")
            runs[label] = {}
            if (padding := row_padding(row)) is not None:
                other = (*(v for k, v in row.values.items() if k != "padding"), str(value))
                style = others.setdefault(other, len(others))
                styles[label] = {"color": padding_color(padding), "ls": LINESTYLES[style % len(LINESTYLES)]}
            for metric, names in row_bins.items():
                # one panel per metric and set of bins: a sweep over tasks mixes grid rings with
                # pixel bands under the same metric name (border_study: accuracy, miou)
                panel = metric if bins.get(metric, names) == names else f"{metric} ({names[0]}..{names[-1]})"
                bins.setdefault(panel, names)
                values = [row.stats(f"test/by_distance/{b}/{metric}", where)[0] for b in names]
                runs[label][panel] = [math.nan if v is None else v for v in values]
    if not bins:
        return None
    return by_distance_figure(bins, {}, runs, styles)


def plot_distance_curves(path: Path, rows: Sequence[Row], pivot: str | None = None) -> Path | None:
    """:func:`distance_curves_figure` saved to ``path`` (None when no row has curves)."""
    from posenc.viz.figures import save_figure

    fig = distance_curves_figure(rows, pivot)
    return None if fig is None else save_figure(fig, path)


def _slug(text: str) -> str:
    return re.sub(r"[^\w.\-]+", "_", text)


def _shown_path(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def sweep_command(sweep_dir: Path) -> str:
    """The command that ran ``sweep_dir``'s jobs, rebuilt from its ``multirun.yaml``: ``python sweep.py
    <preset> <overrides>`` (a group of a grouped preset: ``groups=<label>`` with the sweep's overrides; a
    probe stage: its sweep's command), or ``python train.py -m <overrides>`` for a plain multirun."""
    sweep_dir = Path(sweep_dir)
    spec = _read_json(sweep_dir.parent / GROUPS_FILE)
    if spec is not None and sweep_dir.name in [label for label, _ in spec.get("groups", [])]:
        return shlex.join(
            [
                "python",
                "sweep.py",
                str(spec.get("preset")),
                f"groups={sweep_dir.name}",
                *map(str, spec.get("overrides", [])),
            ]
        )
    cfg = _load_multirun(sweep_dir)
    if cfg is None:
        if sweep_dir.name == PROBE_DIR and (sweep_dir.parent / "multirun.yaml").is_file():
            return f"{sweep_command(sweep_dir.parent)}  (its probe stage)"
        return f"python sweep.py collect {shlex.quote(_shown_path(sweep_dir))}"
    task = [str(o) for o in OmegaConf.select(cfg, "hydra.overrides.task", default=[]) or []]
    name = OmegaConf.select(cfg, "sweep_name", default=None)
    if name:
        return shlex.join(["python", "sweep.py", str(name), *[o for o in task if o != f"sweep={name}"]])
    return shlex.join(["python", "train.py", "-m", *task])


def write_reports(
    sweep_dir: Path, results: Sequence[JobResult], pivot: str | None = None, command: str | None = None
) -> list[Path]:
    """Write ``results.csv``, ``results.md``, ``results_<input>_spc.png`` (PosENet: one per test
    input with completed jobs) and ``results_by_distance.png`` (trainable tasks: every row's
    distance-to-border curves) into ``sweep_dir``; return their paths. ``results.md`` opens with its
    provenance (:mod:`posenc.run.provenance`): commit, ``command`` (default: :func:`sweep_command`; when
    a ``results.md`` is already there, ``python sweep.py collect <dir>``, the jobs' command beside it),
    machine and date."""
    sweep_dir = Path(sweep_dir)
    cfg = _load_multirun(sweep_dir)
    sweep_name = OmegaConf.select(cfg, "sweep_name", default=None) if cfg is not None else None
    pivot = pivot or (OmegaConf.select(cfg, "pivot", default=None) if cfg is not None else None)
    title = f"Sweep {sweep_name}: {sweep_dir}" if sweep_name else f"Sweep {sweep_dir}"
    paths = [write_csv(sweep_dir / "results.csv", results)]
    md = sweep_dir / "results.md"
    paper = OmegaConf.select(cfg, "paper", default=None) if cfg is not None else None
    paper = _plain(paper, resolve=True) if paper is not None else None
    jobs = sweep_command(sweep_dir)
    info = provenance(
        command or (f"python sweep.py collect {shlex.quote(_shown_path(sweep_dir))}" if md.is_file() else jobs)
    )
    if info["command"] != jobs:
        info["jobs run by"] = f"`{jobs}`"
    report = markdown_report(results, title, pivot, paper).split("\n")
    md.write_text("\n".join([*report[:2], *provenance_lines(info), *report[2:]]))
    paths.append(md)
    rows = build_rows(results, pivot)
    inputs, targets, _ = metric_layout([r for r in results if r.completed])
    for name in inputs:
        paths.append(plot_spc(sweep_dir / f"results_{_slug(name)}_spc.png", rows, name, targets))
    curves = plot_distance_curves(sweep_dir / "results_by_distance.png", rows, pivot)
    if curves is not None:
        paths.append(curves)
    return paths


# ----------------------------------------------------------------------------- grouped presets

GROUPS_FILE = "groups.json"  # a grouped sweep's dir: its preset, report and groups ([label, overrides] pairs)
REPORTS = {"atlas": "posenc.analysis.atlas.write_atlas"}  # a grouped preset's ``report:`` -> its writer


def preset_groups(name: str, conf_dir: Path = CONF_DIR) -> tuple[dict[str, list[str]], str | None]:
    """``(groups, report)`` of preset ``name``: its ``groups:`` (label -> override list; each group is
    a multirun of its own, e.g. one model of the position atlas, with its own paddings) and its
    ``report:`` (a writer over all groups, :data:`REPORTS`); ``({}, None)`` for a plain preset."""
    path = Path(conf_dir) / "sweep" / f"{name}.yaml"
    cfg = OmegaConf.load(path) if path.is_file() else OmegaConf.create()
    assert isinstance(cfg, DictConfig), f"{path} holds a list, not a sweep preset"
    groups = _plain(cfg.get("groups") or OmegaConf.create(), resolve=False)
    report = cfg.get("report")
    return {str(k): [str(o) for o in v] for k, v in groups.items()}, (str(report) if report else None)


def select_groups(groups: Mapping[str, list[str]], chosen: str | None) -> dict[str, list[str]]:
    """The groups ``groups=a,b`` names (a label of the preset, or any backbone option: ``[backbone=<it>]``);
    all of them when ``chosen`` is None."""
    if chosen is None:
        return dict(groups)
    from posenc.config.groups import group_options

    backbones = group_options(CONF_DIR)["backbone"]
    picked: dict[str, list[str]] = {}
    for label in [c.strip() for c in chosen.strip("[]").split(",") if c.strip()]:
        if label in groups:
            picked[label] = list(groups[label])
        elif label in backbones:
            picked[label] = [f"backbone={label}"]
        else:
            raise PosencError(
                f"groups={chosen}: {label!r} is not valid; valid: {', '.join(groups)}, or any backbone option"
            )
    if not picked:
        raise PosencError(f"groups={chosen} names no group; valid: {', '.join(groups)}")
    return picked


def group_results(sweep_dir: Path) -> dict[str, list[JobResult]] | None:
    """Every group's jobs of a grouped sweep (:data:`GROUPS_FILE`), in the preset's order; None for a
    plain sweep. A group that never started has no dir and no entry."""
    spec = _read_json(Path(sweep_dir) / GROUPS_FILE)
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


def write_group_reports(sweep_dir: Path, groups: Mapping[str, Sequence[JobResult]]) -> list[Path]:
    """Each group's reports, then the one the grouped preset names (``report:``) over all of them."""
    paths = [p for label, results in groups.items() for p in write_reports(Path(sweep_dir) / label, results)]
    report = (_read_json(Path(sweep_dir) / GROUPS_FILE) or {}).get("report")
    if not report:
        return paths
    if report not in REPORTS:
        raise PosencError(f"report {report!r} of {sweep_dir} is not valid; valid: {', '.join(REPORTS)}")
    from hydra.utils import get_method

    return paths + get_method(REPORTS[report])(Path(sweep_dir), groups)
