"""Your own ``nn.Module`` as a posenc backbone: ``backbone=module backbone.target=<dotted path to a
factory returning an nn.Module> backbone.taps=[<module names>]``.

The taps are read with torchvision's ``create_feature_extractor`` (FX), so the model needs no
changes; their channels are measured once on torch's meta device. The padding scheme is swapped
by :func:`posenc.models.padding.convert_padding` (so the same rules hold as for every backbone: classes
with their own computation keep it, convs that pad inside ``forward`` are refused). ``weights``:
null, a state-dict file of the model (loaded with ``weights_only=True``), or a posenc run of it.
"""

from __future__ import annotations

import importlib
import inspect
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import torch
import torch.nn as nn
from torchvision.models.feature_extraction import create_feature_extractor

from posenc.config.rules import Rule
from posenc.errors import PosencError, first_line, invalid_value
from posenc.io import safe_load
from posenc.models.backbones.base import BackboneOptions, ExtractorBackbone, check_taps, takes_backbone_options
from posenc.models.padding import PaddingSpec, meta_copy

PROBE_SIZE = 224  # px: the meta-device input the taps' channels are read from


def import_factory(target: str) -> Any:
    """The callable at ``target`` (``package.module.name``), or one line naming what is missing."""
    module_name, _, attr = target.rpartition(".")
    if not module_name:
        raise PosencError(f"backbone.target={target!r} is not valid: expected a dotted path, package.module.factory")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise PosencError(f"backbone.target={target!r} is not valid: cannot import {module_name} ({exc})") from exc
    if not callable(getattr(module, attr, None)):
        raise PosencError(f"backbone.target={target!r} is not valid: {module_name} has no callable {attr!r}")
    return getattr(module, attr)


def _signature(factory: Any) -> inspect.Signature | None:
    try:
        return inspect.signature(factory).replace(return_annotation=inspect.Signature.empty)
    except (TypeError, ValueError):  # a builtin without one
        return None


def call_factory(target: str, factory: Any, kwargs: Any) -> nn.Module:
    """``factory(**kwargs)``, the user's model; one line naming ``backbone.kwargs`` and the factory's
    signature when the arguments do not fit it (not a mapping, an unknown or missing argument, a
    value the factory refuses), and naming ``backbone.target`` when it returns no ``nn.Module``."""
    signature = _signature(factory)
    takes = f"{target}{signature}" if signature is not None else target
    if kwargs is not None and not isinstance(kwargs, Mapping):
        expected = f"expected a mapping of keyword arguments of {takes} (e.g. {{name: value}}) or null"
        raise invalid_value("backbone.kwargs", kwargs, expected)
    arguments = {str(k): v for k, v in (kwargs or {}).items()}
    shown = arguments or None
    if signature is not None:
        try:
            signature.bind(**arguments)
        except TypeError as exc:
            raise invalid_value("backbone.kwargs", shown, f"{exc}; valid: the keyword arguments of {takes}") from None
    try:
        model = factory(**arguments)
    except (TypeError, ValueError, RuntimeError) as exc:
        if not arguments and not isinstance(exc, TypeError):
            raise  # the factory's own failure at its defaults: a bug of that code, with its traceback
        raise invalid_value(
            "backbone.kwargs", shown, f"{takes} refused them: {first_line(exc)}; valid: arguments it accepts"
        ) from exc
    if not isinstance(model, nn.Module):
        raise PosencError(f"backbone.target={target} returned a {type(model).__name__}, not an nn.Module")
    return model


@contextmanager
def _warnings_only_when_built() -> Iterator[None]:
    """Hold back the warnings of building the user's model (torch warns about a conv of zero channels
    before it fails to run): shown when the build succeeds, dropped with the one-line error when not."""
    with warnings.catch_warnings(record=True) as caught:
        yield
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


@takes_backbone_options
def build_module_backbone(
    target: str = "posenc.models.example_model.make_net",
    taps: Annotated[Sequence[str], Rule(min_items=1)] = ("stage1", "stage2", "stage3"),
    padding: PaddingSpec | str = "zeros",
    kwargs: Mapping[str, Any] | None = None,
    **options: Any,
) -> ExtractorBackbone:
    """``target(**kwargs)`` with ``taps`` (names of its modules, in ``named_modules()`` order)."""
    opts = BackboneOptions.of(padding, **options)
    with _warnings_only_when_built():  # a model that cannot be built: its one line, no warnings around it
        model = call_factory(target, import_factory(target), kwargs)
        names = [n for n, _ in model.named_modules() if n]
        taps = check_taps(list(taps or []), names, f"tap (a module of {target})")
        if opts.weights is not None and opts.run is None:
            state = safe_load(Path(opts.weights).expanduser(), what="weights file")
            state = state.get("state_dict", state) if isinstance(state, dict) else state
            try:
                model.load_state_dict(state)
            except RuntimeError as exc:
                raise PosencError(
                    f"weights file {opts.weights} does not fit {target}: {str(exc).splitlines()[1:2]}"
                ) from exc
        backbone = tapped_module(
            model,
            taps,
            opts,
            f"module/{target}",
            f"backbone.target={target} with backbone.kwargs={dict(kwargs or {}) or None}",
        )
    opts.load_run(backbone)
    return backbone


def tapped_module(
    model: nn.Module, taps: Sequence[str], opts: BackboneOptions, name: str, what: str
) -> ExtractorBackbone:
    """``model`` (built, its weights loaded) as a posenc backbone: its padding converted in place to
    ``opts.padding`` (:func:`posenc.models.padding.convert_padding`), its ``taps`` (module names, checked;
    returned in the order they are computed) read by FX, their channels measured on the meta device.
    ``what`` names the model in a one-line error (``backbone.target=...``, or a notebook's model)."""
    names = [n for n, _ in model.named_modules() if n]
    taps = check_taps(list(taps or []), names, f"tap (a module of {name.removeprefix('module/')})")
    report = opts.convert(model)
    order = [t for t in names if t in taps]  # the order the taps are computed in
    extractor = create_feature_extractor(model, return_nodes={t: t for t in order})
    try:
        with torch.no_grad():
            shapes = meta_copy(extractor)(torch.zeros(1, 3, PROBE_SIZE, PROBE_SIZE, device="meta"))
    except (RuntimeError, ValueError, AssertionError) as exc:  # e.g. a conv of zero channels (kwargs={width: 0})
        raise PosencError(f"{what} does not run on a {PROBE_SIZE} px image: {first_line(exc)}") from exc
    channels = [int(shapes[t].shape[1]) for t in order]
    empty = [t for t, c in zip(order, channels) if c < 1]
    if empty:
        raise PosencError(
            f"{what}: tap {empty[0]} has no channels; valid: arguments that build a model with channels at every tap"
        )
    return ExtractorBackbone(name, extractor, order, order, channels, opts, report)
