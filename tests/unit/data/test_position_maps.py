"""Tests for posenc.data.position_maps against the authors' published PosENet target PNGs
(Islam, Jia, Bruce, ICLR 2020): H, V, G bit-exact at 256, stripes by rank correlation.

The PNGs are the copies vendored in ``posenc.assets``; each is first checked against the SHA-256 of
the authors' published file, so the comparison is against their bytes, not whatever the checkout holds.
"""

from __future__ import annotations

import hashlib
import io
import math
from importlib import resources

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy.stats import spearmanr

from posenc.data.position_maps import OFFICIAL_FILES, TARGETS, make_target, make_targets
from posenc.errors import PosencError

PNG = {"H": "gt_hor.png", "V": "gt_ver.png", "G": "gt_gau.png", "HS": "gt_horstp.png", "VS": "gt_verstp.png"}
# SHA-256 of the authors' published files (Islam, Jia, Bruce, ICLR 2020; MIT license;
# https://github.com/islamamirul/position_information), vendored unchanged in src/posenc/assets.
PUBLISHED_SHA256 = {
    "gt_hor.png": "d3360cbf78ce4f7c83de7b250a08395684b77ec6c1a1bf9eb69ef4923c9a9316",
    "gt_ver.png": "3620c768c3229cfd60af8adc82075ba69980aeb062c079b5e86a7c56df40756c",
    "gt_gau.png": "9dd39fe338b735710e5c9bdef585e360ae1db7c9d2667a29cef229542478f327",
    "gt_horstp.png": "78fa206b1cf22d1a2a8143e59cbf02a0ebd8cf110cfd23f2404c354f19529ba6",
    "gt_verstp.png": "1de0fb8ce72992fe35a91fb34bf187f5d33438b39f00fa622b16f68d3879444a",
    "black.jpg": "5f02e1a0ffb037db6fcefd4b253d327aa881daaa1a650df63f1d36b3822e6058",
    "white.jpg": "7db6594b9e02aa1e42d6d525917e8680e24e00a46dbd0f064beef32c51b4d181",
    "noise.jpg": "c3fed440d0f951156dc2a607cb5134c78e596df6541fe4d1a47756c9d8abee74",
}
ASSETS = resources.files("posenc.assets")


def published_bytes(file: str) -> bytes:
    """The vendored ``file``, after checking it is the authors' published file byte for byte."""
    data = ASSETS.joinpath(file).read_bytes()
    assert hashlib.sha256(data).hexdigest() == PUBLISHED_SHA256[file], f"{file} differs from the published file"
    return data


@pytest.fixture(scope="module")
def official() -> dict[str, np.ndarray]:
    """The authors' 256x256 8-bit maps as uint8 arrays (hash-checked vendored copies)."""
    maps = {}
    for name, file in PNG.items():
        with Image.open(io.BytesIO(published_bytes(file))) as im:
            assert im.mode == "L" and im.size == (256, 256), (file, im.mode, im.size)
            maps[name] = np.asarray(im, dtype=np.uint8).copy()
    return maps


def _resize(arr: np.ndarray, size: int) -> torch.Tensor:
    """Bilinear resize (align_corners=False) of a PNG, min-max normalised to [0, 1], float64."""
    t = torch.from_numpy(arr.astype(np.float64))[None, None]
    t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)[0, 0]
    return (t - t.min()) / (t.max() - t.min())


def _spearman(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    return float(spearmanr(np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel())[0])


# --------------------------------------------------------------------------- against the PNGs
@pytest.mark.parametrize("file", sorted(PUBLISHED_SHA256))
def test_vendored_assets_are_the_published_files(file: str) -> None:
    assert OFFICIAL_FILES == PNG
    published_bytes(file)


@pytest.mark.parametrize("name", ["H", "V", "G"])
def test_formula_reproduces_png_bit_exactly_at_256(official: dict[str, np.ndarray], name: str) -> None:
    m = make_target(name, 256)
    quantised = torch.floor(255 * m).numpy()
    assert quantised.min() >= 0 and quantised.max() <= 255
    np.testing.assert_array_equal(quantised.astype(np.uint8), official[name])


def test_png_gradients_are_one_grey_level_per_pixel(official: dict[str, np.ndarray]) -> None:
    """Sanity of the reference itself: gt_hor is x, gt_ver is y (0..255)."""
    ramp = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(official["H"], np.broadcast_to(ramp[None, :], (256, 256)))
    np.testing.assert_array_equal(official["V"], np.broadcast_to(ramp[:, None], (256, 256)))


@pytest.mark.parametrize("name", ["HS", "VS"])
def test_stripes_match_png_at_256(official: dict[str, np.ndarray], name: str) -> None:
    m = make_target(name, 256)
    assert _spearman(m, official[name]) >= 0.99
    diff = np.abs(m.double().numpy() - official[name] / 255.0)
    assert diff.mean() < 0.02 and diff.max() < 0.03  # measured: 0.0115 and 4/255 = 0.0157


@pytest.mark.parametrize("name", ["HS", "VS"])
def test_stripes_match_resized_png_at_224(official: dict[str, np.ndarray], name: str) -> None:
    m = make_target(name, 224)
    assert _spearman(m, _resize(official[name], 224)) >= 0.99


@pytest.mark.parametrize(("name", "tol"), [("H", 1e-6), ("V", 1e-6), ("G", 0.01)])
def test_gradients_match_resized_png_at_224(official: dict[str, np.ndarray], name: str, tol: float) -> None:
    # measured max |diff|: 6e-8 for H/V (a linear ramp resizes exactly), 0.0048 for G (8-bit steps)
    diff = (make_target(name, 224).double() - _resize(official[name], 224)).abs()
    assert diff.max().item() < tol
    assert _spearman(make_target(name, 224), _resize(official[name], 224)) > 0.9999


@pytest.mark.parametrize("name", TARGETS)
@pytest.mark.parametrize("size", [224, 256, 28])
def test_official_source(official: dict[str, np.ndarray], name: str, size: int) -> None:
    m = make_target(name, size, source="official")
    assert m.shape == (size, size) and m.dtype == torch.float32
    assert m.min().item() == 0.0 and m.max().item() == 1.0
    want = _resize(official[name], size) if size != 256 else torch.from_numpy(official[name] / 255.0)
    torch.testing.assert_close(m.double(), want, rtol=0, atol=1e-6)


def test_official_signed_stripes() -> None:
    unit = make_target("HS", 224, source="official")
    signed = make_target("HS", 224, source="official", stripe_range="signed")
    assert signed.min().item() == -1.0 and signed.max().item() == 1.0
    torch.testing.assert_close(signed, 2 * unit - 1)


# --------------------------------------------------------------------------- the formulas
@pytest.mark.parametrize("size", [7, 28, 224])
def test_formulas_against_numpy(size: int) -> None:
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    c = s = size / 2
    g = np.exp(-((x - c) ** 2 + (y - c) ** 2) / (2 * s**2))
    hs = 0.5 * (1 + np.cos(2 * np.pi * 2.5 * y / size))
    want = {
        "H": x / (size - 1),
        "V": y / (size - 1),
        "G": (g - g.min()) / (g.max() - g.min()),
        "HS": hs,
        "VS": hs.T,
    }
    for name in TARGETS:
        m = make_target(name, size)
        assert m.shape == (size, size) and m.dtype == torch.float32, name
        np.testing.assert_allclose(m.numpy(), want[name], rtol=0, atol=1e-6, err_msg=name)


def test_map_geometry() -> None:
    size = 64
    h, v, g, hs, vs = make_targets(list(TARGETS), size)
    assert h[:, 0].eq(0).all() and h[:, -1].eq(1).all()  # left 0, right 1
    assert (h == h[0:1]).all()  # one value per column
    assert torch.all(h[0, 1:] > h[0, :-1])  # strictly increasing to the right
    assert torch.equal(v, h.T)
    assert torch.equal(vs, hs.T)
    assert (hs == hs[:, 0:1]).all() and hs[0, 0] == 1  # horizontal bands, bright at the top
    assert torch.equal(g, g.T)
    assert g.argmax().item() == (size // 2) * size + size // 2  # peak at the centre pixel c = S/2
    assert g.min() == 0 and g.max() == 1 and g[0, 0] == 0  # the far corner is the minimum
    # 2.5 periods down the image: the top row is a maximum, then 4 interior extrema
    # (at y = 12.8, 25.6, 38.4, 51.2 for S = 64).
    col = hs[:, 0].double()
    d = col[1:] - col[:-1]
    sign_changes = int(((d[1:] * d[:-1]) < 0).sum())
    assert sign_changes == 4


@pytest.mark.parametrize("name", TARGETS)
def test_unit_range(name: str) -> None:
    m = make_target(name, 224)
    assert m.min() >= 0 and m.max() <= 1
    assert m.max().item() == 1.0
    assert m.min().item() < 1e-4


def test_signed_stripes() -> None:
    for name in ("HS", "VS"):
        unit = make_target(name, 256)
        signed = make_target(name, 256, stripe_range="signed")
        assert signed.min() >= -1 and signed.max() <= 1
        assert signed.min() < -0.999 and signed.max() == 1
        torch.testing.assert_close(signed, 2 * unit - 1)
    for name in ("H", "V", "G"):
        assert torch.equal(make_target(name, 64, stripe_range="signed"), make_target(name, 64))


def test_constant_predictor_mae_on_stripes() -> None:
    """The paper's ~.70 HS/VS MAE of an uninformative predictor fits the signed stripes:
    E|0.5 - cos t| = (2 sin(pi/3) + pi/6) / pi = 0.718, while E|0.5 - (1 + cos t)/2| = 1/pi."""
    signed_ref = (2 * math.sin(math.pi / 3) + math.pi / 6) / math.pi
    for name in ("HS", "VS"):
        unit = make_target(name, 224)
        signed = make_target(name, 224, stripe_range="signed")
        assert abs((0.5 - unit).abs().mean().item() - 1 / math.pi) < 1e-3
        assert abs((0.5 - signed).abs().mean().item() - signed_ref) < 5e-3
        assert 0.69 < (0.5 - signed).abs().mean().item() < 0.73


def test_make_targets_stacks_in_order() -> None:
    stack = make_targets(["VS", "H"], 32, stripe_range="signed")
    assert stack.shape == (2, 32, 32)
    assert torch.equal(stack[0], make_target("VS", 32, stripe_range="signed"))
    assert torch.equal(stack[1], make_target("H", 32))
    with pytest.raises(ValueError, match="valid: H, V, G, HS, VS"):
        make_targets([], 32)


# --------------------------------------------------------------------------- bad input
def test_unknown_target_lists_valid_names() -> None:
    with pytest.raises(PosencError) as excinfo:
        make_target("D", 32)
    msg = str(excinfo.value)
    assert msg == "unknown target 'D'; valid: H, V, G, HS, VS"
    with pytest.raises(PosencError, match="unknown target 'hs'"):
        make_targets(["H", "hs"], 32)


def test_unknown_source_and_stripe_range() -> None:
    with pytest.raises(PosencError, match="unknown target source 'png'; valid: formula, official$"):
        make_target("H", 32, source="png")
    with pytest.raises(PosencError, match="unknown stripe range 'pm1'; valid: unit, signed$"):
        make_target("HS", 32, stripe_range="pm1")
