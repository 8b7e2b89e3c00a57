"""posenc from Python: the position atlas of any ``nn.Module`` in a notebook, and the few measurements a
researcher reaches for alone (docs/api.md; each example there is run by the tests).

    import posenc
    table = posenc.atlas(my_model, taps=["layer1", "layer2", "layer3", "layer4"],
                         paddings=["zeros", "reflect", "none"], seeds=3)
    posenc.atlas_figure(table)

No config file and no factory: the model is measured as it is (its weights; with ``seeds`` each seed varies the
photos, the readouts and, for a model given as a factory or a posenc backbone name, the initialisation). Every
call goes through the engine ``python sweep.py atlas`` runs (:mod:`posenc.engine`) with the atlas's protocol
(``conf/task/atlas.yaml``; ``overrides`` change it as on the command line: ``"data.image_size=96"``).
"""

from __future__ import annotations

import copy
import csv
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from posenc.analysis.atlas import (
    ALL_TAPS,
    PADDING_ORDER,
    Cell,
    CellJob,
    atlas_rows,
    markdown,
    padding_differences,
    seed_spread,
)
from posenc.engine.network import CellResult, Clock, PPPPass, Protocol, seed_all
from posenc.engine.readouts import ReadoutPlan, train_readouts
from posenc.errors import PosencError, invalid_value
from posenc.metrics.intervals import mean_interval
from posenc.metrics.spearman import spearman_per_image
from posenc.models import padding as _padding
from posenc.models.backbones.base import BackboneOptions, TappedBackbone, check_taps
from posenc.models.backbones.module import tapped_module
from posenc.models.readouts import resize_and_concat

ModelSpec = nn.Module | Callable[[], nn.Module] | str
SEED_COLUMNS = ("model", "padding", "weights", "seed", "tap", "rf_px", "stride", "rf_rel")
MEASURED = ("H_spc", "G_spc", "ppp_snr", "ppp_rel_energy")


def convert_padding(model: nn.Module, padding: str) -> nn.Module:
    """Switch every padded conv of ``model`` to ``padding`` (zeros, reflect, replicate, circular, partial,
    none, none_shrink; Islam et al. ICLR 2020 / IJCV 2024), in place, keeping its weights; returns it.

    >>> import torch.nn as nn, posenc
    >>> net = posenc.convert_padding(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1)), "reflect")
    >>> net[0].padding_mode
    'reflect'
    """
    return _padding.convert_padding(model, padding)


def _backbone_factory(model: ModelSpec, taps: Sequence[str] | None, overrides: Sequence[str]) -> tuple[Any, str, str]:
    """``(build(padding, seed), name, weights label)`` for a module, a factory or a posenc backbone name."""
    if isinstance(model, str):
        from hydra.utils import instantiate

        from posenc.config.compose import compose_run

        cfg = compose_run([f"backbone={model}", *overrides], Path(".posenc_api"))
        node = cfg.backbone
        if taps is not None:
            node.taps = list(taps)
        weights = node.get("weights")
        return (
            lambda padding, seed: instantiate(node, padding={"name": padding}),
            model,
            "random init" if weights is None else str(weights),
        )
    if taps is None or not list(taps):
        raise invalid_value("taps", taps, "expected the names of the model's modules to read (model.named_modules())")
    if isinstance(model, nn.Module):
        name = type(model).__name__
        check_taps(list(taps), [n for n, _ in model.named_modules() if n], f"tap (a module of {name})")

        def build(padding: str, seed: int) -> TappedBackbone:
            return tapped_module(copy.deepcopy(model), taps, BackboneOptions.of(padding), name, f"model {name}")

        return build, name, "as given"
    if callable(model):
        name = getattr(model, "__name__", type(model).__name__)
        probe = model()  # its module names, to refuse a wrong tap before anything is measured
        if isinstance(probe, nn.Module):
            check_taps(list(taps), [n for n, _ in probe.named_modules() if n], f"tap (a module of {name})")

        def build_new(padding: str, seed: int) -> TappedBackbone:
            built = model()  # seeded by the engine (seed_all) before this call: the seed's initialisation
            if not isinstance(built, nn.Module):
                raise PosencError(f"model factory {name} returned a {type(built).__name__}, not an nn.Module")
            return tapped_module(built, taps, BackboneOptions.of(padding), name, f"model factory {name}")

        return build_new, name, "random init"
    raise invalid_value(
        "model", type(model).__name__, "expected an nn.Module, a function returning one, or a backbone name"
    )


class AtlasTable:
    """The atlas of one model: one row per padding x seed x tap (``tap == "all"``: the readout on all taps),
    with ``H_spc``, ``G_spc``, ``ppp_snr``, ``ppp_rel_energy`` and each one's 95% bootstrap interval
    (``_ci_low``, ``_ci_high``), the tap's receptive field, stride and ``rf_rel``, and ``note``: why a padding
    could not run. :meth:`summary` gives the cells over the seeds (mean, std, t-interval), as ``atlas.csv``;
    :meth:`markdown` as ``atlas.md``; :func:`atlas_figure` draws it."""

    def __init__(self, model: str, weights: str, cells: Sequence[CellResult]) -> None:
        self.model, self.weights, self.cells = model, weights, list(cells)
        self.rows = [row for cell in self.cells for row in self._rows(cell)]

    def _rows(self, cell: CellResult) -> list[dict[str, Any]]:
        base = {"model": self.model, "padding": cell.padding, "weights": self.weights, "seed": cell.seed}
        if cell.error is not None:
            return [{**base, "tap": None, "note": cell.error}]
        m = cell.metrics
        taps = [k.split("/")[1] for k in m if k.startswith("tap/") and k.endswith("/rf_px")]
        rows = []
        for tap in [*taps, ALL_TAPS]:
            prefix = "test" if tap == ALL_TAPS else f"tap/{tap}"
            row: dict[str, Any] = {**base, "tap": tap}
            if tap != ALL_TAPS:
                row.update({k: m.get(f"tap/{tap}/{k}") for k in ("rf_px", "stride", "rf_rel")})
            keys = {
                "H_spc": f"{prefix}/natural/H/spc",
                "G_spc": f"{prefix}/natural/G/spc",
                "ppp_snr": f"ppp/{tap}/snr",
                "ppp_rel_energy": f"ppp/{tap}/rel_energy",
            }
            for name, key in keys.items():
                row[name] = m.get(key)
                row[f"{name}_ci_low"], row[f"{name}_ci_high"] = m.get(f"{key}/ci_low"), m.get(f"{key}/ci_high")
            row["converged"] = m.get("train/converged")
            row["note"] = m.get("ppp/error")
            rows.append(row)
        return rows

    @property
    def columns(self) -> list[str]:
        measured = [f"{n}{s}" for n in MEASURED for s in ("", "_ci_low", "_ci_high")]
        return [*SEED_COLUMNS, *measured, "converged", "note"]

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.rows[index]

    def _cells(self) -> list[Cell]:
        found: dict[str, Cell] = {}
        for cell in self.cells:
            job = CellJob(
                None,
                [f"padding={cell.padding}", f"seed={cell.seed}"],
                "failed" if cell.error else "completed",
                {**cell.metrics, "padding": cell.padding, "seed": cell.seed},
                cell.error,
            )
            entry = found.setdefault(cell.padding, Cell(self.model, cell.padding, self.weights))
            entry.posenet.append(job)
            if cell.error or any(k.startswith("ppp/") for k in cell.metrics):
                entry.ppp.append(job)
        return list(found.values())

    def summary(self) -> list[dict[str, Any]]:
        """The atlas's cells over the seeds (``atlas.csv``'s columns: each number with its std and interval)."""
        return atlas_rows(self._cells())

    def markdown(self) -> str:
        """The table as ``atlas.md`` writes it, with the padding differences and the seeds' spread."""
        rows = self.summary()
        return markdown(rows, sections=[*padding_differences(self._cells()), *seed_spread(rows)])

    def _repr_markdown_(self) -> str:  # a notebook shows the table
        return self.markdown()

    def __repr__(self) -> str:
        return f"AtlasTable({self.model}, {len(self.rows)} rows: padding x seed x tap)"

    def to_csv(self, path: str | Path) -> Path:
        """The rows as a CSV file."""
        path = Path(path)
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(self.rows)
        return path

    def to_pandas(self) -> Any:
        """The rows as a pandas DataFrame (pandas is not a dependency of posenc: ``pip install pandas``)."""
        try:
            import pandas as pd
        except ImportError:
            raise PosencError("AtlasTable.to_pandas needs pandas: pip install pandas") from None
        return pd.DataFrame(self.rows, columns=self.columns)


def atlas(
    model: ModelSpec,
    taps: Sequence[str] | None = None,
    paddings: Sequence[str] = ("zeros", "reflect", "circular", "none"),
    seeds: int | Sequence[int] = 3,
    overrides: Sequence[str] = (),
    progress: bool = False,
) -> AtlasTable:
    """The position atlas of ``model`` (an ``nn.Module`` measured with its weights, a function returning a
    fresh one, or a posenc backbone name such as ``"resnet18"``) at its ``taps`` (module names; a backbone
    name has its own), under ``paddings``, for ``seeds`` (a count: 0..n-1, or a list): PosENet SPC of each
    tap alone and of all taps (Islam et al. ICLR 2020, H and G on natural photos) and PPP per tap (Lin et al.
    ICML 2023), every number with its interval. ``overrides``: the atlas protocol's settings
    (``conf/task/atlas.yaml``: ``"task.max_steps=1000"``, ``"data.image_size=96"``)."""
    from hydra.utils import instantiate

    from posenc.config.compose import compose_run

    seed_list = list(range(int(seeds))) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not seed_list:
        raise invalid_value("seeds", seeds, "expected a count >= 1 or a list of seeds")
    given = [
        "task=atlas",
        f"task.paddings=[{','.join(paddings)}]",
        f"task.seeds=[{','.join(map(str, seed_list))}]",
        *overrides,
    ]
    from posenc.config.validation import user_error, validate

    try:  # a bad setting is one line, before anything is built (as train.py says it)
        cfg = compose_run(given, Path(".posenc_api"))
        validate(cfg, given)
        task = instantiate(cfg.task)
    except Exception as exc:  # noqa: BLE001 - the user's error unwrapped from Hydra's, anything else as it is
        user = user_error(exc)
        if user is None:
            raise
        raise user from None
    build, name, weights = _backbone_factory(model, taps, [o for o in overrides if o.startswith("backbone.")])
    say = (lambda line: print(f"atlas {name}: {line}", flush=True)) if progress else (lambda line: None)
    return AtlasTable(name, weights, task.cells(build, progress=say))


def atlas_figure(table: AtlasTable | Sequence[AtlasTable]) -> Any:
    """The atlas figure (``atlas.png``: H SPC and PPP per tap against its receptive field, one column per
    padding; a red x where the interval holds 0) of one table or of several models' tables."""
    from posenc.viz.atlas_figure import atlas_figure as draw

    tables = [table] if isinstance(table, AtlasTable) else list(table)
    rows = [row for t in tables for row in t.summary()]
    paddings = sorted({r["padding"] for r in rows}, key=lambda p: (PADDING_ORDER + (p,)).index(p))
    return draw(rows, paddings, ALL_TAPS)


def posenet_readout(
    train_features: torch.Tensor | Sequence[torch.Tensor],
    test_features: torch.Tensor | Sequence[torch.Tensor],
    image_size: int,
    targets: Sequence[str] = ("H", "G"),
    feature_size: int = 8,
    steps: int = 500,
    seed: int = 0,
) -> dict[str, tuple[float, tuple[float, float]]]:
    """A PosENet readout (Islam et al. ICLR 2020, Sec. 3.2: a 3x3 conv + BN + sigmoid, SGD on the MSE to the
    target map) trained on features you computed (``[N, C, h, w]``, or a list of taps resized to
    ``feature_size`` and concatenated) and scored on ``test_features`` by Spearman correlation per image:
    ``{target: (mean SPC, its 95% bootstrap interval over the test images)}``. The atlas protocol's readout,
    without its held-out check (give steps enough to converge)."""
    from posenc.data.position_maps import make_targets

    def prepared(features: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        taps = [features] if isinstance(features, torch.Tensor) else list(features)
        joined = resize_and_concat([t.float() for t in taps], feature_size)
        return joined.contiguous(memory_format=torch.channels_last)

    train, test = prepared(train_features), prepared(test_features)
    if train.shape[1] != test.shape[1]:
        raise invalid_value(
            "test_features channels", test.shape[1], f"expected the training features' {train.shape[1]}"
        )
    maps = make_targets(list(targets), image_size)
    seed_all(seed)
    trained = train_readouts(
        train, None, maps, list(targets), ["all"], [train.shape[1]], [seed], ReadoutPlan(steps=steps)
    )
    with torch.no_grad():
        predicted = trained.readout(test, image_size)
    out: dict[str, tuple[float, tuple[float, float]]] = {}
    for i, head in enumerate(trained.heads):
        if head.tap is not None:
            continue
        values = spearman_per_image(predicted[:, i], maps[list(targets).index(head.target)]).double().numpy()
        out[head.target] = (float(values.mean()), mean_interval(values))
    return out


def ppp(
    model: nn.Module,
    taps: Sequence[str],
    padding: str = "zeros",
    image_size: int = 64,
    contexts: int = 32,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """PPP of ``model`` (Lin et al. ICML 2023; our definition, docs/ppp.md) at each tap it can measure (one
    with a padding-free reference): ``{tap: {"snr", "rel_energy", "energy", "variance", and each one's
    "_ci_low" / "_ci_high"}}`` over ``contexts`` random crops of the bundled photos (seeded by ``seed``). The
    model is copied and converted to ``padding``; its own weights are measured."""
    from posenc.data.contexts import ContextDataModule
    from posenc.engine.network import stack

    name = type(model).__name__
    backbone = tapped_module(copy.deepcopy(model), taps, BackboneOptions.of(padding), name, f"model {name}").eval()

    def contexts_for(size: int) -> torch.Tensor:
        dm = ContextDataModule(num_test=contexts, image_size=image_size, batch_size=16, seed=seed, context_size=size)
        dm.setup("test")
        return stack(dm.test_sets["contexts"])[0]

    found = PPPPass({}).measure(backbone, contexts_for, seed, Protocol(image_size=image_size), True, Clock())
    out: dict[str, dict[str, float]] = {}
    for key, value in found.items():
        parts = key.split("/")
        if len(parts) >= 3 and parts[0] == "ppp" and isinstance(value, float) and math.isfinite(value):
            stat = parts[2] if len(parts) == 3 else f"{parts[2]}_{parts[3]}"
            out.setdefault(parts[1], {})[stat] = value
    return out


def equivariance(
    model: nn.Module | str,
    taps: Sequence[str] | None = None,
    padding: str = "zeros",
    image_size: int = 64,
    cells: int = 1,
    mode: str = "crop",
    images: int = 16,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Each tap's translation-equivariance error (issue 35; :mod:`posenc.metrics.equivariance`): the input shifted by
    ``cells`` x the tap's stride, the shifted features compared on the columns both maps see (``mode="crop"``:
    crops of ``images`` bundled photos; ``"circular"``: rolled), ``{tap: {"error", "by_distance", "shift_px"}}``;
    0 is equivariant. ``model``: an ``nn.Module`` (with ``taps``) or a posenc backbone name."""
    from posenc.data.contexts import ContextDataModule
    from posenc.engine.network import stack
    from posenc.metrics.equivariance import equivariance_errors

    if isinstance(model, str):
        build, _, _ = _backbone_factory(model, taps, [])
        seed_all(seed)
        backbone = build(padding, seed)
    else:
        if taps is None:
            raise invalid_value("taps", taps, "expected the names of the model's modules to read")
        name = type(model).__name__
        backbone = tapped_module(copy.deepcopy(model), taps, BackboneOptions.of(padding), name, f"model {name}")
    backbone.eval()
    widest = image_size + cells * max(backbone.tap_strides)
    dm = ContextDataModule(num_test=images, image_size=image_size, batch_size=16, seed=seed, context_size=widest)
    dm.setup("test")
    wide = stack(dm.test_sets["contexts"])[0][..., :image_size, :]
    found = equivariance_errors(backbone, wide, image_size, backbone.tap_strides, cells, mode)
    return dict(zip(backbone.tap_names, found))


def uneven_padding(model: nn.Module, image_size: int | tuple[int, int]) -> list[str]:
    """Every strided conv or pool of ``model`` that reads its padding on one side only at ``image_size``
    (Alsallakh et al. ICLR 2021: ``(N + 2p - k) mod s != 0``), one line each; ``[]`` when all are even.

    >>> import torchvision, posenc
    >>> net = torchvision.models.resnet18()
    >>> posenc.uneven_padding(net, 224)[0]
    'conv1 (conv k7 s2 p3 on 224x224: 1 px of bottom/right padding unread)'
    >>> posenc.uneven_padding(net, 225)
    []
    """
    from posenc.models.uneven_padding import uneven_layers

    return [layer.describe() for layer in uneven_layers(model, image_size)]


__all__ = [
    "AtlasTable",
    "atlas",
    "atlas_figure",
    "convert_padding",
    "equivariance",
    "posenet_readout",
    "ppp",
    "uneven_padding",
]
