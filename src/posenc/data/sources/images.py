"""Reading image files: one place for decoding and its one-line error."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

from posenc.errors import PosencError

READ_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def read_rgb(source: str | Path | BinaryIO, name: str | None = None, size: int | None = None) -> np.ndarray:
    """An image as HxWx3 uint8 RGB (grayscale repeated, alpha dropped), bilinearly resized to
    ``size x size`` when given. An unreadable file raises ``PosencError`` naming it."""
    try:
        with Image.open(source) as im:
            rgb = im.convert("RGB")
            if size is not None:
                rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
            return np.array(rgb, dtype=np.uint8)
    except READ_ERRORS as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise PosencError(f"cannot read image {name or source}: {reason}") from None
