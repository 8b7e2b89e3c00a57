"""Encode a dataset through a frozen backbone once and reuse the features for every epoch and
every target map (PosENet's backbone is frozen, so re-running it — as the authors' loop does for
each of 15 epochs x 5 maps — recomputes identical tensors).

Features are stored channels-last, ``[N, H, W, C]`` (``IndexedFeatures`` serves them back as
channels-last ``[B, C, H, W]`` views, the layout the readout conv is fastest with on CPU).

Modes: ``memory`` (a CPU tensor), ``disk`` (a ``.npy`` memory map under ``cache_dir`` keyed by a
hash of everything that determines the features, reused across runs), ``off`` (no cache).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from posenc.core.choices import CACHE_DTYPES, CACHE_MODES  # noqa: F401 - the valid values live there
from posenc.core.errors import check_choice

NUMPY_DTYPES = {"float32": np.float32, "float16": np.float16}  # of posenc.core.choices.CACHE_DTYPES


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


@torch.no_grad()
def encode_dataset(
    encode: Callable[[torch.Tensor], torch.Tensor],
    dataset: Dataset,
    batch_size: int,
    device: torch.device,
    allocate: Callable[[tuple[int, ...]], torch.Tensor],
) -> torch.Tensor:
    """Run ``encode`` over ``dataset`` (dicts with an ``"image"``) in order into the
    ``[N, H, W, C]`` tensor ``allocate(shape)`` returns once the first batch tells the shape."""
    out, start = None, 0
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        feats = encode(batch["image"].to(device)).permute(0, 2, 3, 1)
        if out is None:
            out = allocate((len(dataset), *feats.shape[1:]))
        out[start : start + len(feats)] = feats
        start += len(feats)
    assert out is not None, "empty dataset"
    return out


def cached_features(
    mode: str,
    key: str,
    cache_dir: str | os.PathLike[str],
    encode: Callable[[torch.Tensor], torch.Tensor],
    dataset: Dataset,
    batch_size: int,
    device: torch.device,
    dtype: str = "float32",
) -> torch.Tensor | np.ndarray | None:
    """Features of ``dataset`` per ``mode`` (None for ``off``); a disk cache is written atomically."""
    check_choice("task.feature_cache", mode, CACHE_MODES)
    check_choice("task.cache_dtype", dtype, CACHE_DTYPES)
    if mode == "off":
        return None
    if mode == "memory":
        return encode_dataset(encode, dataset, batch_size, device,
                              lambda shape: torch.empty(shape, dtype=getattr(torch, dtype),
                                                        device=memory_cache_device(shape, dtype, device)))
    path = Path(cache_dir) / f"{key}.npy"
    if path.is_file():
        return np.load(path, mmap_mode="r")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
    memmaps: list[np.memmap] = []

    def allocate(shape: tuple[int, ...]) -> torch.Tensor:
        memmaps.append(np.lib.format.open_memmap(tmp, mode="w+", dtype=NUMPY_DTYPES[dtype], shape=shape))
        return torch.from_numpy(memmaps[0])

    encode_dataset(encode, dataset, batch_size, device, allocate)
    memmaps[0].flush()
    memmaps.clear()
    os.replace(tmp, path)
    return np.load(path, mmap_mode="r")
