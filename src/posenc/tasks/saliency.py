"""Salient object detection (``task=saliency``; Islam et al., IJCV 2024; PosENet Table 5: ECSSD
F-measure of a VGG trained from scratch with vs without padding): a one-channel foreground map
trained with binary cross-entropy on the embedded shapes scenes (any object is salient) or DUTS-TR,
tested on the shapes, DUTS-TE, ECSSD or PASCAL-S. Max F-measure (beta^2 = 0.3), MAE and S-measure
(:mod:`posenc.metrics.saliency`) overall, MAE and pixel accuracy per band of distance to the border.

Each with its 95% interval (``<key>/ci_low``, ``/ci_high``; :mod:`posenc.tasks.supervised`), resampling
the test images (a saliency set's images are photos of their own) or the photos the shapes scenes'
backgrounds come from: MAE and S-measure are means of per-image scores; max F is the maximum over
thresholds of the mean F curve, so each image's F curve is pooled; pixel accuracy, overall and per band,
pools each image's correct and valid pixels; the banded MAE pools its pixels' errors.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics.classification import BinaryAccuracy

from posenc.metrics.binned import BinnedMean, band_edges, band_of_pixels, bin_names_bands
from posenc.metrics.saliency import MaxFMeasure, SaliencyMAE, SMeasure, f_measure_curve, mae_per_image, s_measure
from posenc.tasks.segmentation import IGNORE_INDEX, SegmentationTask
from posenc.tasks.supervised import IntervalSpec, bin_mean, binned_specs, per_image_bin_sums, pooled_ratio, ratio


def max_mean_curve(pooled: np.ndarray) -> np.ndarray:
    """The statistic of ``[F curve..., 1]`` rows: max F, the pooled F curve's mean at its best threshold."""
    return ratio(pooled[:, :-1], pooled[:, -1:]).max(axis=1)


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
        self.pixel_acc.update(prob, target)
        bins = torch.where(target == IGNORE_INDEX, -1, self.band_map.expand_as(target))
        error, correct = (prob - gt.float()).abs(), ((prob >= 0.5) == gt).float()
        self.band_error.update(error, bins)
        self.band_correct.update(correct, bins)
        self._record_images(prob, target, batch)
        self.record_test("error_by_distance", per_image_bin_sums(error, bins, len(self.names)), batch)
        self.record_test("correct_by_distance", per_image_bin_sums(correct, bins, len(self.names)), batch)

    def _record_images(self, prob: torch.Tensor, target: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:
        """Each image's MAE, S-measure and F curve, computed once: into the metrics and into the rows of the
        overall metrics' intervals (with a count of 1 per curve, and correct and valid pixels at
        ``pixel_acc``'s threshold, > 0.5)."""
        gt = target == 1
        mae = mae_per_image(prob, gt)
        scores = torch.tensor(
            [s_measure(p, g, self.s_measure.alpha) for p, g in zip(prob, gt)], dtype=torch.float64, device=prob.device
        )
        curve = f_measure_curve(prob, gt, self.max_f.num_thresholds, self.max_f.beta2)
        self.mae.update_scores(mae)
        self.s_measure.update_scores(scores)
        self.max_f.update_curves(curve)
        valid = target != IGNORE_INDEX
        right = ((prob > 0.5) == gt) & valid
        self.record_test("mae", mae, batch)
        self.record_test("s_measure", scores, batch)
        self.record_test("f_curve", torch.cat([curve, curve.new_ones(len(curve), 1)], dim=1), batch)
        self.record_test("pixel_correct", torch.stack([right.flatten(1).sum(1), valid.flatten(1).sum(1)], 1), batch)

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

    def interval_specs(self) -> dict[str, IntervalSpec]:
        """Max F, MAE, S-measure and pixel accuracy overall; MAE and pixel accuracy per band."""
        specs = {
            "max_f": IntervalSpec("f_curve", max_mean_curve),
            "mae": IntervalSpec("mae"),
            "s_measure": IntervalSpec("s_measure"),
            "pixel_acc": IntervalSpec("pixel_correct", pooled_ratio),
        }
        specs.update(binned_specs("mae", "error_by_distance", self.names, bin_mean))
        specs.update(binned_specs("pixel_acc", "correct_by_distance", self.names, bin_mean))
        return specs
