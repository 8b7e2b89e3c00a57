"""CIFAR-10 from its published python pickles (``cifar-10-batches-py``), read offline.

Why not ``torchvision.datasets.CIFAR10``: it checks the MD5 of every published batch file
before reading, so it refuses a tiny fixture tree in the same layout (what the tests use), and
with ``download=True`` it would try to fetch the archive. Reading the pickles ourselves is a
few lines and gives one-line errors that say where the files belong.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from posenc.errors import PosencError

BATCHES_DIR = "cifar-10-batches-py"
TRAIN_BATCHES: tuple[str, ...] = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCHES: tuple[str, ...] = ("test_batch",)
META_FILE = "batches.meta"
SIDE = 32
# What unpickling a truncated or foreign file raises.
UNPICKLE_ERRORS = (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError, ImportError)


def _put_hint(parent: Path) -> str:
    return f"put the python version's batches (cifar-10-python.tar.gz, extracted) into {parent}"


def batches_dir(data_dir: str | Path) -> Path:
    """``<data_dir>/cifar-10-batches-py``, or ``data_dir`` itself when it is that folder."""
    root = Path(data_dir).expanduser()
    if (root / BATCHES_DIR).is_dir():
        return root / BATCHES_DIR
    if (root.name == BATCHES_DIR and root.is_dir()) or (root / META_FILE).is_file():
        return root
    raise PosencError(f"CIFAR-10 folder not found: {root / BATCHES_DIR}; {_put_hint(root)}")


def check_cifar10(data_dir: str | Path) -> None:
    """Fail early, with the one-line message of a missing file, unless every file is in place."""
    folder = batches_dir(data_dir)
    for name in (META_FILE, *TRAIN_BATCHES, *TEST_BATCHES):
        if not (folder / name).is_file():
            raise PosencError(f"CIFAR-10 file not found: {folder / name}; {_put_hint(folder.parent)}")


def _unpickle(path: Path) -> dict[Any, Any]:
    """One pickle file as a dict (keys as bytes, as the python-2 pickles store them)."""
    if not path.is_file():
        raise PosencError(f"CIFAR-10 file not found: {path}; {_put_hint(path.parent.parent)}")
    try:
        with path.open("rb") as f:
            content = pickle.load(f, encoding="bytes")
    except UNPICKLE_ERRORS as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise PosencError(f"cannot read CIFAR-10 file {path}: {reason}") from None
    if not isinstance(content, dict):
        raise PosencError(f"cannot read CIFAR-10 file {path}: expected a pickled dict")
    return content


def _entry(content: dict[Any, Any], key: str, path: Path) -> Any:
    """``content[key]`` under its bytes or str spelling; a one-line error when absent."""
    for k in (key.encode(), key):
        if k in content:
            return content[k]
    raise PosencError(f"malformed CIFAR-10 file {path}: no {key!r} entry")


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def load_class_names(folder: Path) -> list[str]:
    """The ten ``label_names`` of ``batches.meta``."""
    path = folder / META_FILE
    return [_text(v) for v in _entry(_unpickle(path), "label_names", path)]


def read_batch(path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One batch as uint8 [N, 3, 32, 32] (R, G, B planes) and int64 [N] labels."""
    content = _unpickle(path)
    data = np.asarray(_entry(content, "data", path))
    labels = np.asarray(_entry(content, "labels", path), dtype=np.int64).reshape(-1)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * SIDE * SIDE:
        raise PosencError(
            f"malformed CIFAR-10 file {path}: data is {data.dtype} {list(data.shape)}, "
            f"expected uint8 [N, {3 * SIDE * SIDE}]"
        )
    if len(labels) != len(data):
        raise PosencError(f"malformed CIFAR-10 file {path}: {len(labels)} labels for {len(data)} images")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise PosencError(f"malformed CIFAR-10 file {path}: labels outside 0..{num_classes - 1}")
    return data.reshape(-1, 3, SIDE, SIDE), labels


def load_cifar10(data_dir: str | Path, train: bool) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """CIFAR-10's train (``data_batch_1..5``) or test (``test_batch``) split: uint8 images
    [N, 3, 32, 32], int64 labels [N] and the class names. ``data_dir`` is the folder holding
    ``cifar-10-batches-py`` or that folder itself."""
    folder = batches_dir(data_dir)
    names = load_class_names(folder)
    files = TRAIN_BATCHES if train else TEST_BATCHES
    batches = [read_batch(folder / name, len(names)) for name in files]
    images = torch.from_numpy(np.concatenate([b[0] for b in batches]))
    labels = torch.from_numpy(np.concatenate([b[1] for b in batches]))
    return images, labels, names
