"""Canvases for the location-dependent tasks (Islam et al., IJCV 2024, "Position, Padding and
Predictions"): a patch pasted into one cell of a ``grid x grid`` canvas (or at any pixel offset),
surrounded by a canvas of a chosen fill.

Train, held-out (``num_val``, for the convergence flag) and test canvases are generated once, in
batched tensor operations (:mod:`posenc.data.canvas`), on the device given (the training GPU when
there is one: ``data.device=auto``) and stored as uint8, built a chunk at a time (no float copy of
all canvases: 50,000 canvases of 96 px peak at a few GB); every sample carries its ``cell``, its patch ``label`` and the
``object_mask`` of the pasted object, from which the task builds its targets, and its ``unit``: the source of
its patch (:class:`~posenc.data.sources.patches.Patches`), shared by the ``grid^2`` canvases of one patch in
the balanced test and by the crops of one photo (``source=photos``), resampled as one by the test metrics'
bootstrap intervals (posenc.metrics.intervals).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Annotated, Any, Literal, get_args

import torch

from posenc.config.devices import check_device
from posenc.config.rules import Rule
from posenc.data.canvas import CANVAS_FILLS, DEFAULT_LOCATION_GRID, CanvasFill, cell_size, check_canvas, make_canvases
from posenc.data.datamodule import ImageSize, SeededDataModule, TensorDictDataset, check_sizes
from posenc.data.sources.cifar import check_cifar10
from posenc.data.sources.patches import PATCH_SOURCES, Patches, PatchSource, make_patches
from posenc.errors import PosencError, check_choice

# balanced: every test patch in every cell (the ICCV 2021 test) | random: one random cell or offset per patch
TestPlacement = Literal["balanced", "random"]
TEST_PLACEMENTS: tuple[str, ...] = get_args(TestPlacement)
# fixed: each training patch pasted once | resample: a fresh cell and flip every epoch (ICCV 2021)
TrainPlacement = Literal["fixed", "resample"]
TRAIN_PLACEMENTS: tuple[str, ...] = get_args(TrainPlacement)


@dataclass(frozen=True)
class CanvasSpec:
    """``data.canvas``: the fill around the patch, the grid (``None``: free placement at any
    pixel offset, the cell being the ``location_grid`` cell that holds the patch's centre), the
    patch side (``None``: one grid cell; smaller: centred in its cell, so even a border cell's
    patch keeps ``(cell - patch) // 2`` px from the image edge), and whether only the object's
    pixels are pasted (else the whole square)."""

    fill: CanvasFill = "black"
    grid: Annotated[int, Rule(ge=1)] | None = 3
    patch_size: Annotated[int, Rule(ge=1)] | None = None
    location_grid: Annotated[int, Rule(ge=1)] = DEFAULT_LOCATION_GRID
    object_only: bool = False

    @property
    def cells_per_side(self) -> int:
        return self.grid if self.grid is not None else self.location_grid

    def patch_for(self, image_size: int) -> int:
        """The patch side: ``patch_size``, or by default one cell of the grid (``image_size / grid``)."""
        if self.patch_size is not None:
            return self.patch_size
        if self.grid is None:
            raise PosencError("data.canvas.grid=null (free placement) needs data.canvas.patch_size=<pixels>")
        return cell_size(image_size, self.grid)


class ResampledCanvases(torch.utils.data.Dataset):
    """Training canvases drawn afresh on every access, the ICCV 2021 authors' training: each
    patch in a uniformly random cell, flipped left-right with probability 1/2. The draw of item
    ``epoch * N + i`` (:class:`~posenc.data.datamodule.EpochShuffleSampler` with ``tag_epoch``)
    comes from a generator seeded by ``(seed, epoch, i)``, so a resumed run draws what the
    uninterrupted one drew."""

    per_epoch = True

    def __init__(
        self, patches: Patches, image_size: int, spec: CanvasSpec, mean_colour: torch.Tensor, seed: int
    ) -> None:
        self.patches = patches.to("cpu")
        self.image_size, self.spec, self.seed = image_size, spec, seed
        self.mean_colour = mean_colour.cpu()

    def __len__(self) -> int:
        return len(self.patches.labels)

    def __getitem__(self, tagged: int) -> dict[str, Any]:
        epoch, i = divmod(int(tagged), len(self))
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) * 1_000_003 + i)
        flip = bool(torch.rand((), generator=generator) < 0.5)
        one = Patches(
            self.patches.images[i : i + 1],
            self.patches.labels[i : i + 1],
            self.patches.masks[i : i + 1],
            self.patches.num_classes,
            self.patches.class_names,
            self.patches.sources[i : i + 1],
        )
        if flip:
            one = replace(one, images=one.images.flip(-1), masks=one.masks.flip(-1))
        out = make_canvases(
            one,
            self.image_size,
            self.spec.grid,
            self.spec.fill,
            generator,
            mean_colour=self.mean_colour,
            paste_object_only=self.spec.object_only,
            location_grid=self.spec.location_grid,
        )
        item: dict[str, Any] = {key: value[0] for key, value in out.items()}
        item["index"] = i
        return item


class CanvasDataModule(SeededDataModule):
    """Patches (``source``: digits | photos | shapes | cifar10) on canvases of ``image_size``.

    The test patches come from the source's test split (digits: a fixed fifth of scikit-learn's
    digits; shapes: another random stream; cifar10: ``test_batch``; photos: the held-out photos,
    whose labels are other photos than the training ones, so use photos with
    ``task.label=location`` only); the held-out patches from the training split, another seed.
    """

    SOURCES = PATCH_SOURCES

    def __init__(
        self,
        source: PatchSource = "shapes",
        canvas: dict[str, Any] | CanvasSpec | None = None,
        data_dir: str | None = None,
        device: str = "auto",
        image_size: ImageSize = 96,
        test_placement: TestPlacement | None = None,
        train_placement: TrainPlacement = "fixed",
        **kwargs: Any,
    ) -> None:
        """The patches, the canvas and where to build it; ``test_placement``: ``balanced`` puts every
        test patch in every cell (``num_test x grid^2`` canvases, the authors' test, Islam, Kowal et
        al. ICCV 2021), ``random`` one random cell (or offset) per patch; None: balanced on a grid,
        random for free placement. ``train_placement``: ``fixed`` pastes every training patch
        once, ``resample`` draws its cell (or offset) and a left-right flip afresh every epoch
        (:class:`ResampledCanvases`, the authors' training). Sizes and loader options:
        :class:`SeededDataModule`."""
        super().__init__(source=source, image_size=image_size, **kwargs)
        num_train, num_val, num_test, batch_size = self.num_train, self.num_val, self.num_test, self.batch_size
        spec = canvas if isinstance(canvas, CanvasSpec) else CanvasSpec(**dict(canvas or {}))
        check_choice("data.canvas.fill", spec.fill, CANVAS_FILLS)
        patch_size = spec.patch_for(int(image_size))
        spec = replace(spec, patch_size=patch_size)
        check_canvas(image_size, spec.grid, patch_size)
        check_sizes(num_train, num_val, num_test, batch_size=(batch_size, 1))
        if source == "cifar10":
            if not data_dir:
                raise PosencError("data.source=cifar10 needs data.data_dir=<folder holding cifar-10-batches-py/>")
            check_cifar10(data_dir)  # a missing file is named now, not after the Trainer has started
        self.spec, self.data_dir = spec, data_dir
        if device != "auto":  # torch's own error would come from inside setup(), after the Trainer started
            check_device("data.device", device, also=("auto",))
        self.device_name = device
        if test_placement is not None:
            check_choice("data.test_placement", test_placement, TEST_PLACEMENTS)
        if test_placement == "balanced" and spec.grid is None:
            raise PosencError(
                "data.test_placement=balanced puts every test patch in every grid cell: it needs "
                "data.canvas.grid=<cells per side>; valid: random for free placement"
            )
        self.test_placement = test_placement or ("balanced" if spec.grid is not None else "random")
        check_choice("data.train_placement", train_placement, TRAIN_PLACEMENTS)
        self.train_placement = train_placement
        self.num_cells = spec.cells_per_side**2
        self.num_patch_classes: int | None = None
        self.class_names: list[str] = []

    @property
    def device(self) -> torch.device:
        """Where canvases are generated: ``auto`` = the training device (when attached to a Trainer)."""
        if self.device_name != "auto":
            return torch.device(self.device_name)
        trainer = getattr(self, "trainer", None)
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def _canvases(
        self, num: int, seed: int, train: bool, mean_colour: torch.Tensor | None, stream: int, balanced: bool = False
    ) -> dict[str, torch.Tensor]:
        """``num`` canvases of patches drawn with ``seed`` from the train or test split; cells,
        offsets and noise from the generator ``stream`` (one per split, so no two share them);
        ``balanced``: every patch once in every cell instead."""
        patch_size = self.spec.patch_for(self.image_size)  # spec.patch_size (set in __init__), as an int
        patches = make_patches(
            self.source, num, patch_size, seed, train=train, data_dir=self.data_dir, device=self.device
        )
        self.num_patch_classes, self.class_names = patches.num_classes, list(patches.class_names)
        generator = torch.Generator(device=self.device).manual_seed(stream)
        cells = None
        if balanced:
            assert self.spec.grid is not None, "balanced placement needs a grid (refused in __init__)"
            count = self.spec.grid * self.spec.grid
            patches = patches.repeat_each(count)
            cells = torch.arange(count, device=patches.images.device).repeat(num)
        out = make_canvases(
            patches,
            self.image_size,
            self.spec.grid,
            self.spec.fill,
            generator,
            mean_colour=mean_colour,
            paste_object_only=self.spec.object_only,
            location_grid=self.spec.location_grid,
            cells=cells,
            uint8=True,
        )
        out["unit"] = patches.sources.long()  # the cells showing one patch are one unit of the test's intervals
        out["mean_colour"] = patches.images.mean(dim=(0, 2, 3))
        return out

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None and self.test_sets:
            return
        # the training patches' mean colour fills the "mean" canvas of every split
        if self.train_placement == "resample":  # the patches only: their canvases are drawn per access
            patch_size = self.spec.patch_for(self.image_size)  # spec.patch_size (set in __init__), as an int
            patches = make_patches(
                self.source,
                self.num_train,
                patch_size,
                self.seed,
                train=True,
                data_dir=self.data_dir,
                device=self.device,
            )
            self.num_patch_classes, self.class_names = patches.num_classes, list(patches.class_names)
            mean = patches.images.mean(dim=(0, 2, 3))
            self.train_set = ResampledCanvases(patches, self.image_size, self.spec, mean, self.seed)
        else:
            train = self._canvases(self.num_train, self.seed, True, None, stream=self.seed)
            mean = train.pop("mean_colour")
            self.train_set = TensorDictDataset(train)
        if self.num_val:
            val = self._canvases(self.num_val, self.seed + 2, True, mean, stream=self.seed + 3)
            val.pop("mean_colour")
            self.val_set = TensorDictDataset(val)
        test = self._canvases(
            self.num_test, self.seed + 1, False, mean, stream=self.seed + 2, balanced=self.test_placement == "balanced"
        )
        test.pop("mean_colour")
        self.test_sets = {"canvas": TensorDictDataset(test)}
