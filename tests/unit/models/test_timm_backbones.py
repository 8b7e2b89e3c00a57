"""timm backbones (issue 17): the padding swap is never silently wrong on seven families, taps and
channels come from timm's feature_info, PosENet and location_cls run on them, imagenet weights come
from the Hugging Face cache (never downloaded), and what cannot work refuses in one line."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F

from posenc.errors import PosencError
from posenc.models.padding import PaddingRefused, convert_padding

timm = pytest.importorskip("timm")

FAMILIES = {  # model -> the conv class that pads inside forward, if any
    "resnet18": None,  # plain ResNet
    "resnet50d": None,  # ResNet-D (avg-pool downsampling, deep stem)
    "regnetx_002": None,  # RegNet
    "efficientnet_b0": None,  # EfficientNet
    "tf_efficientnet_b0": "Conv2dSame",  # TF-ported EfficientNet: "same" padding inside forward
    "resnetv2_50x1_bit": None,  # BiT: weight-standardised StdConv2d
    "convnext_atto": None,  # ConvNeXt
    "mobilenetv3_small_100": None,  # MobileNet
}
MODES = ("reflect", "replicate", "circular", "partial", "none")


def features(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, features_only=True).eval()


def first_padded_conv(model: torch.nn.Module) -> tuple[str, torch.nn.Conv2d]:
    return next(
        (n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d) and any(p > 0 for p in m.padding)
    )


def reference(conv: torch.nn.Conv2d, x: torch.Tensor, mode: str) -> torch.Tensor:
    """What ``mode`` means for one conv, stated independently: the conv's own computation (a copy
    of it, padding 0) on the input padded or resized by the conv's declared padding."""
    valid = copy.deepcopy(conv)
    ph, pw = conv.padding
    valid.padding = (0, 0)
    if mode == "none":
        return valid(
            F.interpolate(x, size=(x.shape[-2] + 2 * ph, x.shape[-1] + 2 * pw), mode="bilinear", align_corners=False)
        )
    padded = F.pad(x, (pw, pw, ph, ph), mode="constant" if mode == "partial" else mode)
    out = valid(padded)
    if mode == "partial":
        ones = F.pad(torch.ones(1, 1, *x.shape[-2:]), (pw, pw, ph, ph))
        count = F.conv2d(ones, torch.ones(1, 1, *conv.kernel_size), None, conv.stride, 0, conv.dilation)
        bias = conv.bias.view(1, -1, 1, 1) if conv.bias is not None else 0.0
        out = (out - bias) * (conv.kernel_size[0] * conv.kernel_size[1] / count.clamp(min=1)) + bias
    return out


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_padding_swap_converts_with_border_check_or_refuses(name):
    model = features(name)
    x = torch.rand(1, 3, 128, 128)  # ConvNeXt: a 7x7 reflect pad needs a last map of at least 4 px
    with torch.no_grad():
        before = model(x)
        zero = copy.deepcopy(model)
        convert_padding(zero, "zeros")
        assert all(torch.equal(a, b) for a, b in zip(before, zero(x)))  # zeros: bit-identical
    conv_name, conv = first_padded_conv(model)
    probe = torch.rand(1, conv.in_channels, 11, 12)
    for mode in MODES:
        converted = copy.deepcopy(model)
        report: dict[str, int] = {}
        if FAMILIES[name]:
            with pytest.raises(PaddingRefused) as refused:
                convert_padding(converted, mode, report)
            message = str(refused.value)
            assert "\n" not in message and FAMILIES[name] in message and f"padding={mode} cannot convert" in message
            continue
        convert_padding(converted, mode, report)
        assert sum(report.values()) > 0
        with torch.no_grad():
            got = dict(converted.named_modules())[conv_name](probe)
            want = reference(conv, probe, mode)
            outputs = converted(x)
        assert got.shape == want.shape and torch.allclose(got, want, atol=1e-5, rtol=1e-4), (name, mode)
        assert [t.shape for t in outputs] == [t.shape for t in before]  # map sizes kept, so skips still add
        assert not torch.allclose(got, conv(probe))  # the border changed (the model's outputs may hide it:
        # ConvNeXt's blocks scale their branch by 1e-6 at init)


def test_bit_keeps_weight_standardisation_under_every_scheme():
    model = features("resnetv2_50x1_bit")
    convert_padding(model, "circular")
    name, conv = next(
        (n, m) for n, m in model.named_modules() if type(m).__name__ == "StdConv2d" and max(m.kernel_size) > 1
    )
    assert type(conv).__name__ == "StdConv2d"  # not rebuilt as a plain nn.Conv2d


def test_taps_and_channels_come_from_feature_info():
    from posenc.models.backbones.timm import build_timm_backbone

    for name in ("convnext_atto", "regnetx_002"):
        backbone = build_timm_backbone(name)
        info = timm.create_model(name, pretrained=False, features_only=True).feature_info
        assert backbone.tap_names == [f"f{i + 1}" for i in range(len(info))]
        assert backbone.tap_channels == info.channels()
        taps = backbone(torch.rand(2, 3, 64, 64))
        assert [t.shape[1] for t in taps] == info.channels()
        assert [64 // t.shape[-1] for t in taps] == info.reduction()
    picked = build_timm_backbone("resnet18", taps=["f2", "f4"])
    assert [t.shape[1] for t in picked(torch.rand(1, 3, 64, 64))] == [64, 256]


def test_posenet_and_location_cls_run_on_a_timm_backbone(run_tiny, tmp_path, capsys):
    """PosENet (frozen) and location_cls (trained end to end) on timm models; the channel ranking
    of ICCV 2021 then runs on the trained timm run like on a torchvision one."""
    metrics = run_tiny(
        "backbone=timm", "backbone.name=regnetx_002", "padding=circular", "task.max_steps=30", name="posenet"
    )
    assert metrics["backbone"] == "timm" and metrics["padding/converted/Conv2d"] == 14
    assert -1 <= metrics["test/natural/H/spc"] <= 1
    trained = run_tiny(
        "task=location_cls",
        "backbone=timm",
        "backbone.name=resnet18",
        "backbone.trainable=true",
        "data.image_size=48",
        "data.canvas.patch_size=16",
        "data.num_val=0",
        "task.max_steps=10",
        name="location_cls",
    )
    assert 0 <= trained["test/accuracy"] <= 1
    from posenc.cli.rank_channels import main

    assert main([str(tmp_path / "location_cls"), "--layer", "f4"]) == 0
    ranking = json.loads((tmp_path / "location_cls" / "analysis" / "rank_channels_f4.json").read_text())
    assert ranking["num_channels"] == 256 and sorted(ranking["ranking"]["overall"]) == list(range(256))


@pytest.mark.parametrize(
    "preset",
    [
        "padding_study",
        "readout_ablation",
        "tap_ablation",
        "posenet_alone",
        "canvas_study",
        "canvas_frame",
        "border_study",
        "padding_then_probe",
        "channel_order",
        "translation_invariance",
        "ppp_artifact",
    ],
)
def test_every_sweep_preset_composes_on_a_timm_backbone(preset, tmp_path):
    """Each preset's jobs, with backbone=timm given on the command line, compose and pass the
    validator (a preset that sweeps the backbone itself keeps its own list)."""
    from helpers.runs import CONF_DIR, compose_run
    from omegaconf import OmegaConf

    from posenc.config.validation import validate
    from posenc.sweeps.presets import expand_overrides

    params = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "sweep" / f"{preset}.yaml").hydra.sweeper.params)
    params = {k: v for k, v in params.items() if k != "backbone"}  # the command line's timm model instead
    jobs = expand_overrides(params, [f"sweep={preset}", "backbone=timm", "backbone.name=resnet18"])
    assert jobs
    for i, job in enumerate(jobs[:: max(1, len(jobs) // 3)][:3]):
        cfg = compose_run(job, tmp_path / str(i))
        validate(cfg)
        assert cfg.backbone._target_.endswith("build_timm_backbone"), job


def test_ppp_runs_on_a_timm_backbone(tmp_path):
    """PPP (Lin et al. ICML 2023) on timm's ResNet-D, whose receptive fields are measured: zero
    padding leaves a pattern, strongest at the border, the run contract holds."""
    from helpers.runs import compose_run

    from posenc.run.train import run

    common = [
        "task=ppp",
        "backbone=timm",
        "backbone.name=resnet50d",
        "backbone.taps=[f1,f2]",
        "data.image_size=32",
        "data.num_test=8",
        "data.batch_size=4",
        "callbacks.progress=null",
        f"paths.cache_dir={tmp_path / 'c'}",
    ]
    zeros = run(compose_run([*common, "padding=zeros"], tmp_path / "zeros"))
    assert zeros["status"] == "completed" and zeros["backbone"] == "timm"
    for layer in ("f1", "f2"):
        assert zeros[f"ppp/{layer}/snr"] > 1e-3, layer
        profile = zeros[f"ppp/{layer}/border_profile"]
        assert profile[0] == max(profile), layer
    assert (tmp_path / "zeros" / "figures" / "ppp.png").is_file()


def test_what_cannot_work_on_timm_refuses_in_one_line():
    from posenc.models.backbones.timm import build_timm_backbone

    with pytest.raises(PosencError, match="readout.permute_at=3 is not valid for backbone timm/resnet18"):
        build_timm_backbone("resnet18").set_channel_permutation(3)
    with pytest.raises(PosencError, match="padding=reflect cannot convert conv_stem \\(Conv2dSame\\)"):
        build_timm_backbone("tf_efficientnet_b0", padding="reflect")
    with pytest.raises(PosencError, match="unknown timm model 'resnet_nonexistent'"):
        build_timm_backbone("resnet_nonexistent")


def test_imagenet_weights_come_from_the_hugging_face_cache(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    from posenc.models.backbones.timm import build_timm_backbone

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    hub_id = timm.create_model("resnet18", pretrained=False).pretrained_cfg["hf_hub_id"]
    with pytest.raises(PosencError) as missing:
        build_timm_backbone("resnet18", weights="imagenet")
    folder = tmp_path / "hub" / f"models--{hub_id.replace('/', '--')}" / "snapshots"
    assert str(missing.value) == (
        f"ImageNet weights for timm/resnet18 not found: put model.safetensors of {hub_id} "
        f"into {folder / '<revision>'}, or set backbone.download=true when online"
    )
    torch.manual_seed(7)  # weights no random init of the model would give
    source = timm.create_model("resnet18", pretrained=False)
    (folder / "abc123").mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, folder / "abc123" / "model.safetensors")
    backbone = build_timm_backbone("resnet18", weights="imagenet")
    assert torch.equal(backbone.body.conv1.weight, source.conv1.weight)


def test_a_user_module_runs_posenet_and_its_padding_is_swapped(run_tiny, tmp_path):
    """``backbone=module``: the example model (posenc/models/example_model.py, shown in docs/reference.md), taps by module name."""
    from posenc.models.backbones.module import build_module_backbone

    backbone = build_module_backbone("posenc.models.example_model.make_net", ["stage1", "stage3"], padding="circular")
    assert backbone.tap_names == ["stage1", "stage3"] and backbone.tap_channels == [16, 32]
    assert backbone.padding_report == {"Conv2d": 3}
    assert [tuple(t.shape[1:]) for t in backbone(torch.rand(2, 3, 32, 32))] == [(16, 16, 16), (32, 8, 8)]
    metrics = run_tiny(
        "backbone=module",
        "backbone.target=posenc.models.example_model.make_net",
        "backbone.taps=[stage1,stage2,stage3]",
        "task.max_steps=40",
        name="module",
    )
    assert metrics["backbone"] == "module" and "padding/converted/Conv2d" not in metrics  # zeros: nothing converted
    # measured with mirrored photos (12 steps: the tiny run's 4 epochs): .123 [.083, .205]; PosENet alone on RGB
    # in the same run reads .013 [-.011, .081]
    assert metrics["test/natural/H/spc"] > 0.07 and metrics["test/natural/H/spc/ci_low"] > 0.0
    with pytest.raises(
        PosencError, match="unknown tap \\(a module of posenc.models.example_model.make_net\\) 'stage9'"
    ):
        build_module_backbone("posenc.models.example_model.make_net", ["stage9"])
    with pytest.raises(PosencError, match="cannot import no_such_package"):
        build_module_backbone("no_such_package.make", ["x"])
