"""The run and sweep figures read at a glance (issue 20): fixed scales, one class palette, one
colour per padding, colour bars and legends. Pure figure functions, no Trainer."""

from __future__ import annotations

import re
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402

from posenc.metrics.spearman import spearman_per_image  # noqa: E402
from posenc.run.convergence import convergence_windows  # noqa: E402
from posenc.sweeps.collect import JobResult  # noqa: E402
from posenc.sweeps.reports import row_curves, spc_bars  # noqa: E402
from posenc.sweeps.tables import Row  # noqa: E402
from posenc.viz.figures import (  # noqa: E402
    IGNORE_COLOR,
    PADDING_COLORS,
    class_colors,
    padding_color,
    padding_of_label,
    prediction_grid,
    segmentation_preview,
)
from posenc.viz.loss_curve import loss_curve_figure  # noqa: E402
from posenc.viz.sweep_figures import distance_curves_figure, spc_figure  # noqa: E402

PADDINGS = ("zeros", "reflect", "replicate", "circular", "partial", "none", "none_shrink")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def colorbars(fig: plt.Figure) -> list[plt.Axes]:
    return [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]


def legend_texts(fig: plt.Figure) -> list[str]:
    legends = [*fig.legends, *(leg for ax in fig.axes for leg in [ax.get_legend(), *ax.artists] if leg is not None)]
    return [t.get_text() for leg in legends if hasattr(leg, "get_texts") for t in leg.get_texts()]


def images(fig: plt.Figure, rows: tuple[int, ...], cols: int) -> list:
    """The image artist of each panel in ``rows`` of a ``rows x cols`` grid (colour bars left out)."""
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    return [panels[r * cols + c].get_images()[0] for r in rows for c in range(cols)]


# ----------------------------------------------------------------------------- segmentation previews


def test_saliency_preview_draws_probabilities_on_a_fixed_0_1_scale_with_a_colour_bar():
    """A map of .50-.52 was stretched black to white; now it is mid grey, like the colour bar says."""
    g = torch.Generator().manual_seed(0)
    images_ = torch.rand(3, 3, 16, 16, generator=g)
    target = (torch.rand(3, 16, 16, generator=g) > 0.5).long()
    prob = 0.50 + 0.02 * torch.rand(3, 16, 16, generator=g)
    fig = segmentation_preview(images_, target, prob)
    maps = images(fig, (1, 2), 3)
    assert all(im.get_clim() == (0.0, 1.0) for im in maps)
    rgba = maps[-1].to_rgba(np.array([[0.51]]))[0, 0]
    assert rgba[:3] == pytest.approx([0.51] * 3, abs=0.02)  # not black or white
    bars = colorbars(fig)
    assert len(bars) == 1 and "probability" in bars[0].get_ylabel()
    assert re.fullmatch(r"p from 0\.5\d to 0\.5\d", fig.axes[2 * 3 + 2].get_title())


def test_segmentation_preview_gives_a_class_the_same_colour_in_every_panel():
    """tab20 without vmin/vmax scaled each panel to its own ids: class 3 in a panel of {0, 3} had
    another colour than in a panel of 0..5. Now one palette: id -> colour, and 255 -> ignore colour."""
    target = torch.zeros(2, 8, 8, dtype=torch.long)
    target[0, :4] = 3
    target[1, 0, 0] = 255
    pred = torch.arange(64).remainder(6).view(1, 8, 8).repeat(2, 1, 1)
    names = ["background", "disk", "square", "triangle", "cross", "ring"]
    fig = segmentation_preview(torch.rand(2, 3, 8, 8), target, pred, num_classes=6, class_names=names)
    colors = class_colors(6)
    for im in images(fig, (1, 2), 2):
        for k in range(6):
            assert tuple(im.to_rgba(np.ma.array([[k]]))[0, 0]) == pytest.approx(to_rgba(colors[k]))
    ignored = images(fig, (1,), 2)[1]
    assert tuple(ignored.to_rgba(ignored.get_array())[0, 0]) == pytest.approx(to_rgba(IGNORE_COLOR))
    assert len(set(colors)) == 6
    texts = legend_texts(fig)
    assert {f"{k} {n}" for k, n in enumerate(names)} <= set(texts) and "ignored (255)" in texts


def test_class_palette_has_distinct_colours_for_voc_and_none_grey():
    colors = class_colors(40)
    assert len(set(colors)) == 40
    assert IGNORE_COLOR not in colors and "#7f7f7f" not in colors


def test_segmentation_tasks_name_their_classes():
    from posenc.tasks.location_seg import LocationSegmentationTask
    from posenc.tasks.segmentation import SegmentationTask

    shapes = SegmentationTask.class_names(SimpleNamespace(datamodule=SimpleNamespace(source="shapes")))
    assert shapes == ["background", "disk", "square", "triangle", "cross", "ring"]
    assert len(SegmentationTask.class_names(SimpleNamespace(datamodule=SimpleNamespace(source="voc")))) == 21
    assert SegmentationTask.class_names(SimpleNamespace(datamodule=SimpleNamespace(source="duts"))) is None
    grid = SimpleNamespace(_grid=lambda: 2)
    assert LocationSegmentationTask.class_names(grid) == [
        "background",
        "cell (0, 0)",
        "cell (0, 1)",
        "cell (1, 0)",
        "cell (1, 1)",
    ]


# ----------------------------------------------------------------------------- PosENet predictions


def test_prediction_grid_titles_carry_each_panels_spc_and_maps_share_a_0_1_colour_bar():
    g = torch.Generator().manual_seed(1)
    ramp = torch.linspace(0, 1, 12)
    targets = torch.stack([ramp.expand(12, 12), ramp[:, None].expand(12, 12)])
    preds = {
        "natural": torch.rand(2, 12, 12, generator=g) * 0.3 + targets * 0.7,
        "noise": torch.rand(2, 12, 12, generator=g),
    }
    spc = {n: [float(spearman_per_image(preds[n][j][None], targets[j][None])[0]) for j in range(2)] for n in preds}
    fig = prediction_grid({n: torch.rand(3, 12, 12) for n in preds}, preds, targets, ["H", "V"], spc)
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    for i, name in enumerate(preds, start=1):
        for j, target in enumerate(("H", "V")):
            title = panels[i * 3 + j + 1].get_title()
            expected = float(spearman_per_image(preds[name][j][None], targets[j][None])[0])
            assert title == f"{target}: SPC {expected:.2f}"
    maps = [panels[i * 3 + c].get_images()[0] for i in range(3) for c in (1, 2)]
    assert all(im.get_clim() == (0.0, 1.0) for im in maps)
    assert len(colorbars(fig)) == 1 and colorbars(fig)[0].get_ylim() == (0.0, 1.0)


# ----------------------------------------------------------------------------- loss curve


def spans(fig: plt.Figure) -> list[tuple[float, float]]:
    ax = fig.axes[0]
    return [(p.get_x(), p.get_x() + p.get_width()) for p in ax.patches]


def test_loss_curve_names_the_held_out_windows_the_flag_compared():
    """With held-out losses the flag compares the last 3 val checks with the 3 before (window 0.1 of
    8 checks, at least MIN_VAL_WINDOW): those are shaded, and the legend says so."""
    steps = [25 * k for k in range(1, 9)]
    train = {"loss": [1.0 / (1 + i) for i in range(200)]}
    val = (steps, {"loss": [0.5] * 8})
    fig = loss_curve_figure(train, convergence_windows(train, 0.1, val), val, tol=0.02, converged=True)
    assert spans(fig) == [(62.5, 137.5), (137.5, 200.0)]
    texts = legend_texts(fig)
    before = [t for t in texts if t.startswith("previous 3 checks")]
    last = [t for t in texts if t.startswith("last 3 checks")]
    assert len(before) == 1 and "held-out (val)" in before[0]
    assert len(last) == 1 and "at most 2%" in last[0]
    assert "converged" in fig.axes[0].get_title() and "val" in fig.axes[0].get_title()


def test_loss_curve_shades_the_end_of_every_lr_phase_of_the_training_loss():
    """Without held-out losses: windows of max(20, 10%) steps at the end of each long-enough lr phase."""
    lrs = [0.1] * 300 + [0.01] * 100
    curves = {"loss": [1.0] * 400, "loss_H": [0.5] * 400}
    fig = loss_curve_figure(curves, convergence_windows(curves, 0.1, None, lrs), None, tol=0.05, floor=0.01)
    assert spans(fig) == [(220.5, 260.5), (260.5, 300.5), (320.5, 360.5), (360.5, 400.0)]
    texts = legend_texts(fig)
    assert any(t.startswith("previous 40 steps (training loss) at the end of each lr phase") for t in texts)
    assert any(t.startswith("last 40 steps") and "5%" in t and "0.01" in t for t in texts)


def test_loss_curve_of_a_too_short_run_says_so():
    fig = loss_curve_figure({"loss": [1.0] * 30}, convergence_windows({"loss": [1.0] * 30}))
    assert spans(fig) == []
    assert any(t.startswith("too short to tell") for t in legend_texts(fig))


# ----------------------------------------------------------------------------- paddings


def padding_rows() -> list[Row]:
    rows = []
    for i, padding in enumerate(PADDINGS):
        for backbone in ("tiny", "tiny_bn"):
            metrics = {
                "status": "completed",
                "seed": 0,
                "test/natural/H/spc": 0.9 - 0.1 * i,
                "test/natural/V/spc": 0.8 - 0.1 * i,
                "test/by_distance/ring0/accuracy": 0.5,
                "test/by_distance/ring1/accuracy": 0.6 + 0.01 * i,
            }
            overrides = [f"backbone={backbone}", f"padding={padding}", "seed=0"]
            job = JobResult(None, overrides, "completed", metrics=metrics)
            rows.append(
                Row(f"backbone={backbone} padding={padding}", [job], {"backbone": backbone, "padding": padding})
            )
    return rows


def test_a_padding_has_one_colour_in_the_spc_bars_and_the_distance_curves():
    rows = padding_rows()
    bars = spc_figure("natural", *spc_bars(rows, "natural", ["H", "V"])).axes[0].containers
    curves = distance_curves_figure(*row_curves(rows)).axes[0].get_lines()
    assert len(bars) == 2 and len(curves) == len(rows)
    for k, row in enumerate(rows):
        expected = to_rgba(padding_color(row.values["padding"]))
        assert all(bar.patches[k].get_facecolor() == pytest.approx(expected) for bar in bars)
        assert to_rgba(curves[k].get_color()) == pytest.approx(expected)
    styles = {(row.values["backbone"], curves[k].get_linestyle()) for k, row in enumerate(rows)}
    assert len({s for _, s in styles}) == 2 and len(styles) == 2  # the backbone sets the line style


def test_padding_colours_are_distinct_and_stable():
    assert set(PADDING_COLORS) == set(PADDINGS)
    assert len({padding_color(p) for p in PADDINGS}) == len(PADDINGS)
    assert padding_color("my_padding") == padding_color("my_padding")
    assert padding_of_label("backbone=tiny padding=reflect seed=0") == "reflect"
    assert padding_of_label("padding=none_shrink") == "none_shrink"
    assert padding_of_label("invariance=none") is None


def test_distance_curves_without_a_swept_padding_keep_distinct_colours():
    rows = [
        Row(
            f"task.lr={lr}",
            [
                JobResult(
                    None,
                    [f"task.lr={lr}"],
                    "completed",
                    metrics={"status": "completed", "test/by_distance/ring0/accuracy": lr},
                )
            ],
            {"task.lr": str(lr)},
        )
        for lr in (0.1, 0.2, 0.3)
    ]
    lines = distance_curves_figure(*row_curves(rows)).axes[0].get_lines()
    assert len({line.get_color() for line in lines}) == 3
    assert spc_figure("natural", *spc_bars(rows, "natural", ["H"])).axes[0].get_legend() is not None
