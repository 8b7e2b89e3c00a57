"""Every number of the position atlas with its uncertainty (issue 33 §3): ``python sweep.py atlas seed=0,1,2``
puts a model's seeds in its group and each cell's seeds in one cell; a cell is the mean over its seeds with
their std and the t-interval of the mean (one seed: the bootstrap interval its run recorded); an interval
that contains 0 is marked in atlas.csv, atlas.md and atlas.png; the differences between paddings say whether
they exceed their interval, and the seeds' spread is summarised. Fake sweep dirs, no run, no torch."""

from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from helpers.runs import CONF_DIR  # noqa: E402
from helpers.sweeps import atlas_metrics, fake_atlas  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from posenc.analysis.atlas import ALL_TAPS, COLUMNS, ZERO_MARK, atlas_cells, atlas_rows, write_atlas  # noqa: E402
from posenc.sweeps.collect import group_results  # noqa: E402
from posenc.sweeps.presets import expand_overrides  # noqa: E402
from posenc.sweeps.tables import build_rows  # noqa: E402
from posenc.viz.atlas_figure import atlas_figure, tap_positions  # noqa: E402

try:
    from scipy import stats

    def t_975(dof: int) -> float:
        return float(stats.t.ppf(0.975, dof))
except ImportError:  # pragma: no cover - scipy is a dev dependency

    def t_975(dof: int) -> float:
        return {2: 4.302653}[dof]


SEEDS = [0, 1, 2]
PADDINGS = ["zeros", "reflect", "circular"]
LEVEL = {"zeros": 0.9, "reflect": 0.05, "circular": 0.07}  # all-taps H SPC around which the seeds scatter
SCATTER = {"zeros": (0.01, -0.02, 0.04), "reflect": (-0.1, 0.05, 0.12), "circular": (-0.08, 0.06, 0.11)}


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def seeded_values(kind: str, padding: str, seed: int) -> dict[str, float]:
    """A run's numbers: all taps and two taps of PosENet, PPP at two taps; seeds scatter by :data:`SCATTER`."""
    d = SCATTER[padding][seed]
    if kind == "posenet":
        h = LEVEL[padding] + d
        return {
            "test/natural/H/spc": h,
            "test/natural/G/spc": h - 0.1,
            "tap/f1/natural/H/spc": h / 2 + d,
            "tap/f1/natural/G/spc": h / 3,
            "tap/f2/natural/H/spc": h,
            "tap/f2/natural/G/spc": h - 0.05 * seed,
        }
    return {"ppp/f1/snr": 2.0 + seed + d, "ppp/f1/rel_energy": 0.01 * (1 + seed), "ppp/f2/snr": 3.0 - d}


def seeded_atlas(tmp_path: Path, seeds: list[int] = SEEDS, half_width: float | None = 0.3) -> Path:
    def metrics_of(model: str, kind: str, padding: str, seed: int) -> dict[str, object]:
        return atlas_metrics(kind, padding, seed, seeded_values(kind, padding, seed), half_width)

    sweep = fake_atlas(tmp_path / "atlas", ["tiny"], PADDINGS, seeds, metrics_of)
    write_atlas(sweep, group_results(sweep) or {})
    return sweep


def read_rows(sweep: Path) -> list[dict[str, str]]:
    with open(sweep / "atlas.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def md_line(sweep: Path, padding: str) -> str:
    return next(
        line for line in (sweep / "atlas.md").read_text().splitlines() if line.startswith(f"| tiny | {padding} |")
    )


def reference(values: list[float]) -> tuple[float, float, float, float]:
    """Mean, sample std and the 95% t-interval of the mean, computed here apart from posenc."""
    mean, std = statistics.fmean(values), statistics.stdev(values)
    half = t_975(len(values) - 1) * std / math.sqrt(len(values))
    return mean, std, mean - half, mean + half


def test_the_expansion_puts_a_models_seeds_in_its_group_and_a_cells_seeds_in_one_cell(tmp_path):
    preset = OmegaConf.load(CONF_DIR / "sweep" / "atlas.yaml")
    assert OmegaConf.select(preset, "hydra.sweeper.params") is None  # one job per model (the engine, issue 34)
    from posenc.sweeps.presets import every_group, fold_overrides

    assert every_group("atlas") == ["task=atlas"]
    folded = fold_overrides("atlas", ["seed=0,1,2", "padding=zeros,none", "backbone=tiny"])
    assert folded == ["task.seeds=[0,1,2]", "task.paddings=[zeros,none]", "backbone=tiny"]
    assert len(expand_overrides({}, ["sweep=atlas", *every_group("atlas"), *folded])) == 1
    # a sweep of per-cell runs (how the atlas ran before the engine) is still collected into the same cells
    sweep = seeded_atlas(tmp_path)
    groups = group_results(sweep) or {}
    assert list(groups) == ["tiny"] and len(groups["tiny"]) == 2 * 3 * 3
    cells = atlas_cells(groups)
    assert [(c.padding, len(c.posenet), len(c.ppp), c.n_seeds) for c in cells] == [(p, 3, 3, 3) for p in PADDINGS]
    assert sorted(j.overrides[-1] for j in cells[0].posenet) == ["seed=0", "seed=1", "seed=2"]
    rows = build_rows(groups["tiny"])  # the group's own report: seeds are not swept values
    assert [len(r.jobs) for r in rows] == [3] * 6


def test_three_seeds_give_each_cell_its_mean_std_and_t_interval(tmp_path):
    rows = read_rows(seeded_atlas(tmp_path))
    assert tuple(rows[0]) == COLUMNS
    assert [(r["padding"], r["tap"]) for r in rows] == [(p, t) for p in PADDINGS for t in ("f1", "f2", ALL_TAPS)]
    keys = {
        "H_spc": ("posenet", "tap/{}/natural/H/spc", "test/natural/H/spc"),
        "G_spc": ("posenet", "tap/{}/natural/G/spc", "test/natural/G/spc"),
        "ppp_snr": ("ppp", "ppp/{}/snr", None),
    }
    checked = 0
    for row in rows:
        assert row["n_seeds"] == "3"
        for column, (kind, tap_key, all_key) in keys.items():
            key = all_key if row["tap"] == ALL_TAPS else tap_key.format(row["tap"])
            if key is None:
                assert row[column] == row[f"{column}_std"] == row[f"{column}_ci_low"] == ""
                continue
            values = [seeded_values(kind, row["padding"], s)[key] for s in SEEDS]
            mean, std, low, high = reference(values)
            got = [float(row[f"{column}{suffix}"]) for suffix in ("", "_std", "_ci_low", "_ci_high")]
            assert got == pytest.approx([mean, std, low, high], rel=1e-6, abs=1e-9), (
                row["padding"],
                row["tap"],
                column,
            )
            assert row[f"{column}_ci_contains_0"] == ("true" if low <= 0 <= high else "false")
            checked += 1
    assert checked == 3 * (2 * 3 + 2)


def test_an_interval_that_contains_0_is_marked_in_the_csv_and_the_md(tmp_path):
    rows = read_rows(seeded_atlas(tmp_path))
    full = {r["padding"]: r for r in rows if r["tap"] == ALL_TAPS}
    _, _, low, high = reference([LEVEL["reflect"] + d for d in SCATTER["reflect"]])
    assert low < 0 < high and full["reflect"]["H_spc_ci_contains_0"] == "true"
    assert full["zeros"]["H_spc_ci_contains_0"] == "false"
    reflect, zeros = md_line(tmp_path / "atlas", "reflect"), md_line(tmp_path / "atlas", "zeros")
    mean = statistics.fmean(LEVEL["reflect"] + d for d in SCATTER["reflect"])
    shown = f"{mean:.3f} [{low:.3f}, {high:.3f}]".replace("0.", ".")
    assert f"| {shown}{ZERO_MARK} / " in reflect  # all taps H, then G
    assert ZERO_MARK not in zeros.split(" | ")[4]  # zeros' all-taps H and G exceed 0
    assert f"{ZERO_MARK}: the interval contains 0" in (tmp_path / "atlas" / "atlas.md").read_text()


def test_one_seed_shows_the_interval_its_run_recorded(tmp_path):
    sweep = seeded_atlas(tmp_path, seeds=[1], half_width=0.1)
    rows = read_rows(sweep)
    full = {r["padding"]: r for r in rows if r["tap"] == ALL_TAPS}
    h = LEVEL["reflect"] + SCATTER["reflect"][1]  # .10, its run's interval [.00, .20]
    assert float(full["reflect"]["H_spc_ci_low"]) == pytest.approx(h - 0.1)
    assert full["reflect"]["H_spc_std"] == "" and full["reflect"]["n_seeds"] == "1"
    snr = next(r for r in rows if (r["padding"], r["tap"]) == ("zeros", "f1"))  # PPP's ppp/<tap>/snr/ci_low keys
    assert float(snr["ppp_snr_ci_high"]) == pytest.approx(float(snr["ppp_snr"]) + 0.1)
    line = md_line(sweep, "zeros")  # seed 1: H .88, f1 .42, f2 .88, each ± .1
    assert line.startswith("| tiny | zeros | random init | f1 .42 [.32, .52] (0.10) f2 .88 [.78, .98] (0.20) |")
    assert "| .880 [.780, .980] / .780 [.680, .880] |" in line
    assert "Seed spread" not in (sweep / "atlas.md").read_text()  # one seed: nothing spreads


def test_padding_differences_say_whether_they_exceed_their_interval(tmp_path):
    text = (seeded_atlas(tmp_path) / "atlas.md").read_text()
    assert "## Padding differences" in text
    header = next(line for line in text.splitlines() if line.startswith("| model | weights | zeros − reflect"))
    assert header == "| model | weights | zeros − reflect | zeros − circular | reflect − circular |"
    line = next(line for line in text.splitlines() if line.startswith("| tiny | random init |"))
    for cell, (a, b) in zip(
        line.strip("| ").split(" | ")[2:], [("zeros", "reflect"), ("zeros", "circular"), ("reflect", "circular")]
    ):
        paired = [(LEVEL[a] + SCATTER[a][s]) - (LEVEL[b] + SCATTER[b][s]) for s in SEEDS]  # the same seed
        mean, _, low, high = reference(paired)
        mark = ZERO_MARK if low <= 0 <= high else ""
        assert cell == f"{mean:.3f} [{low:.3f}, {high:.3f}]".replace("0.", ".") + mark
    assert "- zeros vs reflect: zeros higher beyond the interval in tiny." in text
    assert "- reflect vs circular: not a finding (the interval contains 0) in tiny." in text


def test_the_seed_spread_gives_the_median_and_largest_std_per_model_and_padding(tmp_path):
    sweep = seeded_atlas(tmp_path)
    rows = read_rows(sweep)
    text = (sweep / "atlas.md").read_text()
    assert "## Seed spread" in text
    lines = {
        line.split(" | ")[0].strip("| "): line
        for line in text.split("## Seed spread")[1].splitlines()
        if line.startswith("| ")
    }
    for label, picked in [
        ("tiny", rows),
        *((f"padding {p}", [r for r in rows if r["padding"] == p]) for p in PADDINGS),
    ]:
        stds = [(float(r["H_spc_std"]), r) for r in picked]
        top, at = max(stds, key=lambda s: s[0])
        median = statistics.median(s for s, _ in stds)
        cells = lines[label].strip("| ").split(" | ")
        assert cells[1] == str(len(picked))
        expected = f"{median:.3f} / {top:.3f} ({at['model']} {at['padding']} {at['tap']})".replace("0.", ".")
        assert cells[2] == expected


def test_the_figure_crosses_the_squares_whose_spc_interval_contains_0(tmp_path):
    sweep = seeded_atlas(tmp_path)
    rows = atlas_rows(atlas_cells(group_results(sweep) or {}))
    fig = atlas_figure(rows, PADDINGS, ALL_TAPS)
    positions = tap_positions(rows, ALL_TAPS)
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"][: len(PADDINGS)]  # the H SPC row
    x_all = max(positions.values()) + 1.5
    for ax, padding in zip(panels, PADDINGS):
        flagged = [r for r in rows if r["padding"] == padding and r["H_spc_ci_contains_0"]]
        xs = sorted(
            x_all if r["tap"] == ALL_TAPS else positions[("tiny", padding, "random init", r["tap"])] for r in flagged
        )
        crosses = ax.collections[1:]  # after each model's squares, its crosses
        assert sorted(float(x) for c in crosses for x, _ in c.get_offsets()) == pytest.approx(xs)
    assert [len(ax.collections) for ax in panels] == [1, 2, 2]  # zeros: squares; reflect, circular: and crosses
    texts = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    assert texts == ["H SPC's 95% interval contains 0"]
