"""Mirrored images: how posenc keeps a photo's content from telling a readout where it is.

Natural photos carry position in their content (sky at the top, ground at the bottom, the subject in the
middle). A readout on position-blind features (PosENet on RGB alone, a ViT without its embedding, a CNN
without padding) learns that layout from the training photos and meets another layout in the test photos:
with the 12 training and 4 test photos of the embedded default it read H down to -.16 (issue 33). Two
remedies, each a ``data.mirror`` mode:

* **train**: every training image is flipped left-right with probability 1/2 and top-bottom with
  probability 1/2 (seeded), so no layout of the training photos correlates with position.
* **test**: every test image is shown with its three mirrors (left-right, top-bottom, both), one unit
  for the intervals. For a translation-equivariant readout ``f`` (what a position-blind one is),
  ``f(flip x) = flip f(x)``, and flipping a horizontal gradient negates its Spearman correlation:
  the four views of an image cancel exactly on H and V, whatever the content says. A padded network
  knows where the border is in every view and keeps its score.

A code per view: bit 0 flips left-right (the last axis), bit 1 top-bottom.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch

MirrorMode = Literal["none", "train", "test", "both"]
MIRROR_MODES: tuple[str, ...] = get_args(MirrorMode)
VIEWS = 4  # the identity and the three mirrors of an image


def mirror(image: torch.Tensor, code: int) -> torch.Tensor:
    """``image`` ``[..., H, W]`` flipped left-right when ``code & 1``, top-bottom when ``code & 2``."""
    dims = [d for bit, d in ((1, -1), (2, -2)) if code & bit]
    return image.flip(dims) if dims else image


def random_codes(num: int, seed: int) -> torch.Tensor:
    """``num`` mirror codes, each flip an independent fair coin (seeded): the training views."""
    return torch.randint(0, VIEWS, (num,), generator=torch.Generator().manual_seed(seed))


def all_views(num: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(source, code)`` of ``num`` images each shown in its 4 views, a source's views adjacent."""
    return torch.arange(num).repeat_interleave(VIEWS), torch.arange(VIEWS).repeat(num)


def mirrors_train(mode: str) -> bool:
    return mode in ("train", "both")


def mirrors_test(mode: str) -> bool:
    return mode in ("test", "both")
