"""Data for position tasks: a training image set and named test sets (PosENet, Islam et al.
ICLR 2020, Sec. 4: train on natural images, test on natural, black, white and noise images).

Every task honours the same knobs: ``num_train``, ``num_test``, ``image_size``, ``batch_size``,
``seed``. Images are float ``[3, S, S]`` in [0, 1] (the authors' code applies no mean/std).
"""

from __future__ import annotations

from collections.abc import Sequence, Sized
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, cast, get_args

import lightning as L
import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler

from posenc.config.rules import Rule
from posenc.constants import IMAGENET_MEAN
from posenc.data.canvas import CANVAS_FILLS, CanvasFill, check_frame, frame_on_canvas
from posenc.data.feature_cache import FeatureFile, available_memory
from posenc.data.mirror import MIRROR_MODES, MirrorMode, all_views, mirror, mirrors_test, mirrors_train, random_codes
from posenc.data.sources.folder import ImageFolderDataset
from posenc.data.sources.natural import TEST_PHOTOS, TRAIN_PHOTOS, natural_crops
from posenc.data.sources.synthetic import SYNTHETIC_INPUTS, SyntheticInput, SyntheticSource, synthetic_images
from posenc.errors import PosencError, check_choice

CONSTANT_INPUTS = ("black", "white")  # one image is the whole set: every copy is identical
PositionSource = Literal["natural", "folder"]  # the bundled photos, or image folders (train_dir / test_dir)
SOURCES: tuple[str, ...] = get_args(PositionSource)
TestInput = Literal["natural", SyntheticInput]  # natural images, and the synthetic black / white / noise ones
TEST_INPUTS: tuple[TestInput, ...] = get_args(TestInput)
ImageSize = Annotated[int, Rule(ge=8)]  # data.image_size (and the task's, which reads it)


@dataclass(frozen=True)
class CanvasFrame:
    """``data.canvas`` of the PosENet data: every image (training, held-out and test) shrunk and
    shown inside a ``margin`` px frame of canvas ``fill`` (posenc.data.canvas.frame_on_canvas);
    ``margin=0``: no canvas. ``mean`` is ImageNet's mean colour; ``noise`` is drawn per image from
    the split's seed and the image's index, so every epoch sees the same canvases."""

    fill: CanvasFill = "black"
    margin: Annotated[int, Rule(ge=0)] = 0

    def __post_init__(self) -> None:
        check_choice("data.canvas.fill", self.fill, CANVAS_FILLS)

    def apply(self, image: torch.Tensor, seed: int) -> torch.Tensor:
        """Float [3,S,S] in [0, 1] -> the same image framed."""
        generator = torch.Generator().manual_seed(seed) if self.fill == "noise" else None
        mean = torch.tensor(IMAGENET_MEAN)  # the ICCV 2021 canvas: 0 after normalisation
        return frame_on_canvas(image[None], self.fill, self.margin, generator=generator, mean_colour=mean)[0]


class IndexedImages(Dataset):
    """uint8 ``[3, S, S]`` images (a tensor or a dataset) -> ``{"image": float, "index": i}``,
    each shown inside ``frame`` when one is given (noise canvases seeded by ``seed`` and ``i``).
    ``units``: each image's independent unit (the photo a natural crop was cut from), served as
    ``"unit"`` for the bootstrap intervals of the test metrics (posenc.metrics.intervals); without
    them every image is its own unit and no ``"unit"`` is served. ``views``: ``(source, code)``, item
    ``i`` is image ``source[i]`` mirrored by ``code[i]`` (posenc.data.mirror); ``units`` are then per item."""

    def __init__(
        self,
        images: torch.Tensor | Dataset,
        frame: CanvasFrame | None = None,
        seed: int = 0,
        units: torch.Tensor | None = None,
        views: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        self.images = images
        self.frame, self.seed = frame, seed
        self.units = units
        self.views = views

    def __len__(self) -> int:
        if self.views is not None:
            return len(self.views[0])
        return len(cast(Sized, self.images))  # torch's Dataset declares no __len__; every image set here has one

    @staticmethod
    def to_float(image: torch.Tensor) -> torch.Tensor:
        """uint8 -> float in [0, 1] (the authors' code applies no mean/std)."""
        return image.float() / 255.0

    def __getitem__(self, i: int) -> dict[str, Any]:
        if self.views is None:
            image = self.to_float(self.images[i])
        else:
            image = mirror(self.to_float(self.images[int(self.views[0][i])]), int(self.views[1][i]))
        if self.frame is not None:
            image = self.frame.apply(image, self.seed * 1_000_003 + i)
        if self.units is not None:
            return {"image": image, "index": i, "unit": self.units[i]}
        return {"image": image, "index": i}


class TensorDictDataset(Dataset):
    """Samples stored as equal-length tensors: item ``i`` is ``{key: tensor[i]}`` plus its
    ``index``; float images are stored as uint8 (a quarter of the memory) and served in [0, 1]."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        lengths = {len(t) for t in tensors.values()}
        if len(lengths) != 1:
            raise ValueError(f"tensors of different lengths: { {k: len(t) for k, t in tensors.items()} }")
        image = tensors.get("image")
        if image is not None and image.is_floating_point():
            tensors = {**tensors, "image": (image * 255.0).round_().clamp_(0, 255).to(torch.uint8)}
        self.tensors = {k: t.cpu() for k, t in tensors.items()}
        self.size = lengths.pop()

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> dict[str, Any]:
        item: dict[str, Any] = {k: t[i] for k, t in self.tensors.items()}
        if "image" in item:
            item["image"] = IndexedImages.to_float(item["image"])
        item["index"] = i
        return item


class IndexedFeatures(Dataset):
    """Precomputed channels-last backbone features ``[N, H, W, C]`` (a tensor, a
    :class:`~posenc.data.feature_cache.FeatureFile` or an array) served a whole batch per index
    list as a float32 channels-last ``[B, C, H, W]`` view: one gather instead of one copy per sample
    and a collate (1472 x 28 x 28 floats per VGG16 image).

    In-memory float32 features and a disk cache's rows are gathered into a ring of ``RING`` reused
    buffers: a fresh 148 MB batch costs ~45 ms of page faults on every step, the copy itself ~11
    ms. Lightning's loop holds at most two batches at once (the current one and one prefetched), so
    a batch is never overwritten while in use. A disk cache's rows are read into one more reused
    buffer in the file's dtype first, so reading it keeps the process's memory flat."""

    RING = 3

    def __init__(self, features: torch.Tensor | FeatureFile | np.ndarray) -> None:
        self.features = features
        self._ring: list[torch.Tensor] = []
        self._turn = 0
        self._raw: np.ndarray | None = None  # a FeatureFile's rows, before the float32 copy

    def __len__(self) -> int:
        return len(self.features)

    def _buffer(self, rows: int) -> torch.Tensor:
        slot = self._turn % self.RING
        self._turn += 1
        if slot == len(self._ring) or self._ring[slot].shape[0] < rows:
            buffer = torch.empty((rows, *self.features.shape[1:]), dtype=torch.float32)
            self._ring[slot : slot + 1] = [buffer]
        return self._ring[slot][:rows]

    def __getitem__(self, indices: list[int]) -> dict[str, Any]:
        order = torch.tensor(sorted(indices))  # memory maps read faster in order; the set is what matters
        features = self.features
        if isinstance(features, torch.Tensor) and features.dtype == torch.float32 and features.device.type == "cpu":
            batch = torch.index_select(features, 0, order, out=self._buffer(len(order)))
        elif isinstance(features, FeatureFile):
            if self._raw is None or len(self._raw) < len(order):
                self._raw = np.empty((len(order), *features.shape[1:]), features.dtype)
            raw = features.read(order.numpy(), out=self._raw)
            batch = self._buffer(len(order)).copy_(torch.from_numpy(raw))
        elif isinstance(features, torch.Tensor):
            batch = features[order.to(features.device)].float()
        else:
            batch = torch.from_numpy(np.asarray(features[order.numpy()])).float()
        return {"features": batch.permute(0, 3, 1, 2), "index": order}


class EpochShuffleSampler(Sampler[int]):
    """A fresh permutation per epoch drawn from ``(seed, epoch)``: the order of epoch k does not
    depend on how many epochs this process ran, so a resumed run sees the same batches as an
    uninterrupted one. Lightning calls ``set_epoch`` (under DDP it uses its own sampler)."""

    def __init__(self, size: int, seed: int, tag_epoch: bool = False) -> None:
        """``tag_epoch``: yield ``epoch * size + index``, for a dataset that draws something afresh
        every epoch (it reads the epoch from the index, in any worker process)."""
        self.size, self.seed, self.epoch, self.tag_epoch = size, seed, 0, tag_epoch
        self.skip = 0  # samples of the epoch already trained on (a resumed run): the next pass starts after them

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        skip, self.skip = self.skip, 0
        order = torch.randperm(self.size, generator=generator)[skip:]
        return iter((order + self.epoch * self.size if self.tag_epoch else order).tolist())


class EpochBatchSampler(BatchSampler):
    """Batches of an :class:`EpochShuffleSampler`, forwarding ``set_epoch`` to it."""

    sampler: EpochShuffleSampler  # BatchSampler types it as any sampler or iterable

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)


def loader_generator(seed: int) -> torch.Generator:
    """A loader's own generator: creating an iterator draws its workers' base seed from it instead of
    from torch's global RNG, which a resumed run restores (posenc.run.checkpointing) and which must not
    depend on how many loaders were opened before."""
    return torch.Generator().manual_seed(int(seed))


class ResumableLoader(DataLoader):
    """A train loader over an :class:`EpochShuffleSampler` that Lightning can resume mid-epoch:
    ``state_dict`` counts the batches this epoch's pass has handed out (Lightning prefetches none
    from a sized loader, so that is the batches trained on), and ``load_state_dict`` makes the next
    pass skip them, by index, without loading them. Without this Lightning restarts the epoch's
    order on resume (its "dataloader is not resumable" warning) and a resumed run trains on other
    batches than an uninterrupted one."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._served = 0
        self._pending_skip = 0  # batches load_state_dict asked the next pass to skip

    def _epoch_sampler(self) -> tuple[EpochShuffleSampler, int]:
        """The shuffle sampler and the samples per batch it is drawn in."""
        if isinstance(self.sampler, EpochShuffleSampler):
            return self.sampler, int(self.batch_size or 1)
        batches = self.batch_sampler if self.batch_sampler is not None else self.sampler
        if isinstance(batches, EpochBatchSampler):
            return batches.sampler, batches.batch_size
        raise TypeError("ResumableLoader needs an EpochShuffleSampler (or batches of one)")

    def __iter__(self):
        self._served, self._pending_skip = self._pending_skip, 0
        for batch in super().__iter__():
            self._served += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        served = self._served if self._served < len(self) else 0  # a finished pass: the next epoch starts afresh
        return {"batches": served}

    def load_state_dict(self, state: dict[str, int]) -> None:
        batches = int(state.get("batches", 0))
        sampler, per_batch = self._epoch_sampler()
        sampler.skip = batches * per_batch
        self._pending_skip = batches


def check_sizes(num_train: int, num_val: int, num_test: int, **more: tuple[int, int]) -> None:
    """One-line errors for sample counts and sizes below their minimum: ``num_train`` / ``num_test``
    >= 1, ``num_val`` >= 0, and ``more`` as ``key=(value, minimum)``."""
    rules = {"num_train": (num_train, 1), "num_val": (num_val, 0), "num_test": (num_test, 1), **more}
    for key, (value, low) in rules.items():
        if int(value) < low:
            raise PosencError(f"data.{key}={value} is not valid: expected an int >= {low}")
    if "image_size" in more:
        check_fits_in_memory(int(more["image_size"][0]), int(num_train) + int(num_val) + int(num_test))


def check_fits_in_memory(image_size: int, num_images: int) -> None:
    """Refuse sizes this machine cannot hold: the images as uint8 plus one float image per pass
    (the least any task allocates), against the memory available now."""
    needed = num_images * 3 * image_size**2 + 3 * image_size**2 * 4
    check_memory("data.image_size", image_size, f"{num_images} images of {image_size} px", needed, "fewer images")


def check_memory(key: str, value: object, what: str, needed: int, instead: str) -> None:
    """Refuse ``key=value`` when ``what`` needs ``needed`` bytes and this machine has fewer available
    now: one line naming both and what to change (a smaller ``key``, or ``instead``)."""
    available = available_memory()
    if available is not None and needed > available:
        raise PosencError(
            f"{key}={value} is not valid: {what} need {needed / 2**30:.1f} GiB, this machine has "
            f"{available / 2**30:.1f} GiB available; valid: a smaller {key} or {instead}"
        )


class SeededDataModule(L.LightningDataModule):
    """What every posenc datamodule shares: seeded, resumable shuffling (:class:`EpochShuffleSampler`)
    and loaders over ``train_set`` / ``val_set`` (optional, the held-out set the convergence flag
    watches) / ``test_sets`` (name -> dataset, one test loader each); and the run contract's sizes.
    Subclasses take their own arguments and pass these on as ``**kwargs`` (the config schema and
    validator follow the chain, posenc.config.signatures); the values a config uses are its YAML's.
    Every datamodule reads its images from a ``source``, one of its class's ``SOURCES`` (None: the
    first); a subclass states its sources as its own ``source`` parameter's ``Literal``."""

    SOURCES: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        source: str | None = None,
        num_train: Annotated[int, Rule(ge=1)] = 256,
        num_val: Annotated[int, Rule(ge=0)] = 32,
        num_test: Annotated[int, Rule(ge=1)] = 32,
        image_size: ImageSize = 64,
        batch_size: Annotated[int, Rule(ge=1)] = 32,
        num_workers: Annotated[int, Rule(ge=0)] = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.source = self.SOURCES[0] if source is None else source
        check_choice("data.source", self.source, self.SOURCES)
        self.num_train, self.num_val, self.num_test = int(num_train), int(num_val), int(num_test)
        self.image_size = int(image_size)
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_sets: dict[str, Dataset] = {}

    @property
    def test_names(self) -> list[str]:
        return list(self.test_sets)

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        options: dict[str, Any] = {
            "num_workers": self.num_workers,
            "persistent_workers": self.num_workers > 0,
            "generator": loader_generator(self.seed),
        }
        if shuffle:
            size = len(cast(Sized, dataset))  # torch's Dataset declares no __len__; every dataset here has one
            sampler = EpochShuffleSampler(size, self.seed, tag_epoch=getattr(dataset, "per_epoch", False))
            return ResumableLoader(dataset, batch_size=self.batch_size, sampler=sampler, **options)
        return DataLoader(dataset, batch_size=self.batch_size, **options)

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None, "setup('fit') was not called"
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        return [] if self.val_set is None else self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> list[DataLoader]:
        return [self._loader(self.test_sets[n], shuffle=False) for n in self.test_names]


class PositionDataModule(SeededDataModule):
    """PosENet's images: training images from ``source`` (``natural``: the bundled photos; ``folder``:
    ``train_dir``, e.g. DUTS-TR), test sets ``test_inputs`` (natural images from the bundled photos or
    ``test_dir``, e.g. PASCAL-S, and the synthetic black / white / noise inputs), optionally framed on
    a canvas."""

    SOURCES = SOURCES

    def __init__(
        self,
        source: PositionSource = "natural",
        train_dir: str | None = None,
        test_dir: str | None = None,
        test_inputs: Annotated[
            Sequence[TestInput], Rule(min_items=1, why_items="a run with no test set measures nothing")
        ] = TEST_INPUTS,
        synthetic_source: SyntheticSource = "generated",
        min_scale: Annotated[float, Rule(gt=0, le=1)] = 0.3,
        canvas: dict[str, Any] | CanvasFrame | None = None,
        mirror: MirrorMode = "both",
        image_size: ImageSize = 224,
        **kwargs: Any,
    ) -> None:
        """The image sources and the canvas frame; sizes and loader options: :class:`SeededDataModule`.
        ``mirror``: which photos are mirrored so their content cannot carry position (posenc.data.mirror):
        ``train`` flips each training (and held-out) image at random, ``test`` shows each natural test image
        with its three mirrors (one unit), ``both`` (the default, docs/reference.md), ``none`` (the paper)."""
        super().__init__(source=source, image_size=image_size, **kwargs)
        num_train, num_val, num_test, batch_size = self.num_train, self.num_val, self.num_test, self.batch_size
        frame = canvas if isinstance(canvas, CanvasFrame) else CanvasFrame(**dict(canvas or {}))
        check_frame(int(image_size), frame.margin)
        if not list(test_inputs):
            raise PosencError(
                f"data.test_inputs=[] is not valid: a run with no test set measures nothing; valid: "
                f"any of {', '.join(TEST_INPUTS)}"
            )
        for name in test_inputs:
            check_choice("data.test_inputs entry", name, TEST_INPUTS)
        for key, given in (("train_dir", train_dir), ("test_dir", test_dir)):
            if given and source != "folder":
                raise PosencError(
                    f"data.{key}={given} is not valid with data.source={source}: only data=folder reads "
                    f"image folders; valid: data=folder data.{key}=<dir>, or leave data.{key} unset"
                )
        check_sizes(num_train, num_val, num_test, image_size=(image_size, 8), batch_size=(batch_size, 1))
        if source == "folder" and not train_dir:
            raise PosencError("data=folder needs data.train_dir=<DUTS-TR root or image folder>")
        if source == "folder" and "natural" in test_inputs and not test_dir:
            raise PosencError("data=folder needs data.test_dir=<PASCAL-S root or image folder>")
        self.train_dir, self.test_dir = train_dir, test_dir
        self.test_inputs = list(test_inputs)
        self.synthetic_source = synthetic_source
        self.min_scale = min_scale
        check_choice("data.mirror", mirror, MIRROR_MODES)
        self.mirror = mirror
        self.frame = frame if frame.margin else None
        self.train_features: torch.Tensor | FeatureFile | None = None
        self.val_features: torch.Tensor | None = None

    @property
    def test_names(self) -> list[str]:
        return list(self.test_inputs)

    def fingerprint(self) -> dict[str, Any]:
        """Everything that determines the training images (a feature-cache key)."""
        keys = ("source", "train_dir", "num_train", "image_size", "seed", "min_scale", "mirror")
        return {**{k: getattr(self, k) for k in keys}, "canvas": self.frame and (self.frame.fill, self.frame.margin)}

    def _images(self, name: str, train: bool, val: bool = False) -> torch.Tensor | Dataset:
        """``val``: held-out crops of the training photos (another seed), or, for a folder, another
        seeded subset of the training folder (it overlaps the training subset when that is most
        of the folder)."""
        size, seed = self.image_size, self.seed + (2 if val else 0 if train else 1)
        num = self.num_val if val else self.num_train if train else self.num_test
        if name in SYNTHETIC_INPUTS:
            num = 1 if name in CONSTANT_INPUTS or self.synthetic_source == "official" else num
            return synthetic_images(name, num, size, seed, source=self.synthetic_source)
        if self.source == "folder":
            root = self.train_dir if train else self.test_dir
            assert root is not None, "data=folder without its train_dir / test_dir (refused in __init__)"
            if val:  # at most the whole folder: a held-out check, not a request the user made
                num = min(num, len(ImageFolderDataset(root, size, seed=seed)))
            return ImageFolderDataset(root, size, num=num, seed=seed)
        photos = TRAIN_PHOTOS if train else TEST_PHOTOS
        return natural_crops(num, size, photos, seed=seed, min_scale=self.min_scale)

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and self.train_set is None:
            self.train_set = self._train_set(self._images("natural", train=True), self.seed)
            if self.num_val:
                self.val_set = self._train_set(self._images("natural", train=True, val=True), self.seed + 2)
        if stage in (None, "test") and not self.test_sets:
            self.test_sets = {n: self._test_set(n) for n in self.test_inputs}

    def _test_set(self, name: str) -> IndexedImages:
        """One test input's images; the natural crops with the photo each was cut from as its unit
        (crops of one photo are not independent: the test metrics' intervals resample photos)."""
        if name in SYNTHETIC_INPUTS:  # content-free (noise) or symmetric (black, white): nothing to mirror
            return IndexedImages(self._images(name, train=False), self.frame, self.seed + 1)
        if self.source == "folder":
            images: torch.Tensor | Dataset = self._images(name, train=False)
            units = torch.arange(len(cast(Sized, images)))
        else:
            images, units = natural_crops(
                self.num_test,
                self.image_size,
                TEST_PHOTOS,
                seed=self.seed + 1,
                min_scale=self.min_scale,
                return_labels=True,
            )
        if not mirrors_test(self.mirror):
            return IndexedImages(images, self.frame, self.seed + 1, units=None if self.source == "folder" else units)
        source, code = all_views(len(units))
        return IndexedImages(images, self.frame, self.seed + 1, units=units[source], views=(source, code))

    def _train_set(self, images: torch.Tensor | Dataset, seed: int) -> IndexedImages:
        """Training (or held-out) images, each flipped at random when ``mirror`` says so."""
        if not mirrors_train(self.mirror):
            return IndexedImages(images, self.frame, seed)
        num = len(cast(Sized, images))
        return IndexedImages(images, self.frame, seed, views=(torch.arange(num), random_codes(num, seed + 7)))

    def set_train_features(
        self, features: torch.Tensor | FeatureFile | None, val_features: torch.Tensor | None = None
    ) -> None:
        """Serve precomputed backbone features instead of images for training and validation
        (frozen backbone)."""
        self.train_features, self.val_features = features, val_features

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None, "setup('fit') was not called"
        if self.train_features is not None:
            features = IndexedFeatures(self.train_features)
            batches = EpochBatchSampler(EpochShuffleSampler(len(features), self.seed), self.batch_size, drop_last=False)
            return ResumableLoader(features, batch_size=None, sampler=batches, generator=loader_generator(self.seed))
        return super().train_dataloader()

    def val_dataloader(self) -> DataLoader | list:
        """The held-out training-distribution crops (``num_val``; none when 0), which the
        convergence flag watches (posenc.run.convergence)."""
        if self.val_set is None:
            return []
        if self.val_features is not None:
            features = IndexedFeatures(self.val_features)
            batches = BatchSampler(range(len(features)), self.batch_size, drop_last=False)
            return DataLoader(features, batch_size=None, sampler=batches, generator=loader_generator(self.seed))
        return super().val_dataloader()
