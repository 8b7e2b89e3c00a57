"""A canvas around every image of the PosENet data (``data.canvas.margin`` / ``data.canvas.fill``;
Islam et al., IJCV 2024: the canvas colour changes how much position a network gets)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from posenc.data.canvas import frame_on_canvas
from posenc.data.datamodule import CanvasFrame, PositionDataModule
from posenc.errors import PosencError


def _ring(size: int, margin: int) -> torch.Tensor:
    inside = torch.zeros(size, size, dtype=torch.bool)
    inside[margin : size - margin, margin : size - margin] = True
    return ~inside


def test_frame_pastes_the_shrunk_image_in_the_centre_of_the_fill():
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    framed = frame_on_canvas(images, "white", 4)
    shrunk = F.interpolate(images, size=(24, 24), mode="bilinear", align_corners=False, antialias=True)
    assert torch.allclose(framed[:, :, 4:28, 4:28], shrunk.clamp(0, 1))
    assert torch.all(framed[:, :, _ring(32, 4)] == 1.0)
    mean = torch.tensor([0.2, 0.4, 0.6])
    coloured = frame_on_canvas(images, "mean", 4, mean_colour=mean)
    assert torch.allclose(coloured[:, :, _ring(32, 4)], mean.view(1, 3, 1).expand(2, 3, int(_ring(32, 4).sum())))
    assert frame_on_canvas(images, "black", 0) is images


def test_frame_margin_that_leaves_no_image_is_one_line():
    with pytest.raises(PosencError, match=r"data\.canvas\.margin=13 is not valid: .*valid: 0\.\.12"):
        frame_on_canvas(torch.rand(1, 3, 32, 32), "black", 13)


def test_datamodule_frames_every_split_and_keys_its_cache_by_the_canvas():
    plain = PositionDataModule(num_train=3, num_test=2, num_val=2, image_size=32)
    framed = PositionDataModule(
        num_train=3, num_test=2, num_val=2, image_size=32, canvas={"fill": "noise", "margin": 6}
    )
    plain.setup(), framed.setup()
    ring = _ring(32, 6)
    for dm_set in (framed.train_set, framed.val_set, *framed.test_sets.values()):
        image = dm_set[0]["image"]
        assert image.shape == (3, 32, 32)
        assert image[:, ring].std() > 0.2  # uniform noise, not a constant
    # the noise of an image is fixed (every epoch sees the same canvas) and differs between images
    assert torch.equal(framed.train_set[1]["image"], framed.train_set[1]["image"])
    assert not torch.equal(framed.train_set[0]["image"][:, ring], framed.train_set[1]["image"][:, ring])
    inner = F.interpolate(
        plain.train_set[0]["image"][None], size=(20, 20), mode="bilinear", align_corners=False, antialias=True
    )[0].clamp(0, 1)
    assert torch.allclose(framed.train_set[0]["image"][:, 6:26, 6:26], inner)
    assert plain.fingerprint() != framed.fingerprint()  # a cached feature set is never reused across canvases


def test_frame_fill_is_checked():
    with pytest.raises(PosencError, match="data.canvas.fill 'pink'; valid: black, white, mean, noise"):
        CanvasFrame(fill="pink", margin=2)
