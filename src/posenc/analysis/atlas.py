"""The position atlas (``python sweep.py atlas``; docs/atlas.md): how much absolute position every tap
of every model holds, as one table and one figure.

A cell of the atlas is one model x padding x weights. Its two runs (the sweep's jobs) are PosENet
with one readout per tap alone plus the multi-tap readout (``task.tap_readouts=each``; Islam et al.
ICLR 2020, the tap ablation; H and G SPC on natural images) and PPP (Lin et al. ICML 2023; its SNR and
relative energy per tap, ``posenc.metrics.ppp``). Depth is put on one axis for every family as the
tap's receptive field over the image size (``posenc.models.receptive_field.tap_depths``); a tap that
depends on every pixel (attention, squeeze-excitation) is "global".

Pure functions over collected jobs (:class:`posenc.sweeps.collect.JobResult`): no Trainer, no model, no
torch (``sweep.py collect`` writes the atlas); the figure is drawn by :mod:`posenc.viz.atlas_figure`.
A cell whose weights are not on the machine is marked ``no weights`` (its job failed with
:class:`~posenc.errors.MissingWeights`), never filled with anything else; any other failure
is recorded with its one-line error, and the atlas goes on.

Every number carries its uncertainty. A cell run with several seeds (``python sweep.py atlas seed=0,1,2``:
the seeds of a model are jobs of its group, in the same cell) is the mean over them, with their sample std
and the 95% t-interval of the mean (:func:`~posenc.metrics.intervals.seed_interval`); a cell of one seed is
its run's number with the 95% bootstrap interval the run recorded (``<key>/ci_low``, ``<key>/ci_high``; none
when it recorded none). ``atlas.md`` writes them as ``.952 [.941, .960]``, marked ``○`` where the interval
contains 0, says for each difference between paddings whether it exceeds its interval, and, over several
seeds, how far the seeds spread.
"""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from posenc.metrics.intervals import contains, seed_interval
from posenc.viz.tables import CONTAINS_0, format_estimate, interval, short_number

ALL_TAPS = "all"  # the multi-tap readout's column
NO_WEIGHTS = "no weights"
ZERO_MARK = "○"  # atlas.md: the 95% interval of the number before it contains 0
MEASURES = ("H_spc", "G_spc", "ppp_snr", "ppp_rel_energy")  # the measured columns, each with its uncertainty
UNCERTAINTY = ("std", "ci_low", "ci_high", CONTAINS_0)


def measure_columns(name: str) -> tuple[str, ...]:
    """Measured column ``name`` and its uncertainty: ``<name>_std`` (the seeds' sample std), ``<name>_ci_low``,
    ``<name>_ci_high`` (its 95% interval) and ``<name>_ci_contains_0`` (whether that interval holds 0)."""
    return (name, *(f"{name}_{suffix}" for suffix in UNCERTAINTY))


COLUMNS = (
    "model",
    "padding",
    "weights",
    "tap",
    "rf_px",
    "stride",
    "rf_rel",
    *(column for name in MEASURES for column in measure_columns(name)),
    "n_seeds",
    "posenet_s",
    "ppp_s",
    "note",
)
PADDING_ORDER = ("zeros", "reflect", "replicate", "circular", "partial", "none")
ALL_H = "test/natural/H/spc"  # the multi-tap readout's H SPC: what the padding differences compare


@dataclass
class Cell:
    """One model x padding x weights: its PosENet and PPP jobs, one per seed (empty when the sweep has none)."""

    model: str
    padding: str
    weights: str
    posenet: list[Any] = field(default_factory=list)
    ppp: list[Any] = field(default_factory=list)

    def done(self, kind: str) -> list[Any]:
        """The completed jobs of ``kind`` (``posenet``, ``ppp``)."""
        return [j for j in getattr(self, kind) if j.completed]

    @property
    def n_seeds(self) -> int:
        """The completed seeds of the cell (of its PosENet or its PPP runs, whichever has more)."""
        return max(len(self.done("posenet")), len(self.done("ppp")))


@dataclass(frozen=True)
class Estimate:
    """A cell's number over its seeds: the mean, the seeds' sample std (None for one seed), its 95% interval
    (over seeds the t-interval of the mean; of one run the bootstrap interval it recorded, None when it
    recorded none) and each seed's value (by seed: what a paired difference pairs)."""

    value: float
    std: float | None
    interval: tuple[float, float] | None
    seeds: dict[str, float]

    def columns(self, name: str) -> dict[str, Any]:
        """The row's :func:`measure_columns` of ``name``."""
        low, high = self.interval if self.interval is not None else (None, None)
        holds_0 = contains(self.interval) if self.interval is not None else None
        return dict(zip(measure_columns(name), (self.value, self.std, low, high, holds_0)))


def _seed(job: Any) -> str:
    """The seed a job ran with: its override, else what its run recorded, else its job dir's name."""
    return str(override_value(job.overrides, "seed") or job.metrics.get("seed", job.name))


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def estimate(jobs: Sequence[Any], key: str) -> Estimate | None:
    """``key`` over the completed ``jobs`` (a cell's seeds) as an :class:`Estimate`; None when none measured it."""
    measured = [(j, float(j.metrics[key])) for j in jobs if j.completed and _number(j.metrics.get(key))]
    if not measured:
        return None
    values = [v for _, v in measured]
    seeds = [_seed(j) for j, _ in measured]
    by_seed = dict(zip(seeds, values)) if len(set(seeds)) == len(seeds) else {}
    if len(values) == 1:
        ci = interval(measured[0][0].metrics, key)
        finite = ci is not None and all(math.isfinite(x) for x in ci)
        return Estimate(values[0], None, ci if finite else None, by_seed)
    return Estimate(statistics.fmean(values), statistics.stdev(values), seed_interval(values), by_seed)


def difference(a: Estimate, b: Estimate) -> tuple[float, tuple[float, float] | None]:
    """``a - b`` and its 95% interval: over the seeds both ran, when two or more, the mean of the paired
    differences and its t-interval (a seed pairs the same data); else ``a.value - b.value`` with the two
    intervals combined as for independent numbers (each side ``sqrt(a's half-width² + b's²)``: wider than
    the truth when both were scored on the same test images); None when either has no interval."""
    common = [s for s in a.seeds if s in b.seeds]
    if len(common) >= 2:
        paired = [a.seeds[s] - b.seeds[s] for s in common]
        return statistics.fmean(paired), seed_interval(paired)
    delta = a.value - b.value
    if a.interval is None or b.interval is None:
        return delta, None
    low = delta - math.hypot(a.value - a.interval[0], b.interval[1] - b.value)
    high = delta + math.hypot(a.interval[1] - a.value, b.value - b.interval[0])
    return delta, (low, high)


def _job_setting(job: Any, key: str) -> Any:
    """``key`` of a job's resolved config (``config.yaml``), else of its overrides, else None."""
    if job.job_dir is not None and (job.job_dir / "config.yaml").is_file():
        from posenc.io import load_yaml

        config = load_yaml(job.job_dir / "config.yaml", "the config.yaml a run writes")
        value = OmegaConf.select(config, key, default=None)
        if value is not None:
            return value
    for override in job.overrides:
        if override.startswith(f"{key}="):
            return override.split("=", 1)[1]
    return None


def _kind(job: Any) -> str | None:
    """``posenet`` or ``ppp`` (the job's task), from its metrics or its overrides."""
    task = str(
        job.metrics.get("task")
        or override_value(job.overrides, "experiment")
        or override_value(job.overrides, "task")
        or ""
    )
    return "ppp" if "ppp" in task else "posenet" if "posenet" in task else None


def _note(job: Any, kind: str) -> str | None:
    """``no weights``, or ``<kind> <status>: <error>`` (the error's type dropped) for a job that did not complete."""
    if job is None or job.completed:
        return None
    error = job.error or ""
    if error.startswith("MissingWeights"):
        return NO_WEIGHTS
    return f"{kind} {job.status}: {error.split(': ', 1)[-1]}" if error else f"{kind} {job.status}"


@dataclass
class CellJob:
    """One (padding, seed) of an atlas-engine job (``task=atlas``, :mod:`posenc.tasks.atlas`), read back as
    the job a per-cell run was: its metrics, its status (``failed`` with the one line the model gave for
    that padding), its engine time, and its job's dir (for the job's config) and overrides."""

    job_dir: Path | None
    overrides: list[str]
    status: str
    metrics: dict[str, Any]
    error: str | None = None
    wall_time_s: float | None = None

    @property
    def name(self) -> str:
        return self.job_dir.name if self.job_dir is not None else ""

    @property
    def completed(self) -> bool:
        return self.status == "completed"


ENGINE_PREFIX = "atlas/"


def engine_job(job: Any) -> bool:
    """Whether ``job`` ran the atlas engine (one job per model: ``task=atlas``)."""
    return str(job.metrics.get("task") or override_value(job.overrides, "task") or "") == "atlas"


def engine_cells(job: Any) -> list[CellJob]:
    """The (padding, seed) cells of an atlas-engine ``job``: its ``atlas/<padding>/s<seed>/<key>`` metrics as
    one :class:`CellJob` each; a job that did not complete is one failed cell per padding it was to run."""
    if not job.completed:
        paddings = _job_setting(job, "task.paddings") or ["?"]
        return [
            CellJob(job.job_dir, [f"padding={p}", *job.overrides], job.status, {"padding": str(p)}, job.error)
            for p in paddings
        ]
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for key, value in job.metrics.items():
        parts = key.split("/", 3)
        if len(parts) == 4 and parts[0] == "atlas" and parts[2].startswith("s") and parts[2][1:].lstrip("-").isdigit():
            found.setdefault((parts[1], parts[2][1:]), {})[parts[3]] = value
    cells = []
    for (padding, seed), metrics in found.items():
        error = metrics.pop("error", None)
        metrics.update({"padding": padding, "seed": int(seed)})
        seconds = sum(float(metrics.get(f"atlas/time/{part}_s") or 0.0) for part in ("forward", "readout", "other"))
        cells.append(
            CellJob(
                job.job_dir,
                [f"padding={padding}", f"seed={seed}", *job.overrides],
                "failed" if error else "completed",
                metrics,
                str(error) if error else None,
                seconds or None,
            )
        )
    return cells


def atlas_cells(groups: Mapping[str, Sequence[Any]]) -> list[Cell]:
    """The cells of an atlas sweep: ``groups`` maps a model's label to its jobs (one sub-sweep per
    model; its seeds are jobs of the same cell; an atlas-engine job holds all of a model's cells,
    :func:`engine_cells`). Cells are ordered by model (the groups' order), then padding
    (:data:`PADDING_ORDER`)."""
    cells: dict[tuple[str, str, str], Cell] = {}
    for model, jobs in groups.items():
        for job in jobs:
            if engine_job(job):
                for part in engine_cells(job):
                    padding = str(part.metrics.get("padding") or "?")
                    weights = _job_setting(job, "backbone.weights")
                    label = "random init" if weights in (None, "null") else str(weights)
                    cell = cells.setdefault((model, padding, label), Cell(model, padding, label))
                    cell.posenet.append(part)
                    if part.completed and any(k.startswith("ppp/") for k in part.metrics) or not part.completed:
                        cell.ppp.append(part)
                continue
            kind = _kind(job)
            if kind is None:
                continue
            # the choice a run records, else (a job that failed before it ran) the override that swept it
            padding = str(job.metrics.get("padding") or override_value(job.overrides, "padding") or "?")
            weights = _job_setting(job, "backbone.weights")
            label = "random init" if weights in (None, "null") else str(weights)
            cell = cells.setdefault((model, padding, label), Cell(model, padding, label))
            getattr(cell, kind).append(job)
    order = {m: i for i, m in enumerate(groups)}
    return sorted(cells.values(), key=lambda c: (order[c.model], _padding_rank(c.padding), c.weights))


def override_value(overrides: Sequence[str], key: str) -> str | None:
    return next((o.split("=", 1)[1] for o in overrides if o.startswith(f"{key}=")), None)


def _padding_rank(padding: str) -> int:
    return PADDING_ORDER.index(padding) if padding in PADDING_ORDER else len(PADDING_ORDER)


def _taps(cell: Cell) -> list[str]:
    """The cell's taps in depth order (from whichever of its jobs recorded them)."""
    taps: list[str] = []
    for job in [*cell.posenet, *cell.ppp]:
        for key in job.metrics:
            parts = key.split("/")
            if len(parts) == 3 and parts[0] in ("tap", "ppp") and parts[2] in ("rf_px", "snr") and parts[1] not in taps:
                taps.append(parts[1])
    return sorted(taps, key=lambda t: int(t[1:]) if t[1:].isdigit() else 0)


def _wall(jobs: Sequence[Any]) -> float | None:
    """The jobs' wall time, summed over the seeds (None when none recorded one)."""
    times = [float(j.wall_time_s) for j in jobs if j.wall_time_s is not None]
    return sum(times) if times else None


def _measured(name: str, jobs: Sequence[Any], key: str) -> dict[str, Any]:
    found = estimate(jobs, key)
    return found.columns(name) if found is not None else {}


def atlas_rows(cells: Sequence[Cell]) -> list[dict[str, Any]]:
    """The long-form table: one row per cell and tap (``rf_rel`` None: global), then the cell's
    multi-tap readout (tap ``all``); a cell without a completed job gets one row with its note. Every
    measured column comes with its uncertainty (:func:`measure_columns`, :func:`estimate`)."""
    rows = []
    blank = dict.fromkeys(COLUMNS)
    for cell in cells:
        notes = [
            n
            for kind, name in (("posenet", "PosENet"), ("ppp", "PPP"))
            for j in getattr(cell, kind)
            if (n := _note(j, name))
        ]
        uneven = [int(j.metrics["uneven/count"]) for j in cell.done("posenet") if j.metrics.get("uneven/count")]
        if uneven:  # Alsallakh et al. ICLR 2021: strided layers that read their padding on one side only
            notes.append(f"uneven padding: {max(uneven)} strided layer{'s' if max(uneven) > 1 else ''}")
        note = NO_WEIGHTS if NO_WEIGHTS in notes else "; ".join(dict.fromkeys(notes))
        base = {
            "model": cell.model,
            "padding": cell.padding,
            "weights": cell.weights,
            "n_seeds": cell.n_seeds,
            "posenet_s": _wall(cell.posenet),
            "ppp_s": _wall(cell.ppp),
            "note": note,
        }
        posenet, ppp = cell.done("posenet"), cell.done("ppp")
        first = posenet[0].metrics if posenet else {}
        taps = _taps(cell)
        if not taps and not posenet:
            rows.append({**blank, **base, "tap": None})
            continue
        for tap in taps:
            rows.append(
                {
                    **blank,
                    **base,
                    "tap": tap,
                    "rf_px": first.get(f"tap/{tap}/rf_px"),
                    "stride": first.get(f"tap/{tap}/stride"),
                    "rf_rel": first.get(f"tap/{tap}/rf_rel"),
                    **_measured("H_spc", posenet, f"tap/{tap}/natural/H/spc"),
                    **_measured("G_spc", posenet, f"tap/{tap}/natural/G/spc"),
                    **_measured("ppp_snr", ppp, f"ppp/{tap}/snr"),
                    **_measured("ppp_rel_energy", ppp, f"ppp/{tap}/rel_energy"),
                }
            )
        if posenet:
            rows.append(
                {
                    **blank,
                    **base,
                    "tap": ALL_TAPS,
                    **_measured("H_spc", posenet, ALL_H),
                    **_measured("G_spc", posenet, "test/natural/G/spc"),
                }
            )
    return rows


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) < 1000 else f"{value:.3g}"
    return str(value)


def _csv_value(value: Any) -> str:
    """A cell of ``atlas.csv``: empty for None, ``true`` / ``false``, numbers to 10 significant digits."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:.10g}" if isinstance(value, float) else str(value)


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(COLUMNS))
        writer.writeheader()
        for row in rows:
            writer.writerow({c: _csv_value(row.get(c)) for c in COLUMNS})
    return path


def shown(row: Mapping[str, Any], name: str, spec: str = ".3f") -> str:
    """Measured column ``name`` of ``row`` as ``atlas.md`` writes it: ``.952 [.941, .960]``
    (:func:`~posenc.viz.tables.format_estimate`), :data:`ZERO_MARK` after an interval that contains 0;
    empty when not measured."""
    value = row.get(name)
    if value is None:
        return ""
    low, high = row.get(f"{name}_ci_low"), row.get(f"{name}_ci_high")
    ci = (low, high) if low is not None and high is not None else None
    return format_estimate(value, interval=ci, spec=spec) + (ZERO_MARK if row.get(f"{name}_{CONTAINS_0}") else "")


def _marked(value: float, ci: tuple[float, float] | None) -> str:
    return format_estimate(value, interval=ci) + (ZERO_MARK if ci is not None and contains(ci) else "")


def padding_differences(cells: Sequence[Cell]) -> list[str]:
    """``atlas.md``'s section on the paddings: per model, all-taps H SPC of each padding minus each later
    one's (:data:`PADDING_ORDER`) with the difference's 95% interval (:func:`difference`), then per pair in
    which models the difference exceeds its interval (a finding) and in which its interval contains 0 (not
    one); none without two paddings of a model."""
    by_model: dict[tuple[str, str], dict[str, Estimate]] = {}
    for cell in cells:
        found = estimate(cell.done("posenet"), ALL_H)
        if found is not None:
            by_model.setdefault((cell.model, cell.weights), {})[cell.padding] = found
    paddings = sorted({p for ests in by_model.values() for p in ests}, key=_padding_rank)
    pairs = [
        (a, b)
        for i, a in enumerate(paddings)
        for b in paddings[i + 1 :]
        if any(a in ests and b in ests for ests in by_model.values())
    ]
    if not pairs:
        return []
    lines = [
        "## Padding differences",
        "",
        "All-taps H SPC of one padding minus another's, per model, [its 95% interval]: over the seeds both ran "
        "the mean of the paired differences [their t-interval]; of one run each, the two runs' intervals combined "
        f"as if independent (wider than the truth: both scored the same test images). {ZERO_MARK}: the interval "
        "contains 0, the difference is not a finding.",
        "",
        "| model | weights | " + " | ".join(f"{a} − {b}" for a, b in pairs) + " |",
        "|---|---|" + "---|" * len(pairs),
    ]
    verdicts: dict[tuple[str, str], dict[str, list[str]]] = {pair: {} for pair in pairs}
    for (model, weights), ests in by_model.items():
        texts = []
        name = model if weights == "random init" else f"{model} ({weights})"
        for a, b in pairs:
            if a not in ests or b not in ests:
                texts.append("")
                continue
            delta, ci = difference(ests[a], ests[b])
            texts.append(_marked(delta, ci))
            verdict = "no interval" if ci is None else "within" if contains(ci) else a if delta > 0 else b
            verdicts[(a, b)].setdefault(verdict, []).append(name)
        lines.append(f"| {model} | {weights} | " + " | ".join(texts) + " |")
    lines.append("")
    for (a, b), said in verdicts.items():
        parts = [f"{side} higher beyond the interval in {', '.join(said[side])}" for side in (a, b) if side in said]
        if "within" in said:
            parts.append(f"not a finding (the interval contains 0) in {', '.join(said['within'])}")
        if "no interval" in said:
            parts.append(f"no interval in {', '.join(said['no interval'])}")
        lines.append(f"- {a} vs {b}: " + "; ".join(parts) + ".")
    return [*lines, ""]


def _spread(rows: Sequence[Mapping[str, Any]], name: str, relative: bool = False) -> str:
    """``median / max (where)`` of column ``name``'s std over ``rows`` (``relative``: std / mean)."""
    spreads = [
        (r[f"{name}_std"] / abs(r[name]) if relative else r[f"{name}_std"], r)
        for r in rows
        if r.get(f"{name}_std") is not None and (not relative or r.get(name))
    ]
    if not spreads:
        return ""
    spec = ".2g" if relative else ".3f"
    top, at = max(spreads, key=lambda s: s[0])
    median = statistics.median(s for s, _ in spreads)
    return f"{short_number(median, spec)} / {short_number(top, spec)} ({at['model']} {at['padding']} {at['tap']})"


def seed_spread(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """``atlas.md``'s section on the seeds, when a cell has two or more: per model and per padding, the
    median and the largest sample std over seeds of its cells' numbers (model x padding x tap); none else."""
    seeded = [r for r in rows if (r.get("n_seeds") or 0) >= 2 and r.get("tap") is not None]
    if not seeded:
        return []
    counts = sorted({r["n_seeds"] for r in seeded})
    lines = [
        "## Seed spread",
        "",
        f"The sample std over seeds ({' to '.join(map(str, dict.fromkeys([counts[0], counts[-1]])))} per cell) of "
        "every cell and tap's numbers, median / max (where) over the cells of a model and of a padding; PPP "
        "relative energy's std relative to its mean.",
        "",
        "| model / padding | cells | H SPC std | G SPC std | PPP relative energy std / mean |",
        "|---|---|---|---|---|",
    ]
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in seeded:
        model = row["model"] if row["weights"] == "random init" else f"{row['model']} ({row['weights']})"
        groups.setdefault(model, []).append(row)
    for padding in sorted({r["padding"] for r in seeded}, key=_padding_rank):
        groups[f"padding {padding}"] = [r for r in seeded if r["padding"] == padding]
    for label, group in groups.items():
        columns = [_spread(group, "H_spc"), _spread(group, "G_spc"), _spread(group, "ppp_rel_energy", relative=True)]
        lines.append(f"| {label} | {len(group)} | " + " | ".join(columns) + " |")
    return [*lines, ""]


def markdown(
    rows: Sequence[Mapping[str, Any]],
    wall_s: float | None = None,
    forward_s: float | None = None,
    sections: Sequence[str] = (),
    sweep_wall_s: float | None = None,
) -> str:
    """``atlas.md``: one line per cell: H SPC per tap (with its receptive field / image size), the
    multi-tap readout, PPP per tap, the weights, the seeds and the cell's wall time, every number with its
    95% interval (:func:`shown`); then ``sections`` (lines: :func:`padding_differences`,
    :func:`seed_spread`) and the atlas's wall time."""
    seeds = sorted({r["n_seeds"] for r in rows if r.get("n_seeds")})
    lines = [
        "# Position atlas",
        "",
        "H SPC of a PosENet readout on each tap alone (receptive field / image size in brackets; `g`: "
        "global), of the readout on all taps, and PPP per tap (Lin et al. 2023) as relative energy / SNR "
        "(docs/ppp.md: relative energy is the one to compare across depths and weights). "
        "Random init unless the weights column says otherwise.",
        "",
        "Every number [its 95% interval]: over several seeds the mean [the t-interval of the mean over the "
        "seeds], of one seed the run's number [the bootstrap interval it recorded over its test images; none "
        f"where it recorded none]. {ZERO_MARK}: the interval contains 0."
        + (f" Seeds per cell: {', '.join(map(str, seeds))}." if seeds else ""),
        "",
        "| model | padding | weights | H SPC per tap | all taps H / G | PPP relative energy / SNR per tap "
        "| seeds | s (PosENet + PPP) | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    cells: dict[tuple[str, str, str], list[Mapping[str, Any]]] = {}
    for row in rows:
        cells.setdefault((row["model"], row["padding"], row["weights"]), []).append(row)
    for (model, padding, weights), group in cells.items():
        taps = [r for r in group if r["tap"] not in (None, ALL_TAPS)]
        full = next((r for r in group if r["tap"] == ALL_TAPS), None)
        spc = " ".join(
            f"{r['tap']} {shown(r, 'H_spc', '.2f')} ({'g' if r['rf_rel'] is None else _fmt(r['rf_rel'], 2)})"
            for r in taps
            if r["H_spc"] is not None
        )
        snr = " ".join(
            f"{r['tap']} {shown(r, 'ppp_rel_energy', '.2g')} / {shown(r, 'ppp_snr', '.2g')}"
            for r in taps
            if r["ppp_snr"] is not None and r["ppp_rel_energy"] is not None
        )
        both = f"{shown(full, 'H_spc')} / {shown(full, 'G_spc')}" if full else ""
        seconds = " + ".join(_fmt(group[0][k], 0) for k in ("posenet_s", "ppp_s") if group[0][k] is not None)
        lines.append(
            f"| {model} | {padding} | {weights} | {spc} | {both} | {snr} | {group[0]['n_seeds'] or ''} "
            f"| {seconds} | {group[0]['note'] or ''} |"
        )
    lines += ["", *sections]
    if sweep_wall_s is not None:
        lines += [f"Wall time of the atlas sweep: {sweep_wall_s:.0f} s.", ""]
    if wall_s is not None:
        lines += [
            f"Time of the atlas: {wall_s:.0f} s of job wall time"
            + (
                f", of which forward passes {forward_s:.0f} s (job time / forward passes: {wall_s / forward_s:.2f})."
                if forward_s
                else "."
            ),
        ]
    return "\n".join(lines).rstrip("\n") + "\n"


FORWARD_KEYS = ("atlas/time/forward_s", "posenet/time/encode_s", "ppp/time/crops_s", "ppp/time/contexts_s")


def job_times(groups: Mapping[str, Sequence[Any]]) -> tuple[float, float]:
    """``(job wall time, forward passes)`` of an atlas sweep's completed jobs, in seconds: what the atlas
    costs against the backbones' passes (an engine job's ``atlas/time/forward_s``; a per-cell run's
    PosENet encoding and PPP passes)."""
    wall = forward = 0.0
    for jobs in groups.values():
        for job in jobs:
            if not job.completed:
                continue
            wall += float(job.wall_time_s or 0.0)
            keys = FORWARD_KEYS[:1] if engine_job(job) else FORWARD_KEYS[1:]
            forward += sum(float(job.metrics.get(k) or 0.0) for k in keys)
    return wall, forward


def write_atlas(sweep_dir: Path, groups: Mapping[str, Sequence[Any]]) -> list[Path]:
    """``atlas.csv``, ``atlas.md`` and ``atlas.png`` into ``sweep_dir``."""
    cells = atlas_cells(groups)
    rows = atlas_rows(cells)
    wall, forward = job_times(groups)
    sweep_dir = Path(sweep_dir)
    paths = [write_csv(sweep_dir / "atlas.csv", rows)]
    md = sweep_dir / "atlas.md"
    from posenc.io import read_json

    sweep_wall = (read_json(sweep_dir / "groups.json") or {}).get("wall_s")
    md.write_text(markdown(rows, wall, forward, [*padding_differences(cells), *seed_spread(rows)], sweep_wall))
    paths.append(md)
    if rows:
        from posenc.viz.atlas_figure import atlas_figure
        from posenc.viz.figures import save_figure

        paddings = sorted({r["padding"] for r in rows}, key=_padding_rank)
        paths.append(save_figure(atlas_figure(rows, paddings, ALL_TAPS), sweep_dir / "atlas.png"))
    return paths
