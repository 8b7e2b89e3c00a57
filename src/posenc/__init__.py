"""posenc: where do CNNs get absolute position from, and what does it cost them?

From Python (docs/api.md): ``posenc.atlas(model, taps=[...], paddings=[...], seeds=3)`` measures any
``nn.Module``; ``posenc.atlas_figure``, ``posenc.convert_padding``, ``posenc.posenet_readout`` and ``posenc.ppp``
are the pieces a researcher reaches for alone. They load on first use (``import posenc`` stays light: the
sweep reports never import torch)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
API = (
    "AtlasTable",
    "atlas",
    "atlas_figure",
    "convert_padding",
    "equivariance",
    "posenet_readout",
    "ppp",
    "uneven_padding",
)

if TYPE_CHECKING:
    from posenc.api import (  # noqa: F401
        AtlasTable,
        atlas,
        atlas_figure,
        convert_padding,
        equivariance,
        posenet_readout,
        ppp,
        uneven_padding,
    )


def __getattr__(name: str) -> Any:
    """The notebook API (:mod:`posenc.api`), imported when first asked for."""
    if name in API:
        from posenc import api

        return getattr(api, name)
    raise AttributeError(f"module 'posenc' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *API])
