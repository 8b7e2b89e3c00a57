"""The backbone families (:mod:`~posenc.models.backbones.base` for what they share). Importing this
package registers every built-in backbone (:mod:`posenc.registry`, filled beside each builder), so
:func:`build_backbone`, the ``_target_`` of ``conf/backbone/<name>.yaml``, and the names it takes are
one import away; ``backbone=timm`` / ``vit_tiny`` / ``module`` load their own modules when built."""

from posenc.models.backbones.torchvision import BACKBONES, build_backbone, output_shape_of
from posenc.registry import backbone_entry, register_backbone

__all__ = ["BACKBONES", "backbone_entry", "build_backbone", "output_shape_of", "register_backbone"]
