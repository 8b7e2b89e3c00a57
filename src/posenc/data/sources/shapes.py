"""Synthetic semantic-segmentation / salient-object scenes with exact masks.

Each scene is a crop of a bundled photo (``TRAIN_PHOTOS`` or ``TEST_PHOTOS``) with 1 to
``max_objects`` textured shapes on top, drawn by :func:`posenc.data.sources.patches.render_shapes`.
Shapes may sit partly outside the image (their centres are anywhere inside it), so objects
touch and cross the border; later objects occlude earlier ones.

Label convention: ``semantic`` is 0 on the background and ``1 + k`` on the visible pixels of a
shape of class ``SHAPE_CLASSES[k]`` (disk=1, square=2, triangle=3, cross=4, ring=5);
``saliency`` is ``semantic > 0``.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor

from posenc.data.sources.natural import TEST_PHOTOS, TRAIN_PHOTOS, natural_crops
from posenc.data.sources.patches import (
    SHAPE_CLASSES,
    ShapeParams,
    random_angles,
    random_style,
    render_shapes,
    split_generator,
)
from posenc.errors import check_choice, invalid_value

__all__ = [
    "SHAPE_CLASSES",
    "NUM_SEMANTIC_CLASSES",
    "sample_scene_objects",
    "render_scene",
    "shape_scenes",
]

SceneLayout = Literal["random", "centred", "sides"]  # where the scenes' objects sit
SCENE_LAYOUTS: tuple[str, ...] = get_args(SceneLayout)
SceneBackgrounds = Literal["shared", "split"]  # the scenes' photos: one pool, or held-out test photos
SCENE_BACKGROUNDS: tuple[str, ...] = get_args(SceneBackgrounds)

NUM_SEMANTIC_CLASSES = len(SHAPE_CLASSES) + 1  # background + one per shape class
RADIUS_RANGE = (0.12, 0.3)  # a scene object's circumscribed radius, in image sides
SIDE_RADIUS_RANGE = (0.1, 0.16)  # layout=sides: small enough to stay (mostly) within its third
CENTRE_SPREAD = 0.2  # layout=centred: std of an object centre around the image centre, in image sides


def check_layout(layout: str, max_objects: int) -> None:
    """One line for a layout that is not one of ``SCENE_LAYOUTS`` or does not fit ``max_objects``."""
    check_choice("data.layout", layout, SCENE_LAYOUTS)
    if layout == "sides" and max_objects != 1:
        raise invalid_value(
            "data.max_objects", max_objects, "expected 1 with data.layout=sides (one object, on one side)"
        )


def _centres(num: int, size: int, layout: str, gen: torch.Generator) -> Tensor:
    """(row, col) centres [N,2] of one layer's objects under ``layout``."""
    if layout == "random":
        return torch.rand(num, 2, generator=gen) * size
    if layout == "centred":  # the centre bias of salient-object datasets (e.g. DUTS, ECSSD)
        return (0.5 + CENTRE_SPREAD * torch.randn(num, 2, generator=gen)).clamp_(0.0, 1.0) * size
    # sides: centred in the left or the right third's width (a coin flip per scene), anywhere in
    # height away from the top and bottom edges
    rows = 0.25 + 0.5 * torch.rand(num, generator=gen)
    cols = torch.where(torch.rand(num, generator=gen) < 0.5, 1 / 6, 5 / 6)
    return torch.stack([rows, cols], dim=1) * size


def sample_scene_objects(
    num: int, size: int, max_objects: int, gen: torch.Generator, layout: str = "random"
) -> tuple[list[ShapeParams], Tensor]:
    """Random objects for ``num`` scenes (CPU): one :class:`ShapeParams` per layer
    (``max_objects`` layers, back to front) and each scene's object count [N] in
    1..max_objects (scene ``n`` uses layers ``0..count[n]-1``).

    ``layout``: ``random`` centres anywhere in the image (objects cross the border);
    ``centred`` centres drawn around the image centre (std ``CENTRE_SPREAD``), the centre bias of
    real salient-object data; ``sides`` one object (``max_objects=1``) in the left or the right
    third, so every scene's content has a side (the region-specific attack's setting, Islam, Kowal
    et al. ICCV 2021: channels ranked by side, then zeroed, hurt that side's third)."""
    check_layout(layout, max_objects)
    counts = torch.randint(1, max_objects + 1, (num,), generator=gen)
    layers = []
    for _ in range(max_objects):
        classes = torch.randint(0, len(SHAPE_CLASSES), (num,), generator=gen)
        low, high = SIDE_RADIUS_RANGE if layout == "sides" else RADIUS_RANGE
        radii = (low + (high - low) * torch.rand(num, generator=gen)) * size
        centres = _centres(num, size, layout, gen)
        angles = random_angles(classes, gen)
        layers.append(ShapeParams(classes, centres, radii, angles, **random_style(num, gen)))
    return layers, counts


def render_scene(background: Tensor, layers: list[ShapeParams], counts: Tensor) -> tuple[Tensor, Tensor]:
    """Draw ``layers`` over ``background`` float [N,3,S,S] (on its device), back to front:
    (image float [N,3,S,S], semantic int64 [N,S,S] with the labels of the visible pixels)."""
    num, _, height, width = background.shape
    device = background.device
    image = background.clone()
    semantic = torch.zeros(num, height, width, dtype=torch.int64, device=device)
    counts = counts.to(device)
    for depth, params in enumerate(layers):
        params = params.to(device)
        rgb, mask = render_shapes(params, height, width)
        mask &= (depth < counts).view(-1, 1, 1)
        image = torch.where(mask.unsqueeze(1), rgb, image)
        semantic = torch.where(mask, (params.classes + 1).view(-1, 1, 1), semantic)
    return image, semantic


def shape_scenes(
    num: int,
    size: int,
    seed: int,
    train: bool = True,
    max_objects: int = 3,
    device: torch.device | str = "cpu",
    layout: str = "random",
    backgrounds: str = "shared",
) -> dict[str, Tensor]:
    """``num`` scenes of textured shapes on photo crops: ``image`` uint8 [N,3,S,S],
    ``semantic`` int64 [N,S,S] (0 background, 1 + SHAPE_CLASSES index), ``saliency`` bool
    [N,S,S] (any object), ``photo`` int64 [N] (the photo the background is cut from: scenes on one
    photo share it, the unit the test metrics' intervals resample). Deterministic for (seed, train):
    the objects come from the ``(seed, train)`` stream, the background crops from ``seed`` alone, so
    callers give each split its own seed (the datamodule: seed, seed + 1, seed + 2). ``layout``: where
    objects sit
    (:func:`sample_scene_objects`). ``backgrounds``: ``shared`` crops both splits' backgrounds from
    all bundled photos; ``split`` keeps ``TEST_PHOTOS`` for the test, a domain shift of 4 unseen
    photos that, measured, dominates the padding effect (semseg zeros, tiny_bn, 1024 scenes, 64 px,
    600 steps: mIoU .291 split against .516 shared)."""
    if num < 0:
        raise invalid_value("num", num, "expected an int >= 0")
    if size < 1:
        raise invalid_value("size", size, "expected an image size >= 1")
    if max_objects < 1:
        raise invalid_value("max_objects", max_objects, "expected an int >= 1")
    check_choice("data.backgrounds", backgrounds, SCENE_BACKGROUNDS)
    photos = (TRAIN_PHOTOS if train else TEST_PHOTOS) if backgrounds == "split" else TRAIN_PHOTOS + TEST_PHOTOS
    crops, photo = natural_crops(num, size, photos, seed, return_labels=True)
    background = crops.to(device=device, dtype=torch.float32) / 255.0
    layers, counts = sample_scene_objects(num, size, max_objects, split_generator(seed, train), layout)
    image, semantic = render_scene(background, layers, counts)
    return {
        "image": (image * 255.0).round_().clamp_(0, 255).to(torch.uint8),
        "semantic": semantic,
        "saliency": semantic > 0,
        "photo": photo.to(device),
    }
