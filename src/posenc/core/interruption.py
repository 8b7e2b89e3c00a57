"""SIGTERM (cluster preemption), SIGINT (Ctrl-C) and, under SLURM, SIGUSR1 (the time-limit
warning of ``sbatch --signal=USR1@90``): a run stops at the next batch boundary with a checkpoint,
records ``status: interrupted`` (``preempted`` when requeued) and exits ``128 + signal``.

Why not Lightning's own handling: Lightning 2.6 turns SIGTERM into ``SIGTERMException``, a
``SystemExit`` with code 0 (a killed run looks like a finished one to a scheduler), raised in the
middle of a validation pass as well, and writes no checkpoint; Ctrl-C raises ``KeyboardInterrupt``
wherever the process is, possibly mid optimizer step. Here a signal during training is deferred to
the end of the current training batch (:class:`posenc.core.checkpointing.RunCheckpoint` saves there and
raises :class:`RunInterrupted`); outside training (data generation, feature caching, the test pass)
nothing is half-trained, so it raises at once. A second signal always raises at once.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from types import FrameType
from typing import Any

HANDLED = ("SIGTERM", "SIGINT", "SIGUSR1")


class RunInterrupted(BaseException):
    """Raised when a handled signal stops the run (a ``BaseException``: no ``except Exception``
    on the way swallows it)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.name = signal.Signals(signum).name
        super().__init__(f"interrupted by {self.name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class Interruption:
    """While active (a context manager around one run), catch the handled signals. ``defer``:
    set while training runs, so the signal is only recorded (``pending``) and acted on at the next
    batch boundary."""

    active: Interruption | None = None  # signals are per process: at most one run handles them

    def __init__(self) -> None:
        self.signum: int | None = None
        self.defer = False
        self.trainer: Any = None
        self._previous: dict[int, Any] = {}

    @property
    def pending(self) -> bool:
        return self.signum is not None

    def raise_if_pending(self) -> None:
        if self.signum is not None:
            raise RunInterrupted(self.signum)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        again = self.signum is not None
        self.signum = signum
        connector = getattr(self.trainer, "_signal_connector", None)
        if connector is not None:  # Lightning's notifier ran first (it chains to us): the stop is ours
            connector.received_sigterm = False
        if again or not self.defer:
            raise RunInterrupted(signum)

    def __enter__(self) -> Interruption:
        for name in HANDLED:
            signum = getattr(signal, name, None)
            if signum is None or (name == "SIGUSR1" and not under_slurm()):
                continue
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread (e.g. a launcher's worker thread): leave signals alone
                break
        Interruption.active = self
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        Interruption.active = None


def active() -> Interruption | None:
    return Interruption.active


def under_slurm() -> bool:
    """A batch job of SLURM (not an interactive ``srun --pty bash``)."""
    return bool(os.environ.get("SLURM_JOB_ID")) and os.environ.get("SLURM_JOB_NAME") not in ("bash", "interactive")


def requeue_slurm_job(signum: int) -> bool:
    """Requeue this SLURM job (``scontrol requeue``) after SIGTERM / SIGUSR1, as Lightning's SLURM
    plugin does; the requeued job resumes the run dir (posenc.core.cli.slurm_run_dir). False when not
    under SLURM, for SIGINT, or when ``scontrol`` refuses."""
    if not under_slurm() or signum == signal.SIGINT or shutil.which("scontrol") is None:
        return False
    job = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = (
        f"{job}_{os.environ['SLURM_ARRAY_TASK_ID']}"
        if job and os.environ.get("SLURM_ARRAY_TASK_ID")
        else os.environ["SLURM_JOB_ID"]
    )
    done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    return done.returncode == 0
