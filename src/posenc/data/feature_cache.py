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
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence, Sized
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np
import torch
import torch.nn as nn
from lightning.fabric.utilities.rank_zero import rank_zero_only
from torch.utils.data import DataLoader, Dataset

from posenc.core.choices import CACHE_DTYPES, CACHE_MODES  # noqa: F401 - the valid values live there
from posenc.core.errors import PosencError, check_choice, invalid_value
from posenc.core.progress import track

log = logging.getLogger(__name__)

NUMPY_DTYPES = {"float32": np.float32, "float16": np.float16}  # of posenc.core.choices.CACHE_DTYPES
DEFAULT_MEMORY_FRACTION = 0.25  # auto's budget: this share of the available RAM (task.cache_memory_fraction)
Store = TypeVar("Store", bound="torch.Tensor | FeatureFile")  # what encode_dataset fills: what its allocate returns


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


class FeatureFile:
    """An ``[N, ...]`` ``.npy`` file (loadable with ``np.load``) whose rows are read and written with
    ``pread`` / ``pwrite``: the bytes pass through the OS page cache only. A ``np.memmap`` maps every
    page it touches into the process instead, so its resident size grows to the file's over an
    epoch (measured: reading a 0.92 GB cache once at random through a memmap raised the peak RSS by
    0.90 GB; through this class by two batch buffers).

    Served a batch at a time by :class:`posenc.data.datamodule.IndexedFeatures` (:meth:`read`);
    ``np.asarray(file)`` reads it whole."""

    def __init__(self, path: str | os.PathLike[str], writable: bool = False) -> None:
        self.path, self.writable = Path(path), writable
        with open(self.path, "rb") as f:
            version = np.lib.format.read_magic(f)
            header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = header(f)
            self.offset = f.tell()
        if fortran or not shape:
            raise PosencError(f"feature cache {self.path} is not a C-ordered [N, ...] array; delete it to recompute")
        self.shape, self.dtype = tuple(int(d) for d in shape), np.dtype(dtype)
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self._fd: int | None = None
        self._pid: int | None = None

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
            done = os.pwrite(fd, view, offset) if write else os.preadv(fd, [view], offset)
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
) -> Store:
    """Run ``encode`` over ``dataset`` (dicts with an ``"image"``) in order, a batch at a time, into
    the ``[N, H, W, C]`` store ``allocate(shape)`` returns once the first batch tells the shape
    (under a progress bar saying ``description``)."""
    out: Store | None = None
    start = 0
    size = len(cast(Sized, dataset))  # torch's Dataset declares no __len__; every dataset cached here has one
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    description = description or f"encoding {size} images"
    for batch in track(loader, description, total=len(loader)):
        feats = encode(batch["image"].to(device)).permute(0, 2, 3, 1)
        if out is None:
            out = allocate((size, *feats.shape[1:]))
        out[start : start + len(feats)] = feats
        start += len(feats)
    assert out is not None, "empty dataset"
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
    temporary name and renamed, and is reused when present. ``what`` names the encoder in the
    progress bar (``vgg16, f1-f5``); ``announce``: log the plan's one line."""
    if mode == "off":
        return None
    size = len(cast(Sized, dataset))  # torch's Dataset declares no __len__; every dataset cached here has one
    shape = feature_shape(encode, dataset, device) if mode == "auto" else (size,)  # auto decides on bytes
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

        return encode_dataset(encode, dataset, batch_size, device, allocate, description)
    path = Path(cache_dir) / f"{key}-{resolved_dtype}.npy"
    if path.is_file():
        features = FeatureFile(path)
        say(features.shape, path, reused=True)
        return features
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")

    def create(shape: tuple[int, ...]) -> FeatureFile:
        say(shape, path)
        return FeatureFile.create(tmp, shape, resolved_dtype)

    written = encode_dataset(encode, dataset, batch_size, device, create, description)
    written.close()
    os.replace(tmp, path)
    return FeatureFile(path)
