"""Semantic segmentation (``task=semseg``; Islam et al., IJCV 2024; PosENet Table 5: VOC mIoU of a
VGG trained from scratch with vs without padding): on the embedded shapes scenes or PASCAL VOC
2012, any backbone and padding, the 1x1 ``pixel_decoder``; mIoU overall and per band of distance
to the border."""

from __future__ import annotations

from posenc.tasks.segmentation import SegmentationTask


class SemanticSegmentationTask(SegmentationTask):
    """:class:`SegmentationTask` on ``batch["mask"]`` with pixel bands as distance bins."""
