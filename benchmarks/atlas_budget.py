"""Benchmark: the default position atlas against its budget (issue 34): ``python sweep.py atlas`` (today's zoo,
paddings and size, 3 seeds) in at most 5 minutes of wall time on 2 CPU cores, its job time at most 1.5x its
forward passes. Runs the sweep (or reads one: ``--sweep-dir``) and prints, from one run: the sweep's wall time,
the jobs' wall time, the forward passes, their ratio, and per model the engine's forward / readout / other
seconds, with each target met or not.

    python benchmarks/atlas_budget.py [--sweep-dir outputs/sweeps/atlas/<stamp>] [sweep overrides ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WALL_TARGET_S = 300.0
RATIO_TARGET = 1.5


def model_times(sweep_dir: Path) -> list[dict]:
    """Per model job: its wall time (status.json) and the engine's forward / readout / total seconds."""
    rows = []
    for status_path in sorted(sweep_dir.glob("*/*/status.json")):
        job = status_path.parent
        status = json.loads(status_path.read_text())
        metrics_path = job / "metrics.json"
        metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
        forward = float(metrics.get("atlas/time/forward_s") or 0.0)
        readout = float(metrics.get("atlas/time/readout_s") or 0.0)
        total = float(metrics.get("atlas/time/total_s") or 0.0)
        rows.append(
            {
                "model": job.parent.name,
                "status": status.get("status"),
                "wall_s": float(status.get("wall_time_s") or 0.0),
                "forward_s": forward,
                "readout_s": readout,
                "other_s": max(0.0, total - forward - readout),
                "cells": metrics.get("atlas/cells"),
            }
        )
    return rows


def report(sweep_dir: Path) -> int:
    groups = json.loads((sweep_dir / "groups.json").read_text())
    rows = model_times(sweep_dir)
    wall = float(groups.get("wall_s") or 0.0)
    jobs = sum(r["wall_s"] for r in rows)
    forward = sum(r["forward_s"] for r in rows)
    readout = sum(r["readout_s"] for r in rows)
    print(f"atlas budget: {sweep_dir}")
    print("| model | status | cells | job wall s | forward s | readouts s | other s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['status']} | {r['cells']} | {r['wall_s']:.0f} | {r['forward_s']:.0f} "
            f"| {r['readout_s']:.0f} | {r['other_s']:.0f} |"
        )
    ratio = jobs / forward if forward else float("nan")
    print(f"| all | | | {jobs:.0f} | {forward:.0f} | {readout:.0f} | {max(0.0, jobs - forward - readout):.0f} |")
    print()
    print(
        f"sweep wall time {wall:.0f} s (target <= {WALL_TARGET_S:.0f} s: {'met' if wall <= WALL_TARGET_S else 'NOT met'})"
    )
    print(
        f"job time / forward passes {ratio:.2f} (target <= {RATIO_TARGET}: {'met' if ratio <= RATIO_TARGET else 'NOT met'})"
    )
    return 0 if all(r["status"] == "completed" for r in rows) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweep-dir", type=Path, help="an atlas sweep to read instead of running one")
    parser.add_argument("overrides", nargs="*", help="overrides of sweep.py atlas")
    args = parser.parse_args(argv)
    sweep_dir = args.sweep_dir
    if sweep_dir is None:
        proc = subprocess.run(
            [sys.executable, str(ROOT / "sweep.py"), "atlas", *args.overrides], capture_output=True, text=True, cwd=ROOT
        )
        lines = proc.stdout.strip().splitlines()
        if not lines:
            print(proc.stderr[-2000:], file=sys.stderr)
            return 2
        sweep_dir = Path(lines[-1])
    return report(sweep_dir)


if __name__ == "__main__":
    sys.exit(main())
