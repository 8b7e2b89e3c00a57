"""Encode a dataset through a frozen backbone once and reuse the features for every epoch and
every target map (PosENet's backbone is frozen, so re-running it — as the authors' loop does for
each of 15 epochs x 5 maps — recomputes identical tensors).

Features are stored channels-last, ``[N, H, W, C]`` (``IndexedFeatures`` serves them back as
channels-last ``[B, C, H, W]`` views, the layout the readout conv is fastest with on CPU).

Modes: ``memory`` (a tensor), ``disk`` (a ``.npy`` file under ``cache_dir`` keyed by a hash of
everything that determines the features, reused across runs, read and written row by row:
:class:`FeatureFile`), ``off`` (no cache), and ``auto`` (the default): ``memory`` when the features
take at most ``memory_fraction`` of the RAM available now, else ``disk`` (:func:`plan_cache`), with
dtype ``auto`` = float32 in memory, float16 on disk. The choice is logged in one line.

Nothing holds all images or all features at once unless they are the memory cache: the encoder
streams batches of the dataset into the cache, under a progress bar.

A disk cache entry is trusted only when complete and intact (:func:`entry_problem`): its ``.npy``
header must hold the run's ``(N, H, W, C)`` and dtype, its size the header's, and the completion
marker ``<key>-<dtype>.json``, written last, must agree and carry the checksum of its bytes
(:func:`sample_digest`). Anything else is discarded (one log line says why) and encoded again;
an entry that cannot be removed, a cache dir that cannot be written or a disk without room for the
features is refused in one line before the encoding. Temporary files are removed on every ending
a process can see, and those of processes killed outright by the next run using the directory.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import json
import logging
import os
import re
import shutil
import socket
from collections.abc import Callable, Iterator, Sequence, Sized
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, TypeVar, cast, get_args

import numpy as np
import torch
import torch.nn as nn
from lightning.fabric.utilities.rank_zero import rank_zero_only
from torch.utils.data import DataLoader, Dataset

from posenc.errors import PosencError, check_choice, first_line, invalid_value
from posenc.io import DiskFullError
from posenc.progress import track

log = logging.getLogger(__name__)

# auto: memory when the features fit task.cache_memory_fraction of the available RAM, else disk
CacheMode = Literal["auto", "memory", "disk", "off"]
CACHE_MODES: tuple[str, ...] = get_args(CacheMode)
CacheDtype = Literal["auto", "float32", "float16"]  # auto: float32 in memory, float16 on disk
CACHE_DTYPES: tuple[str, ...] = get_args(CacheDtype)
NUMPY_DTYPES = {"float32": np.float32, "float16": np.float16}  # CACHE_DTYPES but auto
DEFAULT_MEMORY_FRACTION = 0.25  # auto's budget: this share of the available RAM (task.cache_memory_fraction)
Store = TypeVar("Store", bound="torch.Tensor | FeatureFile")  # what encode_dataset fills: what its allocate returns
CACHE_DIR_SETTING = "task.cache_dir"  # the setting a disk cache's directory comes from, named in its errors
MARKER_VERSION = 1  # of the completion marker's fields; a marker of another version is not trusted
# The checksum of an entry (sample_digest): blake2b of all its bytes up to SAMPLE_BLOCKS x SAMPLE_BLOCK_BYTES
# (64 MiB), else of that many 1 MiB blocks spread evenly over them (the first and last included). Measured on
# a 1 GiB float16 file (2 shared CPU cores): blake2b of all of it took 1.08 s (0.96 s of hashing), the 64-block
# sample 0.08 s from the page cache and 0.16 s after dropping it. Hashing every byte of DUTS-TR's 24 GB cache
# on each reuse would take ~25 s of CPU plus a full read of the file, so a reuse verifies the sample, computed
# from the file as written to disk, beside the exact shape, dtype and size; a cache up to 64 MiB (any test)
# is verified byte for byte. What the sample can miss, bytes changed in place between its blocks of a
# complete entry, is not how entries go bad: an interrupted write has no marker (written last), a truncated
# or foreign file fails the size or the header, and a file overwritten whole fails the sample.
SAMPLE_BLOCKS, SAMPLE_BLOCK_BYTES = 64, 1 << 20
# a temporary file: <key>-<dtype>.<host>.<pid>.tmp.npy|json (.<pid>.tmp.npy without the host: before the host)
_TEMPORARY = re.compile(r"^[^.]+(?:\.(?P<host>[A-Za-z0-9-]+))?\.(?P<pid>\d+)\.tmp\.(?:npy|json)$")


def module_digest(module: nn.Module) -> str:
    """SHA-1 of a module's parameters and buffers (random-init weights depend on the seed)."""
    h = hashlib.sha1()
    for name, tensor in module.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def memory_cache_device(shape: tuple[int, ...], dtype: str, device: torch.device) -> torch.device:
    """Keep an in-memory cache on the training GPU when it takes at most half of the GPU's free
    memory (batches are then gathered on the GPU, no host-to-device copy per step); else on the
    CPU. Not exercised on a GPU yet: no GPU was available when it was written."""
    if device.type != "cuda":
        return torch.device("cpu")
    nbytes = int(np.prod(shape)) * np.dtype(NUMPY_DTYPES[dtype]).itemsize
    free, _ = torch.cuda.mem_get_info(device)
    return device if nbytes <= free // 2 else torch.device("cpu")


def cache_key(parts: dict[str, Any]) -> str:
    """A stable short hash of a JSON-able description of the features."""
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def available_memory() -> int | None:
    """Bytes of memory this machine can still hand out (``MemAvailable``), None where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def cache_nbytes(shape: Sequence[int], dtype: str) -> int:
    """Bytes of ``shape`` features stored as ``dtype`` (float32 | float16)."""
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(NUMPY_DTYPES[dtype]).itemsize


def _size(nbytes: float) -> str:
    return f"{nbytes / 1e9:.2f} GB" if nbytes >= 1e8 else f"{nbytes / 1e6:.1f} MB"


@dataclass(frozen=True)
class CachePlan:
    """Where and how the features are kept: ``mode`` (memory | disk), ``dtype`` (float32 |
    float16), their ``shape`` and ``nbytes``, the ``requested`` mode; for ``auto`` also the bytes
    they would take in memory (``memory_nbytes``) and the ``budget`` it compared them with, the
    ``fraction`` of the ``available`` bytes it is (None: available memory not known)."""

    mode: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    requested: str = "auto"
    memory_nbytes: int | None = None
    budget: int | None = None
    fraction: float | None = None
    available: int | None = None

    def describe(self, path: Path | None = None, reused: bool = False) -> str:
        """The one line a run logs: mode, dtype, bytes, and the budget (or the setting) that chose them."""
        dims = " x ".join(str(d) for d in self.shape)
        line = f"feature cache: {self.mode} {self.dtype}, {_size(self.nbytes)} ({dims})"
        if self.requested != "auto":
            line += f"; task.feature_cache={self.requested}"
        elif self.budget is None:
            line += "; available memory unknown: kept in memory"
        else:
            budget = (
                f"the memory budget {_size(self.budget)} (task.cache_memory_fraction={self.fraction:g} of "
                f"{_size(self.available or 0)} available)"
            )
            line += (
                f"; within {budget}"
                if self.mode == "memory"
                else f"; {_size(self.memory_nbytes or 0)} in memory would exceed {budget}"
            )
        if path is not None:
            line += f" -> {path}" + (" (reused)" if reused else "")
        return line


def plan_cache(
    mode: str,
    dtype: str,
    shape: Sequence[int],
    memory_fraction: float = DEFAULT_MEMORY_FRACTION,
    available: int | None = None,
) -> CachePlan:
    """Resolve ``auto``: memory when the features (at float32, or at an explicit ``dtype``) take at
    most ``memory_fraction`` x ``available`` bytes (default: :func:`available_memory` now; unknown:
    memory), else disk; dtype ``auto`` = float32 in memory, float16 on disk. Explicit values win."""
    check_choice("task.feature_cache", mode, CACHE_MODES)
    check_choice("task.cache_dtype", dtype, CACHE_DTYPES)
    if mode == "off":
        raise PosencError("task.feature_cache=off keeps no features: there is nothing to plan")
    shape = tuple(int(d) for d in shape)
    resolved, budget, fraction, in_memory = mode, None, None, None
    if mode == "auto":
        if not 0 < memory_fraction <= 1:
            raise invalid_value("task.cache_memory_fraction", memory_fraction, "expected a float in (0, 1]")
        available = available_memory() if available is None else int(available)
        in_memory = cache_nbytes(shape, "float32" if dtype == "auto" else dtype)
        if available is not None:
            budget, fraction = int(memory_fraction * available), float(memory_fraction)
        resolved = "memory" if budget is None or in_memory <= budget else "disk"
    if dtype == "auto":
        dtype = "float16" if resolved == "disk" else "float32"
    return CachePlan(
        resolved,
        dtype,
        shape,
        cache_nbytes(shape, dtype),
        mode,
        in_memory,
        budget,
        fraction,
        available if budget is not None else None,
    )


def read_npy_header(path: str | os.PathLike[str]) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """``(shape, fortran_order, dtype, data_offset)`` of the ``.npy`` file at ``path``; a ``ValueError``
    (its one-line reason) when the bytes are not a ``.npy`` header of version 1.0 or 2.0."""
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"format version {version[0]}.{version[1]}, not 1.0 or 2.0")
        except (ValueError, SyntaxError, TypeError, EOFError) as exc:
            raise ValueError(first_line(exc)) from None
        return tuple(int(d) for d in shape), bool(fortran), np.dtype(dtype), f.tell()


def npy_header_bytes(shape: Sequence[int], dtype: str) -> int:
    """Bytes of the ``.npy`` header :meth:`FeatureFile.create` writes for ``shape`` x ``dtype``."""
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(NUMPY_DTYPES[dtype])), "fortran_order": False}
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {**header, "shape": tuple(int(d) for d in shape)})
    return len(buffer.getvalue())


def _free_bytes(directory: Path) -> int | None:
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return None


def write_failure(directory: Path, need: int, exc: OSError) -> PosencError:
    """One line for a cache write that failed (a full disk or quota: a ``DiskFullError``; an I/O
    error): the directory, the bytes the file needs and those free there now."""
    free = _free_bytes(directory)
    room = "" if free is None else f", {_size(free)} ({free} bytes) free there now"
    kind = DiskFullError if exc.errno in (errno.ENOSPC, errno.EDQUOT) else PosencError
    return kind(
        f"cannot write the feature cache in {directory}: {exc.strerror or exc} ({_size(need)} ({need} bytes) "
        f"needed{room}); free space there, or set {CACHE_DIR_SETTING} to another disk"
    )


class FeatureFile:
    """An ``[N, ...]`` ``.npy`` file (loadable with ``np.load``) whose rows are read and written with
    ``pread`` / ``pwrite``: the bytes pass through the OS page cache only. A ``np.memmap`` maps every
    page it touches into the process instead, so its resident size grows to the file's over an
    epoch (measured: reading a 0.92 GB cache once at random through a memmap raised the peak RSS by
    0.90 GB; through this class by two batch buffers).

    Served a batch at a time by :class:`posenc.data.datamodule.IndexedFeatures` (:meth:`read`);
    ``np.asarray(file)`` reads it whole."""

    def __init__(self, path: str | os.PathLike[str], writable: bool = False) -> None:
        # first: close() (and so __del__) must find these whatever the header turns out to be
        self._fd: int | None = None
        self._pid: int | None = None
        self.path, self.writable = Path(path), writable
        try:
            shape, fortran, dtype, self.offset = read_npy_header(self.path)
        except ValueError as exc:
            raise PosencError(f"feature cache {self.path} is not a .npy file ({exc}); delete it to recompute") from None
        except OSError as exc:
            raise PosencError(f"cannot read the feature cache {self.path}: {exc.strerror or exc}") from None
        if fortran or not shape:
            raise PosencError(f"feature cache {self.path} is not a C-ordered [N, ...] array; delete it to recompute")
        self.shape, self.dtype = shape, dtype
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize

    @classmethod
    def create(cls, path: str | os.PathLike[str], shape: Sequence[int], dtype: str) -> FeatureFile:
        """A new file of ``shape`` x ``dtype`` (header written, rows unwritten: sparse), open for writing."""
        # maps, touches no row
        np.lib.format.open_memmap(path, mode="w+", dtype=NUMPY_DTYPES[dtype], shape=tuple(shape))
        return cls(path, writable=True)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        return self.shape[0] * self.row_bytes

    def __getstate__(self) -> dict[str, Any]:  # a loader worker opens its own descriptor
        return {**self.__dict__, "_fd": None, "_pid": None}

    def _descriptor(self) -> int:
        if self._fd is None or self._pid != os.getpid():
            self._fd, self._pid = os.open(self.path, os.O_RDWR if self.writable else os.O_RDONLY), os.getpid()
        return self._fd

    def sync(self) -> None:
        """Flush the rows written so far to the disk (``fsync``)."""
        os.fsync(self._descriptor())

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = self._pid = None

    def __del__(self) -> None:
        try:
            self.close()
        except OSError:
            pass

    def _transfer(self, write: bool, buffer: np.ndarray, row: int) -> None:
        """Read (or write) the contiguous ``buffer`` from (to) the rows starting at ``row``."""
        # .data: the array's memoryview (numpy types ndarray as a Buffer only for Python >= 3.12)
        view, offset, fd = (
            buffer.reshape(-1).view(np.uint8).data,
            self.offset + row * self.row_bytes,
            self._descriptor(),
        )
        while len(view):
            try:
                done = os.pwrite(fd, view, offset) if write else os.preadv(fd, [view], offset)
            except OSError as exc:
                if not write:
                    raise
                raise write_failure(self.path.parent, self.offset + self.nbytes, exc) from None
            if done <= 0:
                raise PosencError(f"feature cache {self.path} ended at byte {offset}: delete it to recompute")
            view, offset = view[done:], offset + done

    def read(self, rows: Sequence[int] | np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Rows ``rows`` as ``[len(rows), ...]`` (into ``out`` when given, a C-contiguous array of
        at least that many rows); each run of consecutive rows is one read (ascending reads fastest)."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"rows {rows.min()}..{rows.max()} of a feature cache of {len(self)}")
        out = np.empty((len(rows), *self.shape[1:]), self.dtype) if out is None else out[: len(rows)]
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        for start, stop in zip([0, *breaks.tolist()], [*breaks.tolist(), len(rows)]):
            if stop > start:
                self._transfer(False, out[start:stop], int(rows[start]))
        return out

    def __getitem__(self, key: int | slice | Sequence[int] | np.ndarray) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return self.read([int(key) % len(self)])[0]
        if isinstance(key, slice):
            return self.read(range(*key.indices(len(self))))
        return self.read(key)

    def __setitem__(self, key: slice, value: torch.Tensor | np.ndarray) -> None:
        """Write consecutive rows ``key`` (a slice of step 1)."""
        start, stop, step = key.indices(len(self))
        if not self.writable or step != 1:
            raise PosencError(f"feature cache {self.path}: only consecutive rows of a file being written can be set")
        if isinstance(value, torch.Tensor):
            value = value.detach().to("cpu", getattr(torch, self.dtype.name)).numpy()
        value = np.ascontiguousarray(value, dtype=self.dtype)
        if value.shape != (stop - start, *self.shape[1:]):
            raise invalid_value("rows", tuple(value.shape), f"expected {(stop - start, *self.shape[1:])}")
        self._transfer(True, value, start)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        whole = self.read(range(len(self)))
        return whole if dtype is None else whole.astype(dtype)


@torch.no_grad()
def encode_dataset(
    encode: Callable[[torch.Tensor], torch.Tensor],
    dataset: Dataset,
    batch_size: int,
    device: torch.device,
    allocate: Callable[[tuple[int, ...]], Store],
    description: str | None = None,
    what: str = "",
) -> Store:
    """Run ``encode`` over ``dataset`` (dicts with an ``"image"``) in order, a batch at a time, into
    the ``[N, H, W, C]`` store ``allocate(shape)`` returns once the first batch tells the shape
    (under a progress bar saying ``description``).

    Features that are not finite, or too large for a float16 store, are refused in one line naming
    the encoder (``what``) once all are encoded: the counts stay on the device until then, so the
    check adds no synchronisation per batch (a cache of NaNs would otherwise surface as a diverged
    readout, whose remedy, a smaller lr, does not apply)."""
    out: Store | None = None
    start = 0
    size = len(cast(Sized, dataset))  # torch's Dataset declares no __len__; every dataset cached here has one
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    description = description or f"encoding {size} images"
    nonfinite: torch.Tensor | None = None  # of the values encoded so far, on their device
    peak: torch.Tensor | None = None  # the largest |value|, when the store is float16
    for batch in track(loader, description, total=len(loader)):
        feats = encode(batch["image"].to(device)).permute(0, 2, 3, 1)
        if out is None:
            out = allocate((size, *feats.shape[1:]))
        count = (~torch.isfinite(feats)).sum()
        nonfinite = count if nonfinite is None else nonfinite + count
        if str(out.dtype).endswith("float16"):  # torch.float16 (a tensor) or float16 (a FeatureFile)
            top = feats.detach().abs().amax().float()
            peak = top if peak is None else torch.maximum(peak, top)
        out[start : start + len(feats)] = feats
        start += len(feats)
    assert out is not None, "empty dataset"
    encoder = f"the backbone's features ({what})" if what else "the backbone's features"
    if nonfinite is not None and (bad := int(nonfinite.item())):
        raise PosencError(
            f"{encoder} are not finite: {bad} NaN/inf values over the {size} encoded images (the frozen backbone "
            "produces them: its weights, padding or task.autocast; the readout's lr does not matter)"
        )
    limit = float(torch.finfo(torch.float16).max)
    if peak is not None and (largest := float(peak.item())) > limit:
        raise PosencError(
            f"{encoder} reach |x| = {largest:.4g}, beyond float16's {limit:.0f}: a float16 cache would hold inf; "
            "set task.cache_dtype=float32"
        )
    return out


@torch.no_grad()
def feature_shape(
    encode: Callable[[torch.Tensor], torch.Tensor], dataset: Dataset, device: torch.device
) -> tuple[int, ...]:
    """``(N, H, W, C)`` of ``dataset``'s features, from one encoded image."""
    size = len(cast(Sized, dataset))  # torch's Dataset declares no __len__; every dataset cached here has one
    if not size:
        raise PosencError("the feature cache has no images to encode")
    one = encode(dataset[0]["image"][None].to(device))
    return (size, *one.permute(0, 2, 3, 1).shape[1:])


def _dims(shape: Sequence[int]) -> str:
    return " x ".join(str(d) for d in shape)


def _hostname() -> str:
    """This machine's name as it goes into a temporary file's name (a cache dir on a shared file
    system sees other machines' files: only this machine's process ids can be checked)."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except (ProcessLookupError, OverflowError):  # OverflowError: beyond any pid
        return False
    except OSError:  # PermissionError: another user's process
        return True
    return True


def sample_digest(path: str | os.PathLike[str], offset: int, nbytes: int) -> str:
    """blake2b of the ``nbytes`` data bytes at ``offset`` of ``path``: all of them up to
    ``SAMPLE_BLOCKS x SAMPLE_BLOCK_BYTES``, else that many blocks spread evenly from the first byte to
    the last (the cost measured beside the constants). A ``ValueError`` when the file ends early."""
    digest = hashlib.blake2b(digest_size=16)
    if nbytes <= SAMPLE_BLOCKS * SAMPLE_BLOCK_BYTES:
        spans = [(0, nbytes)]
    else:
        starts = np.linspace(0, nbytes - SAMPLE_BLOCK_BYTES, SAMPLE_BLOCKS).round().astype(np.int64)
        spans = [(int(start), SAMPLE_BLOCK_BYTES) for start in starts]
    fd = os.open(path, os.O_RDONLY)
    try:
        for start, length in spans:
            position, end = offset + start, offset + start + length
            while position < end:
                chunk = os.pread(fd, min(end - position, 8 << 20), position)
                if not chunk:
                    raise ValueError(f"it ends at byte {position}")
                digest.update(chunk)
                position += len(chunk)
    finally:
        os.close(fd)
    return digest.hexdigest()


def cache_directory(cache_dir: str | os.PathLike[str]) -> Path:
    """``task.cache_dir`` as a path; an empty one is refused (``Path("")`` is the working directory)."""
    if not os.fspath(cache_dir).strip():
        raise invalid_value(
            CACHE_DIR_SETTING,
            os.fspath(cache_dir),
            "expected a directory (default: outputs/.feature_cache); an empty one would put the cache "
            "in the working directory",
        )
    return Path(cache_dir)


def make_cache_directory(directory: Path) -> None:
    """Create ``directory`` (and its parents); a file there, or a place no directory can be made, is
    refused in one line."""
    if directory.exists() and not directory.is_dir():
        raise invalid_value(CACHE_DIR_SETTING, str(directory), "expected a directory, it is a file")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise invalid_value(
            CACHE_DIR_SETTING, str(directory), f"cannot create that directory ({exc.strerror or exc})"
        ) from None


def remove_stale_temporaries(directory: Path) -> int:
    """Remove the temporary files in ``directory`` of processes of this machine that no longer run
    (killed outright: a SIGKILL or a power cut leaves them; every other ending removes its own), and
    log one line; the bytes reclaimed."""
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return 0
    host, count, reclaimed = _hostname(), 0, 0
    for name in names:
        match = _TEMPORARY.match(name)
        if match is None or match["host"] not in (None, host) or _alive(int(match["pid"])):
            continue
        file = directory / name
        try:
            stat = file.lstat()
            file.unlink()
        except OSError:  # gone meanwhile, or not ours to remove
            continue
        count += 1
        reclaimed += stat.st_blocks * 512 if hasattr(stat, "st_blocks") else stat.st_size  # a sparse file's real bytes
    if count:
        log.info(
            "feature cache: removed %d temporary file%s of ended runs from %s (%s reclaimed)",
            count,
            "" if count == 1 else "s",
            directory,
            _size(reclaimed),
        )
    return reclaimed


@contextlib.contextmanager
def entry_lock(path: Path) -> Iterator[None]:
    """Hold ``<entry>.lock`` (an exclusive ``flock``) while the entry ``path`` is checked and written:
    concurrent runs of one key (a sweep's jobs, DDP ranks) encode it once, the others wait and reuse
    it, and none discards an entry another is completing. Where the lock cannot be had (a read-only
    directory, a file system without locks), it goes on without."""
    lock = path.with_suffix(".lock")
    fd: int | None = None
    for flags in (os.O_RDWR | os.O_CREAT, os.O_RDONLY):
        with contextlib.suppress(OSError):
            fd = os.open(lock, flags, 0o666)
            break
    try:
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("feature cache: waiting for another run writing %s", path)
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError:
                pass
        yield
    finally:
        if fd is not None:
            os.close(fd)  # releases the lock


def entry_problem(path: Path, shape: Sequence[int], dtype: str) -> str | None:
    """Why the cache entry ``path`` (with its marker ``<key>-<dtype>.json``) cannot be reused for
    ``shape`` x ``dtype`` features, in a few words; None when it can. Checked: the ``.npy`` header
    (C order, dtype, shape), the file's size, then the marker (its fields equal to the file's) and the
    checksum it recorded (:func:`sample_digest`)."""
    marker, shape = path.with_suffix(".json"), tuple(int(d) for d in shape)
    if not path.exists():
        return "its data file is missing"
    if not path.is_file():
        return "it is not a regular file"
    try:
        found, fortran, found_dtype, offset = read_npy_header(path)
        size = path.stat().st_size
    except ValueError as exc:
        return f"it is not a .npy file ({exc})"
    except OSError as exc:
        return f"it cannot be read ({exc.strerror or exc})"
    if fortran:
        return "it is Fortran-ordered, not C-ordered"
    if found_dtype != np.dtype(NUMPY_DTYPES[dtype]):
        return f"it holds {found_dtype} values, not {dtype}"
    if found != shape:
        return f"it holds {_dims(found) or 'scalar'} features, this run's are {_dims(shape)}"
    complete = offset + cache_nbytes(shape, dtype)
    if size != complete:
        return f"it is {size} bytes, a complete one is {complete}" + (" (truncated)" if size < complete else "")
    try:
        record = json.loads(marker.read_text())
    except FileNotFoundError:
        return f"it has no completion marker {marker.name} (its writing was cut short, or an older posenc wrote it)"
    except (OSError, ValueError) as exc:
        return f"its completion marker {marker.name} is unreadable ({first_line(exc)})"
    if not isinstance(record, dict) or any(record.get(k) != v for k, v in _marker(shape, dtype, offset).items()):
        return f"its completion marker {marker.name} describes another file"
    try:
        digest = sample_digest(path, offset, complete - offset)
    except (OSError, ValueError) as exc:
        return f"it cannot be read ({first_line(exc)})"
    if record.get("blake2b") != digest:
        return "its bytes differ from the checksum in its completion marker"
    return None


def _marker(shape: tuple[int, ...], dtype: str, offset: int) -> dict[str, Any]:
    """The completion marker's fields but the checksum."""
    return {
        "version": MARKER_VERSION,
        "shape": list(shape),
        "dtype": dtype,
        "header_bytes": offset,
        "file_bytes": offset + cache_nbytes(shape, dtype),
        "sample_blocks": SAMPLE_BLOCKS,
        "sample_block_bytes": SAMPLE_BLOCK_BYTES,
    }


def discard_entry(path: Path, reason: str) -> None:
    """Remove the entry ``path`` and its marker (the marker first: a crash between leaves a file
    without one, which is not trusted) and log why; one line when they cannot be removed."""
    for file in (path.with_suffix(".json"), path):
        try:
            file.unlink(missing_ok=True)
        except OSError as exc:
            raise PosencError(
                f"feature cache {path} is not usable ({reason}) and cannot be removed ({exc.strerror or exc}): "
                f"delete it, or set {CACHE_DIR_SETTING} to another directory"
            ) from None
    log.warning("feature cache: discarded %s: %s; encoding the features again", path, reason)


def _sync_directory(directory: Path) -> None:
    """Make the renames in ``directory`` durable (where the file system lets a directory be synced)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_entry(
    path: Path,
    shape: tuple[int, ...],
    dtype: str,
    fill: Callable[[Callable[[tuple[int, ...]], FeatureFile]], FeatureFile],
) -> None:
    """Write the cache entry ``path``: ``fill(allocate)`` encodes into the file ``allocate`` returns
    (a temporary one, created first: it is the check that the directory can be written), after a check
    that the disk has room for it; then the file is synced, its completion marker written beside it,
    and both renamed into place, the marker last. The temporary files go on every ending; a full disk
    or a failed write is one line naming the directory and the bytes needed."""
    directory = path.parent
    need = npy_header_bytes(shape, dtype) + cache_nbytes(shape, dtype)
    stem = f"{path.stem}.{_hostname()}.{os.getpid()}"
    tmp, tmp_marker = path.with_name(f"{stem}.tmp.npy"), path.with_name(f"{stem}.tmp.json")
    written: FeatureFile | None = None
    try:
        try:
            written = file = FeatureFile.create(tmp, shape, dtype)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO):
                raise write_failure(directory, need, exc) from None
            reason = f"cannot write there ({exc.strerror or exc}); expected a writable directory"
            raise invalid_value(CACHE_DIR_SETTING, str(directory), reason) from None
        free = _free_bytes(directory)
        if free is not None and free < need:
            raise DiskFullError(
                f"no room for the feature cache in {directory}: it needs {_size(need)} ({need} bytes), "
                f"{_size(free)} ({free} bytes) are free there; free space there, set {CACHE_DIR_SETTING} to "
                "another disk, or task.feature_cache=memory"
            )

        def allocate(got: tuple[int, ...]) -> FeatureFile:
            if tuple(got) != tuple(shape):
                raise PosencError(f"the encoder gave {_dims(got)} features, {_dims(shape)} from one image")
            return file

        fill(allocate)
        try:
            file.sync()
            file.close()
            record = {**_marker(shape, dtype, file.offset), "blake2b": sample_digest(tmp, file.offset, file.nbytes)}
            with open(tmp_marker, "w") as f:  # ready before the renames: a full disk leaves no half entry
                json.dump(record, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            os.replace(tmp_marker, path.with_suffix(".json"))  # last: the entry is complete
            _sync_directory(directory)
        except OSError as exc:
            raise write_failure(directory, need, exc) from None
    finally:
        if written is not None:
            written.close()
        for leftover in (tmp, tmp_marker):
            with contextlib.suppress(OSError):
                leftover.unlink(missing_ok=True)


def cached_features(
    mode: str,
    key: str,
    cache_dir: str | os.PathLike[str],
    encode: Callable[[torch.Tensor], torch.Tensor],
    dataset: Dataset,
    batch_size: int,
    device: torch.device,
    dtype: str = "auto",
    memory_fraction: float = DEFAULT_MEMORY_FRACTION,
    what: str = "",
    announce: bool = True,
) -> torch.Tensor | FeatureFile | None:
    """Features of ``dataset`` per ``mode`` (None for ``off``; ``auto`` and dtype ``auto``:
    :func:`plan_cache`). A disk cache lives at ``cache_dir/<key>-<dtype>.npy``, written under a
    temporary name and renamed, its completion marker ``<key>-<dtype>.json`` last (:func:`write_entry`);
    it is reused when :func:`entry_problem` finds nothing wrong with it, else discarded (one log line)
    and written again. ``what`` names the encoder in the progress bar (``vgg16, f1-f5``);
    ``announce``: log the plan's one line."""
    if mode == "off":
        return None
    size = len(cast(Sized, dataset))  # torch's Dataset declares no __len__; every dataset cached here has one
    on_disk = mode in ("disk", "auto")
    directory = cache_directory(cache_dir) if on_disk else Path(cache_dir)
    if mode == "disk":
        make_cache_directory(directory)  # before anything is encoded
    # auto decides on bytes; disk checks a reused entry against them
    shape = feature_shape(encode, dataset, device) if on_disk else (size,)
    plan = plan_cache(mode, dtype, shape, memory_fraction)
    resolved, resolved_dtype = plan.mode, plan.dtype
    description = f"encoding {size} images{f' ({what})' if what else ''} -> {resolved} cache {resolved_dtype}"

    def say(shape: tuple[int, ...], path: Path | None = None, reused: bool = False) -> None:
        if announce and rank_zero_only.rank == 0:  # type: ignore[attr-defined]  # set by Lightning at import
            final = replace(plan, shape=tuple(shape), nbytes=cache_nbytes(shape, resolved_dtype))  # the encoded shape
            log.info(final.describe(path, reused))

    if resolved == "memory":

        def allocate(shape: tuple[int, ...]) -> torch.Tensor:
            say(shape)
            return torch.empty(
                shape, dtype=getattr(torch, resolved_dtype), device=memory_cache_device(shape, resolved_dtype, device)
            )

        return encode_dataset(encode, dataset, batch_size, device, allocate, description, what)
    make_cache_directory(directory)
    path = directory / f"{key}-{resolved_dtype}.npy"
    with entry_lock(path):
        remove_stale_temporaries(directory)
        if os.path.lexists(path) or os.path.lexists(path.with_suffix(".json")):
            problem = entry_problem(path, shape, resolved_dtype)
            if problem is None:
                say(shape, path, reused=True)
                return FeatureFile(path)
            discard_entry(path, problem)
        say(shape, path)
        write_entry(
            path,
            shape,
            resolved_dtype,
            lambda allocate: encode_dataset(encode, dataset, batch_size, device, allocate, description, what),
        )
    return FeatureFile(path)
