"""Exact resume at every checkpoint (issue 30 §3): a run stopped after any checkpoint -- inside an epoch,
at an epoch's end, after a validation pass, by SIGKILL or by SIGTERM -- and resumed ends with the metrics
of the run that was never stopped, to the last bit, and with its epochs and batches counted alike."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers.runs import ROOT, train_in_process

# 64 images in batches of 8 (8 steps an epoch), 44 steps, a validation pass after every 6th step (6, 12,
# 18, 24, ...); the last step is on no checkpoint schedule here, so every run's last checkpoint is the one
# written when training ends
EXACT = [
    "backbone=tiny",
    "data.image_size=64",
    "data.num_train=64",
    "data.num_val=16",
    "data.num_test=8",
    "data.batch_size=8",
    "task.max_steps=44",
    "trainer.val_check_interval=6",
    "callbacks.progress=null",
]
NO_EPOCHS, NO_STEPS = "callbacks.checkpoint.every_n_epochs=0", "callbacks.checkpoint.every_n_steps=0"
EARLIER = {"SAVE_IN_EPOCH_END": "1"}  # write epoch checkpoints as posenc did before: in on_train_epoch_end
# name: (checkpoint schedule, the signal, the step whose training step sends it, the checkpoint resumed from,
# the stopped run's environment)
STOPS = {
    "mid_epoch": (["callbacks.checkpoint.every_n_steps=5", NO_EPOCHS], signal.SIGKILL, 7, 5, {}),
    "mid_epoch_after_validation": (["callbacks.checkpoint.every_n_steps=6", NO_EPOCHS], signal.SIGKILL, 9, 6, {}),
    "epoch_end": ([NO_STEPS], signal.SIGKILL, 11, 8, {}),  # killed 3 steps into the next epoch
    "epoch_end_after_validation": ([NO_STEPS], signal.SIGKILL, 26, 24, {}),
    "epoch_end_by_an_earlier_posenc": ([NO_STEPS, NO_EPOCHS], signal.SIGKILL, 11, 8, EARLIER),
    "sigterm_before_validation": ([NO_STEPS, NO_EPOCHS], signal.SIGTERM, 17, 18, {}),  # it stops after that pass
}
# ``python train.py ARGS`` that sends itself a signal in the training step at ``global_step == at``: SIGKILL
# dies there, SIGTERM stops at the end of that batch (or of the validation pass after it)
SIGNAL_AT = """
import os, runpy, sys
from posenc.run.checkpointing import RunCheckpoint
from posenc.tasks.posenet import PosENetTask
if os.environ.get("SAVE_IN_EPOCH_END"):
    def on_train_epoch_end(self, trainer, pl_module):
        trainer.save_checkpoint(self.path, False)
        self._saved_step = trainer.global_step
    RunCheckpoint.on_train_epoch_end = on_train_epoch_end
signum, at = int(sys.argv[1]), int(sys.argv[2])
step = PosENetTask.training_step
def training_step(self, batch, batch_idx):
    if self.global_step == at:
        os.kill(os.getpid(), signum)
    return step(self, batch, batch_idx)
PosENetTask.training_step = training_step
sys.argv = sys.argv[3:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def last_checkpoint(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[dict, dict]:
    """The run straight through, in this process: its metrics.json and Lightning's fit loop (epochs,
    batches and steps counted) as its last checkpoint, written when training ended, holds it."""
    out = tmp_path_factory.mktemp("uninterrupted")
    proc = train_in_process(*EXACT, NO_STEPS, NO_EPOCHS, f"paths.output_root={out}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    run_dir = Path(proc.stdout.strip().splitlines()[-1])
    return read(run_dir / "metrics.json"), last_checkpoint(run_dir)["loops"]["fit_loop"]


# the default suite keeps the three endings the issue names (mid-epoch, epoch end, a signal); the other
# schedules run under -m slow (budget: the default suite stays under 10 minutes on 2 cores)
SLOW_STOPS = {"mid_epoch_after_validation", "epoch_end_after_validation", "epoch_end_by_an_earlier_posenc"}


@pytest.mark.parametrize(
    "stop", [pytest.param(s, marks=pytest.mark.slow) if s in SLOW_STOPS else s for s in sorted(STOPS)]
)
def test_a_run_stopped_after_any_checkpoint_resumes_to_the_uninterrupted_metrics(tmp_path, uninterrupted, stop):
    schedule, signum, at, resumed_from, env = STOPS[stop]
    # the stopped run is a process of its own on this process's torch threads (those of the uninterrupted
    # and the resumed run): the three compute alike to the last bit
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            SIGNAL_AT,
            str(int(signum)),
            str(at),
            str(ROOT / "train.py"),
            *EXACT,
            *schedule,
            f"paths.output_root={tmp_path}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **env, "OMP_NUM_THREADS": str(torch.get_num_threads())},
    )
    assert proc.returncode == (-signal.SIGKILL if signum == signal.SIGKILL else 143), proc.stderr[-2000:]
    (run_dir,) = (p.parent for p in tmp_path.glob("runs/*/status.json"))
    assert last_checkpoint(run_dir)["global_step"] == resumed_from
    status = read(run_dir / "status.json")  # SIGKILL: nothing recorded the ending
    assert status["status"] == ("running" if signum == signal.SIGKILL else "interrupted"), status

    resumed = train_in_process("--resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert read(run_dir / "status.json")["resumed_from_step"] == resumed_from
    metrics, loops = uninterrupted
    final = read(run_dir / "metrics.json")
    assert sum(k.startswith("test/") for k in metrics) >= 3 and sum(k.startswith("val/") for k in metrics) >= 3
    # every metric, the training and validation record included, to the last bit
    differ = sorted(k for k in set(metrics) | set(final) if final.get(k) != metrics.get(k))
    assert not differ, {k: (final.get(k), metrics.get(k)) for k in differ[:8]}
    # and training ends where the uninterrupted run's did, its epochs and batches counted alike
    ended = last_checkpoint(run_dir)["loops"]["fit_loop"]
    counted = {k: (v, loops.get(k)) for k, v in ended.items() if v != loops.get(k)}
    assert set(ended) == set(loops) and not counted, counted
