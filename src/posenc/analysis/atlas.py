"""The position atlas (``python sweep.py atlas``; docs/atlas.md): how much absolute position every tap
of every model holds, as one table and one figure.

A cell of the atlas is one model x padding x weights. Its two runs (the sweep's jobs) are PosENet
with one readout per tap alone plus the multi-tap readout (``task.tap_readouts=each``; Islam et al.
ICLR 2020, the tap ablation; H and G SPC on natural images) and PPP (Lin et al. ICML 2023; its SNR and
relative energy per tap, ``posenc.metrics.ppp``). Depth is put on one axis for every family as the
tap's receptive field over the image size (``posenc.models.receptive_field.tap_depths``); a tap that
depends on every pixel (attention, squeeze-excitation) is "global".

Pure functions over collected jobs (:class:`posenc.sweeps.collect.JobResult`): no Trainer, no model.
A cell whose weights are not on the machine is marked ``no weights`` (its job failed with
:class:`~posenc.errors.MissingWeights`), never filled with anything else; any other failure
is recorded with its one-line error, and the atlas goes on.
"""

from __future__ import annotations

import csv
import math
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


GLOBAL_GAP = 1.0  # x units between the deepest local tap and the first global one, in log2(receptive field / size)


def local_extent(rows: Sequence[Mapping[str, Any]]) -> float:
    """The deepest local tap's log2(receptive field / image size) (0 when there is none)."""
    local = [math.log2(r["rf_rel"]) for r in rows if r.get("rf_rel")]
    return max(local) if local else 0.0


def tap_positions(rows: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str, str, str], float]:
    """x of every tap on the atlas's depth axis: log2(receptive field / image size); global taps
    after the deepest local one (``GLOBAL_GAP``), spread by block index; the multi-tap readout last."""
    right = local_extent(rows) + GLOBAL_GAP
    positions = {}
    for row in rows:
        key = (row["model"], row["padding"], row["weights"], row["tap"])
        if row["tap"] in (None, ALL_TAPS):
            continue
        if row.get("rf_rel"):
            positions[key] = math.log2(row["rf_rel"])
        else:
            index = int(row["tap"][1:]) if str(row["tap"])[1:].isdigit() else 0
            positions[key] = right + 0.25 * (index - 1)
    return positions


LOG_DECADES_SHOWN = 1e-5  # the PPP panels' colour scale spans five decades below the largest value; less is darkest
PANELS = (
    ("H_spc", "PosENet H SPC", "viridis", False),
    ("ppp_rel_energy", "PPP relative energy (log)", "magma", True),
    ("ppp_snr", "PPP SNR (log)", "magma", True),
)
"""The figure's rows. PPP is read by its relative energy first (docs/ppp.md: the SNR's denominator, the
reference's variance, collapses in deep random networks, so across depths and families the SNR partly
measures that collapse); the SNR is drawn beside it."""


def _norm(values: Sequence[float | None], log: bool):
    from matplotlib.colors import LogNorm, Normalize

    if not log:
        return Normalize(vmin=0.0, vmax=1.0)
    positive = [v for v in values if v and v > 0]
    if not positive or min(positive) == max(positive):
        return LogNorm(vmin=1e-4, vmax=1.0)
    top = max(positive)  # five decades: a pattern 10^-16 of the features (ConvNeXt at init) would wash out the rest
    return LogNorm(vmin=max(min(positive), top * LOG_DECADES_SHOWN), vmax=top, clip=True)


def short_note(note: str | None) -> str:
    """A cell's note as the figure shows it (the table keeps it whole)."""
    if not note:
        return "n/a"
    if "padding-free reference" in note:
        return "PPP n/a: no padding-free reference"
    return note[:48]


def atlas_figure(rows: Sequence[Mapping[str, Any]]):
    """``atlas.png``: one column of panels per padding and one row per :data:`PANELS` metric
    (H SPC; PPP relative energy and SNR on log colour scales). Models are rows of squares, one per tap
    at its log2(receptive field / image size), global taps to the right, the multi-tap readout
    (``all``, SPC only) last. A cell without numbers shows its note."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from posenc.viz.figures import padding_color

    paddings = sorted({r["padding"] for r in rows}, key=_padding_rank)
    models = list(dict.fromkeys((r["model"], r["weights"]) for r in rows))
    positions = tap_positions(rows)
    xs = list(positions.values()) or [0.0]
    x_all = max(xs) + 1.5
    fig, axes = plt.subplots(
        len(PANELS),
        len(paddings),
        squeeze=False,
        sharey=True,
        layout="constrained",
        figsize=(4.2 * len(paddings) + 2.5, len(PANELS) * (0.3 * len(models) + 1.3)),
    )
    right = local_extent(rows)
    ticks = list(range(math.floor(min(xs)), math.floor(right) + 1))
    has_global = any(x > right + 1e-9 for x in xs)
    tick_at = [*ticks, *([right + GLOBAL_GAP] if has_global else []), x_all]
    tick_labels = [*map(str, ticks), *(["global"] if has_global else []), "all"]
    labels = [m if w == "random init" else f"{m} ({w})" for m, w in models]
    for i, (metric, title, cmap, log) in enumerate(PANELS):
        norm = _norm([r.get(metric) for r in rows], log)
        for j, padding in enumerate(paddings):
            ax = axes[i, j]
            for y, (model, weights) in enumerate(models):
                cell = [r for r in rows if (r["model"], r["weights"], r["padding"]) == (model, weights, padding)]
                pts = [(positions.get((model, padding, weights, r["tap"])), r.get(metric)) for r in cell]
                pts = [(x, v) for x, v in pts if x is not None and v is not None and (not log or v > 0)]
                if metric == "H_spc":
                    pts += [(x_all, r[metric]) for r in cell if r["tap"] == ALL_TAPS and r[metric] is not None]
                if pts:
                    ax.scatter(
                        [p[0] for p in pts],
                        [y] * len(pts),
                        c=[p[1] for p in pts],
                        cmap=cmap,
                        norm=norm,
                        marker="s",
                        s=90,
                        edgecolors="white",
                        linewidths=0.5,
                    )
                else:
                    note = next((r["note"] for r in cell if r.get("note")), "") if cell else "not run"
                    ax.text(
                        0.5,
                        y,
                        short_note(note),
                        transform=ax.get_yaxis_transform(),
                        ha="center",
                        va="center",
                        fontsize=6,
                        color="grey",
                    )
            ax.set_yticks(range(len(models)), labels, fontsize=7)
            ax.set_ylim(len(models) - 0.5, -0.5)
            ax.set_title(f"{padding}: {title}", fontsize=9, color=padding_color(padding))  # the sweep's padding colours
            ax.grid(axis="x", color="0.9")
            ax.axvline(0.0, color="0.7", lw=0.8, ls="--")  # receptive field = the image
            ax.set_xticks(tick_at, tick_labels, fontsize=7)
            if i == len(PANELS) - 1:
                ax.set_xlabel("log2(receptive field / image size); global taps, then all taps, right", fontsize=7)
        fig.colorbar(
            plt.cm.ScalarMappable(norm=norm, cmap=cmap),
            ax=axes[i, :].tolist(),
            fraction=0.015,
            label=title.replace(" (log)", ""),
        )
    return fig


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
        from posenc.viz.figures import save_figure

        paths.append(save_figure(atlas_figure(rows), sweep_dir / "atlas.png"))
    return paths
