"""The probe stage of a two-stage preset (``probe:`` in its config: padding_then_probe, ppp_artifact): after
the first multirun, one run per completed job and probe on the backbone that job trained (and, with
``probe_init: true``, on the same backbone at initialisation), launched as a second multirun of generated
configs into ``SWEEP_DIR/probe`` and reported like a sweep of its own."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from posenc.config.groups import CONF_DIR, group_options
from posenc.config.trust import check_overrides
from posenc.errors import PosencError
from posenc.sweeps.collect import (
    PROBE_DIR,
    PROBE_GROUP,
    PROBE_JOBS_FILE,
    JobResult,
    load_multirun,
    plain,
)

INIT_CHECKPOINT = Path("checkpoints") / "init.ckpt"  # a trainable task's backbone before training
PROBE_CONF = ".conf"  # inside the probe dir: the search path holding PROBE_GROUP
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
    cfg = load_multirun(sweep_dir)
    probe = OmegaConf.select(cfg, "probe", default=None) if cfg is not None else None
    if not probe:
        return [], False
    probe = plain(probe, resolve=False)
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
    return plain(cfg)


def carried_overrides(overrides: Sequence[str]) -> list[str]:
    """The first stage's command-line overrides that apply to its probe stage too: the launcher and its
    settings, the trainer, loggers, callbacks, data sizes, paths, the backbone's architecture keys
    (``hydra/launcher=submitit_slurm trainer=gpu data.num_train=64``). Not carried: the first stage's
    task and what it trained with (``task``, ``task.*``, ``readout``, ``invariance``, ...), what each probe
    takes from its trained job (:data:`PROBE_IDENTITY`), and sweeps (a probe runs once per trained job)."""
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
    multirun = load_multirun(sweep_dir)
    name = OmegaConf.select(multirun, "sweep_name", default=None) if multirun is not None else None
    return [
        "-m",
        f"hydra.searchpath=['file://{probe_dir / PROBE_CONF}']",
        f"+{PROBE_GROUP}={','.join(j.config for j in jobs)}",
        f"hydra.sweep.dir={probe_dir}",
        *([f"sweep_name={name}"] if name else []),
        *carried_overrides(overrides),
    ]
