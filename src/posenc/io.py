"""File I/O every layer shares, importable without torch or Lightning (``sweep.py collect`` reads a sweep
with it): the run contract's JSON and YAML files (``status.json``, ``metrics.json``, ``config.yaml``), atomic
``torch.save`` and weights-only ``torch.load`` (torch imported when called), and folders reserved with an
exclusive ``mkdir``. A run dir or sweep dir is someone's input: a damaged file is None (JSON) or one line
(YAML, a torch file), never a traceback."""

from __future__ import annotations

import errno
import json
import os
import pickle
import re
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from posenc.errors import PosencError, first_line


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``; None when missing, unreadable, not a regular file (a FIFO would block
    the reader forever, a device never end) or not an object."""
    if not Path(path).is_file():  # follows a symlink: one to a FIFO or a device is no regular file either
        return None
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def load_yaml(path: Path, expected: str) -> Any:
    """``path`` read by OmegaConf; one line naming the file and what it should hold (``expected``) when
    it is not YAML."""
    import yaml
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        return OmegaConf.load(path)
    except (yaml.YAMLError, UnicodeDecodeError, OSError, OmegaConfBaseException) as exc:
        raise PosencError(f"cannot read {path}: not YAML ({first_line(exc)}); expected {expected}") from None


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
    import torch

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
    import torch

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


def reserve_dir(parent: Path, stem: str, source: str = "") -> Path:
    """Create ``parent/stem`` (or ``stem_1``, ``stem_2``, ...) with an exclusive ``mkdir``: two
    processes started in the same second never get the same directory. One line, naming ``source`` (what
    set ``parent``: ``paths.output_root=<dir>``), when nothing can be written there: a file in the way, a
    read-only or full file system (``os.access`` would say yes to root: this tries)."""
    what = f"{source or parent} is not valid"
    try:
        parent.mkdir(parents=True, exist_ok=True)
        for n in range(10_000):
            path = parent / (stem if n == 0 else f"{stem}_{n}")
            try:
                path.mkdir()
            except FileExistsError:
                continue
            try:
                check_writable(path, what)
            except PosencError:
                path.rmdir()  # nothing of the run is left behind
                raise
            return path
    except OSError as exc:
        raise PosencError(
            f"{what}: cannot create {exc.filename or parent} ({exc.strerror or first_line(exc)}); valid: a "
            "directory this user can write into"
        ) from None
    raise RuntimeError(f"cannot reserve a directory under {parent}")


def discard_if_empty(folder: Path | None) -> None:
    """Remove ``folder`` when it exists and is empty (a run dir reserved for a config that never composed)."""
    if folder is not None:
        try:
            folder.rmdir()  # only ever removes an empty directory
        except OSError:
            pass


def check_writable(folder: Path, what: str) -> None:
    """One line when nothing can be written into ``folder`` (read-only, full, not a directory): by
    trying (``os.access`` says yes to root on a read-only mount)."""
    import tempfile

    try:
        with tempfile.TemporaryFile(dir=folder) as handle:
            handle.write(b"\0" * 4096)  # a full file system still creates an empty file: write a block
            handle.flush()
    except OSError as exc:
        raise PosencError(f"{what}: cannot write into {folder} ({exc.strerror or first_line(exc)})") from None


def write_json(path: Path, data: Mapping[str, Any]) -> Path:
    """Write atomically (temp file + rename), so a kill never leaves half a file."""
    tmp = path.with_suffix(path.suffix + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path
