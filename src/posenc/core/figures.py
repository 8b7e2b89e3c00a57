"""Figures of a run: predicted vs target position maps (cf. PosENet, Islam et al. 2020, Fig. 4)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402


def prediction_grid(
    inputs: dict[str, torch.Tensor],
    predictions: dict[str, torch.Tensor],
    targets: torch.Tensor,
    target_names: list[str],
) -> plt.Figure:
    """Rows: the target maps, then one row per test input (its image, then one predicted map
    per target). ``inputs[n]``: ``[3, H, W]`` in [0, 1]; ``predictions[n]``: ``[T, H, W]``."""
    rows = 1 + len(inputs)
    cols = 1 + len(target_names)
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].set_title("input", fontsize=8)
    axes[0, 0].axis("off")
    for j, name in enumerate(target_names):
        axes[0, j + 1].imshow(targets[j].cpu(), cmap="gray", vmin=0, vmax=1)
        axes[0, j + 1].set_title(f"target {name}", fontsize=8)
    for i, (name, image) in enumerate(inputs.items(), start=1):
        axes[i, 0].imshow(image.permute(1, 2, 0).clamp(0, 1).cpu())
        axes[i, 0].set_ylabel(name, fontsize=8)
        for j in range(len(target_names)):
            axes[i, j + 1].imshow(predictions[name][j].float().cpu(), cmap="gray", vmin=0, vmax=1)
    fig.tight_layout()
    return fig


def save_figure(fig: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def loss_curve_figure(
    curves: dict[str, list[float]], window: float = 0.1, val: tuple[list[int], dict[str, list[float]]] | None = None
) -> plt.Figure:
    """Training loss per optimizer step (log scale; the total and every named part) and, when
    given, the held-out losses at their steps (dashed, markers), with the two final windows the
    convergence flag compares shaded (:mod:`posenc.core.convergence`)."""
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    n = max(len(v) for v in curves.values())
    w = max(1, min(n // 2, round(window * n)))
    ax.axvspan(n - 2 * w + 1, n - w + 1, color="0.92", lw=0)
    ax.axvspan(n - w + 1, n + 1, color="0.85", lw=0)
    colors = {}
    for name, values in curves.items():
        (line,) = ax.plot(range(1, len(values) + 1), values, lw=1.6 if name == "loss" else 0.7, label=f"train {name}",
                          color="black" if name == "loss" else None, alpha=0.8)
        colors[name] = line.get_color()
    if val is not None:
        steps, losses = val
        for name, values in losses.items():
            ax.plot(steps, values, "--o", ms=2.5, lw=1.2, color=colors.get(name), label=f"val {name}")
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.legend(fontsize=6, ncol=3)
    fig.tight_layout()
    return fig


def by_distance_figure(
    bins: dict[str, list[str]], values: dict[str, list[float]], runs: dict[str, dict[str, list[float]]] | None = None
) -> plt.Figure:
    """A metric per distance-to-border bin, nearest the border on the left (Islam et al., IJCV
    2024: performance as a function of distance to the border); one panel per metric. ``runs``:
    several curves per metric (``{label: {metric: values}}``, e.g. a sweep's rows) instead of
    ``values``."""
    runs = runs or {"": values}
    metrics = list(bins)
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.0), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        names = bins[metric]
        for label, curves in runs.items():
            if metric in curves:
                ax.plot(range(len(names)), curves[metric], "-o", ms=3, label=label or None)
        ax.set_xticks(range(len(names)), names, fontsize=7, rotation=30)
        ax.set_xlabel("distance to the border (bin)")
        ax.set_ylabel(metric)
        if len(runs) > 1:
            ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def segmentation_preview(images: torch.Tensor, targets: torch.Tensor, preds: torch.Tensor) -> plt.Figure:
    """Rows: a few test images, their target labels, the predictions (class ids or probabilities)."""
    n = len(images)
    fig, axes = plt.subplots(3, n, figsize=(1.8 * n, 5.4), squeeze=False)
    for j in range(n):
        axes[0, j].imshow(images[j].permute(1, 2, 0).clamp(0, 1))
        target = targets[j].float().masked_fill(targets[j] == 255, float("nan"))
        axes[1, j].imshow(target, cmap="tab20", interpolation="nearest")
        axes[2, j].imshow(preds[j].float(), cmap="tab20" if not preds.is_floating_point() else "gray",
                          interpolation="nearest")
    for ax, label in zip(axes[:, 0], ("image", "target", "prediction")):
        ax.set_ylabel(label, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig
