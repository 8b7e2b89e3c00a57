"""Named sweeps: run a preset of ``conf/sweep/`` as a Hydra multirun and report its results.

    python sweep.py --list                       # the presets and what they study
    python sweep.py NAME [key=value ...]         # run NAME, then collect and report it
    python sweep.py collect SWEEP_DIR            # (re)collect and report an existing sweep dir

A preset with a ``probe:`` list (padding_then_probe, ppp_artifact) has a second stage: after the
multirun, a second multirun through the same launcher (``hydra/launcher=...``) with the command line's
overrides that apply to it (trainer, launcher, loggers, ``data.*``; not the first stage's task, nor
sweeps): one run per completed job and probe (a list of override lists gives several) on the
backbone that job trained, into ``SWEEP_DIR/probe/<job>``, reported like a sweep of its own
(``sweep.py collect SWEEP_DIR/probe``); with ``probe_init: true`` also on the job's backbone at
initialisation, the report then showing init and trained side by side.

A preset with ``groups:`` (the position atlas) runs one multirun per group, each with the group's
overrides, into ``SWEEP_DIR/<group>`` (``groups=a,b`` picks some: a group's label, or any backbone
option; ``parallel=N`` runs N at once, default one per CPU core), then writes the preset's ``report:`` over
all of them (``atlas.png`` / ``.csv`` / ``.md``).

A sweep runs in a fresh ``<paths.output_root>/sweeps/NAME/<timestamp>/`` (one job dir per
job); command-line overrides win over the preset's swept values (``backbone=tiny`` replaces
the swept backbones). The sweep dir gets ``results.csv``, ``results.md`` and
``results_<input>_spc.png``; the results table is printed and the sweep dir is the last line.
Exit status: 0 when every job completed, 1 when some failed or are missing, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from omegaconf import OmegaConf

from posenc.cli.argv import (
    OneLineParser,
    check_dir,
    check_group_overrides,
    hydra_quoted,
    output_root,
    path_value,
    quote_paths,
)
from posenc.config.groups import CONF_DIR
from posenc.config.trust import pop_trust_flags, user_targets
from posenc.errors import PosencError, invalid_choice
from posenc.io import read_json, write_json
from posenc.run.slurm import all_ended, submitit_job_ids, wait_for_jobs
from posenc.sweeps.collect import COMPLETED, PROBE_DIR, collect, group_results
from posenc.sweeps.presets import (
    GROUPS_FILE,
    every_group,
    expand_overrides,
    fold_overrides,
    list_presets,
    preset_groups,
    reserve_sweep_dir,
    select_groups,
)
from posenc.sweeps.probe import probe_command, probe_jobs, probe_settings, write_probe_stage
from posenc.sweeps.reports import write_group_reports, write_reports

ROOT = Path(__file__).resolve().parent


def report(sweep_dir: Path, pivot: str | None = None) -> bool:
    """Collect ``sweep_dir``, write its reports, print ``results.md`` and, last, the sweep dir.
    True when every job completed. A grouped sweep: every group's report, then the preset's own."""
    groups = group_results(sweep_dir)
    if groups is not None:
        expected = len((read_json(sweep_dir / GROUPS_FILE) or {}).get("groups", []))
        ok = len(groups) == expected and all(r.status == COMPLETED for rs in groups.values() for r in rs)
        tables = [p for p in write_group_reports(sweep_dir, groups) if p.suffix == ".md"]
        if tables:  # the preset's own report is written last
            print(tables[-1].read_text())
        print(sweep_dir, flush=True)
        return ok
    results = collect(sweep_dir)
    if pivot is None and sweep_dir.name == PROBE_DIR and probe_settings(sweep_dir.parent)[1]:
        pivot = "probe_stage"  # a probe stage at init and after training: init | trained columns
    paths = write_reports(sweep_dir, results, pivot)
    print(next(p for p in paths if p.suffix == ".md").read_text())
    print(sweep_dir, flush=True)
    return all(r.status == COMPLETED for r in results)


LAUNCHER_GRACE_S = 60  # how long a SLURM sweep's launcher may wait once the cluster says every job has ended


def launch(cmd: list[str], sweep_dir: Path | None = None) -> tuple[int, bool]:
    """Run a multirun ``cmd``; ``(exit status, interrupted by Ctrl-C)``. For a SLURM sweep into ``sweep_dir``,
    a launcher still waiting :data:`LAUNCHER_GRACE_S` after the cluster ended every job of the sweep is
    stopped (exit status 1): submitit waits forever on a job the accounting lost track of, e.g. an array
    cancelled before any task started."""
    proc = subprocess.Popen(cmd)
    ended_since: float | None = None
    try:
        while True:
            try:
                return proc.wait(timeout=10), False
            except subprocess.TimeoutExpired:
                pass
            jobs = submitit_job_ids(sweep_dir) if sweep_dir is not None else {}
            if not jobs or not all_ended(jobs.values()):
                ended_since = None
                continue
            ended_since = ended_since or time.time()
            if time.time() - ended_since >= LAUNCHER_GRACE_S:
                print(
                    f"sweep: the launcher still waits for SLURM jobs that ended {LAUNCHER_GRACE_S}s ago "
                    f"({' '.join(jobs.values())}): stopping it",
                    file=sys.stderr,
                    flush=True,
                )
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                return 1, False
    except KeyboardInterrupt:  # the child got the SIGINT too: let it record its status, then report
        try:
            return proc.wait(timeout=30), True
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            proc.send_signal(signal.SIGKILL)
            return proc.wait(), True


def wait_for_cluster(sweep_dir: Path) -> None:
    """After a SLURM sweep's launcher stopped early (a job ended without a result: submitit's launcher gives up
    on the whole sweep), wait for the jobs still pending or running on the cluster, so that the report that
    follows shows how each ended."""
    jobs = submitit_job_ids(sweep_dir)
    if jobs:
        wait_for_jobs(jobs.values())


def run_groups(
    name: str, groups: dict[str, list[str]], report_name: str | None, overrides: list[str], parallel: int | None = None
) -> int:
    """A grouped preset: one multirun per group into ``SWEEP_DIR/<group>``, ``parallel`` at a time
    (default: one per CPU core; each then gets its share of the cores as torch threads: the atlas's small
    readouts are bound by Python's per-step work, which one process runs on one core), then the
    report. A group's own overrides come last: they state what its model needs (a ViT has no padding
    to sweep)."""
    given = [o.split("=", 1)[1] for o in overrides if o.startswith("hydra.sweep.dir=")]
    overrides = [o for o in overrides if not o.startswith("hydra.sweep.dir=")]
    if given:
        check_dir("hydra.sweep.dir", given[-1])
    sweep_dir = (
        Path(path_value("hydra.sweep.dir", given[-1])).resolve()
        if given
        else reserve_sweep_dir(output_root(overrides), name)
    )
    spec = {"preset": name, "report": report_name, "groups": list(groups.items()), "overrides": overrides}
    write_json(sweep_dir / GROUPS_FILE, spec)  # atomic; pairs: ordered groups
    cores = os.cpu_count() or 1
    parallel = max(1, min(parallel or cores, len(groups)))
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, cores // parallel))} if parallel > 1 else None
    print(f"sweep {name}: {len(groups)} groups into {sweep_dir}, {parallel} at a time", flush=True)
    started = time.time()
    pending, running, rc = list(groups.items()), [], 0
    try:
        while pending or running:
            while pending and len(running) < parallel:
                label, group = pending.pop(0)
                print(f"sweep {name}, group {label}: {' '.join(group)}", flush=True)
                log = open(sweep_dir / f"{label}.log", "w") if parallel > 1 else None  # noqa: SIM115
                cmd = [
                    sys.executable,
                    str(ROOT / "train.py"),
                    "-m",
                    f"sweep={name}",
                    f"hydra.sweep.dir={hydra_quoted(str(sweep_dir / label))}",
                    *overrides,
                    *group,
                ]
                running.append((label, subprocess.Popen(cmd, env=env, stdout=log, stderr=log), log))
            time.sleep(0.2)
            for item in [r for r in running if r[1].poll() is not None]:
                running.remove(item)
                label, proc, log = item
                rc = rc or proc.returncode
                if log is not None:
                    log.close()
                print(
                    f"sweep {name}, group {label}: exit {proc.returncode}"
                    + (f" (its output: {sweep_dir / f'{label}.log'})" if log is not None else ""),
                    flush=True,
                )
    except KeyboardInterrupt:  # the children got the SIGINT too: let them record their status, then report
        for _, proc, _ in running:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
        report(sweep_dir)
        return 130
    spec["wall_s"] = round(time.time() - started, 1)  # the atlas report states it beside the jobs' times
    write_json(sweep_dir / GROUPS_FILE, spec)
    ok = report(sweep_dir)
    return 0 if ok and rc == 0 else 1


CHECKED_JOBS = 16  # check_jobs composes at most this many jobs (0.2 s each) looking for one that runs


def check_jobs(name: str, overrides: list[str], group: list[str]) -> None:
    """Refuse, before any sweep dir is made, command-line ``overrides`` no job of preset ``name`` could run
    (``data.num_trian=3``): the jobs of its first ``group`` (its sweeper's params expanded, as Hydra would)
    composed and validated as ``train.py`` does, until one passes; the first one's error when none does.
    An override that only some jobs refuse (a key of one task of two) is left to those jobs, as ever."""
    from posenc.config.compose import validate_job  # imports the models (torch): never for sweep.py collect

    preset = OmegaConf.load(CONF_DIR / "sweep" / f"{name}.yaml")
    params = OmegaConf.select(preset, "hydra.sweeper.params", default=None)
    swept = {str(k): str(v) for k, v in (OmegaConf.to_container(params) if params is not None else {}).items()}
    jobs = expand_overrides(swept, [f"sweep={name}", *overrides, *group])
    error: PosencError | None = None
    for job in jobs[:CHECKED_JOBS]:
        try:
            validate_job(job)
            return
        except PosencError as exc:
            error = error or exc
    if error is not None:
        raise error


def run_sweep(name: str, overrides: list[str]) -> int:
    """Run preset ``name`` with ``overrides`` as ``train.py -m`` in a fresh sweep dir; report it."""
    presets = list_presets(CONF_DIR)
    if name not in presets:
        raise invalid_choice("sweep", name, sorted(presets))
    overrides, trusted = pop_trust_flags([o for o in overrides if o not in ("-m", "--multirun")])
    groups, report_name = preset_groups(name)
    chosen = [o.split("=", 1)[1] for o in overrides if o.startswith("groups=")]
    parallel = [o.split("=", 1)[1] for o in overrides if o.startswith("parallel=")]
    overrides = [o for o in overrides if not o.startswith(("groups=", "parallel="))]
    overrides = quote_paths(fold_overrides(name, overrides))
    check_group_overrides(overrides)
    if parallel and not (parallel[-1].isdigit() and int(parallel[-1]) >= 1):
        raise PosencError(f"parallel={parallel[-1]} is not valid; valid: an int >= 1 (groups run at once)")
    if not groups and (chosen or parallel):
        key, value = ("groups", chosen[-1]) if chosen else ("parallel", parallel[-1])
        raise PosencError(
            f"{key}={value} is not valid for sweep {name}: it has no groups; valid: a preset with groups (atlas)"
        )
    picked = select_groups(groups, chosen[-1] if chosen else None) if groups else {}
    picked = {label: [*every_group(name), *group] for label, group in picked.items()}
    check_jobs(name, overrides, next(iter(picked.values()), []))  # before a sweep dir exists
    if groups:
        return run_groups(name, picked, report_name, overrides, int(parallel[-1]) if parallel else None)
    given = [o.split("=", 1)[1] for o in overrides if o.startswith("hydra.sweep.dir=")]
    if given:
        sweep_dir = Path(path_value("hydra.sweep.dir", given[-1])).resolve()
        check_dir("hydra.sweep.dir", given[-1])
    else:
        sweep_dir = reserve_sweep_dir(output_root(overrides), name)
        overrides = [f"hydra.sweep.dir={hydra_quoted(str(sweep_dir))}", *overrides]
    cmd = [sys.executable, str(ROOT / "train.py"), "-m", f"sweep={name}", *overrides]
    print(f"sweep {name}: {sweep_dir}", flush=True)
    rc, interrupted = launch(cmd, sweep_dir)
    if rc and not interrupted:
        wait_for_cluster(sweep_dir)
    if not (sweep_dir / "multirun.yaml").exists():
        if not given and not any(sweep_dir.iterdir()):
            sweep_dir.rmdir()  # the multirun never started (its error is already on stderr)
        return rc or 1
    ok = report(sweep_dir)
    if interrupted:
        return 130
    # the probe stage takes each job's backbone from its files: only code posenc ships or the user named
    probes = probe_jobs(sweep_dir, collect(sweep_dir), [*trusted, *user_targets(overrides)])
    if probes:  # the second stage: one multirun on every backbone the first stage trained, same launcher
        probe_dir = write_probe_stage(sweep_dir, probes)
        print(f"sweep {name}, probe stage: {len(probes)} runs into {probe_dir}", flush=True)
        probe_rc, interrupted = launch(
            [sys.executable, str(ROOT / "train.py"), *probe_command(sweep_dir, probes, overrides)], probe_dir
        )
        if probe_rc and not interrupted:
            wait_for_cluster(probe_dir)
        rc = rc or probe_rc
        ok = report(probe_dir) and ok if (probe_dir / "multirun.yaml").exists() else False
        if interrupted:
            return 130
    return 0 if ok and rc == 0 else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineParser(
        prog="sweep.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.split("\n\n")[1:]),
    )
    parser.add_argument("--list", action="store_true", help="list the sweep presets and exit")
    parser.add_argument("name", nargs="?", help="a preset of conf/sweep/, or 'collect'")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="key=value overrides, or collect's SWEEP_DIR")
    ns = parser.parse_args(argv)
    try:
        if ns.list:
            presets = list_presets(CONF_DIR)
            width = max(map(len, presets), default=0)
            for preset, description in presets.items():
                print(f"{preset:<{width}}  {description}")
            return 0
        if ns.name is None:
            parser.print_usage(sys.stderr)
            print("error: name a sweep (see --list) or 'collect SWEEP_DIR'", file=sys.stderr)
            return 2
        if ns.name == "collect":
            if len(ns.args) != 1:
                print("error: usage: sweep.py collect SWEEP_DIR", file=sys.stderr)
                return 2
            sweep_dir = Path(ns.args[0]).resolve()
            if not sweep_dir.is_dir():
                raise PosencError(f"no sweep dir {str(sweep_dir)!r}")
            return 0 if report(sweep_dir) else 1
        return run_sweep(ns.name, list(ns.args))
    except PosencError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
