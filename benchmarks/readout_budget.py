"""Measurement behind the PosENet readout's default budget (``task.max_steps``).

Runs the PosENet task at several step budgets on the same cached features (``feature_cache=disk``:
the backbone runs once), for a random-init backbone and for a trained one, and prints per budget
the natural-image SPC / MAE of every target, the final training loss and the convergence flag of
:mod:`posenc.run.convergence`. The default budget is the smallest one after which doubling the steps
changes no natural SPC by more than 0.02 on both backbones.

Without ImageNet weights, "trained" means :mod:`posenc.analysis.proxy_weights` (the backbone trained to
tell which bundled photo a crop comes from); give a real file with ``--weights``.

    python benchmarks/readout_budget.py --backbone vgg16 --steps 120 250 500 1000 2000 3000
    python benchmarks/readout_budget.py --backbone tiny --image-size 64 --steps 60 120 250 500
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import add_data_arguments

from posenc.analysis.proxy_weights import save_photo_id_weights
from posenc.config.compose import compose_run
from posenc.run.train import run


def budget_row(overrides: list[str], steps: int, run_dir: Path) -> tuple[dict, float]:
    cfg = compose_run([*overrides, f"task.max_steps={steps}"], run_dir)
    start = time.perf_counter()
    metrics = run(cfg)
    return metrics, time.perf_counter() - start


def main() -> None:
    parser = add_data_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--steps", type=int, nargs="+", default=[120, 250, 500, 1000, 2000, 3000])
    parser.add_argument("--targets", default="[H,V,G,HS,VS]")
    parser.add_argument("--weights", default=None, help="a trained state dict (default: proxy weights)")
    parser.add_argument("--proxy-steps", type=int, default=300)
    parser.add_argument("--proxy-size", type=int, default=64)
    parser.add_argument("--proxy-lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=["trained", "random"], default=None, help="measure one backbone only")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="posenc-budget-"))
    weights = args.weights
    if weights is None and args.only != "random":
        start = time.perf_counter()
        weights = str(
            save_photo_id_weights(
                root / "proxy.pth",
                name=args.backbone,
                steps=args.proxy_steps,
                image_size=args.proxy_size,
                lr=args.proxy_lr,
                seed=args.seed,
            )
        )
        print(f"proxy-trained {args.backbone} weights: {weights} ({time.perf_counter() - start:.0f} s)")
    base = [
        f"backbone={args.backbone}",
        f"data.image_size={args.image_size}",
        f"data.num_train={args.num_train}",
        f"data.num_test={args.num_test}",
        "data.test_inputs=[natural]",
        f"task.targets={args.targets}",
        "task.feature_cache=disk",
        "task.cache_dtype=float32",
        "callbacks.progress=null",
        f"seed={args.seed}",
    ]
    lines = []
    backbones = {"trained": [f"backbone.weights={weights}"], "random": []}
    for label, extra in ((k, v) for k, v in backbones.items() if args.only in (None, k)):
        for steps in args.steps:
            metrics, seconds = budget_row([*base, *extra], steps, root / f"{label[0]}{steps}")
            targets = [k.split("/")[2] for k in metrics if k.startswith("test/natural/") and k.endswith("/spc")]
            cells = "  ".join(
                f"{t} {metrics[f'test/natural/{t}/spc']:.3f}/{metrics[f'test/natural/{t}/mae']:.3f}" for t in targets
            )
            lines.append(
                f"{label:11s} {steps:5d} steps  {cells}  loss {metrics['train/loss/final']:.4f}  "
                f"val loss {metrics.get('val/loss_curve/loss', [float('nan')])[-1]:.4f}  "
                f"converged {metrics['train/converged']} "
                f"(held-out loss fell {100 * (metrics.get('val/loss/rel_decrease') or 0):.1f}%)  ({seconds:.0f} s)"
            )
            print(lines[-1], flush=True)
    print(f"\n{' '.join(base)}\nnatural SPC / MAE per target:")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
