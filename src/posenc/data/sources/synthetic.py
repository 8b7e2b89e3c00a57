"""PosENet's synthetic test inputs: black, white and Gaussian-noise images."""

from __future__ import annotations

import functools
import io
from importlib import resources
from typing import Literal, get_args

import numpy as np
import torch
from PIL import Image

from posenc.data.sources.images import read_rgb
from posenc.errors import PosencError, check_choice

SyntheticInput = Literal["black", "white", "noise"]
SYNTHETIC_INPUTS: tuple[str, ...] = get_args(SyntheticInput)
# generated here, or the authors' published JPEGs (posenc/assets)
SyntheticSource = Literal["generated", "official"]
SYNTHETIC_SOURCES: tuple[str, ...] = get_args(SyntheticSource)

NOISE_MEAN = 127.5
NOISE_STD = 50.0


@functools.cache
def _official_image(kind: str) -> np.ndarray:
    """The authors' published 224x224 JPEG for ``kind`` as HxWx3 uint8 (read-only)."""
    data = resources.files("posenc.assets").joinpath(f"{kind}.jpg").read_bytes()
    arr = read_rgb(io.BytesIO(data), name=f"posenc/assets/{kind}.jpg")
    arr.setflags(write=False)
    return arr


def _official(kind: str, num: int, image_size: int) -> torch.Tensor:
    arr = _official_image(kind)
    if arr.shape[0] != image_size or arr.shape[1] != image_size:
        resized = Image.fromarray(arr).resize((image_size, image_size), Image.Resampling.BILINEAR)
        arr = np.asarray(resized, dtype=np.uint8)
    img = torch.from_numpy(arr.copy()).permute(2, 0, 1)
    return img.unsqueeze(0).repeat(num, 1, 1, 1)


def synthetic_images(kind: str, num: int, image_size: int, seed: int, source: str = "generated") -> torch.Tensor:
    """``num`` synthetic images of ``kind`` as uint8 [num, 3, S, S].

    ``source="generated"``: black = 0, white = 255, noise = per-pixel Gaussian
    (mean 127.5, std 50, clipped), deterministic for ``seed``.
    ``source="official"``: the authors' JPEG, resized if needed, repeated ``num`` times.
    """
    check_choice("synthetic input", kind, SYNTHETIC_INPUTS)
    check_choice("synthetic source", source, SYNTHETIC_SOURCES)
    if num < 0:
        raise PosencError(f"num must be >= 0, got {num}")
    if image_size < 1:
        raise PosencError(f"image_size must be >= 1, got {image_size}")
    if source == "official":
        return _official(kind, num, image_size)
    shape = (num, 3, image_size, image_size)
    if kind == "black":
        return torch.zeros(shape, dtype=torch.uint8)
    if kind == "white":
        return torch.full(shape, 255, dtype=torch.uint8)
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(shape, generator=gen) * NOISE_STD + NOISE_MEAN
    return noise.round_().clamp_(0, 255).to(torch.uint8)
