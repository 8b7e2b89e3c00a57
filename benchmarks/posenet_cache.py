"""Benchmark: PosENet with the frozen-feature cache vs re-running the backbone every step.

Runs the same small experiment three ways in one process and prints wall times and ratios:
1. ``task.feature_cache=memory`` (features once, all five readouts in one pass),
2. ``task.feature_cache=off`` (backbone on every step, like the authors' loop but still one pass
   for all five maps; their loop also repeats it per map: 15 epochs x 5 maps = 75 passes),
3. one bare frozen forward pass over the same images (train set + every test set).
Target: cached run / bare forward <= 1.3.

    python benchmarks/posenet_cache.py [--backbone vgg16] [--image-size 224] [--num-train 64] [--trainer gpu] ...
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from common import add_data_arguments
from hydra.utils import instantiate

from posenc.config.compose import compose_run
from posenc.run.train import run


def timed_run(overrides: list[str], run_dir: Path) -> tuple[float, dict]:
    cfg = compose_run(overrides, run_dir)
    start = time.perf_counter()
    metrics = run(cfg)
    return time.perf_counter() - start, metrics


@torch.no_grad()
def bare_forward_seconds(overrides: list[str], run_dir: Path) -> float:
    """One frozen forward pass (backbone + tap resize) over every image the run touches."""
    cfg = compose_run(overrides, run_dir)
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    device = torch.device("cuda" if cfg.trainer.accelerator == "gpu" else "cpu")
    task = instantiate(cfg.task).to(device)
    sets = [datamodule.train_set, *datamodule.test_sets.values()]
    loaders = [torch.utils.data.DataLoader(s, batch_size=cfg.data.batch_size) for s in sets]
    start = time.perf_counter()
    for loader in loaders:
        for batch in loader:
            task.encode(batch["image"].to(device))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = add_data_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--trainer", choices=["cpu", "gpu"], default="cpu", help="the trainer config (conf/trainer/)")
    args = parser.parse_args()
    overrides = [
        f"trainer={args.trainer}",
        f"backbone={args.backbone}",
        f"data.image_size={args.image_size}",
        f"data.num_train={args.num_train}",
        f"data.num_test={args.num_test}",
        f"trainer.max_epochs={args.epochs}",
        "callbacks.progress=null",
    ]
    root = Path(tempfile.mkdtemp(prefix="posenc-bench-"))
    cached_s, cached = timed_run([*overrides, "task.feature_cache=memory"], root / "cached")
    uncached_s, uncached = timed_run([*overrides, "task.feature_cache=off"], root / "uncached")
    bare_s = bare_forward_seconds(overrides, root / "bare")
    drift = max(abs(cached[k] - uncached[k]) for k in cached if k.startswith("test/"))
    print(f"\nconfig: {' '.join(overrides)}")
    print(f"cached run          {cached_s:8.1f} s")
    print(f"uncached run        {uncached_s:8.1f} s")
    print(f"bare forward pass   {bare_s:8.1f} s")
    print(f"uncached / cached   {uncached_s / cached_s:8.2f}x")
    print(f"cached / bare       {cached_s / bare_s:8.2f}x   (target <= 1.3)")
    print(f"max |metric difference| cached vs uncached: {drift:.2e}")


if __name__ == "__main__":
    main()
