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
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

ALL_TAPS = "all"  # the multi-tap readout's column
NO_WEIGHTS = "no weights"
COLUMNS = (
    "model",
    "padding",
    "weights",
    "tap",
    "rf_px",
    "stride",
    "rf_rel",
    "H_spc",
    "G_spc",
    "ppp_snr",
    "ppp_rel_energy",
    "posenet_s",
    "ppp_s",
    "note",
)
PADDING_ORDER = ("zeros", "reflect", "replicate", "circular", "partial", "none")


@dataclass
class Cell:
    """One model x padding x weights: its PosENet and PPP jobs (None when the sweep has none)."""

    model: str
    padding: str
    weights: str
    posenet: Any = None
    ppp: Any = None
    notes: list[str] = field(default_factory=list)


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


def atlas_cells(groups: Mapping[str, Sequence[Any]]) -> list[Cell]:
    """The cells of an atlas sweep: ``groups`` maps a model's label to its jobs (one sub-sweep per
    model). Cells are ordered by model (the groups' order), then padding (:data:`PADDING_ORDER`)."""
    cells: dict[tuple[str, str, str], Cell] = {}
    for model, jobs in groups.items():
        for job in jobs:
            kind = _kind(job)
            if kind is None:
                continue
            # the choice a run records, else (a job that failed before it ran) the override that swept it
            padding = str(job.metrics.get("padding") or override_value(job.overrides, "padding") or "?")
            weights = _job_setting(job, "backbone.weights")
            label = "random init" if weights in (None, "null") else str(weights)
            cell = cells.setdefault((model, padding, label), Cell(model, padding, label))
            setattr(cell, kind, job)
    order = {m: i for i, m in enumerate(groups)}
    return sorted(cells.values(), key=lambda c: (order[c.model], _padding_rank(c.padding), c.weights))


def override_value(overrides: Sequence[str], key: str) -> str | None:
    return next((o.split("=", 1)[1] for o in overrides if o.startswith(f"{key}=")), None)


def _padding_rank(padding: str) -> int:
    return PADDING_ORDER.index(padding) if padding in PADDING_ORDER else len(PADDING_ORDER)


def _taps(cell: Cell) -> list[str]:
    """The cell's taps in depth order (from whichever of its jobs recorded them)."""
    taps: list[str] = []
    for job in (cell.posenet, cell.ppp):
        if job is None:
            continue
        for key in job.metrics:
            parts = key.split("/")
            if len(parts) == 3 and parts[0] in ("tap", "ppp") and parts[2] in ("rf_px", "snr") and parts[1] not in taps:
                taps.append(parts[1])
    return sorted(taps, key=lambda t: int(t[1:]) if t[1:].isdigit() else 0)


def _wall(job: Any) -> float | None:
    return None if job is None or job.wall_time_s is None else float(job.wall_time_s)


def atlas_rows(cells: Sequence[Cell]) -> list[dict[str, Any]]:
    """The long-form table: one row per cell and tap (``rf_rel`` None: global), then the cell's
    multi-tap readout (tap ``all``); a cell without a completed job gets one row with its note."""
    rows = []
    for cell in cells:
        notes = [n for n in (_note(cell.posenet, "PosENet"), _note(cell.ppp, "PPP")) if n]
        note = NO_WEIGHTS if NO_WEIGHTS in notes else "; ".join(dict.fromkeys(notes))
        base = {
            "model": cell.model,
            "padding": cell.padding,
            "weights": cell.weights,
            "posenet_s": _wall(cell.posenet),
            "ppp_s": _wall(cell.ppp),
            "note": note,
        }
        pm = cell.posenet.metrics if cell.posenet is not None and cell.posenet.completed else {}
        qm = cell.ppp.metrics if cell.ppp is not None and cell.ppp.completed else {}
        taps = _taps(cell)
        if not taps and not pm:
            rows.append({**{c: None for c in COLUMNS}, **base, "tap": None})
            continue
        for tap in taps:
            rows.append(
                {
                    **base,
                    "tap": tap,
                    "rf_px": pm.get(f"tap/{tap}/rf_px"),
                    "stride": pm.get(f"tap/{tap}/stride"),
                    "rf_rel": pm.get(f"tap/{tap}/rf_rel"),
                    "H_spc": pm.get(f"tap/{tap}/natural/H/spc"),
                    "G_spc": pm.get(f"tap/{tap}/natural/G/spc"),
                    "ppp_snr": qm.get(f"ppp/{tap}/snr"),
                    "ppp_rel_energy": qm.get(f"ppp/{tap}/rel_energy"),
                }
            )
        if pm:
            rows.append(
                {
                    **{c: None for c in COLUMNS},
                    **base,
                    "tap": ALL_TAPS,
                    "H_spc": pm.get("test/natural/H/spc"),
                    "G_spc": pm.get("test/natural/G/spc"),
                }
            )
    return rows


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) < 1000 else f"{value:.3g}"
    return str(value)


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(COLUMNS))
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {c: f"{row[c]:.6g}" if isinstance(row.get(c), float) else _fmt(row.get(c)) for c in COLUMNS}
            )
    return path


def markdown(rows: Sequence[Mapping[str, Any]], wall_s: float | None = None, forward_s: float | None = None) -> str:
    """``atlas.md``: one line per cell: H SPC per tap (with its receptive field / image size), the
    multi-tap readout, PPP SNR per tap, the weights and the cell's wall time."""
    lines = [
        "# Position atlas",
        "",
        "H SPC of a PosENet readout on each tap alone (receptive field / image size in brackets; `g`: "
        "global), of the readout on all taps, and PPP per tap (Lin et al. 2023) as relative energy / SNR "
        "(docs/ppp.md: relative energy is the one to compare across depths and weights). "
        "Random init unless the weights column says otherwise.",
        "",
        "| model | padding | weights | H SPC per tap | all taps H / G | PPP relative energy / SNR per tap "
        "| s (PosENet + PPP) | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    cells: dict[tuple[str, str, str], list[Mapping[str, Any]]] = {}
    for row in rows:
        cells.setdefault((row["model"], row["padding"], row["weights"]), []).append(row)
    for (model, padding, weights), group in cells.items():
        taps = [r for r in group if r["tap"] not in (None, ALL_TAPS)]
        full = next((r for r in group if r["tap"] == ALL_TAPS), None)
        spc = " ".join(
            f"{r['tap']} {_fmt(r['H_spc'], 2)} ({'g' if r['rf_rel'] is None else _fmt(r['rf_rel'], 2)})"
            for r in taps
            if r["H_spc"] is not None
        )
        snr = " ".join(
            f"{r['tap']} {r['ppp_rel_energy']:.2g} / {r['ppp_snr']:.2g}"
            for r in taps
            if r["ppp_snr"] is not None and r["ppp_rel_energy"] is not None
        )
        both = f"{_fmt(full['H_spc'], 3)} / {_fmt(full['G_spc'], 3)}" if full else ""
        seconds = " + ".join(_fmt(group[0][k], 0) for k in ("posenet_s", "ppp_s") if group[0][k] is not None)
        lines.append(
            f"| {model} | {padding} | {weights} | {spc} | {both} | {snr} | {seconds} | {group[0]['note'] or ''} |"
        )
    if wall_s is not None:
        lines += [
            "",
            f"Wall time of the atlas: {wall_s:.0f} s of job wall time"
            + (f", of which forward passes {forward_s:.0f} s." if forward_s is not None else "."),
        ]
    return "\n".join(lines) + "\n"


def write_atlas(sweep_dir: Path, groups: Mapping[str, Sequence[Any]]) -> list[Path]:
    """``atlas.csv``, ``atlas.md`` and ``atlas.png`` into ``sweep_dir``."""
    cells = atlas_cells(groups)
    rows = atlas_rows(cells)
    wall = sum(t for c in cells for t in (_wall(c.posenet), _wall(c.ppp)) if t is not None)
    forward = 0.0
    for cell in cells:
        for job in (cell.posenet, cell.ppp):
            if job is not None and job.completed:
                m = job.metrics
                forward += float(m.get("posenet/time/encode_s") or 0.0)
                forward += float(m.get("ppp/time/crops_s") or 0.0) + float(m.get("ppp/time/contexts_s") or 0.0)
    sweep_dir = Path(sweep_dir)
    paths = [write_csv(sweep_dir / "atlas.csv", rows)]
    md = sweep_dir / "atlas.md"
    md.write_text(markdown(rows, wall, forward))
    paths.append(md)
    if rows:
        from posenc.viz.atlas_figure import atlas_figure
        from posenc.viz.figures import save_figure

        paddings = sorted({r["padding"] for r in rows}, key=_padding_rank)
        paths.append(save_figure(atlas_figure(rows, paddings, ALL_TAPS), sweep_dir / "atlas.png"))
    return paths
