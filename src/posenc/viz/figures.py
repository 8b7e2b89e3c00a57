"""Figures of a run: predicted vs target position maps (cf. PosENet, Islam et al. 2020, Fig. 4).

Every figure reads at a glance: maps on fixed scales with a colour bar (position maps and
probabilities on 0-1), class ids in one palette shared by all panels (:func:`class_colors`, with a
legend), and every padding scheme in one colour across all figures of a sweep (:func:`padding_color`).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib import colormaps  # noqa: E402
from matplotlib.colors import BoundaryNorm, Colormap, ListedColormap, Normalize, to_hex  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

# One colour per padding scheme (conf/padding/), the same in every figure of a sweep; no padding in greys.
PADDING_COLORS: dict[str, str] = {
    "zeros": "#1f77b4",  # blue
    "reflect": "#ff7f0e",  # orange
    "replicate": "#2ca02c",  # green
    "circular": "#d62728",  # red
    "partial": "#9467bd",  # purple
    "none": "#404040",  # dark grey
    "none_shrink": "#a0a0a0",  # light grey
}
_SPARE_COLORS = ("#8c564b", "#e377c2", "#bcbd22", "#17becf")  # an unknown padding: brown, pink, olive, cyan
_PADDING_TOKEN = re.compile(r"(?:^|\s)padding=(\S+)")

IGNORE_INDEX = 255  # void / ignored pixels (VOC)
IGNORE_COLOR = "#ffffff"  # class maps: white
SALIENCY_IGNORE_COLOR = "#e7298a"  # probability maps (grey scale): magenta
BACKGROUND_COLOR = "#262626"  # class 0


def padding_color(name: str) -> str:
    """The colour of padding ``name`` (:data:`PADDING_COLORS`; an unknown name gets a spare colour
    chosen by a stable hash of it, so it too is the same in every figure)."""
    if name in PADDING_COLORS:
        return PADDING_COLORS[name]
    return _SPARE_COLORS[zlib.crc32(name.encode()) % len(_SPARE_COLORS)]


def padding_of_label(label: str) -> str | None:
    """The padding a label names (``"backbone=tiny padding=zeros"`` -> ``"zeros"``), else None."""
    match = _PADDING_TOKEN.search(label)
    return match.group(1) if match else None


def class_colors(num_classes: int) -> list[str]:
    """Colour of every class id ``0..num_classes-1``: 0 (background) near-black, then tab10, tab20's
    light shades and tab20b (greys left out: they would read as the ignore colour), then hsv."""
    tab10 = [to_hex(colormaps["tab10"](i)) for i in range(10) if i != 7]
    light = [to_hex(colormaps["tab20"](2 * i + 1)) for i in range(10) if i != 7]
    tab20b = [to_hex(colormaps["tab20b"](i)) for i in range(20)]
    colors = [BACKGROUND_COLOR, *tab10, *light, *tab20b]
    extra = max(0, num_classes - len(colors))
    colors += [to_hex(colormaps["hsv"](i / extra)) for i in range(extra)]
    return colors[: max(1, num_classes)]


def class_palette(num_classes: int) -> tuple[Colormap, BoundaryNorm]:
    """One colour map and norm that every class panel of a figure shares: id ``k`` -> colour ``k``
    whatever ids a panel holds; masked pixels (label 255) in :data:`IGNORE_COLOR`."""
    n = max(1, num_classes)
    cmap = ListedColormap(class_colors(n), name="classes").with_extremes(bad=IGNORE_COLOR)
    return cmap, BoundaryNorm(np.arange(n + 1) - 0.5, n)


def _masked(labels: torch.Tensor) -> np.ma.MaskedArray:
    """A label map as a masked array, label 255 masked (drawn in the ignore colour)."""
    array = labels.detach().cpu().float().numpy()
    return np.ma.masked_where(array == IGNORE_INDEX, array)


def _no_ticks(axes: Any) -> None:
    for ax in np.ravel(axes):
        ax.set_xticks([])
        ax.set_yticks([])


def prediction_grid(
    inputs: dict[str, torch.Tensor],
    predictions: dict[str, torch.Tensor],
    targets: torch.Tensor,
    target_names: list[str],
    spc: Mapping[str, Sequence[float]] | None = None,
) -> plt.Figure:
    """Rows: the target maps, then one row per test input (its image, then one predicted map
    per target, titled with its SPC against that target, ``spc[input][target]``: the metric of
    PosENet, Islam et al. 2020, Sec. 4, computed by the caller). Every map on one fixed 0-1 grey scale
    with a colour bar.
    ``inputs[n]``: ``[3, H, W]`` in [0, 1]; ``predictions[n]``: ``[T, H, W]``."""
    rows = 1 + len(inputs)
    cols = 1 + len(target_names)
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols + 0.9, 1.7 * rows), squeeze=False, layout="constrained")
    _no_ticks(axes)
    axes[0, 0].set_title("input", fontsize=8)
    axes[0, 0].axis("off")
    norm, outside = Normalize(vmin=0.0, vmax=1.0), False
    for j, name in enumerate(target_names):
        axes[0, j + 1].imshow(targets[j].float().cpu(), cmap="gray", norm=norm)
        axes[0, j + 1].set_title(f"target {name}", fontsize=8)
    for i, (name, image) in enumerate(inputs.items(), start=1):
        axes[i, 0].imshow(image.permute(1, 2, 0).clamp(0, 1).cpu())
        axes[i, 0].set_ylabel(name, fontsize=8)
        for j, target in enumerate(target_names):
            pred = predictions[name][j].float().cpu()
            outside |= bool(pred.min() < 0 or pred.max() > 1)
            axes[i, j + 1].imshow(pred, cmap="gray", norm=norm)
            title = f"{target}: SPC {spc[name][j]:.2f}" if spc is not None and name in spc else target
            axes[i, j + 1].set_title(title, fontsize=8)
    fig.colorbar(
        plt.cm.ScalarMappable(norm=norm, cmap="gray"),
        ax=axes[:, 1:].ravel().tolist(),
        fraction=0.04,
        extend="both" if outside else "neither",
        label="map value (fixed 0-1)",
    )
    return fig


def save_figure(fig: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _window_labels(w: int, unit: str, on: str, tol: float, floor: float | None, phases: int) -> tuple[str, str]:
    """Legend text of the two shaded windows: what the flag compared, and when it says converged."""
    where = " at the end of each lr phase" if phases > 1 else ""
    loss = "held-out (val)" if on == "val" else "training"
    before = f"previous {w} {unit} ({loss} loss){where}"
    last = (
        f"last {w} {unit}: converged if the mean of every {loss} curve changed by at most "
        f"{100 * tol:.0f}% from the previous window" + (f", or is at most {floor:g}" if floor is not None else "")
    )
    return before, last


Windows = tuple[list[tuple[tuple[float, float], tuple[float, float]]], int, str]  # convergence_windows()


def loss_curve_figure(
    curves: dict[str, list[float]],
    windows: Windows,
    val: tuple[Sequence[float], dict[str, list[float]]] | None = None,
    tol: float = 0.02,
    floor: float | None = None,
    converged: bool | None = None,
) -> plt.Figure:
    """Training loss per optimizer step (log scale; the total and every named part) and, when
    given, the held-out losses at their steps (dashed, markers), with the two windows the
    convergence flag compares shaded and named in the legend (``windows``, from
    :func:`posenc.run.convergence.convergence_windows`; the
    held-out curve when ``val`` is given, as :mod:`posenc.run.convergence` judges it); the
    flag's verdict (``converged``) in the title."""
    fig, ax = plt.subplots(figsize=(7.5, 4.4), layout="constrained")
    on = "val" if val is not None and val[1] else "train"
    spans, w, unit = windows
    labels = _window_labels(w, unit, on, tol, floor, len(spans))
    for k, (before, last) in enumerate(spans):
        ax.axvspan(*before, color="#deebf7", lw=0, label=labels[0] if k == 0 else None)
        ax.axvspan(*last, color="#fde0c5", lw=0, label=labels[1] if k == 0 else None)
    if not spans:
        ax.plot([], [], " ", label=f"too short to tell: fewer than two windows of {w} {unit} ({on} loss)")
    colors = {}
    for name, values in curves.items():
        (line,) = ax.plot(
            range(1, len(values) + 1),
            values,
            lw=1.6 if name == "loss" else 0.7,
            label=f"train {name}",
            color="black" if name == "loss" else None,
            alpha=0.8,
        )
        colors[name] = line.get_color()
    if val is not None:
        steps, losses = val
        for name, values in losses.items():
            ax.plot(steps, values, "--o", ms=2.5, lw=1.2, color=colors.get(name), label=f"val {name}")
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    handles, names = ax.get_legend_handles_labels()
    shaded = [(h, t) for h, t in zip(handles, names) if not t.startswith(("train ", "val "))]
    lines = [(h, t) for h, t in zip(handles, names) if t.startswith(("train ", "val "))]
    ax.legend(*zip(*lines), fontsize=6, ncol=3)
    fig.legend(
        *zip(*shaded), loc="outside lower center", fontsize=7, title=f"convergence flag ({on} loss)", title_fontsize=7
    )
    if converged is not None:
        ax.set_title(f"training: {'converged' if converged else 'not converged'} (flag on the {on} loss)", fontsize=9)
    return fig


def by_distance_figure(
    bins: dict[str, list[str]],
    values: dict[str, list[float]],
    runs: dict[str, dict[str, list[float]]] | None = None,
    styles: Mapping[str, Mapping[str, Any]] | None = None,
) -> plt.Figure:
    """A metric per distance-to-border bin, nearest the border on the left (Islam et al., IJCV
    2024: performance as a function of distance to the border); one panel per metric, on a fixed
    0-1 scale when every value lies in it. ``runs``: several curves per metric (``{label: {metric:
    values}}``, e.g. a sweep's rows) instead of ``values``, named in one legend; ``styles``: a run's
    line style (``ax.plot`` keywords); a run whose label names a padding (``padding=zeros``) is
    drawn in :func:`padding_color` unless ``styles`` says otherwise."""
    runs = runs or {"": values}
    styles = styles or {}
    metrics = list(bins)
    fig, axes = plt.subplots(
        1,
        len(metrics),
        figsize=(3.6 * len(metrics) + (2.2 if len(runs) > 1 else 0), 3.2),
        squeeze=False,
        layout="constrained",
    )
    for ax, metric in zip(axes[0], metrics):
        names = bins[metric]
        drawn = []
        for label, curves in runs.items():
            if metric in curves:
                style = dict(styles.get(label, {}))
                if "color" not in style and (padding := padding_of_label(label)) is not None:
                    style["color"] = padding_color(padding)
                ax.plot(range(len(names)), curves[metric], **{"marker": "o", "ms": 3, **style}, label=label or None)
                drawn += [v for v in curves[metric] if v is not None and np.isfinite(v)]
        if drawn and 0.0 <= min(drawn) and max(drawn) <= 1.0:
            ax.set_ylim(-0.02, 1.02)  # fixed: accuracies, IoUs, errors of probabilities
        ax.set_xticks(range(len(names)), names, fontsize=7, rotation=30)
        ax.set_xlabel("distance to the border (bin)")
        ax.set_ylabel(metric)
        ax.grid(axis="y", color="0.9")
    if len(runs) > 1:
        handles, labels = axes[0, 0].get_legend_handles_labels()
        for ax in axes[0, 1:]:
            more = ax.get_legend_handles_labels()
            handles += [h for h, t in zip(*more) if t not in labels]
            labels += [t for t in more[1] if t not in labels]
        fig.legend(handles, labels, loc="outside right upper", fontsize=6, handlelength=3.5)
    return fig


def segmentation_preview(
    images: torch.Tensor,
    targets: torch.Tensor,
    preds: torch.Tensor,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
) -> plt.Figure:
    """Rows: a few test images, their target labels, the predictions (Islam et al., IJCV 2024: the
    segmentation and saliency tasks). Class ids (integer ``preds``) in one palette shared by every
    panel (:func:`class_palette`; ``num_classes`` of it, else the largest id + 1) with a legend of the
    classes shown (``class_names``, else their ids); probabilities (floating ``preds``, saliency) and
    the binary target on one fixed 0-1 grey scale with a colour bar. Label 255 is drawn as ignored."""
    n = len(images)
    probabilities = preds.is_floating_point()
    fig, axes = plt.subplots(3, n, figsize=(1.8 * n + 2.2, 5.6), squeeze=False, layout="constrained")
    _no_ticks(axes)
    for j in range(n):
        axes[0, j].imshow(images[j].permute(1, 2, 0).clamp(0, 1))
    for ax, label in zip(axes[:, 0], ("image", "target", "probability" if probabilities else "prediction")):
        ax.set_ylabel(label, fontsize=8)
    ignored = bool((targets == IGNORE_INDEX).any())
    if probabilities:
        _probability_rows(fig, axes, targets, preds, ignored)
    else:
        _class_rows(fig, axes, targets, preds, num_classes, class_names, ignored)
    return fig


def _probability_rows(fig: plt.Figure, axes: Any, targets: torch.Tensor, preds: torch.Tensor, ignored: bool) -> None:
    """Saliency: target (0/1) and foreground probability on one fixed 0-1 scale, one colour bar;
    each probability panel titled with its range (a map of .50-.52 is not stretched to black-white)."""
    cmap = colormaps["gray"].with_extremes(bad=SALIENCY_IGNORE_COLOR)
    norm = Normalize(vmin=0.0, vmax=1.0)
    for j in range(len(targets)):
        axes[1, j].imshow(_masked(targets[j]), cmap=cmap, norm=norm, interpolation="nearest")
        prob = preds[j].float()
        axes[2, j].imshow(prob, cmap=cmap, norm=norm, interpolation="nearest")
        axes[2, j].set_title(f"p from {float(prob.min()):.2f} to {float(prob.max()):.2f}", fontsize=7)
    fig.colorbar(
        plt.cm.ScalarMappable(norm=norm, cmap=cmap),
        ax=axes[1:, :].ravel().tolist(),
        fraction=0.04,
        label="foreground probability (target: 0 / 1)",
    )
    if ignored:
        fig.legend(
            handles=[Patch(color=SALIENCY_IGNORE_COLOR, label=f"ignored ({IGNORE_INDEX})")],
            loc="outside right upper",
            fontsize=7,
        )


def _class_rows(
    fig: plt.Figure,
    axes: Any,
    targets: torch.Tensor,
    preds: torch.Tensor,
    num_classes: int | None,
    class_names: Sequence[str] | None,
    ignored: bool,
) -> None:
    """Class ids: target and prediction panels share one colour map and norm; a legend of the ids shown."""
    valid = torch.cat([targets[targets != IGNORE_INDEX].flatten(), preds.flatten()]).long()
    if num_classes is None:
        num_classes = int(valid.max()) + 1 if valid.numel() else 1
    cmap, norm = class_palette(num_classes)
    for j in range(len(targets)):
        axes[1, j].imshow(_masked(targets[j]), cmap=cmap, norm=norm, interpolation="nearest")
        axes[2, j].imshow(_masked(preds[j]), cmap=cmap, norm=norm, interpolation="nearest")
    shown = sorted({int(k) for k in valid.unique().tolist() if 0 <= k < num_classes})
    colors = class_colors(num_classes)
    handles = [Patch(facecolor=colors[k], edgecolor="0.5", lw=0.5, label=_class_label(k, class_names)) for k in shown]
    if ignored:
        handles.append(Patch(facecolor=IGNORE_COLOR, edgecolor="0.5", lw=0.5, label=f"ignored ({IGNORE_INDEX})"))
    fig.legend(
        handles=handles,
        loc="outside right upper",
        fontsize=7,
        title="class",
        title_fontsize=7,
        ncols=1 + len(handles) // 16,
    )


def _class_label(k: int, class_names: Sequence[str] | None) -> str:
    """``"3 triangle"`` with names, ``"class 3"`` without."""
    return f"{k} {class_names[k]}" if class_names is not None and k < len(class_names) else f"class {k}"
