"""Images with per-pixel labels for ``task=semseg`` / ``task=saliency`` / ``task=location_seg``
(Islam et al., IJCV 2024; PosENet Tables 5-6: segmentation and saliency trained with each padding).

Sources: ``shapes`` (embedded: textured shapes of five classes on photo crops, exact masks,
objects may cross the border; :mod:`posenc.data.sources.shapes`), ``voc`` (PASCAL VOC 2012, 21 classes,
255 = void), and the saliency sets ``duts`` (DUTS-TR to train, DUTS-TE to test), ``ecssd`` and
``pascal_s`` (:mod:`posenc.data.sources.segmentation_sets`). Every sample is ``{"image", "mask"}``: the
mask holds class ids (0 = background; saliency sets: 0/1; 255 = ignore). ``test_source`` tests on
another set than the one trained on (e.g. train ``duts``, test ``ecssd``).

The independent unit the test metrics' intervals resample (posenc.metrics.intervals): a shapes scene
serves ``"unit"``, the bundled photo its background is cut from (scenes on one photo are not
independent); VOC and the saliency sets serve none, each image (its ``"index"``) being a photo of its own.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from torch.utils.data import Dataset

from posenc.config.rules import Rule
from posenc.data.datamodule import IndexedImages, SeededDataModule, TensorDictDataset, check_sizes
from posenc.data.sources.segmentation_sets import SALIENCY_SETS, SaliencySet, saliency_dataset, voc_segmentation
from posenc.data.sources.shapes import (
    NUM_SEMANTIC_CLASSES,
    SceneBackgrounds,
    SceneLayout,
    check_layout,
    shape_scenes,
)
from posenc.errors import PosencError, check_choice

SegmentationSource = Literal["shapes", "voc", SaliencySet]
SEGMENTATION_SOURCES: tuple[str, ...] = get_args(SegmentationSource)
NUM_CLASSES = {"shapes": NUM_SEMANTIC_CLASSES, "voc": 21, **{name: 2 for name in SALIENCY_SETS}}
TEST_ONLY = ("ecssd", "pascal_s")  # published as test sets: no training split


class MaskedImages(Dataset):
    """A dataset of ``{"image": uint8, "mask"}`` served with the image in [0, 1]."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> dict:
        sample = dict(self.dataset[i])
        sample["image"] = IndexedImages.to_float(sample["image"])
        sample["index"] = i
        return sample


class SegmentationDataModule(SeededDataModule):
    """Train / held-out / test images with per-pixel labels from ``source`` (see module doc)."""

    SOURCES = SEGMENTATION_SOURCES

    def __init__(
        self,
        source: SegmentationSource = "shapes",
        test_source: SegmentationSource | None = None,
        data_dir: str | None = None,
        test_dir: str | None = None,
        max_objects: Annotated[int, Rule(ge=1)] = 3,
        layout: SceneLayout = "random",  # shapes only
        backgrounds: SceneBackgrounds = "shared",  # shapes only: split holds unseen test photos out
        **kwargs: Any,
    ) -> None:
        """The sources and their folders; sizes and loader options: :class:`SeededDataModule`."""
        super().__init__(source=source, **kwargs)
        num_train, num_val, num_test, image_size = self.num_train, self.num_val, self.num_test, self.image_size
        batch_size = self.batch_size
        test_source = test_source or source
        check_choice("data.test_source", test_source, SEGMENTATION_SOURCES)
        if source in TEST_ONLY:
            raise PosencError(
                f"data.source={source} is a test set without a training split; "
                f"valid: shapes, voc, duts (and data.test_source={source})"
            )
        if NUM_CLASSES[source] != NUM_CLASSES[test_source]:
            raise PosencError(f"data.test_source={test_source} has other classes than data.source={source}")
        check_sizes(
            num_train,
            num_val,
            num_test,
            image_size=(image_size, 8),
            batch_size=(batch_size, 1),
            max_objects=(max_objects, 1),
        )
        for name, folder in ((source, data_dir), (test_source, test_dir or data_dir)):
            if name != "shapes" and not folder:
                raise PosencError(f"data.source={name} needs data.data_dir=<its dataset root>")
        self.test_source = test_source
        self.data_dir, self.test_dir = data_dir, test_dir or data_dir
        self.max_objects = int(max_objects)
        check_layout(layout, self.max_objects)
        self.layout, self.backgrounds = layout, backgrounds
        self.num_classes = NUM_CLASSES[source]
        self.ignore_index = 255
        for name, folder, split in ((source, self.data_dir, "train"), (test_source, self.test_dir, "test")):
            if name != "shapes":  # list the files now: a missing one is named before the Trainer starts
                self._available(name, folder, split, self.seed)

    def _split(self, name: str, folder: str | None, split: str, num: int, seed: int) -> Dataset:
        if name == "shapes":
            scenes = shape_scenes(
                num,
                self.image_size,
                seed,
                train=split == "train",
                max_objects=self.max_objects,
                layout=self.layout,
                backgrounds=self.backgrounds,
            )
            return TensorDictDataset({"image": scenes["image"], "mask": scenes["semantic"], "unit": scenes["photo"]})
        assert folder is not None, name  # __init__ refuses a real source without data.data_dir
        if name == "voc":
            return MaskedImages(voc_segmentation(folder, split, self.image_size, num=num, seed=seed))
        return MaskedImages(saliency_dataset(name, folder, split, self.image_size, num=num, seed=seed))

    def _available(self, name: str, folder: str | None, split: str, seed: int) -> int:
        """How many images a real set has (a held-out check asks for at most that many)."""
        return len(self._split(name, folder, split, None, seed))  # type: ignore[arg-type]

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set = self._split(self.source, self.data_dir, "train", self.num_train, self.seed)
            if self.num_val:
                num = self.num_val
                if self.source != "shapes":  # another seeded subset of the training split, at most all of it
                    num = min(num, self._available(self.source, self.data_dir, "train", self.seed + 2))
                self.val_set = self._split(self.source, self.data_dir, "train", num, self.seed + 2)
        if not self.test_sets:
            test = self._split(self.test_source, self.test_dir, "test", self.num_test, self.seed + 1)
            self.test_sets = {self.test_source: test}
