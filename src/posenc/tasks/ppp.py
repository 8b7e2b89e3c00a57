"""PPP, the Position-information Pattern from Padding (Lin et al., ICML 2023), measured with our
definition (docs/ppp.md; posenc.metrics.ppp): nothing is trained.

For every context image X of the test set, the crop x at its centre goes through the backbone with
the padding under test, and X goes through it too; X's features cropped to x's footprint are the
padding-free reference (the margin holds every layer's receptive field, posenc.models.receptive_field).
Per layer, PPP = mean over images of (features of x - reference); its SNR against the image-to-image
variance of the reference, its profile against the distance to the border and a heatmap are
reported (``ppp/<layer>/snr``, ``ppp/<layer>/border_profile``, ``figures/ppp.png``).

Only sums and sums of squares are accumulated, so any number of images streams through in batches;
they are kept per group of images (image index mod ``PPP_GROUPS``) for the 95% intervals, a bootstrap
over the groups (``<key>/ci_low``, ``<key>/ci_high``; posenc.metrics.ppp.ppp_intervals). The
reference's moments depend on the weights, the images and the receptive-field geometry, not on how the
border is padded (zeros, reflect, replicate, circular and partial convolution compute the same
interior), so with ``reference_cache=disk`` a sweep over those paddings computes them once (the PosENet
feature cache's idea, keyed by a hash of all three; ``none`` resamples every map and has its own). The
cache holds the per-group sums; a file of another layout is recomputed, never read.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import torch

from posenc.config.rules import Rule
from posenc.data.datamodule import ImageSize
from posenc.errors import PosencError, check_choice
from posenc.io import atomic_save, safe_load
from posenc.metrics.ppp import INTERVAL_STATS, PPPMoments, crop_center, ppp_groups
from posenc.models.backbones.base import TAP_NAMES, TappedBackbone
from posenc.models.receptive_field import (
    check_context,
    context_margin,
    reference_crop,
    tap_geometries,
    tap_receptive_fields,
)
from posenc.registry import padding_entry
from posenc.tasks.base import PosencTask
from posenc.tasks.schedules import MaxEpochs, MaxSteps
from posenc.viz.tables import interval_keys

log = logging.getLogger(__name__)

# disk: the reference's moments are reused across paddings (they do not depend on the border) | off
ReferenceCache = Literal["disk", "off"]
REFERENCE_CACHES: tuple[str, ...] = get_args(ReferenceCache)
# The reference cache's layout, hashed into its key and stored in the file: per-group sums (issue 33).
# Files of the earlier layout (pooled means) hash to other names and, met anyway, are recomputed.
REFERENCE_FORMAT = "ppp-reference-groups-1"


class PPPTask(PosencTask):
    """Measure the PPP of every (or the chosen) tap of a frozen backbone."""

    trains = False  # posenc.run.train skips fit: a test pass is the whole measurement

    def __init__(
        self,
        backbone: TappedBackbone,
        image_size: ImageSize = 64,
        # the taps measured (None: every tap); a backbone's own tap names are checked when it is built
        layers: Annotated[
            list[str], Rule(items=Rule(choices=TAP_NAMES), min_items=1, why_items="PPP measures at least one tap")
        ]
        | None = None,
        reference_cache: ReferenceCache = "disk",
        cache_dir: str = "outputs/.feature_cache",
        max_steps: MaxSteps = -1,
        max_epochs: MaxEpochs = None,
        skip_global: bool = False,
    ) -> None:
        """``skip_global``: measure only the taps that have a padding-free reference (the position
        atlas: ConvNeXt's last stage, squeeze-excitation taps and a ViT's are "global"), recorded in
        ``ppp/skipped``; else such a tap is refused in one line."""
        super().__init__()
        check_choice("task.reference_cache", reference_cache, REFERENCE_CACHES)
        if backbone.trainable:
            raise PosencError("task=ppp measures a frozen backbone; valid: backbone.trainable=false")
        if backbone.body is None:
            raise PosencError("backbone=none has no padding to measure; valid: any other backbone")
        self.backbone = backbone
        self.image_size = int(image_size)
        backbone.check_input_size(self.image_size)  # e.g. reflect padding wider than a deep 2x2 map: one line
        if layers is not None and not list(layers):
            raise PosencError(
                f"task.layers=[] is not valid: PPP measures at least one tap; valid: any of "
                f"{', '.join(backbone.tap_names)}, or null for all"
            )
        layers = list(layers) if layers else list(backbone.tap_names)
        for layer in layers:
            check_choice(f"task.layers entry (taps of backbone {backbone.name})", layer, backbone.tap_names)
        skipped: list[str] = []
        if skip_global:
            fields = tap_receptive_fields(backbone)
            skipped = [layer for layer in layers if fields[layer] is None]
            layers = [layer for layer in layers if fields[layer] is not None]
            if not layers:
                raise PosencError(
                    f"no tap of backbone {backbone.name} has a padding-free reference (every one "
                    "depends on every pixel); valid: a backbone with local receptive fields"
                )
            geometries = {layer: g for layer in layers if (g := fields[layer]) is not None}  # all: filtered above
        else:
            geometries = tap_geometries(backbone)
        self.layers = layers
        self.reference_cache, self.cache_dir = reference_cache, Path(cache_dir)
        self.budget = {"max_steps": max_steps, "max_epochs": max_epochs}
        self.geometries = {name: geometries[name] for name in layers}
        self.margin = context_margin(backbone, self.image_size, layers, self.geometries)
        self.skipped = skipped  # taps without a padding-free reference (skip_global), recorded in metrics.json
        self.summary: dict[str, Any] = {}

    # -- setup -------------------------------------------------------------------------------
    def check_data(self, datamodule: Any) -> None:
        """Choose the contexts' size (``data.context_size: null``) or check the one given."""
        if not hasattr(datamodule, "prepare"):
            raise PosencError(
                f"task=ppp needs contexts around its crops (data=contexts), got {type(datamodule).__name__}"
            )
        if datamodule.image_size != self.image_size:
            raise PosencError(f"task.image_size={self.image_size} differs from data.image_size={datamodule.image_size}")
        datamodule.prepare(self.image_size + 2 * self.margin)
        deepest = max(self.layers, key=lambda n: self.geometries[n].size)
        g = self.geometries[deepest]
        check_context(
            datamodule.context_size,
            self.image_size,
            self.margin,
            f"layer {deepest} of {self.backbone.name} (receptive field {g.size} px, stride {g.jump})",
        )

    def setup(self, stage: str) -> None:
        self.check_data(self.trainer.datamodule)  # type: ignore[attr-defined]  # set by Lightning, not declared
        self.groups = ppp_groups(self.trainer.datamodule.num_test)  # type: ignore[attr-defined]  # set by Lightning
        self.moments = PPPMoments(self.layers, self.groups)  # the streamed sums (posenc.metrics.ppp)
        self.seconds = {"crops": 0.0, "contexts": 0.0}
        self.cached = self._load_reference()

    def reference_key(self) -> str:
        """Hash of what the reference moments depend on (weights, images, geometry, interior) and of how
        they are kept (:data:`REFERENCE_FORMAT`, the groups, the ranks)."""
        dm = self.trainer.datamodule  # type: ignore[attr-defined]  # set by Lightning, not declared on Trainer
        h = hashlib.sha1()
        for name, tensor in self.backbone.state_dict().items():
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        interior = "conv" if padding_entry(self.backbone.padding).same_interior else self.backbone.padding
        h.update(
            repr(
                (
                    self.backbone.name,
                    interior,
                    self.layers,
                    self.image_size,
                    self.margin,
                    dm.context_size,
                    dm.num_test,
                    dm.seed,
                    dm.min_scale,
                    dm.source,
                    [(g.size, g.jump, g.start) for g in self.geometries.values()],
                    REFERENCE_FORMAT,
                    self.groups,
                    self.trainer.world_size,  # the distributed sampler's padding repeats images
                )
            ).encode()
        )
        return h.hexdigest()[:20]

    def _cache_path(self) -> Path:
        return self.cache_dir / "ppp_reference" / f"{self.reference_key()}.pt"

    def _load_reference(self) -> dict[str, Any] | None:
        """The cached per-group reference sums, None when there are none to use: caching off, no file, or
        a file of another layout (an older posenc's pooled means), which is recomputed and replaced."""
        if self.reference_cache == "off":
            return None
        path = self._cache_path()
        if not path.is_file():
            return None
        cached = safe_load(path, map_location=self.device, what="PPP reference cache")
        if self._fits(cached):
            return cached
        log.warning("PPP reference cache %s is not in layout %s: recomputing it", path, REFERENCE_FORMAT)
        return None

    def _fits(self, cached: Any) -> bool:
        """Whether a loaded cache holds this run's per-group sums (:data:`REFERENCE_FORMAT`)."""
        if not isinstance(cached, dict) or cached.get("format") != REFERENCE_FORMAT:
            return False
        counts = cached.get("counts")
        keys = [
            f"{layer}/{part}" for layer in self.layers for part in ("reference", "reference_sq", "reference_sq_groups")
        ]
        return (
            isinstance(counts, torch.Tensor)
            and tuple(counts.shape) == (self.groups,)
            and all(isinstance(cached.get(k), torch.Tensor) for k in keys)
            and all(cached[f"{layer}/reference"].shape[0] == self.groups for layer in self.layers)
        )

    # -- measurement -------------------------------------------------------------------------
    def _groups(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Each image's bootstrap group: its global index (the dataset's, the same on every rank and for
        the cached reference) mod the number of groups."""
        if "index" not in batch:
            raise PosencError("task=ppp needs each image's dataset index (batch['index']): use data=contexts")
        return torch.as_tensor(batch["index"], device=batch["image"].device).long() % self.groups

    @torch.no_grad()
    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        contexts = batch["image"]
        start = time.perf_counter()
        taps = dict(zip(self.backbone.tap_names, self.backbone(crop_center(contexts, self.margin, self.image_size))))
        self.seconds["crops"] += time.perf_counter() - start
        groups = self._groups(batch)
        self.moments.add_features(taps, groups)
        if self.cached is None:
            start = time.perf_counter()
            wide = dict(zip(self.backbone.tap_names, self.backbone(contexts)))
            self.seconds["contexts"] += time.perf_counter() - start
            self.moments.add_reference(
                {
                    layer: reference_crop(
                        wide[layer], self.margin, self.geometries[layer].jump, tuple(taps[layer].shape[-2:])
                    )
                    for layer in self.layers
                },
                groups,
            )

    def on_test_epoch_end(self) -> None:
        strategy = self.trainer.strategy
        self.moments.reduce(lambda v: strategy.reduce(v, reduce_op="sum"))
        if self.cached is None:
            if self.reference_cache == "disk" and self.trainer.is_global_zero:
                # unique temp name + rename: two runs filling a fresh cache both succeed
                state = {k: v.cpu() for k, v in self.moments.reference_state().items()}
                atomic_save({"format": REFERENCE_FORMAT, **state}, self._cache_path())
        else:
            try:
                self.moments.use_reference({k: v for k, v in self.cached.items() if k != "format"})
            except PosencError:
                raise PosencError(
                    f"PPP reference cache {self._cache_path()} groups other images than this run; delete it"
                ) from None
        count = float(self.moments.sums["counts"].sum())
        self.heatmaps, self.profiles = {}, {}
        summary: dict[str, Any] = {}
        for layer in self.layers:
            stats, intervals = self.moments.strengths(layer)
            self.log(f"test/ppp_snr_{layer}", stats["snr"])
            self.log(f"test/ppp_rel_energy_{layer}", stats["rel_energy"])
            summary.update(
                {
                    f"ppp/{layer}/snr": stats["snr"],
                    f"ppp/{layer}/energy": stats["energy"],
                    f"ppp/{layer}/variance": stats["variance"],
                    f"ppp/{layer}/rel_energy": stats["rel_energy"],
                    f"ppp/{layer}/border_profile": stats["border_profile"],
                }
            )
            summary.update(self._interval_entries(layer, intervals))
            self.heatmaps[layer], self.profiles[layer] = stats["heatmap"].float().cpu(), stats["border_profile"]
        summary.update(
            {
                "ppp/images": int(count),
                "ppp/groups": self.groups,
                "ppp/margin_px": self.margin,
                "ppp/crop_px": self.image_size,
                "ppp/reference_cached": self.cached is not None,
                "ppp/time/crops_s": self.seconds["crops"],
                "ppp/time/contexts_s": self.seconds["contexts"],
            }
        )
        if self.skipped:
            summary["ppp/skipped"] = ",".join(self.skipped)
        self.summary = summary

    @staticmethod
    def _interval_entries(layer: str, intervals: dict[str, tuple[float, float]]) -> dict[str, float]:
        """``<key>/ci_low``, ``<key>/ci_high`` (posenc.viz.tables.interval_keys) of a layer's summary
        strengths and of its test metrics (``test/ppp_snr_<layer>``, ``test/ppp_rel_energy_<layer>``); an
        interval that is missing (one group) or not finite (no resample defined) is left out."""
        keys = {f"ppp/{layer}/{name}": name for name in INTERVAL_STATS}
        keys.update({f"test/ppp_snr_{layer}": "snr", f"test/ppp_rel_energy_{layer}": "rel_energy"})
        entries: dict[str, float] = {}
        for key, name in keys.items():
            if name in intervals and all(math.isfinite(bound) for bound in intervals[name]):
                low_key, high_key = interval_keys(key)
                entries[low_key], entries[high_key] = intervals[name]
        return entries

    def on_test_end(self) -> None:
        if not self.trainer.is_global_zero or not self.heatmaps:
            return
        from posenc.viz.figures import ppp_figure, save_figure

        # every logger gets figures/*.png at the end of the run (posenc.run.loggers.publish)
        save_figure(
            ppp_figure(self.heatmaps, self.profiles), Path(self.trainer.default_root_dir) / "figures" / "ppp.png"
        )
