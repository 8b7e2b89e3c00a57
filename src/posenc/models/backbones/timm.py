"""Any timm CNN as a posenc backbone: ``backbone=timm backbone.name=<model>`` (timm 1.x).

The model is built by timm with ``features_only=True``: its taps ``f1..fN`` are the stages timm's
``feature_info`` declares, with the channels and strides it declares (``FeatureInfo.channels()`` /
``.reduction()``), never re-derived here. The padding scheme is swapped by
:func:`posenc.models.padding.convert_padding` (classes with their own computation, such as BiT's
``StdConv2d``, keep it; convs that pad inside their own ``forward``, such as ``tf_`` EfficientNets'
``Conv2dSame``, are refused for every scheme but ``zeros``); the count of converted convs per class
is the backbone's ``padding_report`` and goes into ``metrics.json``.

``weights=imagenet`` reads the model's default pretrained file from the Hugging Face cache, where
timm puts it (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``:
``models--timm--<model>.<tag>/snapshots/<revision>/model.safetensors``) and never downloads
unless ``download=true``; a missing file names the file and the folder.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import torch.nn as nn

from posenc.config.rules import Rule
from posenc.errors import MissingWeights, PosencError, require_extra
from posenc.models.backbones.base import BackboneOptions, ExtractorBackbone, check_taps, takes_backbone_options
from posenc.models.padding import PaddingSpec
from posenc.registry import padding_entry

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def _timm():
    return require_extra("timm", "backbone=timm", "timm")


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache, read from the environment at call time."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    return Path(os.environ.get("HF_HOME", "~/.cache/huggingface")).expanduser() / "hub"


def cached_weights_file(hf_hub_id: str) -> tuple[Path | None, Path]:
    """``(file, folder)``: the newest cached weights file of ``hf_hub_id`` (None when absent) and the
    folder it belongs in."""
    repo = hf_hub_cache() / f"models--{hf_hub_id.replace('/', '--')}"
    snapshots = repo / "snapshots"
    found = (
        sorted(
            (p for name in WEIGHT_FILES for p in snapshots.glob(f"*/{name}")),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
        if snapshots.is_dir()
        else []
    )
    return (found[0] if found else None), snapshots / "<revision>"


@takes_backbone_options
def build_timm_backbone(
    name: str = "resnet18",
    padding: PaddingSpec | str = "zeros",
    taps: Annotated[Sequence[str], Rule(min_items=1)] | None = None,
    **options: Any,
) -> ExtractorBackbone:
    """The timm model ``name`` (any CNN that supports ``features_only``) with its stages as taps."""
    return timm_extractor(name, BackboneOptions.of(padding, **options), taps)


def timm_extractor(
    name: str,
    opts: BackboneOptions,
    taps: Sequence[str] | None,
    family: str = "timm",
    all_indices: Sequence[int] | None = None,
    **model_kwargs: Any,
) -> ExtractorBackbone:
    """timm's ``features_only`` model ``name`` (``model_kwargs`` go to ``timm.create_model``;
    ``all_indices``: the feature indices that are its taps f1..fN, default timm's own) with
    ``opts``' weights and padding, as an :class:`ExtractorBackbone` named ``<family>/<name>``."""
    timm = _timm()
    if name not in timm.list_models():
        close = timm.list_models(f"*{name.split('.')[0][:6]}*")[:8]
        raise PosencError(
            f"unknown timm model {name!r}; valid: a name of timm.list_models()"
            + (f", e.g. {', '.join(close)}" if close else "")
        )
    if all_indices is not None:
        model_kwargs["out_indices"] = tuple(all_indices)
    try:
        model = timm.create_model(name, pretrained=False, features_only=True, **model_kwargs)
    except RuntimeError as exc:  # e.g. a ViT without feature hooks
        raise PosencError(f"timm model {name} has no features_only stages: {str(exc).splitlines()[0]}") from exc
    if opts.weights not in (None, "imagenet") and opts.run is None:
        raise PosencError(
            f"backbone.weights={opts.weights} is not valid for {family}: valid: null, imagenet, or a "
            "posenc run dir / .ckpt of this backbone"
        )
    all_taps = [f"f{i + 1}" for i in range(len(model.feature_info))]
    taps = check_taps(taps, all_taps, f"tap of {family}/{name}")
    if padding_entry(opts.padding.name).shrinks:
        raise PosencError(
            f"padding={opts.padding.name} does not fit {family}/{name}: its stages expect their own map "
            "sizes; use padding=none"
        )
    chosen = [all_taps.index(t) for t in all_taps if t in taps]
    indices = list(all_indices) if all_indices is not None else [info["index"] for info in model.feature_info.info]
    if chosen != list(range(len(all_taps))):  # timm stops the model after the deepest tap chosen
        model_kwargs["out_indices"] = tuple(indices[i] for i in chosen)
        model = timm.create_model(name, pretrained=False, features_only=True, **model_kwargs)
    if opts.weights == "imagenet":
        model = _with_imagenet_weights(timm, name, model, opts.download, family, **model_kwargs)
    report = opts.convert(model)
    info = model.feature_info
    backbone = ExtractorBackbone(
        f"{family}/{name}",
        model,
        [all_taps[i] for i in chosen],
        list(range(len(chosen))),
        info.channels(),
        opts,
        report,
        info.reduction(),
    )
    opts.load_run(backbone)
    return backbone


def _with_imagenet_weights(
    timm, name: str, model: nn.Module, download: bool, family: str, **model_kwargs: Any
) -> nn.Module:
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    hub_id = cfg.get("hf_hub_id")
    if not hub_id:
        raise PosencError(f"timm model {name} has no pretrained weights on the hub; valid: backbone.weights=null")
    path, folder = cached_weights_file(hub_id)
    if path is None and not download:
        raise MissingWeights(
            f"ImageNet weights for {family}/{name} not found: put {WEIGHT_FILES[0]} of {hub_id} into "
            f"{folder}, or set backbone.download=true when online"
        )
    overlay = {"file": str(path)} if path is not None else {}
    return timm.create_model(name, pretrained=True, features_only=True, pretrained_cfg_overlay=overlay, **model_kwargs)
