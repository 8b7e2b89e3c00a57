"""Paste patches into larger canvases (Islam et al., IJCV 2024, "Position, Padding and
Predictions"): a patch sits in one cell of a ``grid x grid`` canvas (or at any pixel offset),
surrounded by a canvas of a chosen fill, and the targets depend on where it sits.

Positions are LongTensor [N,2] of (top, left) pixel offsets; cells are numbered row-major,
``cell = row * grid + col``. Everything is batched: no Python loop over images or pixels.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from posenc.data.sources.patches import Patches
from posenc.errors import PosencError, check_choice, invalid_value

CanvasFill = Literal["black", "white", "mean", "noise"]  # mean: the patches' (or ImageNet's) mean colour
CANVAS_FILLS: tuple[str, ...] = get_args(CanvasFill)
# the location task's label: the cell, the patch's class, or both (posenc.tasks.location_cls)
LabelMode = Literal["location", "class", "class_and_location"]
LABEL_MODES: tuple[str, ...] = get_args(LabelMode)
DEFAULT_LOCATION_GRID = 3
CANVAS_CHUNK = 256  # canvases built at a time when they are stored as uint8 (make_canvases(uint8=True))


def _generator_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def fill_canvas(
    num: int,
    size: int,
    fill: str,
    generator: torch.Generator | None = None,
    mean_colour: Tensor | None = None,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Float [N,3,S,S] empty canvases: ``black`` 0, ``white`` 1, ``mean`` the per-channel
    ``mean_colour`` [3] (meant to be the mean colour of the training patches), ``noise``
    uniform [0,1] per pixel drawn from ``generator`` (on its device, then moved)."""
    check_choice("canvas fill", fill, CANVAS_FILLS)
    shape = (num, 3, size, size)
    if fill == "black":
        return torch.zeros(shape, device=device)
    if fill == "white":
        return torch.ones(shape, device=device)
    if fill == "noise":
        noise = torch.rand(shape, generator=generator, device=_generator_device(generator))
        return noise.to(device)
    if mean_colour is None or mean_colour.numel() != 3:
        raise PosencError("canvas fill 'mean' needs mean_colour, a tensor of 3 channel means")
    colour = mean_colour.to(device=device, dtype=torch.float32).view(1, 3, 1, 1)
    return colour.expand(shape).clone()


def grid_positions(cells: Tensor, grid: int, patch: int, cell: int | None = None) -> Tensor:
    """(top, left) LongTensor [N,2] of ``patch`` px patches centred in the grid cells ``cells``
    (``row * grid + col``) of side ``cell`` px (default: the patch, i.e. patches tile the canvas).
    A patch smaller than its cell leaves a margin of ``(cell - patch) // 2`` px around it, so a
    border cell's patch stays that far from the image edge."""
    cell = patch if cell is None else cell
    cells = cells.long()
    return torch.stack([cells // grid, cells % grid], dim=1) * cell + (cell - patch) // 2


def free_positions(
    num: int,
    canvas: int,
    patch: int,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Tensor:
    """(top, left) LongTensor [N,2], each uniform over every valid offset 0..canvas-patch."""
    if patch > canvas:
        raise PosencError(f"a {patch} px patch does not fit a {canvas} px canvas")
    where = _generator_device(generator)
    return torch.randint(0, canvas - patch + 1, (num, 2), generator=generator, device=where).to(device)


def cell_of_position(positions: Tensor, canvas: int, grid: int, patch: int) -> Tensor:
    """LongTensor [N]: the cell of a ``grid x grid`` split of the canvas (cells ``canvas/grid``
    wide) that holds each patch's centre; a centre on a boundary goes to the later cell."""
    doubled_centre = 2 * positions.long() + patch  # exact integer arithmetic
    rowcol = torch.div(doubled_centre * grid, 2 * canvas, rounding_mode="floor").clamp_(0, grid - 1)
    return rowcol[:, 0] * grid + rowcol[:, 1]


def _index_grids(positions: Tensor, patch: int) -> tuple[Tensor, Tensor, Tensor]:
    """Broadcastable (batch [N,1,1], rows [N,P,1], cols [N,1,P]) indices of each patch's square."""
    positions = positions.long()
    offsets = torch.arange(patch, device=positions.device)
    rows = (positions[:, 0:1] + offsets).unsqueeze(2)
    cols = (positions[:, 1:2] + offsets).unsqueeze(1)
    batch = torch.arange(positions.shape[0], device=positions.device).view(-1, 1, 1)
    return batch, rows, cols


def _check_inside(positions: Tensor, canvas: int, patch: int) -> None:
    if positions.numel() and (positions.min() < 0 or positions.max() > canvas - patch):
        bad = positions[((positions < 0) | (positions > canvas - patch)).any(dim=1)][0].tolist()
        raise PosencError(
            f"patch position (top, left)={tuple(bad)} is outside the {canvas} px canvas;"
            f" valid: 0..{canvas - patch} for {patch} px patches"
        )


def paste(canvases: Tensor, patches: Tensor, positions: Tensor, masks: Tensor | None = None) -> Tensor:
    """New canvases [N,3,S,S] with ``patches`` [N,3,P,P] written at ``positions`` (top, left).

    With ``masks`` bool [N,P,P], only the masked pixels (the object) are written; otherwise the
    whole square. The input canvases are not modified.
    """
    num, _, size, _ = canvases.shape
    patch = patches.shape[-1]
    if patches.shape[0] != num or positions.shape != (num, 2):
        raise PosencError(
            f"paste needs one patch and position per canvas: {num} canvases,"
            f" {patches.shape[0]} patches, positions {tuple(positions.shape)}"
        )
    _check_inside(positions, size, patch)
    batch, rows, cols = _index_grids(positions.to(canvases.device), patch)
    out = canvases.clone()
    values = patches.to(out).permute(0, 2, 3, 1)  # [N,P,P,3]: advanced-index dims come first
    if masks is not None:
        values = torch.where(masks.to(out.device).unsqueeze(-1), values, out[batch, :, rows, cols])
    out[batch, :, rows, cols] = values
    return out


def paste_mask(num: int, canvas: int, positions: Tensor, masks: Tensor) -> Tensor:
    """Bool [N,S,S]: the patch masks [N,P,P] placed at ``positions``, False elsewhere."""
    patch = masks.shape[-1]
    _check_inside(positions, canvas, patch)
    out = torch.zeros(num, canvas, canvas, dtype=torch.bool, device=masks.device)
    batch, rows, cols = _index_grids(positions.to(masks.device), patch)
    out[batch, rows, cols] = masks.bool()
    return out


def cell_size(image_size: int, grid: int) -> int:
    """The side of one cell of a ``grid x grid`` split of ``image_size`` px (one-line error when
    the grid does not split the image into equal cells)."""
    if grid < 1:
        raise invalid_value("data.canvas.grid", grid, "expected an int >= 1 (or null: free placement)")
    if image_size % grid:
        raise PosencError(
            f"data.canvas.grid={grid} does not split data.image_size={image_size} into equal cells;"
            f" valid: a multiple of {grid}, e.g. {grid * max(1, image_size // grid)}"
        )
    return image_size // grid


def check_canvas(image_size: int, grid: int | None, patch: int) -> None:
    """One-line errors for an impossible canvas: patch < 1, grid < 1, a grid that does not split
    the image into equal cells, a patch larger than its cell (or than the image: free placement)."""
    if patch < 1:
        raise invalid_value("data.canvas.patch_size", patch, "expected an int >= 1")
    if grid is None:
        if patch > image_size:
            raise invalid_value("data.canvas.patch_size", patch, f"a patch must fit data.image_size={image_size}")
        return
    cell = cell_size(image_size, grid)
    if patch > cell:
        raise invalid_value(
            "data.canvas.patch_size",
            patch,
            f"a patch must fit one {cell} px cell of data.canvas.grid={grid}"
            f" on data.image_size={image_size}; valid: 1..{cell}",
        )


def make_canvases(
    patches: Patches,
    image_size: int,
    grid: int | None,
    fill: str,
    generator: torch.Generator | None = None,
    mean_colour: Tensor | None = None,
    paste_object_only: bool = False,
    location_grid: int = DEFAULT_LOCATION_GRID,
    cells: Tensor | None = None,
    uint8: bool = False,
) -> dict[str, Tensor]:
    """Paste each patch once into a canvas of ``fill`` on the patches' device.

    ``grid``: the patch goes in a uniformly random cell of a ``grid x grid`` split (or the cell
    ``cells`` [N] gives it), centred in it (a patch smaller than the cell keeps a margin from the
    image edge);
    ``grid=None``: at a uniform pixel offset, its cell being the ``location_grid`` cell holding
    its centre. ``mean_colour`` defaults to these patches' mean colour (pass the training
    patches' mean for test canvases). ``paste_object_only`` writes only the object's pixels.
    Returns ``image`` [N,3,S,S], ``cell`` [N], ``position`` [N,2], ``object_mask`` [N,S,S]
    (the patch's mask where it was placed), ``label`` [N] (the patch's class).
    ``uint8``: ``image`` as uint8 (x 255, rounded), built :data:`CANVAS_CHUNK` canvases at a time,
    so no float copy of all of them is ever held (50,000 96 px canvases: 1.4 GB instead of 5.5 GB
    per float copy); the same values as converting the float images (a CPU generator draws a
    noise fill chunk by chunk exactly as at once).
    """
    size = patches.size
    num = patches.images.shape[0]
    device = patches.images.device
    check_canvas(image_size, grid, size)
    check_choice("canvas fill", fill, CANVAS_FILLS)
    if grid is None:
        if location_grid < 1:
            raise invalid_value("data.canvas.location_grid", location_grid, "expected an int >= 1")
        positions = free_positions(num, image_size, size, generator, device)
        cells = cell_of_position(positions, image_size, location_grid, size)
    elif cells is None:
        where = _generator_device(generator)
        cells = torch.randint(0, grid * grid, (num,), generator=generator, device=where).to(device)
    else:
        cells = cells.to(device)
        if cells.shape != (num,) or int(cells.min()) < 0 or int(cells.max()) >= grid * grid:
            raise invalid_value("cells", tuple(cells.shape), f"expected one cell in 0..{grid * grid - 1} per patch")
    if grid is not None:
        positions = grid_positions(cells, grid, size, cell_size(image_size, grid))
    if fill == "mean" and mean_colour is None:
        mean_colour = patches.images.mean(dim=(0, 2, 3))
    if uint8:
        image = torch.empty((num, 3, image_size, image_size), dtype=torch.uint8, device=device)
        for start in range(0, num, CANVAS_CHUNK):
            part = slice(start, min(start + CANVAS_CHUNK, num))
            canvases = fill_canvas(part.stop - start, image_size, fill, generator, mean_colour, device)
            pasted = paste(
                canvases, patches.images[part], positions[part], patches.masks[part] if paste_object_only else None
            )
            image[part] = pasted.mul_(255.0).round_().clamp_(0, 255)
    else:
        canvases = fill_canvas(num, image_size, fill, generator, mean_colour, device)
        image = paste(canvases, patches.images, positions, patches.masks if paste_object_only else None)
    return {
        "image": image,
        "cell": cells,
        "position": positions,
        "object_mask": paste_mask(num, image_size, positions, patches.masks),
        "label": patches.labels,
    }


def check_frame(image_size: int, margin: int) -> None:
    """One-line error for a canvas frame that leaves the image less than 8 px."""
    largest = (image_size - 8) // 2
    if isinstance(margin, bool) or not isinstance(margin, int) or not 0 <= margin <= largest:
        raise invalid_value(
            "data.canvas.margin",
            margin,
            f"the image needs at least 8 px of data.image_size={image_size}; valid: 0..{largest}",
        )


def frame_on_canvas(images: Tensor, fill: str, margin: int, **fill_options: Any) -> Tensor:
    """Float [N,3,S,S]: every image (float [N,3,S,S] in [0, 1]) shrunk to ``S - 2 margin`` px
    (bilinear, antialiased) and pasted in the centre of an ``S`` px canvas of ``fill``.

    The canvas around an image is a border of its own (Islam et al., IJCV 2024, "Position, Padding
    and Predictions": the canvas colour changes how much position a network gets): the frame's
    inner edge sits at a fixed place in every image, whatever the padding. ``margin=0`` returns the
    images unchanged. ``fill_options``: :func:`fill_canvas`'s ``generator`` and ``mean_colour``.
    """
    num, _, size, _ = images.shape
    check_frame(size, margin)
    if margin == 0:
        return images
    inner = size - 2 * margin
    small = F.interpolate(
        images.float(), size=(inner, inner), mode="bilinear", align_corners=False, antialias=True
    ).clamp_(0.0, 1.0)
    canvases = fill_canvas(num, size, fill, device=images.device, **fill_options)
    return paste(canvases, small, torch.full((num, 2), margin, dtype=torch.long))


def location_seg_labels(object_mask: Tensor, cell: Tensor) -> Tensor:
    """LongTensor [N,S,S]: 0 on the background, ``1 + cell`` on the object's pixels."""
    fg = (cell.long() + 1).view(-1, 1, 1).to(object_mask.device)
    return torch.where(object_mask, fg, torch.zeros_like(fg))


def location_class_label(
    cell: Tensor, label: Tensor, num_cells: int, num_classes: int, mode: str
) -> tuple[Tensor, int]:
    """(targets LongTensor [N], number of target classes) for ``mode``: ``location`` the cell,
    ``class`` the patch class, ``class_and_location`` ``label * num_cells + cell``."""
    check_choice("label mode", mode, LABEL_MODES)
    if mode == "location":
        return cell.long(), num_cells
    if mode == "class":
        return label.long(), num_classes
    return label.long() * num_cells + cell.long(), num_classes * num_cells


def split_class_and_location(joint: Tensor, num_cells: int) -> tuple[Tensor, Tensor]:
    """(cell, class) of ``class_and_location`` labels: the inverse of :func:`location_class_label`."""
    return joint % num_cells, joint // num_cells
