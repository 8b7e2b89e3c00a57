"""Figures of a run: predicted vs target position maps (cf. PosENet, Islam et al. 2020, Fig. 4),
segmentation previews, the PPP heatmaps and border profiles, a metric per distance to the border.

Every figure reads at a glance: maps on fixed scales with a colour bar (position maps and
probabilities on 0-1), class ids in one palette shared by all panels (:func:`class_colors`, with a
legend), and every padding scheme in one colour across all figures of a sweep (:func:`padding_color`).
Importable without torch (sweep reports draw with it): a tensor argument is read through its own methods.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import colormaps  # noqa: E402
from matplotlib.colors import BoundaryNorm, Colormap, ListedColormap, Normalize, to_hex  # noqa: E402
from matplotlib.container import ErrorbarContainer  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from posenc.errors import PosencError  # noqa: E402

if TYPE_CHECKING:
    import torch

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
INTERVAL_LABEL = "95% interval"  # what every error bar of posenc's figures is (legends, titles)


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


def as_array(values: Any) -> np.ndarray:
    """A tensor (on any device; bfloat16 widened to float32) or an array-like as a numpy array."""
    if hasattr(values, "detach"):
        values = values.detach().cpu()
        if values.is_floating_point():
            values = values.float()
    return np.asarray(values)


def _masked(labels: torch.Tensor) -> np.ma.MaskedArray:
    """A label map as a masked array, label 255 masked (drawn in the ignore colour)."""
    array = as_array(labels).astype(np.float32)
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


def interval_bars(
    ax: plt.Axes, xs: Sequence[float], intervals: Sequence[tuple[float, float] | None], **style: Any
) -> ErrorbarContainer | None:
    """Error bars at ``xs`` from each interval's low to its high end (:data:`INTERVAL_LABEL`; none where an
    interval is None or not finite), whatever value the bar or point they belong to shows; None when there
    is none to draw. ``style``: ``ax.errorbar`` keywords."""
    drawn = [(x, ci) for x, ci in zip(xs, intervals) if ci is not None and all(math.isfinite(v) for v in ci)]
    if not drawn:
        return None
    middles = [(low + high) / 2.0 for _, (low, high) in drawn]
    halves = [(high - low) / 2.0 for _, (low, high) in drawn]
    return ax.errorbar([x for x, _ in drawn], middles, yerr=halves, fmt="none", **style)


def by_distance_figure(
    bins: dict[str, list[str]],
    values: dict[str, list[float]],
    runs: dict[str, dict[str, list[float]]] | None = None,
    styles: Mapping[str, Mapping[str, Any]] | None = None,
    intervals: Mapping[str, Mapping[str, Sequence[tuple[float, float] | None]]] | None = None,
) -> plt.Figure:
    """A metric per distance-to-border bin, nearest the border on the left (Islam et al., IJCV
    2024: performance as a function of distance to the border); one panel per metric, on a fixed
    0-1 scale when every value lies in it. ``runs``: several curves per metric (``{label: {metric:
    values}}``, e.g. a sweep's rows) instead of ``values``, named in one legend; ``styles``: a run's
    line style (``ax.plot`` keywords); a run whose label names a padding (``padding=zeros``) is
    drawn in :func:`padding_color` unless ``styles`` says otherwise. ``intervals``: each value's 95%
    interval (shaped like ``runs``; label ``""`` for ``values``), drawn as error bars in its curve's
    colour (:func:`interval_bars`) and named in the legend."""
    runs = runs or {"": values}
    styles = styles or {}
    intervals = intervals or {}
    with_intervals = False
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
                (line,) = ax.plot(
                    range(len(names)), curves[metric], **{"marker": "o", "ms": 3, **style}, label=label or None
                )
                drawn += [v for v in curves[metric] if v is not None and np.isfinite(v)]
                cis = intervals.get(label, {}).get(metric, [])
                bars = interval_bars(ax, range(len(cis)), cis, ecolor=line.get_color(), elinewidth=0.8, capsize=0)
                with_intervals = with_intervals or bars is not None
                drawn += [x for ci in cis if ci is not None for x in ci if np.isfinite(x)]
        if drawn and 0.0 <= min(drawn) and max(drawn) <= 1.0:
            ax.set_ylim(-0.02, 1.02)  # fixed: accuracies, IoUs, errors of probabilities
        ax.set_xticks(range(len(names)), names, fontsize=7, rotation=30)
        ax.set_xlabel("distance to the border (bin)")
        ax.set_ylabel(metric)
        ax.grid(axis="y", color="0.9")
    interval_handle = Line2D([], [], color="0.3", marker="_", label=f"error bars: {INTERVAL_LABEL}")
    if len(runs) > 1:
        handles, labels = axes[0, 0].get_legend_handles_labels()
        for ax in axes[0, 1:]:
            more = ax.get_legend_handles_labels()
            handles += [h for h, t in zip(*more) if t not in labels]
            labels += [t for t in more[1] if t not in labels]
        if with_intervals:
            handles, labels = [*handles, interval_handle], [*labels, interval_handle.get_label()]
        fig.legend(handles, labels, loc="outside right upper", fontsize=6, handlelength=3.5)
    elif with_intervals:
        axes[0, 0].legend(handles=[interval_handle], fontsize=6)
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
    labels = as_array(targets)
    valid = np.concatenate([labels[labels != IGNORE_INDEX].ravel(), as_array(preds).ravel()]).astype(np.int64)
    if num_classes is None:
        num_classes = int(valid.max()) + 1 if valid.size else 1
    cmap, norm = class_palette(num_classes)
    for j in range(len(targets)):
        axes[1, j].imshow(_masked(targets[j]), cmap=cmap, norm=norm, interpolation="nearest")
        axes[2, j].imshow(_masked(preds[j]), cmap=cmap, norm=norm, interpolation="nearest")
    shown = sorted({int(k) for k in np.unique(valid).tolist() if 0 <= k < num_classes})
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


def ppp_figure(heatmaps: Mapping[str, Any], profiles: Mapping[str, Sequence[float]]) -> plt.Figure:
    """One column per layer: the PPP heatmap (``heatmaps[layer]``: mean |PPP| over channels, ``[h, w]``,
    with a colour bar) on top, its border profile (mean |PPP| / reference std per distance to the border)
    below, every profile on one scale from zero (Lin et al., ICML 2023; :mod:`posenc.metrics.ppp`)."""
    layers = list(heatmaps)
    if not layers:
        raise PosencError("ppp_figure needs at least one layer")
    fig, axes = plt.subplots(2, len(layers), figsize=(2.6 * len(layers), 5.0), squeeze=False)
    for j, layer in enumerate(layers):
        top, bottom = axes[0, j], axes[1, j]
        image = top.imshow(as_array(heatmaps[layer]), cmap="magma", vmin=0.0)  # |PPP| >= 0: from zero
        bar = fig.colorbar(image, ax=top, fraction=0.046, pad=0.04)
        bar.set_label("mean |PPP|", fontsize=7)
        bar.ax.tick_params(labelsize=7)
        top.set_title(f"{layer} |PPP|", fontsize=8)
        top.set_xticks([])
        top.set_yticks([])
        profile = list(profiles.get(layer, []))
        bottom.plot(range(len(profile)), profile, "-o", ms=3)
        bottom.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        bottom.set_xlim(-0.5, max(1, len(profile)) - 0.5)
        bottom.set_xlabel("distance to the border (units)", fontsize=7)
        bottom.tick_params(labelsize=7)
        if j == 0:
            bottom.set_ylabel("mean |PPP| / std", fontsize=8)
    top_value = max((v for values in profiles.values() for v in values if math.isfinite(v)), default=0.0)
    for bottom in axes[1]:  # one scale from zero for every layer's profile: layers compare at a glance
        bottom.set_ylim(0.0, 1.05 * top_value if top_value > 0 else 1.0)
    fig.tight_layout()
    return fig
