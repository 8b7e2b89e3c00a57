"""GPU check: what a lent GPU must show, in one run of under 8 minutes on one GPU (issue 21).

Steps, each a subprocess with its own time limit, summarised in one table at the end:

1. ``posenet_fp32``: the default PosENet run (``python train.py``) with ``trainer=gpu``; its SPC per
   test input and target within ``--spc-tol`` (.01) of the CPU reference (``--reference``: the same
   run on a CPU, ``docs/results/main_job.md`` as ``scripts/results.py`` writes it, or a ``metrics.json``).
2. ``posenet_bf16``: the same with ``task.autocast=bf16`` (the frozen backbone under bf16 autocast).
3. ``posenet_cache``: ``benchmarks/posenet_cache.py --trainer gpu`` (cached / bare forward ratio).
4. ``train_overhead``: ``benchmarks/train_overhead.py --device cuda`` (posenc / bare loop per step).
5. ``location_cls_gps``: location classification with the ICCV 2021 authors' protocol
   (``protocol=gps``) on 10,000 canvases; images per second.
6. ``ddp``: DDP on every visible GPU (two or more): the same metrics as one process with the
   whole batch, to ``--ddp-tol`` (1e-4).

Without a GPU (CI), every GPU-only step is skipped and says so; its CPU smoke version runs instead
(tiny backbone, a few steps: it proves the commands compose and run, and the table is still made),
and DDP's comparison runs on two CPU processes (``trainer=ddp_cpu``). Exit 1 when a check fails.

    bash benchmarks/gpu_check.sh [--reference FILE] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "docs" / "results" / "main_job.md"  # the default run on a CPU (python scripts/results.py main_job)
SMOKE = [
    "backbone=tiny",
    "data.image_size=32",
    "data.num_train=16",
    "data.num_val=8",
    "data.num_test=4",
    "task.max_steps=5",
]  # the CPU smoke version of a PosENet step
GPS_SMOKE = ["backbone=tiny", "data.num_train=96", "data.num_test=18", "task.max_steps=3"]


@dataclass
class Step:
    name: str
    status: str = "ok"  # ok | failed | skipped | smoke
    seconds: float = 0.0
    lines: list[str] = field(default_factory=list)


def gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - a broken CUDA install reads as no GPU, said in the table
        return 0


def run(cmd: list[str], timeout: float) -> tuple[int, str, float]:
    """Run ``cmd`` from the checkout; ``(exit status, its output's tail, seconds)``."""
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        out, rc = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        out, rc = f"{exc.stdout or ''}{exc.stderr or ''}\ntimed out after {timeout:.0f} s", 124
    return rc, out, time.perf_counter() - start


def train(overrides: list[str], run_dir: Path, timeout: float) -> tuple[int, dict, float, str]:
    """One ``train.py`` run into ``run_dir``; ``(exit status, metrics.json, seconds, output tail)``."""
    rc, out, seconds = run(
        [sys.executable, "train.py", *overrides, "callbacks.progress=null", f"hydra.run.dir={run_dir}"], timeout
    )
    metrics_file = run_dir / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    return rc, metrics, seconds, out[-1500:]


def read_reference(path: Path) -> dict[str, float]:
    """SPC per test input and target of the CPU reference: a ``metrics.json``, or the table of
    ``docs/results/main_job.md`` (``| input | H SPC / MAE | ...`` rows, 3 decimals)."""
    if not path.is_file():
        return {}
    if path.suffix == ".json":
        return spc(json.loads(path.read_text()))
    values: dict[str, float] = {}
    targets: list[str] = []
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == "input" and all(c.endswith("SPC / MAE") for c in cells[1:]):
            targets = [c.split()[0] for c in cells[1:]]
        elif targets and len(cells) == len(targets) + 1 and "/" in cells[1]:
            for target, cell in zip(targets, cells[1:]):
                values[f"test/{cells[0]}/{target}/spc"] = float(cell.split("/")[0])
        elif targets and not line.startswith("|"):
            targets = [] if values else targets
    return values


def spc(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if k.startswith("test/") and k.endswith("/spc")}


def tests(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if k.startswith("test/") and isinstance(v, (int, float))}


def max_gap(a: dict[str, float], b: dict[str, float]) -> tuple[float, str]:
    shared = sorted(set(a) & set(b))
    if not shared:
        return float("inf"), "no metric in common"
    worst = max(shared, key=lambda k: abs(a[k] - b[k]))
    return abs(a[worst] - b[worst]), worst


def posenet_step(name: str, extra: list[str], gpu: bool, reference: dict, tol: float, out: Path) -> Step:
    step = Step(name)
    overrides = ["trainer=gpu", *extra] if gpu else [*SMOKE, *extra]
    rc, metrics, step.seconds, tail = train(overrides, out / name, timeout=240)
    if rc != 0:
        step.status, step.lines = "failed", [f"exit {rc}: {tail.strip().splitlines()[-1] if tail.strip() else ''}"]
        return step
    if not gpu:
        step.status = "smoke"
        step.lines = [f"skipped on the GPU: no GPU here; CPU smoke run ({' '.join(overrides)}) completed"]
        return step
    gap, key = max_gap({k: round(v, 3) for k, v in spc(metrics).items()}, reference)
    step.lines = [
        f"steps {metrics.get('train/steps')}, converged {metrics.get('train/converged')}",
        f"max |SPC - CPU reference| = {gap:.4f} ({key}); tolerance {tol}",
    ]
    step.status = "ok" if gap <= tol else "failed"
    return step


def script_step(name: str, cmd: list[str], smoke: list[str], gpu: bool, timeout: float) -> Step:
    step = Step(name)
    rc, text, step.seconds = run([sys.executable, *(cmd if gpu else smoke)], timeout)
    lines = [line for line in text.splitlines() if line.strip()]
    if rc != 0:
        step.status, step.lines = "failed", [f"exit {rc}", *lines[-3:]]
        return step
    step.status = "ok" if gpu else "smoke"
    step.lines = ([] if gpu else ["skipped on the GPU: no GPU here; CPU smoke run completed"]) + [
        line for line in lines if any(w in line for w in ("x ", "/", "ms/step", " s", "target"))
    ][-8:]
    return step


def location_step(gpu: bool, out: Path) -> Step:
    step = Step("location_cls_gps")
    overrides = ["protocol=gps", *(["trainer=gpu", "data.num_train=10000"] if gpu else GPS_SMOKE)]
    rc, metrics, step.seconds, tail = train(overrides, out / step.name, timeout=240)
    if rc != 0:
        step.status, step.lines = "failed", [f"exit {rc}: {tail.strip().splitlines()[-1] if tail.strip() else ''}"]
        return step
    status = json.loads((out / step.name / "status.json").read_text())
    steps, batch = int(metrics.get("train/steps") or 0), 48
    wall = float(status.get("wall_time_s") or step.seconds)
    step.lines = [
        f"{steps} steps x batch {batch} in {wall:.1f} s (the whole run): {steps * batch / wall:.0f} images/s",
        f"test accuracy {metrics.get('test/accuracy')}",
    ]
    if not gpu:
        step.status = "smoke"
        step.lines.insert(0, f"skipped on the GPU: no GPU here; CPU smoke run ({' '.join(overrides)})")
    return step


def ddp_step(n_gpus: int, tol: float, out: Path) -> Step:
    """DDP over every GPU (else two CPU processes) against one process with the whole batch. Every
    step sees the whole training set (``data.num_train`` = the batch over all ranks), so the two
    differ only in how the work is split, not in which images a step sees."""
    step = Step("ddp")
    devices = n_gpus if n_gpus >= 2 else 2
    batch = 8 if n_gpus < 2 else 32
    size = [*SMOKE[:-1], "task.max_steps=20"] if n_gpus < 2 else ["task.max_steps=200"]
    base = [*size, f"data.num_train={batch * devices}"]
    trainer = ["trainer=ddp", f"trainer.devices={devices}"] if n_gpus >= 2 else ["trainer=ddp_cpu"]
    single = ["trainer=gpu" if n_gpus >= 2 else "trainer=cpu"]
    start = time.perf_counter()
    rc1, one, _, tail1 = train([*base, *single, f"data.batch_size={batch * devices}"], out / "ddp_single", 240)
    rc2, many, _, tail2 = train([*base, *trainer, f"data.batch_size={batch}"], out / "ddp_ranks", 240)
    step.seconds = time.perf_counter() - start
    if rc1 or rc2:
        step.status = "failed"
        step.lines = [f"exit {rc1} / {rc2}: {(tail1 if rc1 else tail2).strip().splitlines()[-1:]}"]
        return step
    gap, key = max_gap(tests(one), tests(many))
    where = f"{devices} GPUs" if n_gpus >= 2 else "2 CPU processes (fewer than two GPUs here: the GPU run is skipped)"
    step.lines = [
        f"{where} x batch {batch} vs 1 process x batch {batch * devices}: max |metric gap| {gap:.2e} ({key}); "
        f"tolerance {tol:g}"
    ]
    step.status = "ok" if gap <= tol else "failed"
    return step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--reference",
        type=Path,
        default=REFERENCE,
        help="the default run on a CPU: docs/results/main_job.md or a metrics.json",
    )
    parser.add_argument("--out", type=Path, default=None, help="where the runs go (default: a temp dir)")
    parser.add_argument("--spc-tol", type=float, default=0.01)
    parser.add_argument("--ddp-tol", type=float, default=1e-4)
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="posenc-gpu-check-"))
    n_gpus = gpus()
    gpu = n_gpus > 0
    reference = read_reference(args.reference)
    if gpu and not reference:
        print(
            f"error: no CPU reference in {args.reference}: run the default job on a CPU first "
            "(python scripts/results.py main_job writes docs/results/main_job.md)",
            file=sys.stderr,
        )
        return 2
    start = time.perf_counter()
    print(f"gpu check: {n_gpus} GPU(s); runs in {out}", flush=True)
    steps = []
    for make in (
        lambda: posenet_step("posenet_fp32", [], gpu, reference, args.spc_tol, out),
        lambda: posenet_step("posenet_bf16", ["task.autocast=bf16"], gpu, reference, args.spc_tol, out),
        lambda: script_step(
            "posenet_cache",
            ["benchmarks/posenet_cache.py", "--trainer", "gpu"],
            [
                "benchmarks/posenet_cache.py",
                "--backbone",
                "tiny",
                "--image-size",
                "32",
                "--num-train",
                "16",
                "--num-test",
                "4",
                "--epochs",
                "1",
            ],
            gpu,
            240,
        ),
        lambda: script_step(
            "train_overhead",
            ["benchmarks/train_overhead.py", "--device", "cuda", "--steps", "20", "--threads", "0"],
            [
                "benchmarks/train_overhead.py",
                "--backbone",
                "tiny",
                "--image-size",
                "48",
                "--batch-size",
                "4",
                "--steps",
                "2",
                "--repeats",
                "1",
            ],
            gpu,
            240,
        ),
        lambda: location_step(gpu, out),
        lambda: ddp_step(n_gpus, args.ddp_tol, out),
        # the atlas at paper scale (issue 34): the default zoo, paddings and seeds at 224 px, the readouts on
        # 28 x 28 features, one job per model on the one GPU (parallel=1)
        lambda: script_step(
            "atlas_224",
            ["sweep.py", "atlas", "data.image_size=224", "readout.feature_size=28", "task.device=cuda", "parallel=1",
             f"paths.output_root={out / 'atlas_224'}"],
            ["sweep.py", "atlas", "groups=tiny", "padding=zeros", "seed=0", "task.max_steps=20", "task.ppp_contexts=4",
             "data.num_train=16", "data.num_val=0", f"paths.output_root={out / 'atlas_smoke'}"],
            gpu,
            420,
        ),
    ):
        step = make()
        steps.append(step)
        print(f"[{step.status:>7}] {step.name} ({step.seconds:.0f} s)", flush=True)
        for line in step.lines:
            print(f"          {line}", flush=True)
    total = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    print(f"\n| step | status | seconds |\n|---|---|---|")
    for step in steps:
        print(f"| {step.name} | {step.status} | {step.seconds:.0f} |")
    print(f"\ntotal {total:.0f} s (target on one GPU: under 480 s); largest child peak RSS {peak:.1f} GB")
    failed = [s.name for s in steps if s.status == "failed"]
    print(
        "gpu check: "
        + (
            f"FAILED: {', '.join(failed)}"
            if failed
            else "passed"
            if gpu
            else "passed on CPU (the GPU parts skipped: no GPU here)"
        )
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
