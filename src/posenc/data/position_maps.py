"""Synthetic absolute-position target maps of PosENet (Islam, Jia, Bruce, ICLR 2020, Sec. 3/Fig. 2).

All maps are ``float32`` tensors of shape ``[S, S]`` with values in ``[0, 1]`` (row = y, column = x).
They reproduce the authors' published 256x256 PNGs (``gt_hor``, ``gt_ver``, ``gt_gau``,
``gt_horstp``, ``gt_verstp``): H, V and G bit-exactly at S = 256 (after ``floor(255 * map)``),
the stripes up to a sub-pixel phase (Spearman > 0.99; see ``tests/unit/data/test_position_maps.py``).

Stripe convention: the paper's HS/VS MAE (~.70 for a constant predictor) only fits stripes in
``[-1, 1]`` scored against a sigmoid output. We default to the ``[0, 1]`` maps of the released PNGs
(``stripe_range="unit"``) and offer ``"signed"`` to reproduce the paper's MAE convention.
"""

from __future__ import annotations

import math
from importlib import resources
from typing import Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F

from posenc.errors import PosencError, check_choice

Target = Literal["H", "V", "G", "HS", "VS"]  # horizontal, vertical, Gaussian, horizontal / vertical stripes
TARGETS: tuple[Target, ...] = get_args(Target)
TargetSource = Literal["formula", "official"]  # computed here, or the authors' PNGs
TARGET_SOURCES: tuple[str, ...] = get_args(TargetSource)
StripeRange = Literal["unit", "signed"]  # the stripes in [0, 1] (released PNGs) or [-1, 1] (the paper's MAE)
STRIPE_RANGES: tuple[str, ...] = get_args(StripeRange)

OFFICIAL_FILES: dict[str, str] = {
    "H": "gt_hor.png",
    "V": "gt_ver.png",
    "G": "gt_gau.png",
    "HS": "gt_horstp.png",
    "VS": "gt_verstp.png",
}
STRIPE_PERIODS = 2.5  # cosine periods down (HS) / across (VS) the image


def _grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    idx = torch.arange(size, dtype=torch.float64)
    return idx[:, None].expand(size, size), idx[None, :].expand(size, size)


def horizontal_gradient(size: int) -> torch.Tensor:
    """H: value = x, 0 at the left column, 1 at the right column."""
    _, x = _grid(size)
    return (x / (size - 1)).float()


def vertical_gradient(size: int) -> torch.Tensor:
    """V: value = y, 0 at the top row, 1 at the bottom row."""
    y, _ = _grid(size)
    return (y / (size - 1)).float()


def gaussian(size: int) -> torch.Tensor:
    """G: exp(-((x-c)^2 + (y-c)^2) / (2 sigma^2)), c = S/2, sigma = S/2, min-max normalised."""
    y, x = _grid(size)
    c = sigma = size / 2
    g = torch.exp(-((x - c) ** 2 + (y - c) ** 2) / (2 * sigma**2))
    return ((g - g.min()) / (g.max() - g.min())).float()


def horizontal_stripes(size: int) -> torch.Tensor:
    """HS: 1/2 (1 + cos(2 pi 2.5 y / S)): 2.5 periods of horizontal bands, bright at the top."""
    y, _ = _grid(size)
    return (0.5 * (1 + torch.cos(2 * math.pi * STRIPE_PERIODS * y / size))).float()


def vertical_stripes(size: int) -> torch.Tensor:
    """VS: the transpose of HS (vertical bands, bright at the left)."""
    return horizontal_stripes(size).T.contiguous()


_BUILDERS = {
    "H": horizontal_gradient,
    "V": vertical_gradient,
    "G": gaussian,
    "HS": horizontal_stripes,
    "VS": vertical_stripes,
}


def load_official_map(name: str, size: int) -> torch.Tensor:
    """The authors' PNG for ``name``, bilinearly resized to ``size`` and min-max normalised
    to [0, 1], as their training code does."""
    check_choice("target", name, TARGETS)
    from PIL import Image

    with resources.files("posenc.assets").joinpath(OFFICIAL_FILES[name]).open("rb") as fh:
        arr = np.asarray(Image.open(fh).convert("L"), dtype=np.float32)
    m = torch.from_numpy(arr)[None, None]
    if m.shape[-1] != size:
        m = F.interpolate(m, size=(size, size), mode="bilinear", align_corners=False)
    m = m[0, 0]
    return (m - m.min()) / (m.max() - m.min())


def make_target(name: str, size: int, source: str = "formula", stripe_range: str = "unit") -> torch.Tensor:
    """One target map ``[size, size]``; ``source="official"`` loads the authors' PNG instead."""
    check_choice("target", name, TARGETS)
    check_choice("target source", source, TARGET_SOURCES)
    check_choice("stripe range", stripe_range, STRIPE_RANGES)
    m = _BUILDERS[name](size) if source == "formula" else load_official_map(name, size)
    if stripe_range == "signed" and name in ("HS", "VS"):
        m = 2 * m - 1
    return m


def make_targets(
    names: list[str] | tuple[str, ...], size: int, source: str = "formula", stripe_range: str = "unit"
) -> torch.Tensor:
    """Stack of maps ``[len(names), size, size]`` in the given order."""
    if len(names) == 0:
        raise PosencError(f"no targets selected; valid: {', '.join(TARGETS)}")
    return torch.stack([make_target(n, size, source, stripe_range) for n in names])
