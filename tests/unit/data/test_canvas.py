"""Patch sources, canvas pasting and synthetic shape scenes (Islam et al., IJCV 2024)."""

from __future__ import annotations

import math
import sys
import time
import types

import pytest
import torch

from posenc.data.canvas import (
    cell_of_position,
    check_canvas,
    fill_canvas,
    free_positions,
    grid_positions,
    location_class_label,
    location_seg_labels,
    make_canvases,
    paste,
    paste_mask,
)
from posenc.data.sources.patches import (
    SHAPE_CLASSES,
    ShapeParams,
    digit_patches,
    make_patches,
    rasterise_shapes,
    shape_patches,
    split_generator,
)
from posenc.data.sources.shapes import render_scene, sample_scene_objects, shape_scenes
from posenc.errors import PosencError


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- paste / fills


def test_paste_writes_the_patch_at_its_offset_and_leaves_the_input_alone():
    gen = _gen()
    canvases = torch.rand(5, 3, 20, 20, generator=gen)
    patches = torch.rand(5, 3, 6, 6, generator=gen)
    positions = torch.tensor([[0, 0], [14, 14], [3, 9], [0, 14], [7, 2]])
    before = canvases.clone()
    out = paste(canvases, patches, positions)
    assert torch.equal(canvases, before)
    for i, (top, left) in enumerate(positions.tolist()):
        expected = before[i].clone()
        expected[:, top : top + 6, left : left + 6] = patches[i]
        assert torch.equal(out[i], expected)


def test_masked_paste_keeps_the_canvas_colour_off_the_object():
    canvases = fill_canvas(3, 12, "white")
    patches = torch.zeros(3, 3, 4, 4)
    masks = torch.zeros(3, 4, 4, dtype=torch.bool)
    masks[:, 1:3, 1:3] = True
    positions = torch.tensor([[0, 0], [8, 8], [4, 2]])
    out = paste(canvases, patches, positions, masks)
    placed = paste_mask(3, 12, positions, masks)
    assert placed.sum().item() == 3 * 4
    assert torch.all(out.permute(1, 0, 2, 3)[:, placed] == 0)
    assert torch.all(out.permute(1, 0, 2, 3)[:, ~placed] == 1)
    assert placed[2, 5:7, 3:5].all()


def test_paste_rejects_positions_outside_the_canvas():
    with pytest.raises(PosencError, match="outside"):
        paste(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 4, 4), torch.tensor([[5, 0]]))


def test_fills():
    assert torch.all(fill_canvas(2, 5, "black") == 0)
    assert torch.all(fill_canvas(2, 5, "white") == 1)
    mean = torch.tensor([0.1, 0.5, 0.9])
    m = fill_canvas(2, 5, "mean", mean_colour=mean)
    assert torch.equal(m, mean.view(1, 3, 1, 1).expand(2, 3, 5, 5))
    noise = fill_canvas(2, 16, "noise", generator=_gen())
    assert noise.min() >= 0 and noise.max() <= 1 and noise.std() > 0.2
    assert torch.equal(noise, fill_canvas(2, 16, "noise", generator=_gen()))
    with pytest.raises(PosencError, match="'grey'.*black, white, mean, noise"):
        fill_canvas(1, 4, "grey")
    with pytest.raises(PosencError, match="mean_colour"):
        fill_canvas(1, 4, "mean")


# --------------------------------------------------------------------------- positions


def test_grid_positions_and_cells_round_trip():
    cells = torch.arange(9)
    positions = grid_positions(cells, 3, 32)
    assert positions[5].tolist() == [32, 64]
    assert positions[7].tolist() == [64, 32]
    assert torch.equal(cell_of_position(positions, 96, 3, 32), cells)


def test_grid_positions_centre_a_smaller_patch_in_its_cell():
    # 96 px canvas, 32 px cells, 20 px patches: 6 px margin on every side of the patch
    positions = grid_positions(torch.tensor([0, 4, 8, 5]), 3, 20, cell=32)
    assert positions.tolist() == [[6, 6], [38, 38], [70, 70], [38, 70]]
    assert torch.equal(cell_of_position(positions, 96, 3, 20), torch.tensor([0, 4, 8, 5]))


def test_free_positions_cover_the_edges_and_stay_inside():
    pos = free_positions(4000, 20, 6, _gen())
    assert pos.min().item() == 0 and pos.max().item() == 14
    for axis in range(2):
        assert (pos[:, axis] == 0).any() and (pos[:, axis] == 14).any()
    assert len(torch.unique(pos[:, 0])) == 15


def test_cell_of_position_uses_the_patch_centre():
    # canvas 90, grid 3 (cells 30 px), patch 10: centre = position + 5
    pos = torch.tensor([[0, 0], [24, 0], [25, 0], [0, 80], [40, 54], [40, 55], [80, 80]])
    assert cell_of_position(pos, 90, 3, 10).tolist() == [0, 0, 3, 2, 4, 5, 8]


def test_check_canvas_errors_name_the_bad_value():
    check_canvas(96, 3, 32)
    check_canvas(100, None, 32)
    check_canvas(96, 3, 20)  # smaller than its 32 px cell: centred, with a margin
    with pytest.raises(
        PosencError, match=r"data\.canvas\.grid=3 does not split data\.image_size=100 .*valid: a multiple of 3"
    ):
        check_canvas(100, 3, 32)
    with pytest.raises(PosencError, match=r"data\.canvas\.patch_size=40 is not valid: .*32 px cell.*valid: 1\.\.32"):
        check_canvas(96, 3, 40)
    with pytest.raises(PosencError, match="grid=0"):
        check_canvas(96, 0, 32)
    with pytest.raises(PosencError, match="patch_size=0"):
        check_canvas(96, 3, 0)
    with pytest.raises(PosencError, match="patch_size=120"):
        check_canvas(100, None, 120)


# --------------------------------------------------------------------------- labels


def test_location_seg_labels_on_a_hand_built_case():
    mask = torch.zeros(2, 4, 4, dtype=torch.bool)
    mask[0, 0, 0] = True
    mask[1, 2:, 2:] = True
    labels = location_seg_labels(mask, torch.tensor([0, 7]))
    expected = torch.zeros(2, 4, 4, dtype=torch.int64)
    expected[0, 0, 0] = 1
    expected[1, 2:, 2:] = 8
    assert torch.equal(labels, expected)


def test_location_class_label_modes():
    cell, label = torch.tensor([0, 4, 8]), torch.tensor([2, 0, 9])
    assert location_class_label(cell, label, 9, 10, "location")[1] == 9
    assert location_class_label(cell, label, 9, 10, "class")[0].tolist() == [2, 0, 9]
    both, n = location_class_label(cell, label, 9, 10, "class_and_location")
    assert both.tolist() == [18, 4, 89] and n == 90
    with pytest.raises(PosencError, match="'where'"):
        location_class_label(cell, label, 9, 10, "where")


def test_make_canvases_grid_and_free():
    patches = digit_patches(12, 8, seed=0)
    out = make_canvases(patches, 24, 3, "white", _gen(1), paste_object_only=True)
    assert out["image"].shape == (12, 3, 24, 24)
    assert torch.equal(out["position"], grid_positions(out["cell"], 3, 8))
    assert torch.equal(out["object_mask"].sum(dim=(1, 2)), patches.masks.sum(dim=(1, 2)))
    assert torch.all(out["image"].permute(1, 0, 2, 3)[:, ~out["object_mask"]] == 1)
    small = make_canvases(patches, 30, 3, "white", _gen(3))  # 8 px patches in 10 px cells
    assert torch.equal(small["position"], grid_positions(small["cell"], 3, 8, cell=10))
    edge = torch.ones(30, 30, dtype=torch.bool)
    edge[1:-1, 1:-1] = False  # the outermost ring: 1 px margin, never covered by a patch
    assert torch.all(small["image"].permute(1, 0, 2, 3)[:, :, edge] == 1)
    free = make_canvases(patches, 30, None, "mean", _gen(2))
    assert torch.equal(free["cell"], cell_of_position(free["position"], 30, 3, 8))
    assert torch.equal(free["label"], patches.labels)


@pytest.mark.parametrize(("fill", "grid"), [("noise", 3), ("mean", None)])
def test_uint8_canvases_built_in_chunks_equal_the_float_ones(fill, grid):
    """What the canvas datamodule stores (uint8, a chunk at a time: bounded memory at 50,000
    canvases) is the float canvases rounded, noise fills and free placements included."""
    from posenc.data.canvas import CANVAS_CHUNK

    patches = digit_patches(CANVAS_CHUNK + 5, 8, seed=0)  # two chunks, the second partial
    whole = make_canvases(patches, 24, grid, fill, _gen(4), paste_object_only=True)
    chunked = make_canvases(patches, 24, grid, fill, _gen(4), paste_object_only=True, uint8=True)
    assert chunked["image"].dtype == torch.uint8
    assert torch.equal(chunked["image"], (whole["image"] * 255).round().clamp(0, 255).to(torch.uint8))
    for key in ("cell", "position", "object_mask", "label"):
        assert torch.equal(chunked[key], whole[key]), key


# --------------------------------------------------------------------------- patch sources


def test_digit_patches_look_like_digits():
    train = digit_patches(64, 16, seed=0)
    test = digit_patches(64, 16, seed=0, train=False)
    assert train.images.shape == (64, 3, 16, 16) and train.num_classes == 10
    frac = train.masks.float().mean().item()
    assert 0.1 < frac < 0.6
    assert train.labels.min() >= 0 and train.labels.max() <= 9 and len(train.labels.unique()) > 5
    assert not torch.equal(train.images, test.images)
    assert torch.equal(train.images, digit_patches(64, 16, seed=0).images)


def _disk(radius: float, size: int) -> ShapeParams:
    one = torch.ones(1)
    return ShapeParams(
        classes=torch.zeros(1, dtype=torch.int64),
        centres=torch.full((1, 2), size / 2),
        radii=one * radius,
        angles=one * 0.3,
        colours=torch.ones(1, 3),
        stripe_freq=one,
        stripe_angle=one,
        stripe_phase=one,
        stripe_depth=one * 0.5,
    )


def test_shape_areas_match_geometry():
    size, r = 64, 20.0
    expected = {
        "disk": math.pi * r * r,
        "square": 2 * r * r,
        "triangle": 3 * math.sqrt(3) / 4 * r * r,
        "ring": math.pi * r * r * (1 - 0.6**2),
    }
    for name, area in expected.items():
        params = _disk(r, size)
        params = ShapeParams(**{**params.__dict__, "classes": torch.tensor([SHAPE_CLASSES.index(name)])})
        got = rasterise_shapes(params, size, size).sum().item()
        assert abs(got - area) / area < 0.1, (name, got, area)


def test_shape_patches_areas_determinism_and_classes():
    p = shape_patches(200, 32, seed=3)
    assert p.images.shape == (200, 3, 32, 32) and p.images.min() >= 0 and p.images.max() <= 1
    assert set(p.labels.tolist()) == set(range(5))
    area = p.masks.float().mean(dim=(1, 2))
    disks = area[p.labels == 0]
    # diameter 0.5..0.9 of the patch: area fraction pi/4 * (0.25..0.81)
    assert disks.min() > math.pi / 4 * 0.25 * 0.9 and disks.max() < math.pi / 4 * 0.81 * 1.1
    assert area[p.labels == 4].mean() < disks.mean()  # rings are hollow
    assert torch.equal(p.images, shape_patches(200, 32, seed=3).images)
    assert not torch.equal(p.images, shape_patches(200, 32, seed=4).images)
    assert not torch.equal(p.images, shape_patches(200, 32, seed=3, train=False).images)


def test_make_patches_dispatch_and_cifar(monkeypatch):
    with pytest.raises(PosencError, match="'mnist'.*shapes, digits, photos, cifar10"):
        make_patches("mnist", 2, 8, 0)
    with pytest.raises(PosencError, match="data.data_dir"):
        make_patches("cifar10", 2, 8, 0)
    fake = types.ModuleType("posenc.data.sources.cifar")

    def load_cifar10(data_dir, train):
        gen = _gen(int(train))
        images = torch.randint(0, 256, (20, 3, 32, 32), generator=gen, dtype=torch.uint8)
        return images, torch.arange(20) % 10, [f"c{i}" for i in range(10)]

    fake.load_cifar10 = load_cifar10
    monkeypatch.setitem(sys.modules, "posenc.data.sources.cifar", fake)
    p = make_patches("cifar10", 6, 16, 0, data_dir="/nowhere")
    assert p.images.shape == (6, 3, 16, 16) and p.masks.all() and p.num_classes == 10
    same = make_patches("cifar10", 6, 32, 0, data_dir="/nowhere")
    raw, labels, _ = load_cifar10(None, True)
    idx = [int((raw.float() / 255 - img).abs().sum(dim=(1, 2, 3)).argmin()) for img in same.images]
    assert torch.equal(labels[idx], same.labels)
    photos = make_patches("photos", 3, 16, 0)
    assert photos.masks.all() and photos.images.shape == (3, 3, 16, 16)


# --------------------------------------------------------------------------- scenes


def test_shape_scenes_labels_borders_and_rerendering():
    size, num = 48, 32
    start = time.perf_counter()
    scenes = shape_scenes(num, size, seed=5, max_objects=3)
    print(f"shape_scenes({num}, {size}): {time.perf_counter() - start:.3f} s")
    sem, sal = scenes["semantic"], scenes["saliency"]
    assert scenes["image"].dtype == torch.uint8 and scenes["image"].shape == (num, 3, size, size)
    assert torch.equal(sal, sem > 0) and sal.any(dim=(1, 2)).all()
    assert set(sem.unique().tolist()) == set(range(6))
    border = sal[:, 0].any(1) | sal[:, -1].any(1) | sal[:, :, 0].any(1) | sal[:, :, -1].any(1)
    assert border.float().mean() > 0.3
    layers, counts = sample_scene_objects(num, size, 3, split_generator(5, True))
    _, again = render_scene(torch.zeros(num, 3, size, size), layers, counts)
    assert torch.equal(again, sem)
    assert torch.equal(sem, shape_scenes(num, size, seed=5)["semantic"])
    assert not torch.equal(sem, shape_scenes(num, size, seed=5, train=False)["semantic"])


def test_scene_layouts_put_objects_where_they_say_and_refuse_what_does_not_fit():
    """``centred``: objects cluster at the centre (the centre bias of salient-object data);
    ``sides``: one object per scene, its pixels in the left or the right third, both sides drawn."""
    from posenc.analysis.channels import content_sides
    from posenc.data.sources.shapes import check_layout

    size, num = 48, 256

    def offsets(layout: str) -> torch.Tensor:  # |object centre - image centre| in image sides
        layers, _ = sample_scene_objects(num, size, 1, split_generator(3, True), layout)
        return (layers[0].centres / size - 0.5).abs()

    assert offsets("centred").mean() < 0.75 * offsets("random").mean()  # expected .16 against .25
    sides = shape_scenes(num, size, seed=3, layout="sides", max_objects=1)["saliency"]
    side = content_sides(sides)
    assert (side != 0).all() and 0.35 < (side > 0).float().mean() < 0.65  # every scene has a side; both drawn
    third = size // 3
    in_own = torch.where(
        side.view(-1, 1, 1) > 0,
        sides[:, :, : third * 2].sum((1, 2)).view(-1, 1, 1),
        sides[:, :, third:].sum((1, 2)).view(-1, 1, 1),
    ).flatten()
    assert (in_own == sides.sum((1, 2))).all()  # nothing reaches the far third
    with pytest.raises(PosencError, match="data.max_objects=3.*expected 1 with data.layout=sides"):
        check_layout("sides", 3)
    with pytest.raises(PosencError, match="data.layout.*'grid'.*random, centred, sides"):
        shape_scenes(2, size, seed=0, layout="grid")


def test_shared_backgrounds_draw_test_scenes_from_every_photo():
    """``backgrounds=split`` keeps the test photos out of training (a domain shift: 4 unseen photos);
    ``shared`` crops both splits from all of them, with their own random streams."""
    split = shape_scenes(8, 32, seed=0, train=False, backgrounds="split")["image"]
    shared = shape_scenes(8, 32, seed=0, train=False, backgrounds="shared")["image"]
    assert not torch.equal(split, shared)
    assert torch.equal(
        shape_scenes(8, 32, seed=0, train=True, backgrounds="shared")["image"],
        shape_scenes(8, 32, seed=0, train=True, backgrounds="shared")["image"],
    )
    with pytest.raises(PosencError, match="data.backgrounds 'mixed'; valid: shared, split"):
        shape_scenes(2, 32, seed=0, backgrounds="mixed")


def test_shape_scenes_speed():
    shape_scenes(2, 64, seed=0)  # warm the photo cache
    start = time.perf_counter()
    shape_scenes(64, 64, seed=1)
    print(f"shape_scenes(64, 64): {time.perf_counter() - start:.3f} s")


def test_the_balanced_test_puts_every_patch_in_every_cell_and_held_out_cells_are_their_own():
    """data.test_placement (default on a grid: balanced, the ICCV 2021 authors' test): every test
    patch once in each of the g^2 cells, so a cell-blind model scores exactly 1 / g^2; the
    held-out canvases draw their cells from a stream of their own, not the test's."""
    from posenc.data.location import CanvasDataModule

    dm = CanvasDataModule(source="shapes", num_train=8, num_val=64, num_test=6, image_size=48, device="cpu")
    dm.setup()
    test = dm.test_sets["canvas"].tensors
    assert len(test["cell"]) == 6 * 9
    assert torch.equal(test["cell"], torch.arange(9).repeat(6))
    assert torch.equal(test["label"], test["label"][::9].repeat_interleave(9))  # each patch 9 times
    for i in range(1, 9):  # the same patch, moved: its pixels are the first copy's, shifted by the cell
        assert torch.equal(test["image"][i].float().sum(), test["image"][0].float().sum())
    random = CanvasDataModule(
        source="shapes", num_train=8, num_val=64, num_test=64, image_size=48, device="cpu", test_placement="random"
    )
    random.setup()
    val_cells = random.val_set.tensors["cell"]
    test_cells = random.test_sets["canvas"].tensors["cell"]
    assert len(test_cells) == 64 and not torch.equal(val_cells, test_cells)
    with pytest.raises(PosencError, match="data.test_placement=balanced puts every test patch in every grid cell"):
        CanvasDataModule(source="shapes", canvas={"grid": None, "patch_size": 12}, test_placement="balanced")
