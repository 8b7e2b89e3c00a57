"""The valid values of every string (and small-int) option, in one torch-free module: the config
schemas (:mod:`posenc.config.schema`, imported before the command line is read) and the code that
acts on the values both import them from here, so no list is ever copied."""

from __future__ import annotations

from collections.abc import KeysView

from posenc.registry import BACKBONE_REGISTRY, PADDING_REGISTRY, TAP_NAMES  # noqa: F401 - TAP_NAMES re-exported

# backbones and padding: live views of posenc.registry (a registered name is valid everywhere at once)
BACKBONES: KeysView[str] = BACKBONE_REGISTRY.keys()
PADDING_MODES: KeysView[str] = PADDING_REGISTRY.keys()
# padding=none: upsample by the conv's padding on both sides, or by the ICCV 2021 authors' (k-1)//2 (1 -> 2)
NONE_UPSAMPLES: tuple[str, ...] = ("padding", "authors")
PERMUTE_POINTS: tuple[int, ...] = (1, 2, 3, 4, 5)

POSITION_EMBEDDINGS: tuple[str, ...] = ("learned", "none")  # a ViT's (posenc.models.backbones.vit)

# PosENet (posenc.data.position_maps, posenc.data.feature_cache, posenc.models.readouts, posenc.tasks.posenet)
TARGETS: tuple[str, ...] = ("H", "V", "G", "HS", "VS")
TARGET_SOURCES: tuple[str, ...] = ("formula", "official")
STRIPE_RANGES: tuple[str, ...] = ("unit", "signed")
# auto: memory when the features fit task.cache_memory_fraction of the available RAM, else disk
CACHE_MODES: tuple[str, ...] = ("auto", "memory", "disk", "off")
CACHE_DTYPES: tuple[str, ...] = ("auto", "float32", "float16")  # auto: float32 in memory, float16 on disk
AUTOCAST: tuple[str | None, ...] = (None, "bf16")
KERNEL_SIZES: tuple[int, ...] = (1, 3, 5, 7)
DEPTHS: tuple[int, ...] = (1, 2, 3)
TAP_READOUTS: tuple[str, ...] = ("all", "each")  # one readout on all taps | also one per tap alone (the atlas)

# data (posenc.data.*)
SOURCES: tuple[str, ...] = ("natural", "folder")
SYNTHETIC_INPUTS: tuple[str, ...] = ("black", "white", "noise")
TEST_INPUTS: tuple[str, ...] = ("natural", *SYNTHETIC_INPUTS)
SYNTHETIC_SOURCES: tuple[str, ...] = ("generated", "official")
PATCH_SOURCES: tuple[str, ...] = ("shapes", "digits", "photos", "cifar10")
CANVAS_FILLS: tuple[str, ...] = ("black", "white", "mean", "noise")
TEST_PLACEMENTS: tuple[str, ...] = ("balanced", "random")
TRAIN_PLACEMENTS: tuple[str, ...] = ("fixed", "resample")
LABEL_MODES: tuple[str, ...] = ("location", "class", "class_and_location")
SALIENCY_SETS: tuple[str, ...] = ("duts", "ecssd", "pascal_s")
SEGMENTATION_SOURCES: tuple[str, ...] = ("shapes", "voc", *SALIENCY_SETS)
SCENE_LAYOUTS: tuple[str, ...] = ("random", "centred", "sides")  # where the shapes scenes' objects sit
SCENE_BACKGROUNDS: tuple[str, ...] = ("shared", "split")  # the scenes' photos: one pool, or held-out test photos

# the padding study's tasks (posenc.tasks.location_cls)
AUGMENTS: tuple[str, ...] = ("none", "shift")
