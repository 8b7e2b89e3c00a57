"""Natural photos bundled inside the scikit-image and scikit-learn wheels (works offline)."""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, overload

import numpy as np
import torch
from PIL import Image

from posenc.data.sources.images import read_rgb
from posenc.errors import PosencError, check_choice

# name -> (package whose directory holds it, file path relative to that directory)
_PHOTO_FILES: dict[str, tuple[str, str]] = {
    "astronaut": ("skimage", "data/astronaut.png"),
    "camera": ("skimage", "data/camera.png"),
    "chelsea": ("skimage", "data/chelsea.png"),
    "coffee": ("skimage", "data/coffee.png"),
    "rocket": ("skimage", "data/rocket.jpg"),
    "motorcycle_left": ("skimage", "data/motorcycle_left.png"),
    "hubble_deep_field": ("skimage", "data/hubble_deep_field.jpg"),
    "brick": ("skimage", "data/brick.png"),
    "grass": ("skimage", "data/grass.png"),
    "gravel": ("skimage", "data/gravel.png"),
    "moon": ("skimage", "data/moon.png"),
    "coins": ("skimage", "data/coins.png"),
    "ihc": ("skimage", "data/ihc.png"),
    "retina": ("skimage", "data/retina.jpg"),
    "china": ("sklearn.datasets", "images/china.jpg"),
    "flower": ("sklearn.datasets", "images/flower.jpg"),
}

TEST_PHOTOS: tuple[str, ...] = ("coffee", "china", "flower", "retina")
TRAIN_PHOTOS: tuple[str, ...] = tuple(n for n in _PHOTO_FILES if n not in TEST_PHOTOS)


def _package_dir(package: str) -> Path:
    """Directory of an installed package, imported lazily."""
    module = __import__(package, fromlist=["__file__"])
    if module.__file__ is None:  # a namespace package: no directory of its own
        raise PosencError(f"package {package} has no files of its own to read photos from")
    return Path(os.path.dirname(module.__file__))


def photo_path(name: str) -> Path:
    """Expected on-disk path of a bundled photo (it may not exist)."""
    check_choice("photo", name, _PHOTO_FILES)
    package, rel = _PHOTO_FILES[name]
    return _package_dir(package) / rel


def available_photos() -> dict[str, Path]:
    """Bundled photos whose files exist in the installed wheels, name -> path."""
    paths = {name: photo_path(name) for name in _PHOTO_FILES}
    return {name: p for name, p in paths.items() if p.is_file()}


@functools.cache
def _load_cached(name: str) -> np.ndarray:
    path = photo_path(name)
    if not path.is_file():
        raise PosencError(f"bundled photo {name!r} not found: expected {path}")
    arr = read_rgb(path)
    arr.setflags(write=False)
    return arr


def load_photo(name: str) -> np.ndarray:
    """A bundled photo as an HxWx3 uint8 RGB array (grayscale repeated, alpha dropped)."""
    return _load_cached(name).copy()


@overload
def natural_crops(
    num: int,
    image_size: int,
    photos: Sequence[str],
    seed: int,
    min_scale: float = ...,
    return_labels: Literal[False] = ...,
) -> torch.Tensor: ...
@overload
def natural_crops(
    num: int, image_size: int, photos: Sequence[str], seed: int, min_scale: float = ..., *, return_labels: Literal[True]
) -> tuple[torch.Tensor, torch.Tensor]: ...
@overload
def natural_crops(
    num: int, image_size: int, photos: Sequence[str], seed: int, min_scale: float = ..., return_labels: bool = ...
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]: ...
def natural_crops(
    num: int,
    image_size: int,
    photos: Sequence[str],
    seed: int,
    min_scale: float = 0.3,
    return_labels: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``num`` random square crops of ``photos`` resized to ``image_size``; uint8 [num, 3, S, S]
    (and, with ``return_labels``, each crop's photo index into ``photos``, int64 [num]).

    Each crop's side is uniform in [min_scale, 1] of the photo's shorter side, at a uniform
    random position, from a uniformly random photo; deterministic for ``seed``.
    """
    if num < 0:
        raise PosencError(f"num must be >= 0, got {num}")
    if image_size < 1:
        raise PosencError(f"image_size must be >= 1, got {image_size}")
    if not 0.0 < min_scale <= 1.0:
        raise PosencError(f"min_scale must be in (0, 1], got {min_scale}")
    photos = list(photos)
    if not photos:
        raise PosencError("no photos given; valid: " + ", ".join(_PHOTO_FILES))
    for name in photos:
        check_choice("photo", name, _PHOTO_FILES)
    images = [Image.fromarray(_load_cached(name)) for name in photos]

    rng = np.random.default_rng(seed)
    out = torch.empty((num, 3, image_size, image_size), dtype=torch.uint8)
    labels = torch.empty(num, dtype=torch.int64)
    for i in range(num):
        labels[i] = int(rng.integers(len(images)))
        im = images[int(labels[i])]
        width, height = im.size
        short = min(width, height)
        side = max(1, int(round(rng.uniform(min_scale, 1.0) * short)))
        left = int(rng.integers(width - side + 1))
        top = int(rng.integers(height - side + 1))
        crop = im.resize(
            (image_size, image_size),
            Image.Resampling.BILINEAR,
            box=(left, top, left + side, top + side),
        )
        out[i] = torch.from_numpy(np.asarray(crop, dtype=np.uint8).copy()).permute(2, 0, 1)
    return (out, labels) if return_labels else out
