"""Benchmark: PosENet at paper scale on one machine, in flat memory.

PosENet on ``data=folder`` trees of N generated images (random crops of the photos bundled in the
scikit-image / scikit-learn wheels, written as JPEG files in DUTS-TR's layout,
``<root>/DUTS-TR-Image/*.jpg``, into a temp dir), VGG16 at ``--image-size`` px, a fixed readout
budget (``task.max_steps``), the default ``auto`` feature cache with a memory budget of
``--memory-fraction`` of the available RAM (small by default, so that every N goes to the float16
file on disk: the setting that keeps memory flat; the default 0.25 keeps small Ns in memory).

Each N runs in its own subprocess (``posenc.run.train.run``, what ``train.py`` runs) and
reports: seconds per image of encoding the training set into the cache, seconds of the readout
(the training loop, after the cache), the process's peak RSS as the OS counts it
(``os.wait4``'s ``ru_maxrss``, which includes every page of a memory map the process touched)
and the cache's bytes. Printed: the table and each figure's ratio, largest N / smallest N.
Target: seconds per image and peak RSS within 1.2x. One torch thread by default (``--threads``, as
``train_overhead.py``): on a shared 2-core machine a 2-thread op stalls whenever its second thread
waits for a core, which made the same 200 readout steps take 24 s or 180 s depending on the load.

``--location-cls``: ``task=location_cls`` (its default ``shapes`` canvases, 96 px) at 1k / 10k /
50k training canvases (CIFAR-10's size), a few steps each: the peak RSS of generating and holding
them.

    python benchmarks/scale.py                    # N = 256, 1024, 4096
    python benchmarks/scale.py --duts             # and N = 10553 (DUTS-TR's size)
    python benchmarks/scale.py --sizes 512,2048 --steps 100 --memory-fraction 0.25
    python benchmarks/scale.py --location-cls
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

DUTS_TR = 10_553
DEFAULT_SIZES = (256, 1024, 4096)
CANVAS_SIZES = (1_000, 10_000, 50_000)
WRITE_CHUNK = 512  # images generated (and held) at a time while writing a folder
FILE_SIDE = (176, 144)  # written files' width x height: rectangular like DUTS's photos, resized by the loader


# -- the folder trees ----------------------------------------------------------------------------
def write_folder(folder: Path, num: int, photos: tuple[str, ...], seed: int) -> float:
    """``num`` JPEG crops of ``photos`` in ``folder`` (seconds taken), ``WRITE_CHUNK`` at a time."""
    from PIL import Image

    from posenc.data.sources.natural import natural_crops

    start = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    side = max(FILE_SIDE)
    for first in range(0, num, WRITE_CHUNK):
        crops = natural_crops(min(WRITE_CHUNK, num - first), side, photos, seed=seed * 100_003 + first)
        for i, crop in enumerate(crops.permute(0, 2, 3, 1).numpy()):
            Image.fromarray(crop).resize(FILE_SIDE).save(folder / f"im_{first + i:05d}.jpg", quality=90)
    return time.perf_counter() - start


# -- one run in a child process ------------------------------------------------------------------
def child(spec: dict[str, Any]) -> None:
    """Compose and run ``spec["overrides"]`` in ``spec["run_dir"]``; write the timings to ``spec["out"]``."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    import torch

    import posenc.tasks.posenet as posenet
    from posenc.config.compose import compose_run
    from posenc.run.train import run
    from posenc.tasks.base import PosencTask

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    times: dict[str, Any] = {"start": time.perf_counter()}
    cached = posenet.cached_features

    def timed_cache(*args: Any, **kwargs: Any) -> Any:
        begin, cpu = time.perf_counter(), time.process_time()
        features = cached(*args, **kwargs)
        if "encode_s" not in times:  # the first call is the training set's (the held-out set's follows)
            times["encode_s"] = time.perf_counter() - begin
            times["encode_cpu_s"] = time.process_time() - cpu
            times["images"] = len(args[4])
            times["cache"] = type(features).__name__
            times["cache_bytes"] = int(features.nbytes)  # a tensor's or a FeatureFile's
            times["cache_dtype"] = str(features.dtype).replace("torch.", "")
        return features

    posenet.cached_features = timed_cache
    hooks = {name: getattr(PosencTask, name) for name in ("on_train_start", "on_train_end")}

    def stamp(name: str):
        def hook(self: Any) -> None:
            times[name], times[f"{name}_cpu"] = time.perf_counter(), time.process_time()
            return hooks[name](self)

        return hook

    for name in hooks:
        setattr(PosencTask, name, stamp(name))
    metrics = run(compose_run(spec["overrides"], Path(spec["run_dir"])))
    times["end"] = time.perf_counter()
    if "on_train_start" in times and "on_train_end" in times:
        times["readout_s"] = times["on_train_end"] - times["on_train_start"]
        times["readout_cpu_s"] = times["on_train_end_cpu"] - times["on_train_start_cpu"]
    times["wall_s"] = times["end"] - times["start"]
    times["metrics"] = {k: v for k, v in (metrics or {}).items() if k.startswith("test/natural/") or k == "train/steps"}
    Path(spec["out"]).write_text(json.dumps(times))


def run_child(overrides: list[str], root: Path, threads: int = 0) -> dict[str, Any]:
    """One run as a subprocess (``threads`` torch threads; 0: torch's default): its timings, peak RSS
    (bytes) and the cache line it logged."""
    spec = {"overrides": overrides, "run_dir": str(root / "run"), "out": str(root / "times.json"), "threads": threads}
    env = {**os.environ, "POSENC_PROGRESS": "0"}
    load = os.getloadavg()[0]  # a shared machine: the timings below are only as steady as this
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[1],
    )
    output = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage (RUSAGE_CHILDREN is a running max)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"run failed ({proc.returncode}): {' '.join(overrides)}\n{output[-3000:]}")
    result = json.loads(Path(spec["out"]).read_text())
    result["peak_rss"] = usage.ru_maxrss * 1024  # Linux: kilobytes
    result["cpu_s"] = usage.ru_utime + usage.ru_stime
    result["load"] = (load + os.getloadavg()[0]) / 2  # 1-minute load average at its start and end
    result["cache_line"] = next((line for line in output.splitlines() if line.startswith("feature cache:")), "")
    return result


# -- the two benchmarks --------------------------------------------------------------------------
def posenet_scale(args: argparse.Namespace) -> None:
    from posenc.data.sources.natural import TEST_PHOTOS, TRAIN_PHOTOS

    sizes = sorted({*args.sizes, *((DUTS_TR,) if args.duts else ())})
    root = Path(tempfile.mkdtemp(prefix="posenc-scale-", dir=args.tmp))
    try:
        train_dir, test_dir = root / "DUTS-TR", root / "test"
        made = write_folder(train_dir / "DUTS-TR-Image", max(sizes), TRAIN_PHOTOS, seed=0)
        write_folder(test_dir, args.num_test, TEST_PHOTOS, seed=1)
        print(
            f"wrote {max(sizes)} + {args.num_test} JPEGs ({FILE_SIDE[0]}x{FILE_SIDE[1]}) in {made:.0f} s to {root}",
            flush=True,
        )
        base = [
            f"backbone={args.backbone}",
            "data=folder",
            f"data.train_dir={train_dir}",
            f"data.test_dir={test_dir}",
            f"data.image_size={args.image_size}",
            f"data.num_test={args.num_test}",
            f"task.max_steps={args.steps}",
            f"task.cache_memory_fraction={args.memory_fraction}",
            "callbacks.progress=null",
            "seed=0",
        ]
        rows = []
        for n in sizes:
            out = root / f"n{n}"
            result = run_child([*base, f"data.num_train={n}"], out, args.threads)
            rows.append((n, result))
            print(f"N={n}: {result['cache_line']}", flush=True)
            print(
                f"N={n}: encode {result['encode_s']:.0f} s, readout {result.get('readout_s', float('nan')):.0f} s, "
                f"peak RSS {result['peak_rss'] / 1e9:.2f} GB, wall {result['wall_s']:.0f} s",
                flush=True,
            )
            shutil.rmtree(out, ignore_errors=True)  # the cache file: up to 24 GB at DUTS size
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(
        f"\nconfig: {' '.join(base[:1] + base[4:])} (data.train_dir: a generated DUTS-TR-Image folder), "
        f"{args.threads or 'default'} torch thread(s)"
    )
    print(
        f"{'N':>6} {'cache':>13} {'cache GB':>9} {'encode s/img':>13} {'(CPU)':>7} {'readout s':>10} {'(CPU)':>6} "
        f"{'peak RSS GB':>12} {'wall s':>7} {'load':>5} {'natural H SPC':>14}"
    )
    for n, r in rows:
        mode = "disk" if r["cache"] == "FeatureFile" else "memory"
        print(
            f"{n:>6} {mode + ' ' + r['cache_dtype']:>13} {r['cache_bytes'] / 1e9:>9.2f} {r['encode_s'] / n:>13.4f} "
            f"{r['encode_cpu_s'] / n:>7.4f} {r.get('readout_s', np.nan):>10.1f} {r.get('readout_cpu_s', np.nan):>6.0f} "
            f"{r['peak_rss'] / 1e9:>12.2f} {r['wall_s']:>7.0f} {r['load']:>5.1f} "
            f"{r['metrics'].get('test/natural/H/spc', np.nan):>14.3f}"
        )
    print(
        "((CPU): the process's CPU time over the same span, which waiting for a core or the disk does not add to; "
        f"load: the machine's 1-minute load average at the run's start and end, {os.cpu_count()} cores)"
    )
    (small, a), (large, b) = rows[0], rows[-1]
    print(f"\nlargest / smallest N ({large} / {small} = {large / small:.1f}x the images):")
    print(
        f"  encode s/image  {(b['encode_s'] / large) / (a['encode_s'] / small):6.2f}x wall, "
        f"{(b['encode_cpu_s'] / large) / (a['encode_cpu_s'] / small):.2f}x CPU   (target <= 1.2)"
    )
    print(
        f"  readout s       {b.get('readout_s', np.nan) / a.get('readout_s', np.nan):6.2f}x wall, "
        f"{b.get('readout_cpu_s', np.nan) / a.get('readout_cpu_s', np.nan):.2f}x CPU   (same {args.steps} steps)"
    )
    print(f"  peak RSS        {b['peak_rss'] / a['peak_rss']:6.2f}x   (target <= 1.2)")
    print(f"  cache bytes     {b['cache_bytes'] / a['cache_bytes']:6.2f}x")


def location_scale(args: argparse.Namespace) -> None:
    root = Path(tempfile.mkdtemp(prefix="posenc-scale-loc-", dir=args.tmp))
    rows = []
    try:
        for n in CANVAS_SIZES:
            overrides = [
                "task=location_cls",
                f"data.num_train={n}",
                "data.device=cpu",
                "task.max_steps=5",
                "callbacks.progress=null",
                "seed=0",
            ]
            result = run_child(overrides, root / f"n{n}", args.threads)
            rows.append((n, result))
            print(f"N={n}: peak RSS {result['peak_rss'] / 1e9:.2f} GB, wall {result['wall_s']:.0f} s", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    canvas = 3 * 96 * 96 + 96 * 96  # a stored canvas: uint8 image + bool object mask
    print(f"\nconfig: {' '.join(overrides[:1] + overrides[2:])} (data=canvas defaults: shapes, 96 px, grid 3)")
    print(f"{'canvases':>9} {'stored GB':>10} {'peak RSS GB':>12} {'wall s':>8} {'load':>5}")
    for n, r in rows:
        print(f"{n:>9} {n * canvas / 1e9:>10.2f} {r['peak_rss'] / 1e9:>12.2f} {r['wall_s']:>8.0f} {r['load']:>5.1f}")
    (small, a), (large, b) = rows[0], rows[-1]
    print(
        f"\npeak RSS {large} / {small} canvases: {b['peak_rss'] / a['peak_rss']:.2f}x; above the smallest run: "
        f"{(b['peak_rss'] - a['peak_rss']) / ((large - small) * canvas):.2f}x the bytes of the canvases stored"
    )


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        return child(json.loads(sys.argv[2]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=lambda s: [int(v) for v in s.split(",")], default=list(DEFAULT_SIZES))
    parser.add_argument("--duts", action="store_true", help=f"add N = {DUTS_TR} (DUTS-TR's size)")
    parser.add_argument("--location-cls", action="store_true", help="location_cls at 1k / 10k / 50k canvases instead")
    parser.add_argument("--backbone", default="vgg16")
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--steps", type=int, default=200, help="readout steps (task.max_steps)")
    parser.add_argument("--num-test", type=int, default=32)
    parser.add_argument(
        "--memory-fraction",
        type=float,
        default=0.02,
        help="task.cache_memory_fraction (0.02 of ~22 GB: every N here on disk)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (0: torch's default)")
    parser.add_argument("--tmp", default=None, help="where the folders and caches go (default: the system temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the generated folders")
    args = parser.parse_args()
    return location_scale(args) if args.location_cls else posenet_scale(args)


if __name__ == "__main__":
    main()
