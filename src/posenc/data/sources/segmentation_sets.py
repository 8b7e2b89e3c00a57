"""Image + mask datasets in their published layouts: saliency (DUTS, ECSSD, PASCAL-S) and
PASCAL VOC 2012 semantic segmentation.

Every sample is ``{"image": uint8 [3, S, S], "mask": int64 [S, S]}``: the image resized
bilinearly, the mask with nearest neighbour (so its values stay labels). Saliency masks are
binarised (grey > 127 is 1); VOC masks keep their class indices 0..20 and 255 (void).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets import VOCSegmentation

from posenc.data.sources.folder import IMAGE_EXTENSIONS, _image_files, read_image
from posenc.data.sources.images import READ_ERRORS
from posenc.errors import PosencError, check_choice

Sample = dict[str, torch.Tensor]

SaliencySet = Literal["duts", "ecssd", "pascal_s"]
SALIENCY_SETS: tuple[str, ...] = get_args(SaliencySet)
SPLITS: tuple[str, ...] = ("train", "test")
SEGMENTATION_SETS: tuple[str, ...] = ("voc",)

# name -> split -> (image sub-folder, mask sub-folder), relative to the dataset's data_dir.
# ECSSD and PASCAL-S are test sets; both splits name the same folders.
SALIENCY_LAYOUTS: dict[str, dict[str, tuple[str, str]]] = {
    "duts": {
        "train": ("DUTS-TR/DUTS-TR-Image", "DUTS-TR/DUTS-TR-Mask"),
        "test": ("DUTS-TE/DUTS-TE-Image", "DUTS-TE/DUTS-TE-Mask"),
    },
    "ecssd": {
        "train": ("images", "ground_truth_mask"),
        "test": ("images", "ground_truth_mask"),
    },
    "pascal_s": {
        "train": ("datasets/imgs/pascal", "datasets/masks/pascal"),
        "test": ("datasets/imgs/pascal", "datasets/masks/pascal"),
    },
}

# How each set is published: what to extract into data_dir.
_SALIENCY_ARCHIVES: dict[str, dict[str, str]] = {
    "duts": {"train": "the extracted DUTS-TR.zip", "test": "the extracted DUTS-TE.zip"},
    "ecssd": dict.fromkeys(SPLITS, "the extracted images.zip and ground_truth_mask.zip"),
    "pascal_s": dict.fromkeys(SPLITS, "the extracted PASCAL-S archive (its datasets folder)"),
}
_SALIENCY_TITLES: dict[str, str] = {"duts": "DUTS", "ecssd": "ECSSD", "pascal_s": "PASCAL-S"}

VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
VOC_IGNORE_INDEX = 255
VOC_BASE = "VOCdevkit/VOC2012"
VOC_IMAGE_SETS: dict[str, str] = {"train": "train", "test": "val"}
_VOC_ARCHIVE = "the extracted VOCtrainval_11-May-2012.tar (its VOCdevkit folder)"


def check_image_size(image_size: int) -> None:
    """Refuse a side length below one pixel."""
    if image_size < 1:
        raise PosencError(f"image_size must be >= 1, got {image_size}")


def choose_subset(available: int, num: int | None, seed: int, where: object) -> list[int]:
    """Sorted indices of a seeded subset of ``num`` of ``available`` items (all when ``num``
    is None); ``where`` names the source in the error when there are too few."""
    if num is None:
        return list(range(available))
    if num < 0:
        raise PosencError(f"num must be >= 0, got {num}")
    if num > available:
        raise PosencError(f"asked for {num} samples but {where} has only {available}")
    chosen = np.random.default_rng(seed).choice(available, size=num, replace=False)
    return sorted(int(i) for i in chosen)


def _require_dir(path: Path, what: str, hint: str = "") -> None:
    if not path.is_dir():
        raise PosencError(f"{what} not found: {path}" + (f"; {hint}" if hint else ""))


def find_mask(image: Path, masks: dict[str, list[Path]], mask_dir: Path) -> Path:
    """The mask sharing ``image``'s stem: the ``.png`` one if present, else any image file."""
    found = masks.get(image.stem, [])
    for path in found:
        if path.suffix.lower() == ".png":
            return path
    if found:
        return found[0]
    expected = mask_dir / f"{image.stem}.png"
    raise PosencError(f"no mask for image {image}: expected {expected}")


def pair_masks(images: Sequence[Path], mask_dir: Path) -> list[Path]:
    """The mask of each image, matched by stem inside ``mask_dir``."""
    masks: dict[str, list[Path]] = {}
    for path in _image_files(mask_dir):
        masks.setdefault(path.stem, []).append(path)
    return [find_mask(image, masks, mask_dir) for image in images]


def read_mask(path: Path, image_size: int, binary: bool) -> torch.Tensor:
    """A mask file as int64 [S, S], resized with nearest neighbour: 0/1 (grey > 127) when
    ``binary``, else the stored values (palette indices of a ``P`` PNG, or grey levels)."""
    try:
        with Image.open(path) as im:
            if binary or im.mode not in ("L", "P"):
                im = im.convert("L")
            resized = im.resize((image_size, image_size), Image.Resampling.NEAREST)
            values = np.array(resized)
    except READ_ERRORS as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise PosencError(f"cannot read mask {path}: {reason}") from None
    if binary:
        values = values > 127
    return torch.from_numpy(values.astype(np.int64))


class MaskFolderDataset(Dataset[Sample]):
    """Images of ``image_dir`` with same-stem masks in ``mask_dir`` (``num``: a seeded
    subset), as ``{"image": uint8 [3, S, S], "mask": int64 [S, S]}``."""

    def __init__(
        self,
        image_dir: str | Path,
        mask_dir: str | Path,
        image_size: int,
        num: int | None = None,
        seed: int = 0,
        binary: bool = True,
    ) -> None:
        check_image_size(image_size)
        image_dir, mask_dir = Path(image_dir).expanduser(), Path(mask_dir).expanduser()
        _require_dir(image_dir, "image folder")
        _require_dir(mask_dir, "mask folder")
        images = _image_files(image_dir)
        if not images:
            raise PosencError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {image_dir}")
        masks = pair_masks(images, mask_dir)
        keep = choose_subset(len(images), num, seed, image_dir)
        self.images: list[Path] = [images[i] for i in keep]
        self.masks: list[Path] = [masks[i] for i in keep]
        self.image_size, self.binary = image_size, binary

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Sample:
        return {
            "image": read_image(self.images[index], self.image_size),
            "mask": read_mask(self.masks[index], self.image_size, self.binary),
        }


def saliency_dirs(name: str, data_dir: str | Path, split: str) -> tuple[Path, Path]:
    """The image and mask folders of saliency set ``name``'s ``split`` under ``data_dir``
    (which may also be the split's own folder, e.g. ``DUTS-TR``); missing ones raise."""
    check_choice("saliency dataset", name, SALIENCY_SETS)
    check_choice("split", split, SPLITS)
    image_sub, mask_sub = SALIENCY_LAYOUTS[name][split]
    root = Path(data_dir).expanduser()
    first = image_sub.split("/")[0]
    if root.name == first and not (root / image_sub).is_dir():
        root = root.parent  # data_dir is the split's folder itself
    title, archive = _SALIENCY_TITLES[name], _SALIENCY_ARCHIVES[name][split]
    hint = f"put {archive} into {root}"
    _require_dir(root, f"{title} data dir", hint)
    image_dir, mask_dir = root / image_sub, root / mask_sub
    _require_dir(image_dir, f"{title} image folder", hint)
    _require_dir(mask_dir, f"{title} mask folder", hint)
    return image_dir, mask_dir


def saliency_dataset(name: str, data_dir: str | Path, split: str, image_size: int, **subset: Any) -> MaskFolderDataset:
    """DUTS, ECSSD or PASCAL-S (``name``) in its published layout under ``data_dir``, with binary
    masks; ``subset``: :class:`MaskFolderDataset`'s ``num`` and ``seed`` (a seeded subset)."""
    image_dir, mask_dir = saliency_dirs(name, data_dir, split)
    return MaskFolderDataset(image_dir, mask_dir, image_size, binary=True, **subset)


def voc_root(data_dir: str | Path) -> Path:
    """The folder holding ``VOCdevkit``; ``data_dir`` may also be ``VOCdevkit`` or
    ``VOCdevkit/VOC2012`` itself."""
    root = Path(data_dir).expanduser()
    if (root / VOC_BASE).is_dir():
        return root
    if root.name == "VOC2012" and root.parent.name == "VOCdevkit":
        return root.parent.parent
    if root.name == "VOCdevkit" and (root / "VOC2012").is_dir():
        return root.parent
    return root


class _ResizePair:
    """torchvision ``transforms``: (PIL image, PIL mask) -> (uint8 [3, S, S], int64 [S, S])."""

    def __init__(self, image_size: int) -> None:
        self.size = (image_size, image_size)

    def __call__(self, image: Image.Image, mask: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
        if mask.mode not in ("P", "L"):
            raise PosencError(f"is mode {mask.mode}, expected a palette (P) PNG of class indices")
        rgb = np.array(image.convert("RGB").resize(self.size, Image.Resampling.BILINEAR))
        labels = np.array(mask.resize(self.size, Image.Resampling.NEAREST))
        return (
            torch.from_numpy(rgb).permute(2, 0, 1).contiguous(),
            torch.from_numpy(labels.astype(np.int64)),
        )


def open_voc(root: Path, image_set: str, image_size: int) -> VOCSegmentation:
    """torchvision's ``VOCSegmentation`` (no download), its errors turned into one line."""
    hint = f"put {_VOC_ARCHIVE} into {root}"
    try:
        voc = VOCSegmentation(
            root=str(root), year="2012", image_set=image_set, download=False,
            transforms=_ResizePair(image_size),
        )  # fmt: skip
    except RuntimeError:  # raised when VOCdevkit/VOC2012 is not a folder
        raise PosencError(f"PASCAL VOC 2012 folder not found: {root / VOC_BASE}; {hint}") from None
    except FileNotFoundError as exc:  # the split's list under ImageSets/Segmentation
        raise PosencError(f"PASCAL VOC split file not found: {exc.filename}; {hint}") from None
    except OSError as exc:
        raise PosencError(f"cannot read {exc.filename or root}: {exc.strerror or exc}") from None
    for path in (*voc.images, *voc.masks):
        if not Path(path).is_file():
            split_file = root / VOC_BASE / "ImageSets" / "Segmentation" / f"{image_set}.txt"
            raise PosencError(f"PASCAL VOC file not found: {path} (listed in {split_file}); {hint}")
    return voc


class VOCSegmentationSet(Dataset[Sample]):
    """PASCAL VOC 2012 segmentation (``num``: a seeded subset) as ``{"image": uint8
    [3, S, S], "mask": int64 [S, S]}``; mask values are class indices 0..20 and 255 (void)."""

    def __init__(
        self,
        data_dir: str | Path,
        split: str,
        image_size: int,
        num: int | None = None,
        seed: int = 0,
    ) -> None:
        check_choice("split", split, SPLITS)
        check_image_size(image_size)
        root = voc_root(data_dir)
        image_set = VOC_IMAGE_SETS[split]
        self.voc = open_voc(root, image_set, image_size)
        split_file = root / VOC_BASE / "ImageSets" / "Segmentation" / f"{image_set}.txt"
        if not self.voc.images:
            raise PosencError(f"no PASCAL VOC samples listed in {split_file}")
        self.indices = choose_subset(len(self.voc.images), num, seed, split_file)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Sample:
        k = self.indices[index]
        try:
            image, mask = self.voc[k]
        except PosencError as exc:
            raise PosencError(f"PASCAL VOC mask {self.voc.masks[k]} {exc}") from None
        except READ_ERRORS as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            pair = f"{self.voc.images[k]} / {self.voc.masks[k]}"
            raise PosencError(f"cannot read PASCAL VOC sample {pair}: {reason}") from None
        return {"image": image, "mask": mask}


def voc_segmentation(data_dir: str | Path, split: str, image_size: int, **subset: Any) -> VOCSegmentationSet:
    """PASCAL VOC 2012 in torchvision's layout under ``data_dir`` (``VOCdevkit/VOC2012``):
    split ``train`` is ``train.txt``, ``test`` is ``val.txt``; ``subset``: ``num`` and ``seed``."""
    return VOCSegmentationSet(data_dir, split, image_size, **subset)
