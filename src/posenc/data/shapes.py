"""Synthetic semantic-segmentation / salient-object scenes with exact masks.

Each scene is a crop of a bundled photo (``TRAIN_PHOTOS`` or ``TEST_PHOTOS``) with 1 to
``max_objects`` textured shapes on top, drawn by :func:`posenc.data.patches.render_shapes`.
Shapes may sit partly outside the image (their centres are anywhere inside it), so objects
touch and cross the border; later objects occlude earlier ones.

Label convention: ``semantic`` is 0 on the background and ``1 + k`` on the visible pixels of a
shape of class ``SHAPE_CLASSES[k]`` (disk=1, square=2, triangle=3, cross=4, ring=5);
``saliency`` is ``semantic > 0``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from posenc.data.natural import TEST_PHOTOS, TRAIN_PHOTOS, natural_crops
from posenc.data.patches import (
    SHAPE_CLASSES,
    ShapeParams,
    random_angles,
    random_style,
    render_shapes,
    split_generator,
)
from posenc.core.errors import invalid_value

__all__ = [
    "SHAPE_CLASSES",
    "NUM_SEMANTIC_CLASSES",
    "sample_scene_objects",
    "render_scene",
    "shape_scenes",
]

NUM_SEMANTIC_CLASSES = len(SHAPE_CLASSES) + 1  # background + one per shape class
RADIUS_RANGE = (0.12, 0.3)  # a scene object's circumscribed radius, in image sides


def sample_scene_objects(
    num: int, size: int, max_objects: int, gen: torch.Generator
) -> tuple[list[ShapeParams], Tensor]:
    """Random objects for ``num`` scenes (CPU): one :class:`ShapeParams` per layer
    (``max_objects`` layers, back to front) and each scene's object count [N] in
    1..max_objects (scene ``n`` uses layers ``0..count[n]-1``)."""
    counts = torch.randint(1, max_objects + 1, (num,), generator=gen)
    layers = []
    for _ in range(max_objects):
        classes = torch.randint(0, len(SHAPE_CLASSES), (num,), generator=gen)
        low, high = RADIUS_RANGE
        radii = (low + (high - low) * torch.rand(num, generator=gen)) * size
        centres = torch.rand(num, 2, generator=gen) * size
        angles = random_angles(classes, gen)
        layers.append(ShapeParams(classes, centres, radii, angles, **random_style(num, gen)))
    return layers, counts


def render_scene(
    background: Tensor, layers: list[ShapeParams], counts: Tensor
) -> tuple[Tensor, Tensor]:
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
) -> dict[str, Tensor]:
    """``num`` scenes of textured shapes on photo crops: ``image`` uint8 [N,3,S,S],
    ``semantic`` int64 [N,S,S] (0 background, 1 + SHAPE_CLASSES index), ``saliency`` bool
    [N,S,S] (any object). Deterministic for (seed, train); train and test use different photos
    and different random streams."""
    if num < 0:
        raise invalid_value("num", num, "expected an int >= 0")
    if size < 1:
        raise invalid_value("size", size, "expected an image size >= 1")
    if max_objects < 1:
        raise invalid_value("max_objects", max_objects, "expected an int >= 1")
    photos = TRAIN_PHOTOS if train else TEST_PHOTOS
    background = natural_crops(num, size, photos, seed).to(device=device, dtype=torch.float32) / 255.0
    layers, counts = sample_scene_objects(num, size, max_objects, split_generator(seed, train))
    image, semantic = render_scene(background, layers, counts)
    return {
        "image": (image * 255.0).round_().clamp_(0, 255).to(torch.uint8),
        "semantic": semantic,
        "saliency": semantic > 0,
    }
