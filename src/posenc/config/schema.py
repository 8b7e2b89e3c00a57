"""Typed schemas of every config group (Hydra structured configs), registered in Hydra's
ConfigStore under ``schema/<name>``.

Each YAML of ``conf/<group>/`` inherits its group's schema through its defaults list
(``- /schema/<group>@_here_``), so OmegaConf converts and type-checks every value and rejects
unknown keys while Hydra composes. ``schema/`` is a group of its own (Hydra's ``--help`` lists
it), not an option of the user-facing groups: ``backbone=<schema>`` is never offered, and the
options are still exactly the YAMLs of ``conf/``.

Every schema of a ``_target_`` is generated from the target's signature
(:func:`posenc.config.signatures.schema_of`): its fields, types and defaults are the parameters', and
each field's metadata holds the rules the parameter's annotation states (``Literal`` choices,
``Annotated[..., Rule(...)]`` ranges, :mod:`posenc.config.rules`), which :mod:`posenc.config.validation`
checks before anything is built. So an option is written once, on the parameter that takes it: a new
parameter with a default and a ``Literal`` is typed, defaulted and validated with no edit here. What a
signature cannot say is stated beside the schema it concerns, with its reason; the rules of the
third-party targets (Lightning, torch) are one table, :data:`THIRD_PARTY_RULES`. A ``_target_`` node that
no group schema types (an optimizer, a schedule, a task of the user's own) is typed the same way, from
its target, when the config is validated (:func:`target_schema`).

Importing this module imports the targets (their signatures) and registers the schemas. ``train.py``
and ``posenc.config.compose`` (tests, benchmarks) import it before they compose; ``sweep.py`` composes
only in its ``train.py`` child.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

import posenc.config.resolvers  # noqa: F401 - registers ${run_dir:}, which the loggers and callbacks use
from posenc.config.rules import Rule
from posenc.config.signatures import nested_schemas, schema_of

SCHEMA_GROUP = "schema"

# Rules the third-party targets' signatures cannot state (Lightning and torch check these arguments only when
# the object is built, some never): applied wherever a schema of the target is generated.
THIRD_PARTY_RULES: dict[str, dict[str, Rule]] = {
    "lightning.pytorch.Trainer": {
        "num_nodes": Rule(ge=1),
        "max_epochs": Rule(ge=-1),
        "min_epochs": Rule(ge=0),
        "max_steps": Rule(ge=-1),
        "min_steps": Rule(ge=0),
        **{f"limit_{s}_batches": Rule(ge=0) for s in ("train", "val", "test", "predict")},
        "overfit_batches": Rule(ge=0),
        "val_check_interval": Rule(gt=0),  # steps (int) or a fraction of an epoch (float)
        "check_val_every_n_epoch": Rule(ge=1),
        "num_sanity_val_steps": Rule(ge=-1),
        "log_every_n_steps": Rule(ge=1),
        "accumulate_grad_batches": Rule(ge=1),
        "gradient_clip_val": Rule(ge=0),
        "gradient_clip_algorithm": Rule(choices=("norm", "value")),
        "deterministic": Rule(choices=(True, False, "warn")),
        "reload_dataloaders_every_n_epochs": Rule(ge=0),
    },
    "torch.optim.Adam": {
        "lr": Rule(gt=0),
        "betas": Rule(items=Rule(ge=0, lt=1)),
        "eps": Rule(gt=0),
        "weight_decay": Rule(ge=0),
    },
    "torch.optim.SGD": {"lr": Rule(gt=0), "momentum": Rule(ge=0), "weight_decay": Rule(ge=0)},
    # "": no version_<n> sub-folder (conf/logger/csv.yaml)
    "lightning.pytorch.loggers.CSVLogger": {"version": Rule(empty=True), "flush_logs_every_n_steps": Rule(ge=1)},
    "lightning.pytorch.loggers.TensorBoardLogger": {"version": Rule(empty=True)},
    "lightning.pytorch.loggers.WandbLogger": {"log_model": Rule(choices=(True, False, "all"))},
}


def generated(target: str, name: str, **overlay: Any) -> type:
    """:func:`~posenc.config.signatures.schema_of` ``target``, with its :data:`THIRD_PARTY_RULES`."""
    return schema_of(target, name, rules=THIRD_PARTY_RULES.get(target), **overlay)


@cache
def target_schema(target: str, partial: bool = False) -> type | None:
    """The schema of a loosely typed ``_target_`` node (``task.optimizer``), generated from ``target``'s
    signature when a config is validated; None when the target has no signature OmegaConf can type."""
    try:
        schema = generated(target, target.rsplit(".", 1)[-1] + "Schema", partial=partial)
        OmegaConf.structured(schema)
        return schema
    except Exception:  # noqa: BLE001 - no signature to read (a builtin): the node stays loosely typed
        return None


# -- backbone / padding ---------------------------------------------------------------------
PaddingSchema = generated("posenc.models.padding.PaddingSpec", "PaddingSchema")
# A backbone's padding is the padding group's node (or a scheme's name): an interpolation, not a value.
WIRED_PADDING: dict[str, Any] = {"defaults": {"padding": "${padding}"}, "retyped": {"padding": Any}}
# backbone=<torchvision name>: every default is the builder's, so conf/backbone/<name>.yaml states only its
# name (detectron2's rule: a config says what differs from its base)
BackboneSchema = generated("posenc.models.backbones.build_backbone", "BackboneSchema", **WIRED_PADDING)
# Any family whose builder takes a model name, taps and the shared options (backbone=timm): its YAML states
# the builder (_target_) and the model (name), so neither defaults to the timm family's here.
BackboneFamilySchema = generated(
    "posenc.models.backbones.timm.build_timm_backbone",
    "BackboneFamilySchema",
    defaults={"_target_": MISSING, "name": MISSING, "padding": "${padding}"},
    retyped={"padding": Any},
)
VitBackboneSchema = generated("posenc.models.backbones.vit.build_vit_backbone", "VitBackboneSchema", **WIRED_PADDING)
ModuleBackboneSchema = generated(
    "posenc.models.backbones.module.build_module_backbone", "ModuleBackboneSchema", **WIRED_PADDING
)

# -- task / readout ---------------------------------------------------------------------------
PosENetTaskSchema = generated("posenc.tasks.posenet.PosENetTask", "PosENetTaskSchema")
LocationClsTaskSchema = generated("posenc.tasks.location_cls.LocationClassificationTask", "LocationClsTaskSchema")
# task=semseg | location_seg | saliency: one signature, SegmentationTask's
SegmentationTaskSchema = generated("posenc.tasks.semseg.SemanticSegmentationTask", "SegmentationTaskSchema")
PPPTaskSchema = generated("posenc.tasks.ppp.PPPTask", "PPPTaskSchema")
# task=atlas builds its backbone per padding and seed from the config nodes it is handed (_recursive_: false)
AtlasTaskSchema = generated(
    "posenc.tasks.atlas.AtlasTask",
    "AtlasTaskSchema",
    retyped={"backbone": Any, "data": Any, "readout": Any},
    extra=(("_recursive_", bool, False),),
)
# PosENetTask passes the readout its number of maps (one per target) and, with tap_readouts=each, each
# head's channels; the partial's other missing argument (in_channels) has no default, so it is left out anyway
ReadoutSchema = generated(
    "posenc.models.readouts.PosENetReadout", "ReadoutSchema", partial=True, exclude=("num_maps", "channel_groups")
)
GapLinearSchema = generated("posenc.models.heads.GapLinearHead", "GapLinearSchema", partial=True)
FlattenLinearSchema = generated("posenc.models.heads.FlattenLinearHead", "FlattenLinearSchema", partial=True)
GapPermuteSchema = generated("posenc.models.heads.GapPermuteHead", "GapPermuteSchema", partial=True)
GapNetSchema = generated("posenc.models.heads.GapNetHead", "GapNetSchema", partial=True)
PixelDecoderSchema = generated("posenc.models.heads.PixelDecoder", "PixelDecoderSchema", partial=True)

# -- data -------------------------------------------------------------------------------------
DataSchema = generated("posenc.data.datamodule.PositionDataModule", "DataSchema")
CanvasDataSchema = generated("posenc.data.location.CanvasDataModule", "CanvasDataSchema")
SegmentationDataSchema = generated("posenc.data.segmentation.SegmentationDataModule", "SegmentationDataSchema")
# PPP trains nothing, so it has no held-out set: data.num_val is not offered (the module passes 0 on)
ContextDataSchema = generated("posenc.data.contexts.ContextDataModule", "ContextDataSchema", exclude=("num_val",))

# -- trainer ----------------------------------------------------------------------------------
# The Trainer's arguments with Lightning's defaults; Any where Lightning accepts several types
# (devices=2|"auto"|[0, 1]; limit_* batches as an int count or a float fraction, which a float field
# would blur), checked by Lightning when the Trainer is built. Not offered: what posenc.run.train passes
# itself (logger, callbacks, plugins), Lightning's start-of-run hyperparameter log (posenc.run.loggers
# writes its own record) and its cloud model registry; +trainer.<name>=<value> still sets any of them,
# checked against the Trainer's signature. Two unions with a class member take their config form: a
# profiler by name, a clip value as a float.
TrainerSchema = generated(
    "lightning.pytorch.Trainer",
    "TrainerSchema",
    exclude=("logger", "callbacks", "plugins", "enable_autolog_hparams", "model_registry"),
    retyped={"profiler": Optional[str], "gradient_clip_val": Optional[float]},
)

# -- logger / callbacks -------------------------------------------------------------------------
CSVLoggerSchema = generated("lightning.pytorch.loggers.CSVLogger", "CSVLoggerSchema")
# root_dir: a base class's argument, which the logger sets from save_dir itself
TensorBoardLoggerSchema = generated(
    "lightning.pytorch.loggers.TensorBoardLogger", "TensorBoardLoggerSchema", exclude=("root_dir",)
)
# W&B: the run's identity and wandb.init's own keys, which WandbLogger passes on through **kwargs (no
# signature names them); its other arguments (a resumed run's id, an experiment object, artifact
# policies) are not offered: +logger.wandb.<name>=<value> sets one, checked against the signature.
WandbLoggerSchema = generated(
    "lightning.pytorch.loggers.WandbLogger",
    "WandbLoggerSchema",
    exclude=("version", "dir", "id", "anonymous", "experiment", "checkpoint_name", "add_file_policy"),
    extra=[(key, Optional[str], None) for key in ("entity", "group", "job_type")]
    + [("tags", Optional[List[str]], None), ("notes", Optional[str], None)],
)
RunCheckpointSchema = generated("posenc.run.checkpointing.RunCheckpoint", "RunCheckpointSchema")
LossCurveSchema = generated("posenc.run.convergence.LossCurve", "LossCurveSchema")

# ``logger=csv|wandb|tensorboard``, or several at once (``logger=[wandb,tensorboard]``): every option YAML of
# the group inherits this one schema, so they merge in any order. The entries default to MISSING, which a
# merge never writes over a value; an entry no option set is then null
# (:func:`posenc.config.compose.settle_logger_config`). The CSV copy stays on: every option includes
# ``csv``, and ``logger.csv=null`` is refused there in one line.
LoggerSchema = dataclasses.make_dataclass(
    "LoggerSchema",
    [
        (name, Optional[schema], field(default=MISSING))
        for name, schema in (
            ("csv", CSVLoggerSchema),
            ("wandb", WandbLoggerSchema),
            ("tensorboard", TensorBoardLoggerSchema),
        )
    ],
    namespace={"__module__": __name__, "__doc__": "The logger group: one entry per logger chosen."},
)
# ``callbacks=default``; set an entry to null to drop it (``callbacks.progress=null``). loss_curve first: a
# non-finite loss stops the run before a checkpoint of that step is written. The progress bar and the
# run-contract callback are loosely typed (any progress bar class), typed by their target when validated.
CallbacksSchema = dataclasses.make_dataclass(
    "CallbacksSchema",
    [
        ("loss_curve", Optional[LossCurveSchema], field(default=None)),
        ("checkpoint", Optional[RunCheckpointSchema], field(default=None)),
        ("progress", Optional[Any], field(default=None)),
        ("run_contract", Optional[Any], field(default=None)),
    ],
    namespace={"__module__": __name__, "__doc__": "The callbacks group: checkpoints, loss curve, progress."},
)


# -- the train config -------------------------------------------------------------------------
@dataclass
class PathsSchema:
    output_root: str = "outputs"
    cache_dir: str = "${paths.output_root}/.feature_cache"


@dataclass
class PaperRowSchema:
    """One row of a paper's table: the settings it corresponds to (``key: value`` as the sweep's
    overrides write them) and its numbers under posenc's metric keys."""

    match: Dict[str, Any] = field(default_factory=dict)
    metrics: Dict[str, float] = field(default_factory=dict)


@dataclass
class PaperSchema:
    """A preset's published numbers (``sweep.py collect`` prints them beside ours): where they
    come from and how the paper's setting differs from the preset's."""

    source: str = MISSING
    differs: str = ""
    rows: List[PaperRowSchema] = field(default_factory=list)


@dataclass
class TrainSchema:
    """``conf/train.yaml``: not a target's signature, the run's own keys (read by posenc.run and
    sweep.py). The groups are typed by their own schemas (their YAMLs inherit them); here they are
    only declared."""

    backbone: Any = MISSING
    padding: Any = MISSING
    task: Any = MISSING
    readout: Any = MISSING
    data: Any = MISSING
    trainer: Any = MISSING
    logger: Any = MISSING
    callbacks: Any = MISSING
    seed: int = 0
    sweep_name: Optional[str] = None  # set by sweep presets; W&B group of their runs
    ckpt_path: Optional[str] = None  # last | /path/to/file.ckpt
    probe: Optional[Any] = None  # presets: sweep.py's second stage, one override list or a list of them
    probe_init: bool = False  # presets: also probe every trained backbone at initialisation
    # set by sweep.py on probe runs
    probe_stage: Optional[str] = field(default=None, metadata=Rule(choices=("init", "trained")).as_dict())
    pivot: Optional[str] = None  # set by presets: the swept key whose values become report columns
    groups: Optional[Any] = None  # set by grouped presets (atlas): label -> overrides, one multirun each (sweep.py)
    report: Optional[str] = None  # set by grouped presets: the report over all groups (posenc.sweeps.reports.REPORTS)
    fold: Optional[Any] = None  # set by presets (atlas): a swept key -> the job's list it becomes (sweep.py)
    every_group: Optional[Any] = None  # set by grouped presets (atlas): overrides before every group's (sweep.py)
    paper: Optional[PaperSchema] = None  # set by presets that mirror a paper's table: its numbers, for collect
    paths: PathsSchema = field(default_factory=PathsSchema)


# Schemas of the group configs, by the name they are stored under (``schema/<name>``).
GROUP_SCHEMAS: dict[str, type] = {
    "train": TrainSchema,
    "backbone": BackboneSchema,
    "backbone_family": BackboneFamilySchema,
    "backbone_module": ModuleBackboneSchema,
    "backbone_vit": VitBackboneSchema,
    "padding": PaddingSchema,
    "task_posenet": PosENetTaskSchema,
    "task_location_cls": LocationClsTaskSchema,
    "task_segmentation": SegmentationTaskSchema,
    "task_ppp": PPPTaskSchema,
    "task_atlas": AtlasTaskSchema,
    "readout_posenet": ReadoutSchema,
    "readout_gap_linear": GapLinearSchema,
    "readout_flatten_linear": FlattenLinearSchema,
    "readout_gap_permute": GapPermuteSchema,
    "readout_gapnet": GapNetSchema,
    "readout_pixel_decoder": PixelDecoderSchema,
    "data": DataSchema,
    "data_canvas": CanvasDataSchema,
    "data_segmentation": SegmentationDataSchema,
    "data_contexts": ContextDataSchema,
    "trainer": TrainerSchema,
    "logger": LoggerSchema,
    "callbacks": CallbacksSchema,
}
# The nested schemas generated on the way (``data.canvas``'s), as names of this module: a config typed by
# one is pickled by its class's module and name (submitit's jobs, DDP's spawned processes).
globals().update(nested_schemas())


def register() -> None:
    """Store every group schema as ``schema/<name>`` in Hydra's ConfigStore (idempotent)."""
    store = ConfigStore.instance()
    for name, schema in GROUP_SCHEMAS.items():
        store.store(group=SCHEMA_GROUP, name=name, node=schema)


register()
