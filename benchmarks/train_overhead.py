"""Benchmark: what training through posenc (Hydra config + Lightning Trainer + the run contract's
callbacks and logger) costs per optimizer step over a bare PyTorch loop.

One trainable task (``task=location_cls``, canvases of ``data=canvas``) is trained for
``--warmup`` + ``--steps`` optimizer steps two ways in one process, with the same model (same
seed, same weights), optimizer, lr schedule and batches:

1. **posenc**: the config composed as a user's run composes it, the datamodule, task, csv logger,
   the callbacks of ``cfg.callbacks`` (checkpointing, run contract, loss curve) and a Trainer from
   ``cfg.trainer``, then ``trainer.fit``;
2. **bare**: the same task object used as a plain ``nn.Module`` in a hand-written loop
   (forward, loss, ``zero_grad``, ``backward``, ``step``, scheduler step).

What is timed (both ways): the wall time from the end of the last warm-up step to the end of the
last step, i.e. exactly ``--steps`` whole iterations (loading the batch, moving it to the device,
the step, and every hook / callback / logging call in between); setup, the warm-up steps and the
end of the run are not (``data.num_val=0``: no validation; ``data.num_train`` = one epoch of the
run, so no epoch end falls inside the window). The posenc fit's total time is printed too.
The two are run alternately (bare, posenc, bare, posenc, ...) and the medians compared.
Target: posenc / bare <= 1.10.

One torch thread by default (``--threads``): on a shared 2-core CPU every 2-thread op stalls
whenever its second thread waits for a core, which made single runs vary by +-40% (either way);
the framework's own per-step work is single-threaded Python either way. ``--backbone tiny
--image-size 48 --batch-size 4`` makes that per-step cost visible (``posenc - bare``, ms/step).

    python benchmarks/train_overhead.py [--backbone resnet18_cifar] [--steps 5] [--warmup 1] ...
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig

from posenc.config.compose import compose_run

PRECISIONS = {"32": "32-true", "bf16-mixed": "bf16-mixed"}


def overrides(args: argparse.Namespace) -> list[str]:
    """The run's config: one epoch of exactly ``warmup + steps`` batches, no validation."""
    total = args.warmup + args.steps
    grid = 3
    return [
        "task=location_cls",
        f"backbone={args.backbone}",
        f"data.image_size={args.image_size}",
        f"data.canvas.grid={grid}",
        f"data.canvas.patch_size={args.image_size // grid}",
        f"data.batch_size={args.batch_size}",
        f"data.num_train={total * args.batch_size}",
        "data.num_val=0",
        "data.num_test=8",
        f"data.device={args.device}",
        f"task.max_steps={total}",
        f"task.channels_last={str(args.channels_last).lower()}",
        f"trainer.accelerator={args.device}",
        f"trainer.precision={PRECISIONS[args.precision]}",
        "trainer.val_check_interval=null",
        "trainer.check_val_every_n_epoch=1",
        "callbacks.progress=null",
        f"trainer.enable_progress_bar={str(args.progress_bar).lower()}",
    ]


def clock(device: torch.device) -> tuple[float, float]:
    """``(wall, process CPU)`` seconds now, once the device has finished its queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter(), time.process_time()


def window(marks: list[tuple[float, float]]) -> tuple[float, float]:
    """``(wall, CPU)`` seconds between the two marks."""
    return marks[1][0] - marks[0][0], marks[1][1] - marks[0][1]


class StepClock(Callback):
    """:func:`clock` at the end of optimizer step ``warmup`` - 1 and of the last one (the device
    synchronised there only); added last, so every other callback's hook of a step falls inside
    the window."""

    def __init__(self, warmup: int, total: int) -> None:
        self.marks = {warmup - 1, total - 1}
        self.times: list[tuple[float, float]] = []

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step - 1 in self.marks:
            self.times.append(clock(pl_module.device))


def posenc_run(
    cfg: DictConfig, args: argparse.Namespace, run_dir: Path
) -> tuple[tuple[float, float], float, list[float]]:
    """``((timed wall, CPU seconds), whole fit seconds, per-step losses)`` of the run through the
    framework, built as :func:`posenc.run.train.train` builds it."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = instantiate(cfg.data)
    task = instantiate(cfg.task)
    loggers = [instantiate(c) for c in cfg.logger.values() if c is not None]
    callbacks = [instantiate(c) for c in cfg.callbacks.values() if c is not None]
    step_clock = StepClock(args.warmup, args.warmup + args.steps)
    trainer = instantiate(
        cfg.trainer, logger=loggers, callbacks=[*callbacks, step_clock], default_root_dir=str(run_dir)
    )
    start = time.perf_counter()
    trainer.fit(task, datamodule=datamodule)
    fit_s = time.perf_counter() - start
    curve = next(c for c in callbacks if hasattr(c, "history"))  # posenc.run.convergence.LossCurve
    return window(step_clock.times), fit_s, curve.curves()["loss"]


def bare_run(cfg: DictConfig, args: argparse.Namespace) -> tuple[tuple[float, float], list[float]]:
    """``((timed wall, CPU seconds), per-step losses)`` of a plain loop over the same task module."""
    device = torch.device(args.device)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    # what the Trainer sets from cfg.trainer.deterministic (global flags: set them here as well,
    # so the first bare run does not run under other flags than the later ones)
    torch.use_deterministic_algorithms(bool(cfg.trainer.deterministic))
    if cfg.trainer.deterministic:
        torch.backends.cudnn.benchmark = False
    datamodule = instantiate(cfg.data)
    task = instantiate(cfg.task)
    # The task reads its label space (head size, targets) from ``self.trainer.datamodule`` and
    # nothing else of a Trainer on this path; a stand-in holding only the datamodule gives it that
    # without building a Trainer whose loop would never run. Same order as in fit: data, then head.
    task.trainer = SimpleNamespace(datamodule=datamodule)
    datamodule.setup("fit")
    task.to(device)
    task.setup("fit")
    task.train()
    total = args.warmup + args.steps
    optimizer = task.optimizer_factory(params=[p for p in task.parameters() if p.requires_grad])
    scheduler = (
        task.scheduler_factory(optimizer=optimizer, total_steps=total)["scheduler"]
        if task.scheduler_factory is not None
        else None
    )
    bf16 = args.precision == "bf16-mixed"
    times: list[tuple[float, float]] = []
    losses: list[torch.Tensor] = []
    for i, batch in zip(range(total), datamodule.train_dataloader()):
        batch = {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = task.loss(task(batch["image"]), task.targets(batch))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        losses.append(loss.detach())
        if i in (args.warmup - 1, total - 1):
            times.append(clock(device))
    task.trainer = None
    return window(times), [float(v) for v in losses]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18_cifar")
    parser.add_argument("--steps", type=int, default=5, help="timed optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before them (>= 1)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=96, help="a multiple of 3 (3 x 3 grid of patches)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--precision", choices=list(PRECISIONS), default="32")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--progress-bar", action="store_true", help="Lightning's default (tqdm) bar in the posenc run")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each, alternating")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default, one per core)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.warmup < 1 or args.steps < 1 or args.image_size % 3:
        parser.error("--warmup and --steps must be >= 1 and --image-size a multiple of 3")
    root = Path(tempfile.mkdtemp(prefix="posenc-overhead-"))
    config = overrides(args)
    timed: dict[str, list[tuple[float, float]]] = {"bare": [], "posenc": []}
    fit_s: list[float] = []
    drift = 0.0
    for r in range(args.repeats):
        seconds, bare_losses = bare_run(compose_run(config, root / f"bare{r}"), args)
        timed["bare"].append(seconds)
        print(f"bare   run {r}: {seconds[0]:7.2f} s wall, {seconds[1]:7.2f} s CPU for {args.steps} steps", flush=True)
        seconds, fit, posenc_losses = posenc_run(compose_run(config, root / f"posenc{r}"), args, root / f"posenc{r}")
        timed["posenc"].append(seconds)
        fit_s.append(fit)
        print(
            f"posenc run {r}: {seconds[0]:7.2f} s wall, {seconds[1]:7.2f} s CPU for {args.steps} steps "
            f"(whole fit {fit:.2f} s)",
            flush=True,
        )
        drift = max(drift, max(abs(a - b) for a, b in zip(bare_losses, posenc_losses)))
    wall = {k: statistics.median(t[0] for t in v) for k, v in timed.items()}
    cpu = {k: statistics.median(t[1] for t in v) for k, v in timed.items()}
    images = args.steps * args.batch_size
    print(f"\nconfig: {' '.join(config)}")
    print(
        f"device {args.device}, torch threads {torch.get_num_threads()}, precision {args.precision}, "
        f"channels-last {args.channels_last}; medians of {args.repeats} runs of {args.steps} timed steps "
        f"(+{args.warmup} warm-up)"
    )
    for name in ("bare", "posenc"):
        print(
            f"{name:6s}  {1000 * wall[name] / args.steps:8.1f} ms/step  {images / wall[name]:7.1f} images/s  "
            f"(CPU {1000 * cpu[name] / args.steps:8.1f} ms/step)"
        )
    print(f"posenc / bare  {wall['posenc'] / wall['bare']:6.3f}x wall   (target <= 1.10)")
    paired = statistics.median(p[0] / b[0] for p, b in zip(timed["posenc"], timed["bare"]))
    print(f"posenc / bare  {paired:6.3f}x wall, median of the {args.repeats} adjacent pairs' ratios")
    print(f"posenc / bare  {cpu['posenc'] / cpu['bare']:6.3f}x CPU time of the process")
    print(f"posenc - bare  {1000 * (wall['posenc'] - wall['bare']) / args.steps:+8.1f} ms/step wall")
    print(f"posenc whole fit (setup, warm-up, timed steps, end of run): {statistics.median(fit_s):.2f} s")
    print(f"max |loss difference| per step, bare vs posenc: {drift:.2e} (0: same weights, batches, updates)")


if __name__ == "__main__":
    main()
