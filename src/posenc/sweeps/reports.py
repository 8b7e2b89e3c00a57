"""The files of a sweep report, written into its sweep dir: ``results.csv`` and ``results.md`` (opening with
its provenance: the command that ran the jobs), the figures (``results_<input>_spc.png``,
``results_by_distance.png``: their numbers per row computed here, drawn by :mod:`posenc.viz.sweep_figures`),
and a grouped preset's own report over all its groups (the position atlas)."""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from omegaconf import OmegaConf

from posenc.analysis.atlas import write_atlas
from posenc.errors import PosencError
from posenc.io import read_json
from posenc.run.provenance import provenance, provenance_lines
from posenc.sweeps.collect import PROBE_DIR, JobResult, load_multirun, override_dict, plain
from posenc.sweeps.presets import GROUPS_FILE
from posenc.sweeps.tables import Row, build_rows, markdown_report, metric_layout, pivot_values, write_csv
from posenc.viz.tables import distance_curves

# ----------------------------------------------------------------------------- figures


def row_padding(row: Row) -> str | None:
    """The padding of a row when the sweep varies it (``padding=<name>`` among its swept values)."""
    return row.values.get("padding")


Interval = tuple[float, float]


def row_estimate(row: Row, key: str, where: Mapping[str, str] | None = None) -> tuple[float | None, Interval | None]:
    """A row's ``key`` as a figure draws it: its mean over the seeds and its 95% interval (over seeds the
    t-interval of the mean, of one run the bootstrap interval it recorded: :meth:`Row.interval`; None when
    there is none, or not a finite one)."""
    mean = row.stats(key, where)[0]
    ci = row.interval(key, where) if mean is not None else None
    return mean, (ci if ci is not None and all(math.isfinite(x) for x in ci) else None)


def spc_bars(
    rows: Sequence[Row], name: str, targets: Sequence[str]
) -> tuple[list[str], list[str | None], dict[str, list[tuple[float | None, Interval | None]]], str]:
    """What :func:`posenc.viz.sweep_figures.spc_figure` draws for test input ``name``: the rows' labels
    (their swept values; a row not completed says its status), paddings, ``(mean, 95% interval)`` SPC per
    target and row (:func:`row_estimate`), and the swept keys."""
    labels = [
        (" ".join(row.values.values()) if row.values else row.label) + ("" if row.done else f" ({row.status})")
        for row in rows
    ]
    bars = {t: [row_estimate(row, f"test/{name}/{t}/spc") for row in rows] for t in targets}
    keys = list(dict.fromkeys(k for row in rows for k in row.values))
    return labels, [row_padding(row) for row in rows], bars, " ".join(keys)


def plot_spc(path: Path, rows: Sequence[Row], name: str, targets: Sequence[str]) -> Path:
    """The SPC bars of test input ``name`` saved to ``path``."""
    from posenc.viz.figures import save_figure
    from posenc.viz.sweep_figures import spc_figure

    return save_figure(spc_figure(name, *spc_bars(rows, name, targets)), path)


Curves = tuple[
    dict[str, list[str]],
    dict[str, dict[str, list[float]]],
    dict[str, tuple[str | None, tuple[str, ...]]],
    dict[str, dict[str, list[Interval | None]]],
]


def row_curves(rows: Sequence[Row], pivot: str | None = None) -> Curves:
    """What :func:`posenc.viz.sweep_figures.distance_curves_figure` draws: every row's distance-to-border
    curves (mean over its seeds; one per pivot value) as ``(bins, curves, looks, intervals)``: each panel's
    bins, each curve's values per panel, its padding (when swept) with its other values, and each value's
    95% interval (:func:`row_estimate`; None: none)."""
    curves: dict[str, dict[str, list[float]]] = {}
    looks: dict[str, tuple[str | None, tuple[str, ...]]] = {}
    bins: dict[str, list[str]] = {}
    intervals: dict[str, dict[str, list[Interval | None]]] = {}
    for row in rows:
        pivoted: list[str | None] = [*pivot_values(row.done, pivot)] or [None]
        for value in pivoted:
            where = {pivot: value} if pivot and value is not None else None
            jobs = [j for j in row.done if not where or override_dict(j.overrides).get(pivot or "") == value]
            if not jobs:
                continue
            row_bins, _ = distance_curves(jobs[0].metrics)
            label = (" ".join(row.values.values()) if row.values else row.label) + (f" ({value})" if where else "")
            curves[label], intervals[label] = {}, {}
            looks[label] = (row_padding(row), (*(v for k, v in row.values.items() if k != "padding"), str(value)))
            for metric, names in row_bins.items():
                # one panel per metric and set of bins: a sweep over tasks mixes grid rings with
                # pixel bands under the same metric name (border_study: accuracy, miou)
                panel = metric if bins.get(metric, names) == names else f"{metric} ({names[0]}..{names[-1]})"
                bins.setdefault(panel, names)
                estimates = [row_estimate(row, f"test/by_distance/{b}/{metric}", where) for b in names]
                curves[label][panel] = [math.nan if v is None else v for v, _ in estimates]
                intervals[label][panel] = [ci for _, ci in estimates]
    return bins, curves, looks, intervals


def plot_distance_curves(path: Path, rows: Sequence[Row], pivot: str | None = None) -> Path | None:
    """Every row's distance-to-border curves overlaid, saved to ``path`` (None when no row has curves)."""
    bins, curves, looks, intervals = row_curves(rows, pivot)
    if not bins:
        return None
    from posenc.viz.figures import save_figure
    from posenc.viz.sweep_figures import distance_curves_figure

    return save_figure(distance_curves_figure(bins, curves, looks, intervals), path)


# ----------------------------------------------------------------------------- files


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
    spec = read_json(sweep_dir.parent / GROUPS_FILE)
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
    cfg = load_multirun(sweep_dir)
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
    cfg = load_multirun(sweep_dir)
    sweep_name = OmegaConf.select(cfg, "sweep_name", default=None) if cfg is not None else None
    pivot = pivot or (OmegaConf.select(cfg, "pivot", default=None) if cfg is not None else None)
    title = f"Sweep {sweep_name}: {sweep_dir}" if sweep_name else f"Sweep {sweep_dir}"
    paths = [write_csv(sweep_dir / "results.csv", results)]
    md = sweep_dir / "results.md"
    paper = OmegaConf.select(cfg, "paper", default=None) if cfg is not None else None
    paper = plain(paper, resolve=True) if paper is not None else None
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

GroupReport = Callable[[Path, Mapping[str, Sequence[JobResult]]], list[Path]]
REPORTS: dict[str, GroupReport] = {"atlas": write_atlas}  # a grouped preset's ``report:`` -> its writer


def write_group_reports(sweep_dir: Path, groups: Mapping[str, Sequence[JobResult]]) -> list[Path]:
    """Each group's reports, then the one the grouped preset names (``report:``) over all of them."""
    paths = [p for label, results in groups.items() for p in write_reports(Path(sweep_dir) / label, results)]
    report = (read_json(Path(sweep_dir) / GROUPS_FILE) or {}).get("report")
    if not report:
        return paths
    if report not in REPORTS:
        raise PosencError(f"report {report!r} of {sweep_dir} is not valid; valid: {', '.join(REPORTS)}")
    return paths + REPORTS[report](Path(sweep_dir), groups)
