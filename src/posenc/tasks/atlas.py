"""One model of the position atlas as one run (``python train.py task=atlas backbone=resnet18``; each job of
``python sweep.py atlas``): the atlas engine (:func:`posenc.engine.network.measure_network`) over the
task's paddings and seeds, with the run contract of every run (``metrics.json``, ``status.json``, the config,
the loggers' copies).

Every (padding, seed) of the model is a cell of the atlas; its numbers are written flat into
``metrics.json`` as ``atlas/<padding>/s<seed>/<key>``, ``<key>`` the per-cell runs' own (``tap/f3/natural/H/spc``,
``test/natural/G/spc/ci_low``, ``ppp/f2/rel_energy``, ``train/converged``, ...), a cell the model refuses as
``atlas/<padding>/s<seed>/error``. ``posenc.analysis.atlas`` reads them back into the atlas's table. The
run measures and trains its readouts without Lightning's Trainer (``uses_trainer = False``: the engine's
loop is the point, docs/atlas.md), so it has no Lightning checkpoint: it keeps each padding's cells in
``checkpoints/atlas_cells.json`` as soon as they are measured, and ``train.py --resume`` (or SLURM's restart of the
job) measures only the paddings still missing.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from posenc.config.rules import Rule
from posenc.data.contexts import ContextDataModule
from posenc.data.datamodule import ImageSize
from posenc.data.position_maps import TARGETS, Target
from posenc.engine.network import INPUT, BuildBackbone, CellResult, Protocol, measure_network, stack
from posenc.engine.readouts import ReadoutPlan
from posenc.errors import PosencError, check_choice, invalid_value
from posenc.io import read_json, write_json
from posenc.metrics.intervals import seed_interval
from posenc.models.padding import PADDING_MODES
from posenc.tasks.base import PosencTask
from posenc.tasks.schedules import MaxEpochs

PREFIX = "atlas"
KEPT = "atlas_cells.json"  # checkpoints/: each padding's cells as soon as measured (a restarted run keeps them)


def cell_prefix(padding: str, seed: int) -> str:
    """``atlas/<padding>/s<seed>/``: where a cell's keys sit in the run's ``metrics.json``."""
    return f"{PREFIX}/{padding}/s{seed}/"


def flatten_cells(cells: Sequence[CellResult]) -> dict[str, Any]:
    """The cells' metrics under their :func:`cell_prefix`, an unrunnable cell's one line as ``.../error``."""
    out: dict[str, Any] = {}
    for cell in cells:
        prefix = cell_prefix(cell.padding, cell.seed)
        if cell.error is not None:
            out[f"{prefix}error"] = cell.error
            continue
        for key, value in cell.metrics.items():
            if key not in ("padding", "seed"):
                out[prefix + key] = value
    return out


def seed_summary(cells: Sequence[CellResult], paddings: Sequence[str], targets: Sequence[str]) -> dict[str, Any]:
    """``test/<padding>/<target>/spc``: the all-taps readout's SPC over the seeds (their mean, with the
    t-interval of the mean as ``/ci_low``, ``/ci_high``; of one seed its bootstrap interval), the run's headline."""
    out: dict[str, Any] = {}
    for padding in paddings:
        for target in targets:
            key = f"test/{INPUT}/{target}/spc"
            runs = [c.metrics for c in cells if c.padding == padding and isinstance(c.metrics.get(key), float)]
            values = [m[key] for m in runs if math.isfinite(m[key])]
            if not values:
                continue
            name = f"test/{padding}/{target}/spc"
            out[name] = statistics.fmean(values)
            if len(values) >= 2:
                out[f"{name}/ci_low"], out[f"{name}/ci_high"] = seed_interval(values)
            elif f"{key}/ci_low" in runs[0]:
                out[f"{name}/ci_low"], out[f"{name}/ci_high"] = runs[0][f"{key}/ci_low"], runs[0][f"{key}/ci_high"]
    return out


def resolve_device(device: str) -> str:
    """``auto``: a CUDA GPU when one is visible, else the CPU; ``cpu``, ``cuda``, ``cuda:N`` as given (a GPU
    that is not there is one line)."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise invalid_value("task.device", device, "no CUDA GPU is visible; valid: auto, cpu")
    if not (device == "cpu" or device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit())):
        raise invalid_value("task.device", device, "expected auto, cpu, cuda or cuda:N")
    return device


class AtlasTask(PosencTask):
    """Measure one backbone's taps under ``paddings`` x ``seeds`` (the position atlas's cells)."""

    trains = False
    uses_trainer: ClassVar[bool] = False
    # the console's and the sweep reports' grid: the all-taps readout per padding x target, over the seeds
    grid_order = (tuple(PADDING_MODES), tuple(TARGETS), ("spc",))

    def __init__(
        self,
        backbone: Any,
        data: Any,
        readout: Any,
        image_size: ImageSize = 64,
        paddings: Annotated[list[str], Rule(min_items=1, items=Rule(choices=PADDING_MODES))] = [  # noqa: B006
            "zeros",
            "reflect",
            "circular",
            "none",
        ],
        seeds: Annotated[list[int], Rule(min_items=1)] = [0, 1, 2],  # noqa: B006
        targets: Annotated[list[Target], Rule(min_items=1)] = ["H", "G"],  # noqa: B006
        max_steps: Annotated[int, Rule(ge=1)] = 500,
        max_epochs: MaxEpochs = None,
        lr: Annotated[float, Rule(gt=0)] = 0.1,
        momentum: Annotated[float, Rule(ge=0, lt=1)] = 0.9,
        weight_decay: Annotated[float, Rule(ge=0)] = 1e-4,
        val_every: Annotated[int, Rule(ge=1)] = 25,
        ppp: bool = True,
        ppp_contexts: Annotated[int, Rule(ge=2)] = 32,
        ppp_bootstrap: bool | None = None,
        channels_last: bool = True,
        feature_dtype: Literal["float32", "bfloat16"] = "float32",
        device: str = "auto",
    ) -> None:
        """``backbone``, ``data``, ``readout``: the run's config nodes (built here once per padding and seed,
        ``_recursive_: false``); ``ppp_bootstrap`` null: PPP's per-seed bootstrap interval only with one seed
        (over several, the atlas reads the seeds' t-interval)."""
        super().__init__()
        for padding in paddings:
            check_choice("task.paddings entry", padding, PADDING_MODES)
        for target in targets:
            check_choice("task.targets entry", target, TARGETS)
        if len(set(seeds)) != len(seeds):
            raise invalid_value("task.seeds", list(seeds), "expected distinct seeds")
        if len(set(paddings)) != len(paddings):
            raise invalid_value("task.paddings", list(paddings), "expected distinct paddings")
        self.backbone_cfg, self.data_cfg = backbone, data
        self.paddings, self.seeds = list(paddings), [int(s) for s in seeds]
        readout_cfg = readout if isinstance(readout, DictConfig) else OmegaConf.create(dict(readout))
        self.protocol = Protocol(
            image_size=int(image_size),
            targets=tuple(targets),
            feature_size=int(readout_cfg.get("feature_size", 8)),
            align_corners=bool(readout_cfg.get("align_corners", True)),
            ppp=bool(ppp),
            ppp_bootstrap=ppp_bootstrap,
            channels_last=bool(channels_last),
            device=resolve_device(device),
            plan=ReadoutPlan(
                steps=int(max_steps),
                batch_size=int(OmegaConf.select(data, "batch_size", default=32) or 32),
                lr=float(lr),
                momentum=float(momentum),
                weight_decay=float(weight_decay),
                kernel_size=int(readout_cfg.get("kernel_size", 3)),
                val_every=int(val_every),
                feature_dtype=str(feature_dtype),
            ),
        )
        if int(readout_cfg.get("depth", 1)) != 1 or int(readout_cfg.get("padding", 0)) != 0:
            raise PosencError("task=atlas trains one readout per tap: valid readout.depth=1, readout.padding=0")
        self.ppp_contexts = int(ppp_contexts)
        self.budget = {"max_steps": max_steps, "max_epochs": max_epochs}

    def build(self, padding: str, seed: int) -> Any:
        """The run's backbone with ``padding`` (seeded by the engine before it is called)."""
        return instantiate(self.backbone_cfg, padding={"name": padding})

    def images(self, seed: int) -> dict[str, Any]:
        """The ``train`` / ``val`` / ``test`` (natural, mirrored) image sets of ``seed`` (the run's data config)."""
        dm = instantiate(self.data_cfg, seed=seed)
        dm.setup("fit")
        dm.setup("test")
        if "natural" not in dm.test_sets:
            raise invalid_value(
                "data.test_inputs", list(dm.test_sets), "expected natural among them (the atlas's input)"
            )
        return {"train": dm.train_set, "val": dm.val_set, "test": dm.test_sets["natural"]}

    def contexts(self, seed: int, size: int) -> torch.Tensor:
        """PPP's contexts of ``seed`` at ``size`` px (``ppp_contexts`` random crops of the bundled photos)."""
        dm = ContextDataModule(
            num_test=self.ppp_contexts, image_size=self.protocol.image_size, batch_size=16, seed=seed, context_size=size
        )
        dm.setup("test")
        return stack(dm.test_sets["contexts"])[0]

    def cells(
        self,
        build: BuildBackbone | None = None,
        progress: Callable[[str], None] | None = None,
        kept: Path | None = None,
    ) -> list[CellResult]:
        """Every padding x seed of the run's backbone (or of ``build(padding, seed)``: a notebook's model) through
        the engine, on the run's images and protocol. ``kept``: a file each padding's cells are written to as soon
        as they are measured, and read back by a run restarted in the same dir (a SLURM requeue, a rerun after a
        kill) when it was written for the same config: a stop loses at most the padding it was measuring."""
        done: dict[str, list[CellResult]] = {}
        key = repr(
            (
                OmegaConf.to_container(self.backbone_cfg, resolve=True),
                OmegaConf.to_container(self.data_cfg, resolve=True),
                self.protocol,
                self.ppp_contexts,
            )
        )
        if kept is not None:
            found = read_json(kept) or {}
            if found.get("key") == key:
                done = {
                    padding: [CellResult(padding, int(c["seed"]), c["metrics"], c["error"]) for c in cells]
                    for padding, cells in found.get("paddings", {}).items()
                    if padding in self.paddings and sorted(int(c["seed"]) for c in cells) == sorted(self.seeds)
                }

        def keep(padding: str, cells: list[CellResult]) -> None:
            if kept is None:
                return
            done[padding] = cells
            payload = {
                "key": key,
                "paddings": {
                    p: [{"seed": c.seed, "metrics": c.metrics, "error": c.error} for c in cs] for p, cs in done.items()
                },
            }
            kept.parent.mkdir(parents=True, exist_ok=True)
            write_json(kept, payload)

        return measure_network(
            build or self.build,
            self.paddings,
            self.seeds,
            self.images,
            self.contexts if self.protocol.ppp else None,
            self.protocol,
            progress=progress or (lambda line: print(f"atlas: {line}", flush=True)),
            done=dict(done),
            on_padding=keep,
        )

    def measure(self, run_dir: Path) -> dict[str, Any]:
        """Run the engine; the flat metrics of every cell and the run's totals."""
        import time

        start = time.perf_counter()
        cells = self.cells(kept=Path(run_dir) / "checkpoints" / KEPT)
        out = flatten_cells(cells)
        done = [c for c in cells if c.error is None]
        out.update(seed_summary(done, self.paddings, self.protocol.targets))
        total = time.perf_counter() - start
        forward = sum(float(c.metrics.get("atlas/time/forward_s", 0.0)) for c in done)
        readout = sum(float(c.metrics.get("atlas/time/readout_s", 0.0)) for c in done)
        out.update(
            {
                f"{PREFIX}/paddings": ",".join(self.paddings),
                f"{PREFIX}/seeds": ",".join(map(str, self.seeds)),
                f"{PREFIX}/cells": len(cells),
                f"{PREFIX}/cells_failed": len(cells) - len(done),
                f"{PREFIX}/time/total_s": total,
                f"{PREFIX}/time/forward_s": forward,
                f"{PREFIX}/time/readout_s": readout,
                f"{PREFIX}/time/ratio_to_forward": total / forward if forward > 0 else math.nan,
                "train/steps": self.protocol.plan.steps,
                "train/converged": all(bool(c.metrics.get("train/converged")) for c in done) if done else False,
            }
        )
        return out
