"""SIGTERM (the job is being ended: a cancel, or a preemption the cluster requeues itself), SIGINT
(Ctrl-C) and, under SLURM, the time-limit warning (``sbatch --signal=USR1@90``, or submitit's
``signal_delay_s`` signal, SIGUSR2: :func:`posenc.run.slurm.warning_signals`): a run stops at the next
batch boundary with a checkpoint and exits ``128 + signal``. What it then records is
:func:`posenc.run.train.run`'s: on the warning it requeues its job itself (``preempted``,
``requeued: true``); on SIGTERM it never requeues (``interrupted``, or ``preempted`` when the
cluster is requeueing it).

Why not Lightning's own handling: Lightning 2.6 turns SIGTERM into ``SIGTERMException``, a
``SystemExit`` with code 0 (a killed run looks like a finished one to a scheduler), raised in the
middle of a validation pass as well, and writes no checkpoint; Ctrl-C raises ``KeyboardInterrupt``
wherever the process is, possibly mid optimizer step; and its SLURM plugin requeues on SIGUSR1
without recording anything (posenc turns it off: ``auto_requeue=False``). Here a signal during
training is deferred to the end of the current training batch, or of the validation pass that follows
it (:class:`posenc.run.checkpointing.RunCheckpoint` saves there and raises :class:`RunInterrupted`);
outside training (data generation, feature caching, the test pass) nothing is half-trained, so it
raises at once. A second signal always raises at once.
"""

from __future__ import annotations

import signal
from types import FrameType
from typing import Any

from posenc.run.slurm import under_slurm, warning_signals

__all__ = ["HANDLED", "Interruption", "RunInterrupted", "active", "handled_signals", "under_slurm"]

HANDLED = ("SIGTERM", "SIGINT")  # always; under SLURM also its warning signals


def handled_signals() -> list[int]:
    """The signals a run handles here: SIGTERM, SIGINT and, under SLURM, the time-limit warnings."""
    found = [int(s) for name in HANDLED if (s := getattr(signal, name, None)) is not None]
    return found + [s for s in warning_signals() if s not in found] if under_slurm() else found


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

    @property
    def warning(self) -> bool:
        """SLURM's time-limit warning (checkpoint and requeue), not an end (SIGTERM, SIGINT)."""
        return under_slurm() and self.signum in warning_signals()


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
        for signum in handled_signals():
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
