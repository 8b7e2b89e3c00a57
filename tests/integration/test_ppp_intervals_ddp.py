"""PPP's intervals under DDP (issue 33): each image joins the bootstrap group of its dataset index, so 2
gloo ranks, each holding a share of the images, end with the intervals of one process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.runs import ROOT, train_in_process

ARGS = [
    "task=ppp",
    "backbone=tiny",
    "data.image_size=32",
    "data.num_test=8",
    "task.reference_cache=off",
    "callbacks.progress=null",
]


def metrics_of(stdout: str) -> dict:
    return json.loads((Path(stdout.strip().splitlines()[-1]) / "metrics.json").read_text())


def test_two_ddp_ranks_give_the_intervals_of_one_process(tmp_path):
    one = train_in_process(*ARGS, "data.batch_size=8", f"paths.output_root={tmp_path / 'one'}")
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *ARGS, "trainer=ddp_cpu", "data.batch_size=2"]
        + [f"paths.output_root={tmp_path / 'two'}"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    single, ranks = metrics_of(one.stdout), metrics_of(two.stdout)
    assert ranks["ppp/images"] == single["ppp/images"] == 8 and ranks["ppp/groups"] == 8
    keys = [k for k in single if k.endswith(("/ci_low", "/ci_high"))]
    assert len(keys) == 2 * 6 * 5  # 6 keys with an interval per tap
    for key in keys:
        assert ranks[key] == pytest.approx(single[key], rel=1e-6), key
