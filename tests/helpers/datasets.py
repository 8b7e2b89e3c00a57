"""Tiny fixture trees in the published layouts of CIFAR-10, DUTS, ECSSD, PASCAL-S and PASCAL
VOC 2012, with random but deterministic content (a helper module, not a test file).

Masks hold a known rectangle: rows and columns ``[size/4, 3*size/4)`` of each image (sizes
are multiples of 4), so after a nearest resize to ``S`` (a multiple of 4) it covers
``[S/4, 3*S/4)``. VOC masks also mark their bottom quarter rows 255 (void).
The first image of each CIFAR batch has constant planes R=10, G=20, B=30.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
PLANE_VALUES: tuple[int, int, int] = (10, 20, 30)
# (width, height) of the fixture photos, cycled: not square, not the target size.
SIZES: tuple[tuple[int, int], ...] = ((40, 32), (48, 24), (32, 40))


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(list(key))


def cifar_labels(batch: int, n: int) -> list[int]:
    """The labels of fixture batch ``batch`` (1..5 train, 0 test)."""
    return [(batch * 3 + i) % 10 for i in range(n)]


def write_pickle(path: Path, content: dict[bytes, object]) -> None:
    """Pickle ``content`` the way the published batches are (protocol 2, bytes keys)."""
    with path.open("wb") as f:
        pickle.dump(content, f, protocol=2)


def _cifar_batch(batch: int, n: int) -> dict[bytes, object]:
    data = _rng(1, batch).integers(0, 256, size=(n, 3072), dtype=np.uint8)
    data[0] = np.repeat(np.array(PLANE_VALUES, dtype=np.uint8), 1024)
    return {
        b"batch_label": f"batch {batch}".encode(),
        b"labels": cifar_labels(batch, n),
        b"data": data,
        b"filenames": [f"img_{batch}_{i}.png".encode() for i in range(n)],
    }


def make_cifar10_tree(root: Path, n_per_batch: int = 4) -> Path:
    """``root/cifar-10-batches-py`` with ``data_batch_1..5``, ``test_batch`` and
    ``batches.meta``; returns ``root``."""
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for batch in range(1, 6):
        write_pickle(folder / f"data_batch_{batch}", _cifar_batch(batch, n_per_batch))
    write_pickle(folder / "test_batch", _cifar_batch(0, n_per_batch))
    names = [c.encode() for c in CIFAR_CLASSES]
    meta = {b"label_names": names, b"num_cases_per_batch": n_per_batch, b"num_vis": 3072}
    write_pickle(folder / "batches.meta", meta)
    return Path(root)


def box(width: int, height: int) -> np.ndarray:
    """Boolean HxW mask of the known rectangle (the middle half in both directions)."""
    inside = np.zeros((height, width), dtype=bool)
    inside[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = True
    return inside


def _photo(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8))


def _saliency_mask(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Grey levels 128..255 inside the box, 0..127 outside: binarises to the box."""
    grey = rng.integers(0, 128, size=(height, width))
    grey[box(width, height)] += 128
    return grey.astype(np.uint8)


def _saliency_pairs(image_dir: Path, mask_dir: Path, n: int, seed: int, prefix: str, rgb_masks: bool = False) -> None:
    image_dir.mkdir(parents=True, exist_ok=True)
    mask_dir.mkdir(parents=True, exist_ok=True)
    rng = _rng(2, seed)
    for i in range(n):
        width, height = SIZES[i % len(SIZES)]
        stem = f"{prefix}{i:04d}"
        _photo(rng, width, height).save(image_dir / f"{stem}.jpg", quality=95)
        mask = Image.fromarray(_saliency_mask(rng, width, height))
        (mask.convert("RGB") if rgb_masks else mask).save(mask_dir / f"{stem}.png")


def make_duts_tree(root: Path, n: int = 3) -> Path:
    """``root/DUTS-TR/DUTS-TR-{Image,Mask}`` and ``root/DUTS-TE/DUTS-TE-{Image,Mask}``
    (``n`` pairs each); returns ``root``."""
    root = Path(root)
    for seed, part in ((1, "TR"), (2, "TE")):
        base = root / f"DUTS-{part}"
        _saliency_pairs(base / f"DUTS-{part}-Image", base / f"DUTS-{part}-Mask", n, seed, f"ILSVRC2012_{part}_")
    return root


def make_ecssd_tree(root: Path, n: int = 3) -> Path:
    """``root/images`` and ``root/ground_truth_mask``; returns ``root``."""
    root = Path(root)
    _saliency_pairs(root / "images", root / "ground_truth_mask", n, 3, "")
    return root


def make_pascal_s_tree(root: Path, n: int = 3) -> Path:
    """``root/datasets/imgs/pascal`` and ``root/datasets/masks/pascal`` (masks saved as grey
    RGB PNGs); returns ``root``."""
    root = Path(root)
    pairs = (root / "datasets/imgs/pascal", root / "datasets/masks/pascal")
    _saliency_pairs(*pairs, n, 4, "", rgb_masks=True)
    return root


def voc_palette() -> list[int]:
    """The 256-colour VOC palette: bits of the index spread over R, G and B."""
    palette: list[int] = []
    for index in range(256):
        rgb, value = [0, 0, 0], index
        for shift in range(7, -1, -1):
            for channel in range(3):
                rgb[channel] |= ((value >> channel) & 1) << shift
            value >>= 3
        palette.extend(rgb)
    return palette


def voc_class(index: int) -> int:
    """The class of fixture sample ``index``'s rectangle (1..20)."""
    return 1 + index % 20


def voc_mask(width: int, height: int, label: int) -> np.ndarray:
    """0 background, ``label`` in the box, 255 (void) in the bottom quarter rows."""
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[box(width, height)] = label
    mask[3 * height // 4 :] = 255
    return mask


def make_voc_tree(root: Path, n_train: int = 3, n_val: int = 2) -> Path:
    """``root/VOCdevkit/VOC2012`` with ``JPEGImages``, ``SegmentationClass`` (palette PNGs)
    and ``ImageSets/Segmentation/{train,val}.txt``; returns ``root``."""
    base = Path(root) / "VOCdevkit" / "VOC2012"
    sets = base / "ImageSets" / "Segmentation"
    for sub in (base / "JPEGImages", base / "SegmentationClass", sets):
        sub.mkdir(parents=True, exist_ok=True)
    rng, palette = _rng(5), voc_palette()
    ids = [f"2007_{i:06d}" for i in range(n_train + n_val)]
    for i, name in enumerate(ids):
        width, height = SIZES[i % len(SIZES)]
        _photo(rng, width, height).save(base / "JPEGImages" / f"{name}.jpg", quality=95)
        labels = voc_mask(width, height, voc_class(i))
        mask = Image.frombytes("P", (width, height), labels.tobytes())
        mask.putpalette(palette)
        mask.save(base / "SegmentationClass" / f"{name}.png")
    (sets / "train.txt").write_text("".join(f"{x}\n" for x in ids[:n_train]))
    (sets / "val.txt").write_text("".join(f"{x}\n" for x in ids[n_train:]))
    return Path(root)
