"""Typed schemas of every config group (Hydra structured configs), registered in Hydra's
ConfigStore under ``schema/<group>``.

Each YAML of ``conf/<group>/`` inherits its group's schema through its defaults list
(``- /schema/<group>@_here_``), so OmegaConf converts and type-checks every value and rejects
unknown keys while Hydra composes. ``schema/`` is a group of its own (Hydra's ``--help`` lists
it), not an option of the user-facing groups: ``backbone=<schema>`` is never offered, and the
options are still exactly the YAMLs of ``conf/``.

Ranges and choices, which OmegaConf cannot express, sit in each field's metadata
(``ge``/``gt``/``le``/``lt``, ``choices``, ``also`` = extra valid values outside the range,
``items`` = rules for each list entry, ``min_items`` / ``max_items`` = its length, ``why_items`` =
why that length; ``empty=True``: an empty string is a valid value, which it is otherwise only for a
field whose default is one; ``only_with=(sibling, choices)``: the command line may set the field only
beside those choices of a sibling key); :mod:`posenc.config.validation` checks them before
anything is built. Field defaults are the defaults of the ``_target_`` they configure
(``tests/unit/config/test_config_schema.py`` checks that against the signatures), so a field the YAML
leaves out changes nothing.

The choices come from :mod:`posenc.config.choices`, torch-free, which the code that acts on them imports
too: this module is imported by every entry point before the command line is read, and one list
serves both.

Importing this module registers the schemas. ``train.py`` and ``posenc.config.compose`` (tests,
benchmarks) import it before they compose; ``sweep.py`` gets it through ``posenc.cli.argv`` and only
composes in its ``train.py`` child.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

import posenc.config.resolvers  # noqa: F401 - registers ${run_dir:}, which the loggers and callbacks use
from posenc.config.choices import (
    AUGMENTS,
    AUTOCAST,
    BACKBONES,
    CACHE_DTYPES,
    CACHE_MODES,
    CANVAS_FILLS,
    DEPTHS,
    KERNEL_SIZES,
    LABEL_MODES,
    NONE_UPSAMPLES,
    PADDING_MODES,
    PATCH_SOURCES,
    PERMUTE_POINTS,
    POSITION_EMBEDDINGS,
    SCENE_BACKGROUNDS,
    SCENE_LAYOUTS,
    SEGMENTATION_SOURCES,
    STRIPE_RANGES,
    SYNTHETIC_SOURCES,
    TAP_NAMES,
    TAP_READOUTS,
    TARGET_SOURCES,
    TARGETS,
    TEST_INPUTS,
    TEST_PLACEMENTS,
    TRAIN_PLACEMENTS,
)
from posenc.config.choices import SOURCES as DATA_SOURCES  # noqa: E402

SCHEMA_GROUP = "schema"


def spec(default: Any = MISSING, **rules: Any) -> Any:
    """A dataclass field with ``default`` (lists and dicts copied per instance) and its value
    rules as metadata, e.g. ``spec(224, ge=8)``, ``spec(3, choices=(1, 3, 5, 7))``."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=rules)
    return field(default=default, metadata=rules)


@dataclass
class PartialSchema:
    """A node instantiated as a ``functools.partial``: the code that uses it supplies the rest (a
    readout its input shapes and class count, an optimizer its parameters, a schedule its optimizer)."""

    _partial_: bool = True


# -- backbone / padding ---------------------------------------------------------------------
@dataclass
class PaddingSchema:
    _target_: str = "posenc.models.padding.PaddingSpec"
    name: str = spec(MISSING, choices=PADDING_MODES)
    # padding=none only (posenc.models.padding): set beside another padding on the command line, it is refused
    none_upsample: str = spec("padding", choices=NONE_UPSAMPLES, only_with=("name", ("none",)))


@dataclass
class BackboneOptionsSchema:
    """What every backbone family takes beside its model and taps (posenc.models.backbones.base.BackboneOptions)."""

    padding: Any = "${padding}"  # the padding group's node (or a scheme's name)
    # null (random init) | imagenet (torchvision: $TORCH_HOME/hub/checkpoints; timm: the Hugging Face cache)
    # | /path/to/state_dict.pth | a posenc run dir or .ckpt
    weights: Optional[str] = None
    normalize: bool = False  # ImageNet mean/std; the authors' code feeds [0, 1] images
    download: bool = False  # true: let torchvision / timm download imagenet weights when online
    trainable: bool = False  # train with the task (the padding study's tasks set it; PosENet keeps it frozen)


@dataclass
class BackboneSchema(BackboneOptionsSchema):
    """``backbone=<torchvision name>``: every default lives here, so ``conf/backbone/<name>.yaml``
    states only its ``name`` (detectron2's rule: a config says what differs from its base)."""

    _target_: str = "posenc.models.backbones.base.build_backbone"
    name: str = spec("vgg16", choices=BACKBONES)
    taps: Optional[List[str]] = spec(list(TAP_NAMES), items={"choices": TAP_NAMES}, min_items=1)


@dataclass
class BackboneFamilySchema(BackboneOptionsSchema):
    """Any backbone family whose builder takes a model ``name``, ``taps`` and the shared options
    (``posenc.models.backbones.base.takes_backbone_options``): its YAML states the builder's ``_target_``
    and its default ``name``, so a new family is its module, its YAML and its test (``backbone=timm``)."""

    _target_: str = MISSING
    name: str = MISSING  # the family's model name, checked by its builder (timm: timm.list_models())
    taps: Optional[List[str]] = spec(None, min_items=1)  # null: every tap the family declares (f1..fN)


@dataclass
class VitBackboneSchema(BackboneFamilySchema):
    """``backbone=vit_tiny``: a timm Vision Transformer (posenc.models.backbones.vit)."""

    _target_: str = "posenc.models.backbones.vit.build_vit_backbone"
    position_embedding: str = spec("learned", choices=POSITION_EMBEDDINGS)  # none: zeroed and frozen


@dataclass
class ModuleBackboneSchema(BackboneOptionsSchema):
    """``backbone=module``: a user's ``nn.Module`` from a factory (posenc.models.backbones.module)."""

    _target_: str = "posenc.models.backbones.module.build_module_backbone"
    target: str = "posenc.models.example_model.make_net"  # dotted path of a factory returning an nn.Module
    taps: List[str] = spec(["stage1", "stage2", "stage3"], min_items=1)  # its module names
    kwargs: Optional[Any] = None  # the factory's keyword arguments


# -- task / readout (posenet) ---------------------------------------------------------------
@dataclass
class ReadoutSchema(PartialSchema):
    _target_: str = "posenc.models.readouts.PosENetReadout"
    kernel_size: int = spec(3, choices=KERNEL_SIZES)
    depth: int = spec(1, choices=DEPTHS)
    padding: int = spec(0, ge=0)
    feature_size: int = spec(28, ge=1)
    sigmoid: bool = True
    align_corners: bool = True


@dataclass
class BudgetSchema:
    """A task's budget, which the trainer config reads (``trainer.max_steps: ${task.max_steps}``):
    shared by every task schema."""

    max_steps: int = spec(-1, ge=1, also=(-1,))  # -1: no step cap
    max_epochs: Optional[int] = spec(None, ge=1, also=(-1,))  # null / -1: no epoch cap


@dataclass
class LoaderSchema:
    """The loader fields every datamodule shares (posenc.data.datamodule.SeededDataModule)."""

    batch_size: int = spec(32, ge=1)
    num_workers: int = spec(0, ge=0)
    seed: int = 0


@dataclass
class PosENetTaskSchema(BudgetSchema):
    _target_: str = "posenc.tasks.posenet.PosENetTask"
    backbone: Any = MISSING  # ${backbone}
    readout: Any = MISSING  # ${readout}
    # A partial optimizer / lr-schedule node with any _target_: loosely typed here, checked by
    # target in posenc.config.validation (TARGET_SCHEMAS below, and the target's signature).
    optimizer: Any = MISSING
    scheduler: Optional[Any] = None
    image_size: int = spec(224, ge=8)
    targets: List[str] = spec(list(TARGETS), items={"choices": TARGETS}, min_items=1)
    target_source: str = spec("formula", choices=TARGET_SOURCES)
    stripe_range: str = spec("unit", choices=STRIPE_RANGES)
    feature_cache: str = spec("auto", choices=CACHE_MODES)  # auto: memory within the budget below, else disk
    cache_dtype: str = spec("auto", choices=CACHE_DTYPES)  # auto: float32 in memory, float16 on disk
    cache_memory_fraction: float = spec(0.25, gt=0, le=1)  # auto's budget: this share of the available RAM
    cache_dir: str = "outputs/.feature_cache"
    channels_last: bool = False  # run the frozen backbone channels-last
    autocast: Optional[str] = spec(None, choices=AUTOCAST)  # null | bf16: the backbone under autocast
    tap_readouts: str = spec("all", choices=TAP_READOUTS)  # each: also one readout per tap alone


@dataclass
class SupervisedTaskSchema(BudgetSchema):
    """The trainable tasks (posenc.tasks.supervised): backbone + head trained end to end."""

    _target_: str = MISSING
    backbone: Any = MISSING  # ${backbone}
    head: Any = MISSING  # ${readout}
    optimizer: Any = MISSING
    scheduler: Optional[Any] = None
    image_size: int = spec(96, ge=8)
    channels_last: bool = False
    # bands of distance to the border the test metrics are split into (segmentation: pixels;
    # location_cls: the object's distance, free placement only)
    distance_bands: int = spec(4, ge=1)


@dataclass
class LocationClsTaskSchema(SupervisedTaskSchema):
    _target_: str = "posenc.tasks.location_cls.LocationClassificationTask"
    label: str = spec("location", choices=LABEL_MODES)
    augment: str = spec("none", choices=AUGMENTS)  # shift: two shifted views per image (ICCV 2021)
    shift: int = spec(8, ge=1)  # pixels: the largest shift, in training and in the test's invariance metrics
    consistency_weight: float = spec(0.0, ge=0)  # lambda of the latent-consistency MSE


@dataclass
class SegmentationTaskSchema(SupervisedTaskSchema):
    """``task=semseg | location_seg | saliency`` (one signature, posenc.tasks.segmentation)."""

    _target_: str = "posenc.tasks.semseg.SemanticSegmentationTask"
    image_size: int = spec(64, ge=8)


@dataclass
class PPPTaskSchema(BudgetSchema):
    """``task=ppp`` (posenc.tasks.ppp): PPP of a frozen backbone, nothing trained."""

    _target_: str = "posenc.tasks.ppp.PPPTask"
    backbone: Any = MISSING  # ${backbone}
    image_size: int = spec(64, ge=8)
    layers: Optional[List[str]] = spec(
        None, items={"choices": TAP_NAMES}, min_items=1, why_items="PPP measures at least one tap"
    )  # null: every tap
    skip_global: bool = False  # true: skip taps without a padding-free reference (the atlas), not refuse them
    reference_cache: str = spec("disk", choices=("disk", "off"))
    cache_dir: str = "outputs/.feature_cache"


@dataclass
class FlattenLinearSchema(PartialSchema):
    """``readout=flatten_linear``: one linear layer on the flattened, unpooled map (position readable)."""

    _target_: str = "posenc.models.heads.FlattenLinearHead"
    dropout: float = spec(0.0, ge=0, lt=1)


@dataclass
class GapLinearSchema(FlattenLinearSchema):
    """``readout=gap_linear``: global average pooling, then one linear layer (Islam, Kowal et al. ICCV 2021)."""

    _target_: str = "posenc.models.heads.GapLinearHead"
    permute_at: Optional[int] = spec(None, choices=PERMUTE_POINTS)  # PermuteNet (posenc.models.permutation)


@dataclass
class GapPermuteSchema(GapLinearSchema):
    """``readout=gap_permute``: ``gap_linear`` that always permutes (``permute_at`` not null)."""

    _target_: str = "posenc.models.heads.GapPermuteHead"
    permute_at: int = spec(5, choices=PERMUTE_POINTS)


@dataclass
class GapNetSchema(PartialSchema):
    """``readout=gapnet``: a 3x3 conv (the authors' padding 1), global average pooling, a linear layer."""

    _target_: str = "posenc.models.heads.GapNetHead"
    kernel_size: int = spec(3, ge=1)
    padding: int = spec(1, ge=0)
    permute_at: Optional[int] = spec(None, choices=PERMUTE_POINTS)


@dataclass
class PixelDecoderSchema(PartialSchema):
    """``readout=pixel_decoder``: 1x1 convs per tap, fused at ``fuse_at`` (segmentation heads)."""

    _target_: str = "posenc.models.heads.PixelDecoder"
    width: int = spec(64, ge=1)
    fuse_at: int = spec(1, ge=0)
    depth: int = spec(1, ge=1)  # per-pixel layers after fusing (1x1 conv + BN + ReLU; the first is the fusion's)


@dataclass
class AdamSchema(PartialSchema):
    """``torch.optim.Adam`` as a partial (the task passes ``params``)."""

    _target_: str = "torch.optim.Adam"
    lr: float = spec(1e-3, gt=0)
    betas: List[float] = spec([0.9, 0.999], items={"ge": 0, "lt": 1}, min_items=2, max_items=2)
    eps: float = spec(1e-8, gt=0)
    weight_decay: float = spec(0.0, ge=0)
    amsgrad: bool = False
    foreach: Optional[bool] = None
    maximize: bool = False
    capturable: bool = False
    differentiable: bool = False
    fused: Optional[bool] = None


@dataclass
class SGDSchema(PartialSchema):
    """``torch.optim.SGD`` as a partial (the task passes ``params``)."""

    _target_: str = "torch.optim.SGD"
    lr: float = spec(1e-3, gt=0)
    momentum: float = spec(0.0, ge=0)
    dampening: float = 0.0
    weight_decay: float = spec(0.0, ge=0)
    nesterov: bool = False
    maximize: bool = False
    foreach: Optional[bool] = None
    differentiable: bool = False
    fused: Optional[bool] = None


@dataclass
class MultistepAtFractionsSchema(PartialSchema):
    """``posenc.tasks.schedules.multistep_at_fractions`` as a partial (the task passes ``optimizer``
    and ``total_steps``)."""

    _target_: str = "posenc.tasks.schedules.multistep_at_fractions"
    fractions: List[float] = spec([2 / 3], items={"gt": 0, "lt": 1})
    gamma: float = spec(0.1, gt=0)


# -- data -----------------------------------------------------------------------------------
@dataclass
class FrameSchema:
    """``data.canvas`` of ``data=natural|folder`` (posenc.data.datamodule.CanvasFrame)."""

    fill: str = spec("black", choices=CANVAS_FILLS)
    margin: int = spec(0, ge=0)  # px of canvas around every image (shrunk to fit); 0: no canvas


@dataclass
class DataSchema(LoaderSchema):
    """``data=natural`` and ``data=folder`` (one datamodule, two sources)."""

    _target_: str = "posenc.data.datamodule.PositionDataModule"
    source: str = spec("natural", choices=DATA_SOURCES)
    train_dir: Optional[str] = None
    test_dir: Optional[str] = None
    test_inputs: List[str] = spec(
        list(TEST_INPUTS),
        items={"choices": TEST_INPUTS},
        min_items=1,
        why_items="a run with no test set measures nothing",
    )
    synthetic_source: str = spec("generated", choices=SYNTHETIC_SOURCES)
    num_train: int = spec(256, ge=1)
    num_test: int = spec(32, ge=1)
    num_val: int = spec(32, ge=0)
    image_size: int = spec(224, ge=8)
    min_scale: float = spec(0.3, gt=0, le=1)
    canvas: FrameSchema = field(default_factory=FrameSchema)


@dataclass
class CanvasSchema:
    """``data.canvas`` (posenc.data.location.CanvasSpec)."""

    fill: str = spec("black", choices=CANVAS_FILLS)
    grid: Optional[int] = spec(3, ge=1)  # null: free placement at any pixel offset
    patch_size: Optional[int] = spec(None, ge=1)  # null: one grid cell; smaller: centred in its cell
    location_grid: int = spec(3, ge=1)  # cells of a free placement's location label
    object_only: bool = False


@dataclass
class CanvasDataSchema(LoaderSchema):
    """``data=canvas``: patches pasted into canvases (location_cls / location_seg)."""

    _target_: str = "posenc.data.location.CanvasDataModule"
    source: str = spec("shapes", choices=PATCH_SOURCES)
    canvas: CanvasSchema = field(default_factory=CanvasSchema)
    data_dir: Optional[str] = None
    num_train: int = spec(1024, ge=1)
    num_val: int = spec(128, ge=0)
    num_test: int = spec(256, ge=1)
    image_size: int = spec(96, ge=8)
    device: str = "auto"
    test_placement: Optional[str] = spec(None, choices=TEST_PLACEMENTS)  # null: balanced on a grid, else random
    train_placement: str = spec("fixed", choices=TRAIN_PLACEMENTS)  # resample: a fresh cell and flip every epoch


@dataclass
class ContextDataSchema(LoaderSchema):
    """``data=contexts``: real images around the crops PPP measures (task=ppp)."""

    _target_: str = "posenc.data.contexts.ContextDataModule"
    source: str = spec("natural", choices=("natural",))
    num_train: int = spec(0, choices=(0,))  # nothing is trained
    num_test: int = spec(64, ge=1)
    image_size: int = spec(64, ge=8)
    context_size: Optional[int] = spec(None, ge=8)
    batch_size: int = spec(16, ge=1)
    min_scale: float = spec(0.5, gt=0, le=1)


@dataclass
class SegmentationDataSchema(LoaderSchema):
    """``data=shapes | voc | duts``: images with per-pixel labels (semseg / saliency)."""

    _target_: str = "posenc.data.segmentation.SegmentationDataModule"
    source: str = spec("shapes", choices=SEGMENTATION_SOURCES)
    test_source: Optional[str] = spec(None, choices=SEGMENTATION_SOURCES)
    data_dir: Optional[str] = None
    test_dir: Optional[str] = None
    num_train: int = spec(1024, ge=1)
    num_val: int = spec(128, ge=0)
    num_test: int = spec(256, ge=1)
    image_size: int = spec(64, ge=8)
    max_objects: int = spec(3, ge=1)
    layout: str = spec("random", choices=SCENE_LAYOUTS)  # shapes only: random | centred | sides
    backgrounds: str = spec("shared", choices=SCENE_BACKGROUNDS)  # shapes only: shared | split (unseen test photos)


# -- trainer --------------------------------------------------------------------------------
@dataclass
class TrainerSchema:
    """The common ``lightning.pytorch.Trainer`` arguments, with Lightning's defaults; ``Any``
    where Lightning accepts several types (``devices=2|"auto"|[0, 1]``; ``limit_*`` batches as an
    int count or a float fraction, which a float field would blur). Lightning checks the values it
    knows best (devices, strategy, precision) when the Trainer is built; a rarer argument is added
    with ``+trainer.<name>=<value>`` and checked against the Trainer's signature."""

    _target_: str = "lightning.pytorch.Trainer"
    accelerator: Any = "auto"
    strategy: Any = "auto"
    devices: Any = "auto"
    num_nodes: int = spec(1, ge=1)
    precision: Any = None
    fast_dev_run: Any = False
    max_epochs: Optional[int] = spec(None, ge=-1)
    min_epochs: Optional[int] = spec(None, ge=0)
    max_steps: int = spec(-1, ge=-1)
    min_steps: Optional[int] = spec(None, ge=0)
    max_time: Any = None
    limit_train_batches: Any = spec(None, ge=0)
    limit_val_batches: Any = spec(None, ge=0)
    limit_test_batches: Any = spec(None, ge=0)
    limit_predict_batches: Any = spec(None, ge=0)
    overfit_batches: Any = spec(0.0, ge=0)
    val_check_interval: Any = spec(None, gt=0)  # steps (int) or a fraction of an epoch (float)
    check_val_every_n_epoch: Optional[int] = spec(1, ge=1)
    num_sanity_val_steps: Optional[int] = spec(None, ge=-1)
    log_every_n_steps: Optional[int] = spec(None, ge=1)
    enable_checkpointing: Optional[bool] = None
    enable_progress_bar: Optional[bool] = None
    enable_model_summary: Optional[bool] = None
    accumulate_grad_batches: int = spec(1, ge=1)
    gradient_clip_val: Optional[float] = spec(None, ge=0)
    gradient_clip_algorithm: Optional[str] = spec(None, choices=("norm", "value"))
    deterministic: Any = spec(None, choices=(True, False, "warn"))
    benchmark: Optional[bool] = None
    inference_mode: bool = True
    use_distributed_sampler: bool = True
    profiler: Optional[str] = None
    detect_anomaly: bool = False
    barebones: bool = False
    sync_batchnorm: bool = False
    reload_dataloaders_every_n_epochs: int = spec(0, ge=0)
    default_root_dir: Optional[str] = None  # set by posenc.run.train to the run dir


# -- logger / callbacks ---------------------------------------------------------------------
@dataclass
class _RunDirLoggerSchema:
    """What Lightning's file loggers (CSV, TensorBoard) share: a dir, a name, a version, a prefix."""

    save_dir: str = MISSING
    name: Optional[str] = "lightning_logs"
    version: Any = spec(None, empty=True)  # int | str | null; "": no version_<n> sub-folder (conf/logger/csv.yaml)
    prefix: str = ""


@dataclass
class CSVLoggerSchema(_RunDirLoggerSchema):
    _target_: str = "lightning.pytorch.loggers.CSVLogger"
    flush_logs_every_n_steps: int = spec(100, ge=1)


@dataclass
class WandbLoggerSchema:
    _target_: str = "lightning.pytorch.loggers.WandbLogger"
    project: Optional[str] = None
    name: Optional[str] = None
    save_dir: str = "."
    offline: bool = False
    log_model: Any = spec(False, choices=(True, False, "all"))
    prefix: str = ""
    # passed on to wandb.init
    entity: Optional[str] = None
    group: Optional[str] = None
    job_type: Optional[str] = None
    tags: Optional[List[str]] = None
    notes: Optional[str] = None


@dataclass
class TensorBoardLoggerSchema(_RunDirLoggerSchema):
    _target_: str = "lightning.pytorch.loggers.TensorBoardLogger"
    log_graph: bool = False
    default_hp_metric: bool = True
    sub_dir: Optional[str] = None


@dataclass
class LoggerSchema:
    """``logger=csv|wandb|tensorboard``, or several at once (``logger=[wandb,tensorboard]``): every
    option YAML of the group inherits this one schema, so they merge in any order. The entries
    default to MISSING, which a merge never writes over a value; an entry no option set is then
    null (:func:`posenc.config.compose.settle_logger_config`). The CSV copy stays on: every option
    includes ``csv``, and ``logger.csv=null`` is refused there in one line."""

    csv: Optional[CSVLoggerSchema] = MISSING
    wandb: Optional[WandbLoggerSchema] = MISSING
    tensorboard: Optional[TensorBoardLoggerSchema] = MISSING


@dataclass
class RunCheckpointSchema:
    """``checkpoints/last.ckpt``, written atomically every ``every_n_steps`` optimizer steps and
    every ``every_n_epochs`` epochs (0: not on that schedule), on SIGTERM / SIGINT and at the end."""

    _target_: str = "posenc.run.checkpointing.RunCheckpoint"
    dirpath: str = MISSING
    every_n_steps: int = spec(200, ge=0)
    every_n_epochs: int = spec(1, ge=0)


@dataclass
class LossCurveSchema:
    """The loss curve and the convergence flag (posenc.run.convergence.convergence): every curve
    within ``tol`` relative change at the end (the last ``window`` fraction) of every lr phase."""

    _target_: str = "posenc.run.convergence.LossCurve"
    window: float = spec(0.1, gt=0, le=0.5)
    tol: float = spec(0.02, gt=0)


@dataclass
class CallbacksSchema:
    """``callbacks=default``; set an entry to null to drop it (``callbacks.progress=null``).
    The progress bar and the run-contract callback are loosely typed (any progress bar class)."""

    # loss_curve first: a non-finite loss stops the run before a checkpoint of that step is written
    loss_curve: Optional[LossCurveSchema] = None
    checkpoint: Optional[RunCheckpointSchema] = None
    progress: Optional[Any] = None
    run_contract: Optional[Any] = None


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
    """``conf/train.yaml``. The groups are typed by their own schemas (their YAMLs inherit
    them); here they are only declared."""

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
    probe_stage: Optional[str] = spec(None, choices=("init", "trained"))  # set by sweep.py on probe runs
    pivot: Optional[str] = None  # set by presets: the swept key whose values become report columns
    groups: Optional[Any] = None  # set by grouped presets (atlas): label -> overrides, one multirun each (sweep.py)
    report: Optional[str] = None  # set by grouped presets: the report over all groups (posenc.sweeps.collect.REPORTS)
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

# Schemas of loosely typed nodes (any ``_target_`` allowed), applied by their ``_target_``.
TARGET_SCHEMAS: dict[str, type] = {
    "torch.optim.SGD": SGDSchema,
    "torch.optim.Adam": AdamSchema,
    "posenc.tasks.schedules.multistep_at_fractions": MultistepAtFractionsSchema,
}


def register() -> None:
    """Store every group schema as ``schema/<name>`` in Hydra's ConfigStore (idempotent)."""
    store = ConfigStore.instance()
    for name, schema in GROUP_SCHEMAS.items():
        store.store(group=SCHEMA_GROUP, name=name, node=schema)


register()
