"""A timm Vision Transformer as a posenc backbone, the position atlas's control for explicit position:
``backbone=vit_tiny`` (``backbone.position_embedding=learned|none``).

Taps ``f1..fN`` are the patch tokens after every block (timm's ``features_only`` getter, prefix
tokens dropped), reshaped to the patch grid: ``[B, C, H/16, W/16]``. The model runs at any input size
(``dynamic_img_size``: the position embedding is resampled to the grid).

``position_embedding=none`` zeroes the learned embedding and freezes it: attention and the per-token
MLPs treat every patch alike, and the patch embedding (kernel = stride = the patch size) pads
nothing, so no layer knows where a token sits. That is a true zero of absolute position, PosENet's
floor for a deep network (Islam et al. ICLR 2020 measure a readout alone at that floor). With the
embedding (``learned``, random at init: timm's truncated normal, std .02), position is explicit.
Padding schemes have nothing to convert (``padding_report`` is empty). Every block attends over
the whole image, so every tap's receptive field is global (``global_receptive_field``) and PPP, which
needs a padding-free reference, is refused in one line.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal, get_args

import torch
import torch.nn as nn

from posenc.config.rules import Rule
from posenc.errors import PosencError, check_choice, require_extra
from posenc.models.backbones.base import BackboneOptions, ExtractorBackbone, takes_backbone_options
from posenc.models.backbones.timm import timm_extractor
from posenc.models.padding import PaddingSpec

PositionEmbedding = Literal["learned", "none"]  # none: zeroed and frozen
POSITION_EMBEDDINGS: tuple[str, ...] = get_args(PositionEmbedding)


@takes_backbone_options
def build_vit_backbone(
    name: str = "vit_tiny_patch16_224",
    padding: PaddingSpec | str = "zeros",
    taps: Annotated[Sequence[str], Rule(min_items=1)] | None = None,
    position_embedding: PositionEmbedding = "learned",
    **options: Any,
) -> ExtractorBackbone:
    """timm ViT ``name`` with every block's patch tokens as a tap; ``position_embedding=none``
    removes the learned position embedding (zeroed and frozen)."""
    check_choice("backbone.position_embedding", position_embedding, POSITION_EMBEDDINGS)
    timm = require_extra("timm", "backbone=vit_tiny", "timm")

    if name in timm.list_models() and not name.startswith(("vit_", "deit_")):
        raise PosencError(
            f"backbone.name={name} is not a Vision Transformer; valid: a vit_* / deit_* name of "
            "timm.list_models() (CNNs: backbone=timm)"
        )
    depth = _depth(timm, name)
    backbone = timm_extractor(
        name, BackboneOptions.of(padding, **options), taps, "vit", range(depth), dynamic_img_size=True
    )
    vit = backbone.body.model  # timm's VisionTransformer, under its features_only getter
    if position_embedding == "none":
        pos_embed = getattr(vit, "pos_embed", None)  # a Parameter, or None when built without one
        if not isinstance(pos_embed, torch.Tensor):
            raise PosencError(f"vit/{name} has no learned position embedding to remove")
        pos_embed.data.zero_()
        pos_embed.requires_grad_(False)
    backbone.global_receptive_field = True
    backbone.position_embedding = position_embedding
    return backbone


def _depth(timm: Any, name: str) -> int:
    """The number of blocks of ViT ``name`` (built on the meta device: no memory, no init)."""
    import torch

    if name not in timm.list_models():
        return 1  # timm_extractor names the unknown model in one line
    with torch.device("meta"):
        model: nn.Module = timm.create_model(name, pretrained=False)
    blocks = getattr(model, "blocks", None)
    if blocks is None:
        raise PosencError(f"timm model {name} has no transformer blocks; valid: a vit_* / deit_* model")
    return len(blocks)
