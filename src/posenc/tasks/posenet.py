"""PosENet position readout (Islam, Jia, Bruce, "How Much Position Information Do Convolutional
Neural Networks Encode?", ICLR 2020).

A frozen backbone's taps are resized to ``feature_size`` and concatenated; one PosENet readout
per target map (H, V, G, HS, VS; fused into one module, independent weights) regresses that fixed
map with an MSE loss (the map broadcast over the batch). All readouts train in one pass over
features computed once (``feature_cache``), stored channels-last (the readout conv runs ~2x faster
on CPU that way).
Scored per image by SPC and MAE, then averaged, for every test input; each average comes with its 95%
interval (``<key>/ci_low``, ``<key>/ci_high``: a bootstrap over the test set's independent units, the
photos natural crops are cut from and every other image on its own; posenc.metrics.intervals). Under
DDP every rank's per-image scores are gathered before the interval is computed.

``tap_readouts=each`` also trains one readout per tap alone (PosENet's tap ablation, and the
position atlas, ``python sweep.py atlas``) on the same cached features: a tap's readout reads
the tap's channels of the concatenation (one fused module, its heads masked to their taps'
channels), so the backbone runs once for all of them. The readouts share nothing but the
optimizer (their parameters are disjoint, so summing their losses trains each as alone); their
metrics are ``tap/<tap>/<input>/<target>/<metric>``, next to each tap's receptive field and
stride (``tap/<tap>/rf_px``, ``/stride``, ``/rf_rel`` = receptive field / image size; null for a
tap that depends on every pixel, such as attention or squeeze-excitation).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import numpy as np
import torch

from posenc.config.rules import Rule
from posenc.data.datamodule import TEST_INPUTS, ImageSize, check_memory
from posenc.data.feature_cache import CacheDtype, CacheMode, cache_key, cached_features, module_digest
from posenc.data.position_maps import TARGETS, StripeRange, Target, TargetSource, make_targets
from posenc.errors import PosencError, check_choice
from posenc.metrics.intervals import mean_interval
from posenc.metrics.spearman import mae_per_image, spearman_per_image
from posenc.models.backbones.base import TappedBackbone
from posenc.models.losses import UpsampledMSE
from posenc.models.readouts import PosENetReadout, resize_and_concat
from posenc.models.receptive_field import tap_depths
from posenc.tasks.base import PosencTask
from posenc.tasks.schedules import MaxEpochs, MaxSteps
from posenc.viz.figures import prediction_grid, save_figure

Autocast = Literal[None, "bf16"]  # the frozen backbone under bf16 autocast (the readout stays float32)
AUTOCAST: tuple[str | None, ...] = get_args(Autocast)
TapReadouts = Literal["all", "each"]  # one readout on all taps | also one per tap alone (the atlas)
TAP_READOUTS: tuple[str, ...] = get_args(TapReadouts)


class PosENetTask(PosencTask):
    """Train one readout per target map on frozen features; test SPC / MAE per input type."""

    grid_order = (TEST_INPUTS, TARGETS, ("spc", "mae"))  # Table 1 of Islam et al. 2020: input x target x metric
    targets: torch.Tensor  # [T, S, S] target maps, a buffer registered in __init__

    def __init__(
        self,
        backbone: TappedBackbone,
        readout: Callable[..., PosENetReadout],
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        image_size: ImageSize = 224,
        targets: Annotated[Sequence[Target], Rule(min_items=1)] = TARGETS,
        target_source: TargetSource = "formula",
        stripe_range: StripeRange = "unit",
        feature_cache: CacheMode = "auto",
        cache_dtype: CacheDtype = "auto",
        cache_memory_fraction: Annotated[float, Rule(gt=0, le=1)] = 0.25,
        cache_dir: str = "outputs/.feature_cache",
        max_steps: MaxSteps = -1,
        max_epochs: MaxEpochs = None,
        channels_last: bool = False,
        autocast: Autocast = None,
        tap_readouts: TapReadouts = "all",
    ) -> None:
        """``max_steps`` / ``max_epochs``: the readout budget; the trainer config reads them
        (``trainer.max_steps: ${task.max_steps}``), the task only records them.
        ``channels_last`` / ``autocast`` (None | "bf16"): how the frozen backbone runs when the
        features are computed (opt-in; the readout always trains in float32).
        ``feature_cache`` / ``cache_dtype`` / ``cache_memory_fraction``: where the frozen features
        are kept (posenc.data.feature_cache; ``auto``: memory within that share of the available
        RAM, else a float16 file under ``cache_dir``)."""
        super().__init__()
        check_choice("task.autocast", autocast, AUTOCAST)
        check_choice("task.tap_readouts", tap_readouts, TAP_READOUTS)
        for target in targets:
            check_choice("target", target, TARGETS)
        backbone.check_input_size(image_size)
        if backbone.trainable:
            raise PosencError(
                "task=posenet reads position out of a frozen backbone; valid: backbone.trainable=false "
                "(to measure a trained backbone, pass its run as backbone.weights=<run dir>)"
            )
        if not (isinstance(readout, type) and issubclass(readout, PosENetReadout)) and not (
            issubclass(getattr(readout, "func", object), PosENetReadout)
        ):
            name = getattr(getattr(readout, "func", readout), "__name__", str(readout))
            raise PosencError(f"task=posenet needs readout=posenet, got a {name} (a head of the padding-study tasks)")
        self.backbone = backbone
        self.target_names: list[str] = list(targets)
        self.readout = readout(in_channels=backbone.out_channels, num_maps=len(self.target_names))
        # tap_readouts=each: one more readout per tap and target, fused into one module whose heads each read
        # their tap's channels of the concatenation (posenc.models.readouts: exactly independent readouts)
        offsets = [sum(backbone.tap_channels[:i]) for i in range(len(backbone.tap_channels) + 1)]
        self.each_tap = list(backbone.tap_names) if tap_readouts == "each" else []
        self.tap_readouts = (
            readout(
                in_channels=backbone.out_channels,
                num_maps=len(self.each_tap) * len(self.target_names),
                channel_groups=[
                    (offsets[i], offsets[i + 1]) for i in range(len(self.each_tap)) for _ in self.target_names
                ],
            )
            if self.each_tap
            else None
        )
        self.feature_size = self.readout.feature_size
        self.register_buffer(
            "targets", make_targets(self.target_names, image_size, target_source, stripe_range), persistent=False
        )
        self.loss = UpsampledMSE(self.targets)
        self.image_size = image_size
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.feature_cache, self.cache_dtype, self.cache_dir = feature_cache, cache_dtype, cache_dir
        self.cache_memory_fraction = float(cache_memory_fraction)
        self.budget = {"max_steps": max_steps, "max_epochs": max_epochs}
        self.channels_last, self.autocast = channels_last, autocast
        if channels_last:
            self.backbone.to(memory_format=torch.channels_last)
        # per metric key, the test pass's per-image scores and their units, for the intervals (on_test_epoch_end)
        self.per_image: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self._backbone_digest: str | None = None
        self.previews: dict[str, dict[str, torch.Tensor]] = {}

    def check_data(self, datamodule: Any) -> None:
        """Refuse a readout this machine cannot hold (``readout.feature_size=100000``), before any image is
        encoded: a batch's resized features (float32, every tap's channels) and the readouts' maps with their
        batch norm and sigmoid, kept for the backward pass."""
        maps = len(self.target_names) * (1 + len(self.each_tap))
        channels, side, batch = self.backbone.out_channels, int(self.feature_size), int(datamodule.batch_size)
        needed = batch * side**2 * 4 * (channels + 4 * maps)
        check_memory(
            "readout.feature_size",
            side,
            f"a batch of {batch} images' features at {side}x{side} ({channels} channels) and readout maps",
            needed,
            "data.batch_size",
        )

    # -- features ---------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Frozen backbone taps, resized to ``feature_size`` and concatenated on channels
        (float32, whatever ``autocast`` ran the backbone in)."""
        start = time.perf_counter()
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=self.autocast == "bf16"):
            taps = self.backbone(images)
        features = resize_and_concat([t.float() for t in taps], self.feature_size, self.readout.align_corners)
        if self.each_tap:  # the atlas's cost figure; kept out of other runs' metrics.json (byte-identical reruns)
            self.summary["posenet/time/encode_s"] = self.summary.get("posenet/time/encode_s", 0.0) + (
                time.perf_counter() - start
            )
        return features

    def backbone_digest(self) -> str:
        """Hash of the frozen backbone's weights (computed once: they never change)."""
        if self._backbone_digest is None:
            self._backbone_digest = module_digest(self.backbone)
        return self._backbone_digest

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Leave the frozen backbone out of checkpoints (58 MB for VGG16, every epoch): the config
        rebuilds it (seeded init or weights file); its digest is kept to check that on load."""
        state = checkpoint["state_dict"]
        for key in [k for k in state if k.startswith("backbone.")]:
            del state[key]
        checkpoint["backbone_digest"] = self.backbone_digest()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        digest = checkpoint.get("backbone_digest")
        if digest is not None and digest != self.backbone_digest():
            raise PosencError(
                "checkpoint was trained on another backbone: its weights differ from this "
                "config's (check backbone, backbone.weights, padding and seed)"
            )
        checkpoint["state_dict"].update({f"backbone.{k}": v for k, v in self.backbone.state_dict().items()})

    def feature_cache_key(self) -> str:
        """Hash of what determines the features (the disk cache's file adds the dtype it stores)."""
        dm = self.trainer.datamodule  # type: ignore[attr-defined]  # set by Lightning, not declared on Trainer
        return cache_key(
            {
                "backbone": self.backbone.name,
                "taps": self.backbone.tap_names,
                "padding": self.backbone.padding,
                "normalize": self.backbone.normalize,
                "weights": self.backbone_digest(),
                "feature_size": self.feature_size,
                "align_corners": self.readout.align_corners,
                "data": dm.fingerprint(),
                "autocast": self.autocast,
            }
        )

    def encoder_name(self) -> str:
        """``vgg16, f1-f5``: the backbone and its taps, for the encoding progress bar."""
        taps = list(self.backbone.tap_names)
        numbers = [t[1:] for t in taps if t.startswith("f") and t[1:].isdigit()]
        consecutive = len(numbers) == len(taps) > 2 and all(int(b) == int(a) + 1 for a, b in zip(numbers, numbers[1:]))
        return f"{self.backbone.name}, " + (f"{taps[0]}-{taps[-1]}" if consecutive else ",".join(taps))

    def cache_train_features(self) -> None:
        """Encode the training set once, on the device the run trains on, and hand the features
        to the datamodule. Runs in ``setup("fit")``, before ``configure_optimizers``: the lr
        schedule reads the step count from the train loader, which must be the features' one."""
        dm = self.trainer.datamodule  # type: ignore[attr-defined]  # set by Lightning, not declared on Trainer
        key = self.feature_cache_key() if self.feature_cache in ("disk", "auto") else ""
        device = self.trainer.strategy.root_device
        self.backbone.to(device)
        what = self.encoder_name()
        features = cached_features(
            self.feature_cache,
            key,
            self.cache_dir,
            self.encode,
            dm.train_set,
            dm.batch_size,
            device,
            self.cache_dtype,
            self.cache_memory_fraction,
            what=what,
        )
        val = None
        if dm.val_set is not None and features is not None:  # small: always kept in memory
            val = cached_features(
                "memory",
                "",
                self.cache_dir,
                self.encode,
                dm.val_set,
                dm.batch_size,
                device,
                "float32",
                what=f"{what}, held out",
                announce=False,
            )
        dm.set_train_features(features, val)

    def _features(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return batch["features"] if "features" in batch else self.encode(batch["image"])

    # -- training ---------------------------------------------------------------------------
    def predict_maps(self, features: torch.Tensor) -> torch.Tensor:
        """``[B, T, S, S]``: every target's readout map for every image."""
        return self.readout(features, self.image_size)

    def readout_losses(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """MSE of the upsampled maps per readout and target: ``H`` for the all-taps readout,
        ``f3_H`` for tap f3's own (``tap_readouts=each``)."""
        losses = dict(zip(self.target_names, self.loss(self.readout.maps(features))))
        if self.tap_readouts is not None:
            maps = self.tap_readouts.maps(features)  # [B, taps x targets, h, w]
            for i, tap in enumerate(self.each_tap):
                per_target = self.loss(maps[:, i * len(self.target_names) : (i + 1) * len(self.target_names)])
                losses.update({f"{tap}_{name}": v for name, v in zip(self.target_names, per_target)})
        return losses

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, Any]:
        losses = self.readout_losses(self._features(batch))
        for name in self.target_names:  # the per-tap readouts' parts reach the loss curve through "losses"
            self.log(f"train/loss_{name}", losses[name], on_step=False, on_epoch=True)
        loss = torch.stack(list(losses.values())).sum()
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True)
        return {"loss": loss, "losses": {k: v.detach() for k, v in losses.items()}}

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        """Held-out training-distribution loss per readout and target (eval-mode BN), for the
        convergence flag."""
        losses = self.readout_losses(self._features(batch))
        size = len(batch["index"])
        for name, loss in losses.items():
            self.log(f"val/loss_{name}", loss, on_step=False, on_epoch=True, batch_size=size, sync_dist=True)
        self.log(
            "val/loss",
            torch.stack(list(losses.values())).sum(),
            on_step=False,
            on_epoch=True,
            batch_size=size,
            sync_dist=True,
        )

    def configure_optimizers(self) -> Any:
        """The optimizer over the readout; the scheduler factory gets the run's optimizer-step
        count (``total_steps``, e.g. :func:`posenc.tasks.schedules.multistep_at_fractions`)."""
        taps = self.tap_readouts.parameters() if self.tap_readouts is not None else []
        optimizer = self.optimizer_factory(params=[*self.readout.parameters(), *taps])
        if self.scheduler_factory is None:
            return optimizer
        total = int(self.trainer.estimated_stepping_batches)
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler_factory(optimizer=optimizer, total_steps=total)}

    # -- testing ----------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if stage == "fit":
            self.cache_train_features()
        if stage == "test" and self.each_tap:
            self.summary.update(tap_depths(self.backbone, self.image_size))

    def _score(self, prefix: str, name: str, pred: torch.Tensor, units: torch.Tensor) -> None:
        for j, target in enumerate(self.target_names):
            for metric, fn in (("spc", spearman_per_image), ("mae", mae_per_image)):
                values = fn(pred[:, j], self.targets[j]).float()
                key = f"{prefix}/{name}/{target}/{metric}"
                self.per_image.setdefault(key, []).append((values.detach(), units))

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        name = self.trainer.datamodule.test_names[dataloader_idx]  # type: ignore[attr-defined]  # set by Lightning
        features = self.encode(batch["image"])
        pred = self.predict_maps(features)
        units = self.units_of(batch)  # the photo a natural crop comes from; else the image itself
        self._score("test", name, pred, units)
        if self.tap_readouts is not None:
            maps = self.tap_readouts(features, self.image_size)
            t = len(self.target_names)
            for i, tap in enumerate(self.each_tap):
                self._score(f"tap/{tap}", name, maps[:, i * t : (i + 1) * t], units)
        if batch_idx == 0:
            self.previews[name] = {"image": batch["image"][0].cpu(), "pred": pred[0].detach().cpu()}

    def on_test_epoch_start(self) -> None:
        self.per_image = {}

    def on_test_epoch_end(self) -> None:
        """Every test metric, the mean of its per-image scores gathered from every DDP rank
        (``PosencTask.gathered_per_image``: one place keeps the scores, the mean and its interval both read
        them), and its 95% interval into the summary (``<key>/ci_low``, ``<key>/ci_high``), resampling the
        scores' units. A test input of one unit (black, white: one image) has no interval: nothing to
        resample."""
        for key, (values, units) in self.gathered_per_image().items():
            finite = np.isfinite(values)
            self.log(key, float(values[finite].mean()) if finite.any() else math.nan)
            if len(np.unique(units[finite])) >= 2:
                self.record_interval(key, mean_interval(values, units))

    def on_test_end(self) -> None:
        if not self.previews or not self.trainer.is_global_zero:
            return
        spc = {
            n: [
                float(spearman_per_image(p["pred"][j][None].float(), self.targets[j].float().cpu()[None])[0])
                for j in range(len(self.target_names))
            ]
            for n, p in self.previews.items()
        }
        fig = prediction_grid(
            {n: p["image"] for n, p in self.previews.items()},
            {n: p["pred"] for n, p in self.previews.items()},
            self.targets,
            self.target_names,
            spc,
        )
        # every logger gets figures/*.png at the end of the run (posenc.run.loggers.publish)
        save_figure(fig, Path(self.trainer.default_root_dir) / "figures" / "predictions.png")
