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
    convergence flag compares shaded (:mod:`posenc.convergence`)."""
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
