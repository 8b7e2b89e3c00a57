"""Patch sources for the canvas experiments (Islam et al., IJCV 2024): small labelled images
with an object mask, later pasted into larger canvases by :mod:`posenc.data.canvas`.

Every source returns a :class:`Patches`. ``shapes`` are procedural textured shapes drawn by a
vectorised rasteriser (:func:`render_shapes`) that :mod:`posenc.data.sources.shapes` reuses for scenes.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from posenc.data.sources.natural import TEST_PHOTOS, TRAIN_PHOTOS, natural_crops
from posenc.errors import PosencError, check_choice, invalid_value

PatchSource = Literal["shapes", "digits", "photos", "cifar10"]
PATCH_SOURCES: tuple[str, ...] = get_args(PatchSource)

# Shape classes; a shape's class index is its position here (semantic label = index + 1).
SHAPE_CLASSES: tuple[str, ...] = ("disk", "square", "triangle", "cross", "ring")
DIGIT_CLASSES: tuple[str, ...] = tuple(str(d) for d in range(10))
DIGIT_TEST_EVERY = 5  # digit i is in the test split when i % 5 == 4, else in the train split
DIGIT_THRESHOLD = 0.25  # a digit pixel belongs to the stroke when its intensity exceeds this

CROSS_HALF_WIDTH = 0.3  # a cross arm's half width, in units of the circumscribed radius
RING_INNER = 0.6  # a ring's inner radius, in units of its outer radius


@dataclass(frozen=True)
class Patches:
    """Labelled patches: ``images`` float [N,3,P,P] in [0,1], ``labels`` int64 [N],
    ``masks`` bool [N,P,P] (the object's pixels), the label space, and ``sources`` int64 [N]: the
    independent source each patch was cut from, so patches that share one share it (shapes: each its
    own; digits and cifar10: the image's index in its set, which repeats when more patches are drawn
    than the split holds; photos: the photo), the unit the test metrics' intervals resample."""

    images: Tensor
    labels: Tensor
    masks: Tensor
    num_classes: int
    class_names: list[str]
    sources: Tensor

    def to(self, device: torch.device | str) -> Patches:
        """The same patches on ``device``."""
        return replace(
            self,
            images=self.images.to(device),
            labels=self.labels.to(device),
            masks=self.masks.to(device),
            sources=self.sources.to(device),
        )

    def repeat_each(self, count: int) -> Patches:
        """Every patch ``count`` times in a row (the balanced test: each patch in every cell), sources
        included."""
        return replace(
            self,
            images=self.images.repeat_interleave(count, 0),
            labels=self.labels.repeat_interleave(count, 0),
            masks=self.masks.repeat_interleave(count, 0),
            sources=self.sources.repeat_interleave(count, 0),
        )

    @property
    def size(self) -> int:
        """The patch side ``P`` in pixels."""
        return int(self.images.shape[-1])


@dataclass(frozen=True)
class ShapeParams:
    """Per-object parameters of textured shapes, one row per object (all float unless noted).

    ``classes`` int64 [N] index into :data:`SHAPE_CLASSES`; ``centres`` [N,2] (y, x) in pixels
    (pixel ``i`` covers [i, i+1)); ``radii`` [N] circumscribed radius in pixels; ``angles`` [N]
    rotation in radians; ``colours`` [N,3] in [0,1]; stripes: ``stripe_freq`` [N] cycles per
    radius, ``stripe_angle`` [N] radians, ``stripe_phase`` [N] radians, ``stripe_depth`` [N]
    in [0,1] (how far the dark stripes darken the colour).
    """

    classes: Tensor
    centres: Tensor
    radii: Tensor
    angles: Tensor
    colours: Tensor
    stripe_freq: Tensor
    stripe_angle: Tensor
    stripe_phase: Tensor
    stripe_depth: Tensor

    def to(self, device: torch.device | str) -> ShapeParams:
        """The same parameters on ``device``."""
        return ShapeParams(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


def split_generator(seed: int, train: bool) -> torch.Generator:
    """A CPU generator whose stream depends on ``seed`` and on the split (train != test)."""
    return torch.Generator().manual_seed(2 * int(seed) + (0 if train else 1))


def _check_counts(num: int, size: int) -> None:
    if num < 0:
        raise invalid_value("num", num, "expected an int >= 0")
    if size < 1:
        raise invalid_value("size", size, "expected a patch size >= 1")


def _uniform(n: int, low: float, high: float, gen: torch.Generator) -> Tensor:
    return low + (high - low) * torch.rand(n, generator=gen)


def sample_indices(total: int, num: int, gen: torch.Generator) -> Tensor:
    """``num`` indices into ``total`` items: distinct when ``num <= total``, else with
    replacement."""
    if total < 1:
        raise PosencError(f"cannot sample {num} patches from an empty set")
    if num <= total:
        return torch.randperm(total, generator=gen)[:num]
    return torch.randint(0, total, (num,), generator=gen)


def _resize(images: Tensor, size: int) -> Tensor:
    """Bilinear resize of float [N,C,H,W] to ``size`` (antialiased when shrinking)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    shrink = images.shape[-1] > size
    out = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)
    return out.clamp_(0.0, 1.0)


# --------------------------------------------------------------------------- shapes


def random_style(num: int, gen: torch.Generator) -> dict[str, Tensor]:
    """Random colours and stripe textures for ``num`` shapes (CPU)."""
    return {
        "colours": torch.rand(num, 3, generator=gen),
        "stripe_freq": _uniform(num, 0.75, 2.5, gen),
        "stripe_angle": _uniform(num, 0.0, math.pi, gen),
        "stripe_phase": _uniform(num, 0.0, 2 * math.pi, gen),
        "stripe_depth": _uniform(num, 0.3, 0.7, gen),
    }


def random_angles(classes: Tensor, gen: torch.Generator) -> Tensor:
    """A uniform rotation in [0, 2pi) per shape; disks (rotation-invariant) get 0."""
    angles = _uniform(classes.shape[0], 0.0, 2 * math.pi, gen)
    return torch.where(classes == SHAPE_CLASSES.index("disk"), torch.zeros_like(angles), angles)


def _local_coords(params: ShapeParams, height: int, width: int) -> tuple[Tensor, Tensor]:
    """Pixel-centre coordinates in each shape's rotated frame, in radii: two [N,H,W]."""
    device = params.centres.device
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5).view(1, height, 1)
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5).view(1, 1, width)
    dy = ys - params.centres[:, 0].view(-1, 1, 1)
    dx = xs - params.centres[:, 1].view(-1, 1, 1)
    cos = torch.cos(params.angles).view(-1, 1, 1)
    sin = torch.sin(params.angles).view(-1, 1, 1)
    radius = params.radii.view(-1, 1, 1)
    return (dx * cos + dy * sin) / radius, (-dx * sin + dy * cos) / radius


def _triangle(u: Tensor, v: Tensor) -> Tensor:
    """Equilateral triangle inscribed in the unit circle: inside all three half-planes."""
    inside = torch.ones_like(u, dtype=torch.bool)
    for k in range(3):
        normal = math.pi / 2 + 2 * math.pi * k / 3
        inside &= u * math.cos(normal) + v * math.sin(normal) <= 0.5
    return inside


def _cross(u: Tensor, v: Tensor) -> Tensor:
    """A plus sign whose arm ends touch the unit circle."""
    half = math.sqrt(1.0 - CROSS_HALF_WIDTH**2)
    au, av = u.abs(), v.abs()
    return ((au <= half) & (av <= CROSS_HALF_WIDTH)) | ((av <= half) & (au <= CROSS_HALF_WIDTH))


def rasterise_shapes(params: ShapeParams, height: int, width: int) -> Tensor:
    """Bool [N,H,W]: the pixels (by centre) inside each object's shape.

    Every shape fits its circumscribed circle: disk (radius r), square (half side r/sqrt 2),
    triangle (equilateral, circumradius r), cross (arm half width 0.3 r), ring (r*0.6..r).
    """
    u, v = _local_coords(params, height, width)
    rho2 = u * u + v * v
    masks = torch.stack(
        [
            rho2 <= 1.0,
            torch.maximum(u.abs(), v.abs()) <= 1.0 / math.sqrt(2.0),
            _triangle(u, v),
            _cross(u, v),
            (rho2 <= 1.0) & (rho2 >= RING_INNER**2),
        ]
    )  # [K,N,H,W]
    rows = torch.arange(u.shape[0], device=u.device)
    return masks[params.classes, rows]


def stripe_texture(params: ShapeParams, height: int, width: int) -> Tensor:
    """Float [N,3,H,W] in [0,1]: each object's colour modulated by sinusoidal stripes."""
    device = params.centres.device
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5).view(1, height, 1)
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5).view(1, 1, width)
    along = xs * torch.cos(params.stripe_angle).view(-1, 1, 1) + ys * torch.sin(params.stripe_angle).view(-1, 1, 1)
    omega = (2 * math.pi * params.stripe_freq / params.radii).view(-1, 1, 1)
    wave = 0.5 + 0.5 * torch.sin(omega * along + params.stripe_phase.view(-1, 1, 1))
    shade = 1.0 - params.stripe_depth.view(-1, 1, 1) * wave  # [N,H,W]
    return params.colours.view(-1, 3, 1, 1) * shade.unsqueeze(1)


def render_shapes(params: ShapeParams, height: int, width: int) -> tuple[Tensor, Tensor]:
    """Textured shapes: (rgb float [N,3,H,W] in [0,1], mask bool [N,H,W]); rgb is only
    meaningful where mask is True."""
    return stripe_texture(params, height, width), rasterise_shapes(params, height, width)


def sample_patch_shapes(num: int, size: int, gen: torch.Generator) -> ShapeParams:
    """Random shapes for ``size``-pixel patches (CPU): uniform class, diameter 0.5..0.9 of the
    patch, centre jittered so the circumscribed circle stays inside, random rotation/style."""
    classes = torch.randint(0, len(SHAPE_CLASSES), (num,), generator=gen)
    radii = _uniform(num, 0.5, 0.9, gen) * size / 2
    slack = (size / 2 - radii).unsqueeze(1)
    centres = size / 2 + slack * (2 * torch.rand(num, 2, generator=gen) - 1)
    angles = random_angles(classes, gen)
    style = random_style(num, gen)
    return ShapeParams(classes=classes, centres=centres, radii=radii, angles=angles, **style)


def shape_patches(num: int, size: int, seed: int, train: bool = True, device: torch.device | str = "cpu") -> Patches:
    """``num`` textured shapes (classes :data:`SHAPE_CLASSES`) on plain random-colour
    backgrounds; mask = shape pixels. Deterministic for (seed, train) on any device: the random
    parameters are drawn on the CPU, the pixels are computed on ``device``."""
    _check_counts(num, size)
    gen = split_generator(seed, train)
    params = sample_patch_shapes(num, size, gen)
    background = torch.rand(num, 3, generator=gen).to(device)
    params = params.to(device)
    rgb, mask = render_shapes(params, size, size)
    images = torch.where(mask.unsqueeze(1), rgb, background.view(-1, 3, 1, 1))
    sources = torch.arange(num, device=images.device)  # every shape drawn anew: its own source
    return Patches(images, params.classes, mask, len(SHAPE_CLASSES), list(SHAPE_CLASSES), sources)


# --------------------------------------------------------------------------- other sources


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[Tensor, Tensor]:
    """scikit-learn's bundled 8x8 digits as float [1797,8,8] in [0,1] and int64 labels."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(np.asarray(bunch.images, dtype=np.float32) / 16.0)
    return images, torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))


def digit_split(train: bool) -> Tensor:
    """Indices of the bundled digits in the train (or test) split: every 5th digit is test."""
    total = _digits()[0].shape[0]
    index = torch.arange(total)
    is_test = index % DIGIT_TEST_EVERY == DIGIT_TEST_EVERY - 1
    return index[~is_test] if train else index[is_test]


def digit_patches(num: int, size: int, seed: int, train: bool = True, device: torch.device | str = "cpu") -> Patches:
    """``num`` grey handwritten digits (white strokes on black) bilinearly upsampled to
    ``size``; mask = intensity > 0.25; labels 0..9. Sampled from a fixed train/test split
    (distinct digits while ``num`` fits the split, else with replacement)."""
    _check_counts(num, size)
    images, labels = _digits()
    split = digit_split(train)
    chosen = split[sample_indices(split.shape[0], num, split_generator(seed, train))]
    grey = images[chosen].unsqueeze(1).to(device)
    grey = F.interpolate(grey, size=(size, size), mode="bilinear", align_corners=False)
    grey = grey.clamp_(0.0, 1.0)
    return Patches(
        grey.expand(-1, 3, -1, -1).contiguous(),
        labels[chosen].to(device),
        grey[:, 0] > DIGIT_THRESHOLD,
        len(DIGIT_CLASSES),
        list(DIGIT_CLASSES),
        chosen.to(device),
    )


def photo_patches(num: int, size: int, seed: int, train: bool = True, device: torch.device | str = "cpu") -> Patches:
    """``num`` random crops of the bundled photos (train or test photos); label = index of the
    photo in ``TRAIN_PHOTOS`` / ``TEST_PHOTOS`` (so labels only mean the same within a split);
    mask all True."""
    _check_counts(num, size)
    photos = TRAIN_PHOTOS if train else TEST_PHOTOS
    crops, labels = natural_crops(num, size, photos, seed, return_labels=True)
    images = crops.to(device=device, dtype=torch.float32) / 255.0
    masks = torch.ones(num, size, size, dtype=torch.bool, device=device)
    labels = labels.to(device)  # the photo each crop is cut from: its source too
    return Patches(images, labels, masks, len(photos), list(photos), labels.clone())


def cifar_patches(
    data_dir: str | Path,
    num: int,
    size: int,
    seed: int,
    train: bool = True,
    device: torch.device | str = "cpu",
) -> Patches:
    """``num`` CIFAR-10 images from ``data_dir`` (train or test set), resized to ``size`` when it
    is not 32; distinct images while ``num`` fits the set; mask all True."""
    from posenc.data.sources.cifar import load_cifar10  # imported lazily: optional data set

    _check_counts(num, size)
    images, labels, names = load_cifar10(data_dir, train)
    chosen = sample_indices(int(images.shape[0]), num, split_generator(seed, train))
    picked = images[chosen].to(device=device, dtype=torch.float32) / 255.0
    picked = _resize(picked, size)
    masks = torch.ones(num, size, size, dtype=torch.bool, device=device)
    return Patches(picked, labels[chosen].to(device), masks, len(names), list(names), chosen.to(device))


def make_patches(
    source: str,
    num: int,
    size: int,
    seed: int,
    train: bool = True,
    data_dir: str | Path | None = None,
    device: torch.device | str = "cpu",
) -> Patches:
    """Patches from ``source`` (one of :data:`PATCH_SOURCES`) on ``device``."""
    check_choice("patch source", source, PATCH_SOURCES)
    if source == "digits":
        return digit_patches(num, size, seed, train, device)
    if source == "photos":
        return photo_patches(num, size, seed, train, device)
    if source == "shapes":
        return shape_patches(num, size, seed, train, device)
    if data_dir is None:
        raise PosencError("patch source 'cifar10' needs its data folder: set data.data_dir=/path/to/cifar10")
    return cifar_patches(data_dir, num, size, seed, train, device)
