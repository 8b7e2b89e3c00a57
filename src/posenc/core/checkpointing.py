"""Checkpoints that survive any ending: atomic writes (a kill or a full disk never leaves half a
file, and the previous checkpoint stays intact), loads that never run code (``weights_only=True``),
and a save schedule of posenc's own (every N optimizer steps, every epoch, on an interruption and
at the end of training) that does not depend on Lightning's top-k bookkeeping.

Lightning's ``ModelCheckpoint`` with ``save_top_k=0`` writes ``last.ckpt`` only when training ends
(Lightning 2.6), so a run killed mid-training had nothing to resume from; :class:`RunCheckpoint`
writes one file, ``checkpoints/last.ckpt``, on its schedule, through :class:`AtomicCheckpointIO`.
A resumed run continues from the exact batch: the train loaders are resumable
(:class:`posenc.data.datamodule.ResumableLoader`) and the checkpoint holds the RNG states.
"""

from __future__ import annotations

import errno
import os
import pickle
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.io import TorchCheckpointIO

from posenc.core.errors import PosencError
from posenc.core.interruption import active as active_interruption

LAST = "last.ckpt"


class DiskFullError(PosencError):
    """A write that ran out of space; the file it replaced is intact."""


def _disk_of(path: Path) -> str:
    """``<mount point> (<free> free)`` of the file system holding ``path``."""
    folder = path if path.is_dir() else path.parent
    mount = folder.resolve()
    while not os.path.ismount(mount) and mount != mount.parent:
        mount = mount.parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return str(mount)
    return f"{mount} ({free / 2**20:.0f} MiB free)"


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a uniquely named temp file beside ``path`` (never in ``$TMPDIR``), flushed
    to disk, then renamed over ``path``: a reader sees the old file or the new one, never a part.
    A full disk raises :class:`DiskFullError` (one line naming the disk) and leaves ``path`` as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            kept = "the previous file is intact" if path.exists() else "nothing was written"
            raise DiskFullError(f"disk full while writing {path} on {_disk_of(path)}; {kept}") from exc
        raise
    return path


def safe_load(path: str | Path, map_location: Any = "cpu", what: str = "checkpoint") -> Any:
    """``torch.load(weights_only=True)``: tensors and plain data only, so a crafted file cannot run
    code; one-line errors for a missing, corrupt or code-carrying file."""
    path = Path(path)
    if not path.is_file():
        raise PosencError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's weights-only unpickler: "unsupported GLOBAL <module.name>" is a file that names code to run
        found = re.search(r"unsupported GLOBAL ([\w.]+)", str(exc))
        if found:
            raise PosencError(
                f"refusing to load {path}: it names code to run ({found.group(1)}), not only tensors "
                "and plain data; load only files from a posenc run or a trusted source"
            ) from exc
        raise PosencError(f"cannot read {what} {path} (corrupt or truncated?): not a torch file") from exc
    except Exception as exc:  # noqa: BLE001 - random bytes fail anywhere in the unpickler (IndexError, KeyError, ...)
        line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PosencError(f"cannot read {what} {path} (corrupt or truncated?): {line[:200]}") from exc


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO with :func:`atomic_save` and :func:`safe_load`; every checkpoint the
    Trainer writes or reads (``trainer.fit(ckpt_path=...)``) goes through it."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        atomic_save(checkpoint, path)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        return safe_load(path, map_location=map_location or "cpu")


def rng_state(module: torch.nn.Module) -> dict[str, Any]:
    """The global torch RNG and every ``torch.Generator`` a module of the task owns
    (``location_cls``'s shift augmentation), keyed by where it lives."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    for name, sub in module.named_modules():
        for attr, value in vars(sub).items():
            if isinstance(value, torch.Generator):
                state[f"gen:{name}:{attr}"] = value.get_state()
    return state


def set_rng_state(module: torch.nn.Module, state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    subs = dict(module.named_modules())
    for key, value in state.items():
        if key.startswith("gen:"):
            _, name, attr = key.split(":", 2)
            generator = getattr(subs.get(name), attr, None)
            if isinstance(generator, torch.Generator):
                generator.set_state(value)


class RunCheckpoint(Callback):
    """Write ``<dirpath>/last.ckpt`` every ``every_n_steps`` optimizer steps (0: never by steps),
    every ``every_n_epochs`` epochs (0: never by epochs), when the run is interrupted (SIGTERM /
    SIGINT, :mod:`posenc.core.interruption`) and when training ends. The checkpoint also holds the RNG
    states, so that a resumed run draws what the uninterrupted one would have; ``resumed_from``
    is the global step a resumed run started at (None for a fresh run)."""

    def __init__(self, dirpath: str, every_n_steps: int = 200, every_n_epochs: int = 1) -> None:
        self.dirpath = Path(dirpath)
        self.every_n_steps, self.every_n_epochs = every_n_steps, every_n_epochs
        self.resumed_from: int | None = None
        self._rng: dict[str, Any] | None = None  # the states a resumed run restores when training starts
        self._module: torch.nn.Module | None = None
        self._saved_step = -1

    @property
    def path(self) -> Path:
        return self.dirpath / LAST

    def save(self, trainer: L.Trainer) -> None:
        """Write ``last.ckpt`` now, unless it already holds this step."""
        if trainer.global_step == self._saved_step or trainer.sanity_checking:
            return
        trainer.save_checkpoint(self.path, False)  # the whole training state (optimizer, loops, callbacks)
        self._saved_step = trainer.global_step

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._module = pl_module

    def state_dict(self) -> dict[str, Any]:
        """Read by Lightning before any ``on_save_checkpoint`` hook: the RNG states of now."""
        return {"rng": rng_state(self._module)} if self._module is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._rng = state_dict.get("rng")

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint["posenc"] = {"task": type(pl_module).__name__, "global_step": trainer.global_step}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        interruption = active_interruption()
        if interruption is not None:  # from here a signal waits for the end of the current batch
            interruption.trainer, interruption.defer = trainer, True
        if trainer.global_step > 0:  # restored from a checkpoint
            self.resumed_from = trainer.global_step
            self._saved_step = trainer.global_step
            if self._rng is not None:
                set_rng_state(pl_module, self._rng)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        interruption = active_interruption()
        if interruption is not None and interruption.pending:
            self.save(trainer)
            interruption.raise_if_pending()
        if not self.every_n_steps or trainer.global_step % self.every_n_steps:
            return
        last_of_epoch = batch_idx + 1 == trainer.num_training_batches
        if last_of_epoch and self._epoch_due(trainer):
            return  # on_train_epoch_end saves it, as an end-of-epoch checkpoint
        self.save(trainer)

    def _epoch_due(self, trainer: L.Trainer) -> bool:
        return bool(self.every_n_epochs) and (trainer.current_epoch + 1) % self.every_n_epochs == 0

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._epoch_due(trainer):
            self.save(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.save(trainer)
        interruption = active_interruption()
        if interruption is not None:
            interruption.defer = False
            interruption.raise_if_pending()
