"""Salient object detection (``task=saliency``; Islam et al., IJCV 2024; PosENet Table 5: ECSSD
F-measure of a VGG trained from scratch with vs without padding): a one-channel foreground map
trained with binary cross-entropy on the embedded shapes scenes (any object is salient) or DUTS-TR,
tested on the shapes, DUTS-TE, ECSSD or PASCAL-S. Max F-measure (beta^2 = 0.3), MAE and S-measure
(:mod:`posenc.metrics.saliency`) overall, MAE and pixel accuracy per band of distance to the border.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics.classification import BinaryAccuracy

from posenc.metrics.binned import BinnedMean, band_edges, band_of_pixels, bin_names_bands
from posenc.metrics.saliency import MaxFMeasure, SaliencyMAE, SMeasure
from posenc.tasks.segmentation import IGNORE_INDEX, SegmentationTask


class SaliencyTask(SegmentationTask):
    """Foreground probability per pixel; ``mask > 0`` is salient, 255 ignored."""

    metric_order = ("max_f", "mae", "s_measure", "pixel_acc")

    def num_outputs(self) -> int:
        return 1

    def targets(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        mask = batch["mask"].long()
        return torch.where(mask == IGNORE_INDEX, mask, (mask > 0).long())

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        valid = target != IGNORE_INDEX
        return F.binary_cross_entropy_with_logits(logits[:, 0][valid], target[valid].float())

    def predictions(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits[:, 0])

    def build_metrics(self) -> None:
        edges = band_edges(self.image_size, self.distance_bands)
        self.names = bin_names_bands(edges, (self.image_size + 1) // 2 - 1)
        self.band_map = band_of_pixels(self.image_size, self.image_size, edges).to(self.device)
        self.mae, self.max_f, self.s_measure = (
            SaliencyMAE().to(self.device),
            MaxFMeasure().to(self.device),
            SMeasure().to(self.device),
        )
        self.band_error = BinnedMean(len(self.names)).to(self.device)
        self.band_correct = BinnedMean(len(self.names)).to(self.device)
        self.pixel_acc = BinaryAccuracy(ignore_index=IGNORE_INDEX).to(self.device)

    def update_metrics(self, logits: torch.Tensor, target: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:
        prob = torch.sigmoid(logits[:, 0].float())
        gt = target == 1
        self.mae.update(prob, gt)
        self.max_f.update(prob, gt)
        self.s_measure.update(prob, gt)
        self.pixel_acc.update(prob, target)
        bins = torch.where(target == IGNORE_INDEX, -1, self.band_map.expand_as(target))
        self.band_error.update((prob - gt.float()).abs(), bins)
        self.band_correct.update(((prob >= 0.5) == gt).float(), bins)

    def compute_metrics(self) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
        overall = {
            "max_f": float(self.max_f.compute()),
            "mae": float(self.mae.compute()),
            "s_measure": float(self.s_measure.compute()),
            "pixel_acc": float(self.pixel_acc.compute()),
        }
        binned = {
            "mae": dict(zip(self.names, self.band_error.compute().tolist())),
            "pixel_acc": dict(zip(self.names, self.band_correct.compute().tolist())),
        }
        return overall, binned
