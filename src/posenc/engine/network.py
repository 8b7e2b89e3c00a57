"""Measure one network's absolute position under a list of paddings and seeds (the position atlas's engine,
issue 34): the library function behind ``posenc.atlas(...)`` and behind each job of ``sweep.py atlas``.

For every padding and seed the frozen backbone runs once over each image set, and that one pass feeds
everything the atlas reports of it:

- **PosENet** (Islam et al., ICLR 2020): the training, held-out and (mirrored) test crops are encoded once;
  every tap's readout alone and the readout on all taps (the tap ablation), for every seed, train together on
  those features (:func:`posenc.engine.readouts.train_readouts`) and are scored by SPC and MAE per test image,
  each mean with its 95% bootstrap interval over the photos (:func:`posenc.metrics.intervals.mean_interval`).
- **PPP** (Lin et al., ICML 2023; our definition, docs/ppp.md): the crops at the centre of the contexts are
  encoded once per padding, the contexts (the padding-free reference) once per seed and padding class
  (zeros, reflect, replicate, circular and partial share the interior; ``none`` has its own), streamed into
  :class:`posenc.metrics.ppp.PPPMoments`, the same sums ``task=ppp`` keeps.

Each (padding, seed) yields the flat metrics a per-cell run of ``experiment=atlas_posenet`` and
``experiment=atlas_ppp`` wrote (``tap/<tap>/natural/H/spc``, ``test/natural/G/spc``, ``ppp/<tap>/rel_energy``,
each with ``/ci_low``, ``/ci_high``; the training record; the time spent), so the atlas's report reads both.
A padding that cannot run on the network (reflect wider than a deep map) is that cell's one-line error; the
others go on. Nothing here needs a Trainer: a model, images and a plan in, numbers out.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch
from torch.utils.data import Dataset

from posenc.data.position_maps import make_targets
from posenc.engine.readouts import ALL, ReadoutPlan, TrainedReadouts, feature_dtype, train_readouts
from posenc.errors import PosencError, first_line
from posenc.metrics.intervals import mean_interval
from posenc.metrics.ppp import PPPMoments, crop_center, ppp_groups
from posenc.metrics.spearman import mae_per_image, spearman_per_image
from posenc.models.backbones.base import TappedBackbone
from posenc.models.readouts import resize_and_concat
from posenc.models.receptive_field import context_margin, reference_crop, tap_depths, tap_receptive_fields
from posenc.models.uneven_padding import uneven_layers
from posenc.registry import padding_entry

BuildBackbone = Callable[[str, int], TappedBackbone]  # (padding, seed) -> the frozen network
INPUT = "natural"  # the atlas's test input (PosENet Table 1's natural images)


@dataclass(frozen=True)
class Protocol:
    """What one cell measures, beside the readouts' :class:`ReadoutPlan`: the image size, the target maps,
    the readout's feature size and resize, the images per encoding batch, PPP or not, and whether PPP gets
    its per-seed bootstrap interval (None: only when one seed runs; over several the atlas's interval is the
    seeds' t-interval, and a PPP bootstrap costs ~0.4 s per tap)."""

    image_size: int = 64
    targets: tuple[str, ...] = ("H", "G")
    feature_size: int = 8
    align_corners: bool = True
    batch_size: int = 32
    ppp: bool = True
    ppp_bootstrap: bool | None = None
    channels_last: bool = True
    device: str = "cpu"  # where the backbone runs and the readouts train (cpu | cuda | cuda:N)
    plan: ReadoutPlan = field(default_factory=ReadoutPlan)


@dataclass
class CellResult:
    """One padding x seed of the network: its flat metrics (a per-cell run's ``metrics.json`` keys), or
    ``error``, the one line saying why it could not run."""

    padding: str
    seed: int
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def seed_all(seed: int) -> None:
    """Seed Python, NumPy and torch as a run does before it builds its backbone (``L.seed_everything``):
    a seed's random init is the per-cell run's."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def stack(dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images [N, 3, S, S], units [N])`` of an image set (a unit: the photo a crop comes from, else the
    image's own index)."""
    items = [dataset[i] for i in range(len(cast(Any, dataset)))]
    images = torch.stack([item["image"] for item in items])
    units = torch.as_tensor([int(item.get("unit", item["index"])) for item in items])
    return images, units


class Clock:
    """Seconds spent per part of the measurement (``forward``: the backbone's passes)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, part: str, since: float) -> float:
        now = time.perf_counter()
        self.seconds[part] = self.seconds.get(part, 0.0) + now - since
        return now


def _tap_batches(
    backbone: TappedBackbone, images: torch.Tensor, protocol: Protocol, batch: int
) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
    """The backbone's taps of ``images`` in batches of ``batch``, each with its images' indices: the one loop
    every pass of the engine goes through (on the protocol's device, channels-last when asked, no gradients)."""
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), batch):
            chunk = images[start : start + batch].to(protocol.device, non_blocking=True)
            if protocol.channels_last:
                chunk = chunk.contiguous(memory_format=torch.channels_last)
            index = torch.arange(start, start + len(chunk), device=protocol.device)
            out.append((index, [t.float() for t in backbone(chunk)]))
    return out


def encode(backbone: TappedBackbone, images: torch.Tensor, protocol: Protocol, clock: Clock) -> torch.Tensor:
    """The backbone's taps of ``images``, resized to the readout's feature size and concatenated on channels
    (float32, channels-last: the readout's conv is fastest on CPU that way)."""
    start = time.perf_counter()
    parts = [
        resize_and_concat(taps, protocol.feature_size, protocol.align_corners)
        for _, taps in _tap_batches(backbone, images, protocol, protocol.batch_size)
    ]
    clock.add("forward", start)
    features = torch.cat(parts)
    return features.contiguous(memory_format=torch.channels_last) if protocol.channels_last else features


def _size(tap: torch.Tensor) -> tuple[int, int]:
    return int(tap.shape[-2]), int(tap.shape[-1])


class PPPPass:
    """PPP of one network at one padding and seed, sharing the reference across the paddings of a class
    (``references``: (seed, class, margin, layers) -> :meth:`PPPMoments.reference_state`)."""

    def __init__(self, references: dict[tuple[Any, ...], dict[str, torch.Tensor]]) -> None:
        self.references = references

    def measure(
        self,
        backbone: TappedBackbone,
        contexts_for: Callable[[int], torch.Tensor],
        seed: int,
        protocol: Protocol,
        bootstrap: bool,
        clock: Clock,
    ) -> dict[str, Any]:
        fields = tap_receptive_fields(backbone)
        layers = [t for t in backbone.tap_names if fields[t] is not None]
        skipped = [t for t in backbone.tap_names if fields[t] is None]
        if not layers:
            return {"ppp/skipped": ",".join(skipped)} if skipped else {}
        geometries = {t: g for t in layers if (g := fields[t]) is not None}
        size = protocol.image_size
        margin = context_margin(backbone, size, layers, geometries)
        contexts = contexts_for(size + 2 * margin)
        groups_n = ppp_groups(len(contexts))
        moments = PPPMoments(layers, groups_n)
        batch = max(1, protocol.batch_size // 2)  # contexts are large: half batches
        start = time.perf_counter()
        crops = _tap_batches(backbone, crop_center(contexts, margin, size).contiguous(), protocol, batch)
        start = clock.add("forward", start)
        for index, taps in crops:
            moments.add_features(dict(zip(backbone.tap_names, taps)), index % groups_n)
        interior = "conv" if padding_entry(backbone.padding).same_interior else backbone.padding
        key = (seed, interior, margin, tuple(layers), len(contexts))
        cached = key in self.references
        if cached:
            moments.use_reference(self.references[key])
        else:
            start = time.perf_counter()
            wide = _tap_batches(backbone, contexts, protocol, batch)
            start = clock.add("forward", start)
            for (index, taps), (_, crop_taps) in zip(wide, crops):
                named, crop_named = dict(zip(backbone.tap_names, taps)), dict(zip(backbone.tap_names, crop_taps))
                reference = {
                    t: reference_crop(named[t], margin, geometries[t].jump, _size(crop_named[t])) for t in layers
                }
                moments.add_reference(reference, index % groups_n)
            self.references[key] = moments.reference_state()
        start = time.perf_counter()
        out: dict[str, Any] = {}
        for layer in layers:
            stats, intervals = moments.strengths(layer, intervals=bootstrap)
            for name in ("snr", "energy", "variance", "rel_energy"):
                out[f"ppp/{layer}/{name}"] = stats[name]
                if name in intervals and all(math.isfinite(b) for b in intervals[name]):
                    out[f"ppp/{layer}/{name}/ci_low"], out[f"ppp/{layer}/{name}/ci_high"] = intervals[name]
            out[f"ppp/{layer}/border_profile"] = stats["border_profile"]
        clock.add("ppp_stats", start)
        out.update(
            {
                "ppp/images": len(contexts),
                "ppp/groups": groups_n,
                "ppp/margin_px": margin,
                "ppp/crop_px": size,
                "ppp/reference_cached": cached,
            }
        )
        if skipped:
            out["ppp/skipped"] = ",".join(skipped)
        return out


@dataclass
class _Encoded:
    """One padding x seed's PosENet features and everything else measured of it before the readouts train."""

    seed: int
    train: torch.Tensor
    val: torch.Tensor | None
    test: torch.Tensor
    units: torch.Tensor
    metrics: dict[str, Any]


def _scores(
    trained: TrainedReadouts,
    maps: torch.Tensor,
    units: torch.Tensor,
    targets: torch.Tensor,
    names: Sequence[str],
    seed_index: int,
) -> dict[str, Any]:
    """SPC and MAE of the heads of one seed (``maps``: every head's upsampled test maps), each mean with its
    95% interval over the units (a photo and its mirrored crops are one)."""
    out: dict[str, Any] = {}
    units_np = units.cpu().numpy()
    for i, head in enumerate(trained.heads):
        if head.seed != seed_index:
            continue
        target = targets[list(names).index(head.target)]
        prefix = "test" if head.tap is ALL else f"tap/{head.tap}"
        for metric, fn in (("spc", spearman_per_image), ("mae", mae_per_image)):
            values = fn(maps[:, i], target).double().cpu().numpy()
            key = f"{prefix}/{INPUT}/{head.target}/{metric}"
            finite = np.isfinite(values)
            out[key] = float(values[finite].mean()) if finite.any() else math.nan
            if len(np.unique(units_np[finite])) >= 2:
                low, high = mean_interval(values, units_np)
                out[f"{key}/ci_low"], out[f"{key}/ci_high"] = low, high
    return out


def measure_network(
    build: BuildBackbone,
    paddings: Sequence[str],
    seeds: Sequence[int],
    posenet_images: Callable[[int], Mapping[str, Dataset | None]],
    contexts: Callable[[int, int], torch.Tensor] | None,
    protocol: Protocol = Protocol(),
    progress: Callable[[str], None] | None = None,
    done: Mapping[str, Sequence[CellResult]] | None = None,
    on_padding: Callable[[str, list[CellResult]], None] | None = None,
) -> list[CellResult]:
    """Every padding x seed of one network: ``build(padding, seed)`` gives the frozen backbone (seeded by
    the caller's :func:`seed_all`); ``posenet_images(seed)`` the ``train`` / ``val`` / ``test`` image sets of a
    seed; ``contexts(seed, size)`` PPP's contexts ``[N, 3, size, size]`` (None: no PPP). Results come in
    padding-major order; a padding the network refuses is each of its seeds' ``error``. ``done``: paddings
    measured before (a restarted job's), taken as they are; ``on_padding(padding, cells)`` is told each padding's
    cells as soon as they are measured (the job keeps them, so a stop loses at most one padding)."""
    say = progress or (lambda _: None)
    targets = make_targets(list(protocol.targets), protocol.image_size).to(protocol.device)
    images: dict[int, dict[str, tuple[torch.Tensor, torch.Tensor] | None]] = {}
    references: dict[tuple[Any, ...], dict[str, torch.Tensor]] = {}
    context_sets: dict[tuple[int, int], torch.Tensor] = {}
    results: list[CellResult] = []
    bootstrap = protocol.ppp_bootstrap if protocol.ppp_bootstrap is not None else len(seeds) == 1
    for padding in paddings:
        if done is not None and padding in done:
            results.extend(done[padding])
            say(f"{padding}: measured before, kept")
            continue
        encoded: list[_Encoded] = []
        errors: dict[int, str] = {}
        taps: list[str] = []
        channels: list[int] = []
        for seed in seeds:
            clock = Clock()
            start = time.perf_counter()
            try:
                seed_all(seed)
                backbone = build(padding, seed)
                backbone.check_input_size(protocol.image_size)
            except PosencError as exc:
                errors[seed] = first_line(exc)
                say(f"{padding}, seed {seed}: {errors[seed]}")
                continue
            start = clock.add("build", start)
            backbone.eval().to(protocol.device)
            if protocol.channels_last:
                backbone.to(memory_format=torch.channels_last)
            metrics: dict[str, Any] = {"padding": padding, "seed": seed}
            metrics.update(tap_depths(backbone, protocol.image_size))
            if backbone.body is not None:  # the strided layers that read their padding on one side only
                uneven = uneven_layers(backbone.body, protocol.image_size)
                metrics["uneven/count"] = len(uneven)
                if uneven:
                    metrics["uneven/layers"] = "; ".join(layer.describe() for layer in uneven)
            clock.add("receptive_fields", start)
            if seed not in images:
                sets = posenet_images(seed)
                images[seed] = {k: (stack(v) if v is not None else None) for k, v in sets.items()}
            data = images[seed]
            train_set, test_set = data["train"], data["test"]
            assert train_set is not None and test_set is not None
            train = encode(backbone, train_set[0], protocol, clock)
            val_set = data.get("val")
            val = encode(backbone, val_set[0], protocol, clock) if val_set is not None else None
            test = encode(backbone, test_set[0], protocol, clock)
            metrics["posenet/time/encode_s"] = clock.seconds["forward"]
            if contexts is not None and protocol.ppp and backbone.body is not None:

                def contexts_for(
                    size: int, seed: int = seed, get: Callable[[int, int], torch.Tensor] = contexts
                ) -> torch.Tensor:
                    if (seed, size) not in context_sets:
                        context_sets[(seed, size)] = get(seed, size)
                    return context_sets[(seed, size)]

                before = clock.seconds["forward"]
                try:
                    metrics.update(
                        PPPPass(references).measure(backbone, contexts_for, seed, protocol, bootstrap, clock)
                    )
                except PosencError as exc:
                    metrics["ppp/error"] = first_line(exc)
                metrics["ppp/time/forward_s"] = clock.seconds["forward"] - before
            taps, channels = list(backbone.tap_names), list(backbone.tap_channels)
            metrics["atlas/time/forward_s"] = clock.seconds["forward"]
            metrics["atlas/time/other_s"] = sum(v for k, v in clock.seconds.items() if k != "forward")
            encoded.append(_Encoded(seed, train, val, test, test_set[1], metrics))
            say(f"{padding}, seed {seed}: encoded ({clock.seconds['forward']:.1f} s of forward passes)")
            del backbone
        if encoded:
            start = time.perf_counter()
            trained = train_readouts(
                torch.cat([e.train for e in encoded], dim=1) if len(encoded) > 1 else encoded[0].train,
                (torch.cat([cast(torch.Tensor, e.val) for e in encoded], dim=1) if len(encoded) > 1 else encoded[0].val)
                if all(e.val is not None for e in encoded)
                else None,
                targets,
                protocol.targets,
                taps,
                channels,
                [e.seed for e in encoded],
                protocol.plan,
            )
            readout_s = time.perf_counter() - start
            test = torch.cat([e.test for e in encoded], dim=1) if len(encoded) > 1 else encoded[0].test
            start = time.perf_counter()
            with torch.no_grad():
                maps = trained.readout(
                    test.to(feature_dtype(protocol.plan)).contiguous(memory_format=torch.channels_last),
                    protocol.image_size,
                )
            for i, e in enumerate(encoded):
                e.metrics.update(trained.record(i, protocol.plan))
                e.metrics.update(_scores(trained, maps, e.units, targets, protocol.targets, i))
            test_s = time.perf_counter() - start
            for e in encoded:  # the shared loop's time, split evenly over the seeds it served
                e.metrics["atlas/time/readout_s"] = readout_s / len(encoded)
                e.metrics["atlas/time/other_s"] += test_s / len(encoded)
            say(f"{padding}: readouts of {len(encoded)} seed(s) trained in {readout_s:.1f} s")
        by_seed = {e.seed: e for e in encoded}
        measured = [
            CellResult(padding, seed, {"padding": padding, "seed": seed}, errors[seed])
            if seed in errors
            else CellResult(padding, seed, by_seed[seed].metrics)
            for seed in seeds
        ]
        results.extend(measured)
        if on_padding is not None:
            on_padding(padding, measured)
    return results
