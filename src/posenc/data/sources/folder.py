"""Folders of images such as DUTS-TR, DUTS-TE and PASCAL-S, in their published layouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from posenc.data.sources.images import read_rgb
from posenc.errors import PosencError

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp")

# Image sub-folders of known dataset roots, searched in this order (masks live elsewhere).
KNOWN_IMAGE_SUBDIRS: tuple[str, ...] = (
    "DUTS-TR-Image",
    "DUTS-TE-Image",
    "datasets/imgs/pascal",
    "Imgs",
    "images",
)


def _image_files(folder: Path) -> list[Path]:
    """Sorted image files directly inside ``folder`` (hidden files skipped)."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()
    )


def find_image_dir(root: str | Path) -> Path:
    """The folder holding the images: a known dataset sub-folder of ``root``, else ``root``."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise PosencError(f"data dir not found: {root}")
    for sub in KNOWN_IMAGE_SUBDIRS:
        candidate = root / sub
        if candidate.is_dir() and _image_files(candidate):
            return candidate
    if _image_files(root):
        return root
    exts = ", ".join(IMAGE_EXTENSIONS)
    subs = ", ".join(KNOWN_IMAGE_SUBDIRS)
    raise PosencError(f"no images ({exts}) in {root} nor in its sub-folders {subs}")


def list_images(root: str | Path) -> list[Path]:
    """Sorted image files (non-recursive) in :func:`find_image_dir` of ``root``."""
    return _image_files(find_image_dir(root))


def read_image(path: Path, image_size: int) -> torch.Tensor:
    """One image file as uint8 [3, S, S] RGB, resized bilinearly to ``image_size``."""
    rgb = read_rgb(path, size=image_size)
    return torch.from_numpy(rgb).permute(2, 0, 1).contiguous()


class ImageFolderDataset(Dataset[torch.Tensor]):
    """Images of a folder (or dataset root) as uint8 [3, S, S] tensors."""

    def __init__(self, root: str | Path, image_size: int, num: int | None = None, seed: int = 0) -> None:
        if image_size < 1:
            raise PosencError(f"image_size must be >= 1, got {image_size}")
        paths = list_images(root)
        if num is not None:
            if num < 0:
                raise PosencError(f"num must be >= 0, got {num}")
            if num > len(paths):
                raise PosencError(f"asked for {num} images but {find_image_dir(root)} has only {len(paths)}")
            if num < len(paths):
                rng = np.random.default_rng(seed)
                chosen = rng.choice(len(paths), size=num, replace=False)
                paths = [paths[i] for i in sorted(chosen.tolist())]
        self.paths: list[Path] = paths
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return read_image(self.paths[index], self.image_size)


def load_folder(root: str | Path, image_size: int, num: int | None = None, seed: int = 0) -> torch.Tensor:
    """All (or a seeded subset of ``num``) images of ``root`` stacked to uint8 [N, 3, S, S]."""
    dataset = ImageFolderDataset(root, image_size, num=num, seed=seed)
    out = torch.empty((len(dataset), 3, image_size, image_size), dtype=torch.uint8)
    for i in range(len(dataset)):
        out[i] = dataset[i]
    return out
