"""Rank the channels of a trained run's layer by the position they encode (Islam, Kowal et al.,
ICCV 2021; the scores are :func:`posenc.analysis.channels.channel_scores`)::

    python -m posenc.cli.rank_channels RUN_DIR [--layer f5] [--out DIR]

The run's test images and their horizontal flips go through the backbone once each; the scores,
the three rankings (overall, left, right) and the images' sides go to ``rank_channels_<layer>.json``
with a plot of the sorted scores, in ``RUN_DIR/analysis/`` unless ``--out`` says otherwise. The
last printed line is that folder. The shared steps (test set, cached taps, layer lookup) are here
for :mod:`posenc.cli.attack` too.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from posenc.analysis.channels import channel_scores, content_sides, global_pool, rank_channels, scores_figure
from posenc.cli.argv import OneLineParser, command, positive_int
from posenc.cli.runs import LoadedRun, add_trust_flag, load_run
from posenc.errors import PosencError, invalid_choice, invalid_value
from posenc.io import write_json
from posenc.progress import track

IGNORE_INDEX = 255


def test_set(run: LoadedRun) -> dict[str, torch.Tensor]:
    """The run's (first) test set as stacked tensors: ``image`` [N, 3, S, S] in [0, 1] and, when
    the data has them, ``mask`` / ``object_mask`` and the other labels."""
    dm = run.datamodule
    dm.setup("test")
    if not dm.test_sets:
        raise PosencError(f"the data of run {run.run_dir} has no test set to analyse")
    dataset = next(iter(dm.test_sets.values()))
    loader = torch.utils.data.DataLoader(dataset, batch_size=256, shuffle=False)
    batches = list(loader)
    return {k: torch.cat([b[k] for b in batches]) for k in batches[0] if isinstance(batches[0][k], torch.Tensor)}


def layer_index(run: LoadedRun, layer: str) -> int:
    """Index of tap ``layer`` (f1..f5) among the backbone's taps; one-line error naming the valid ones."""
    names = run.task.backbone.tap_names
    if layer not in names:
        raise invalid_choice(f"layer of backbone {run.task.backbone.name}", layer, names)
    return names.index(layer)


@torch.no_grad()
def encode_all(run: LoadedRun, images: torch.Tensor, batch_size: int = 64, what: str = "") -> list[torch.Tensor]:
    """Every tap of the backbone for ``images``, computed once, kept on the CPU (a progress bar:
    ``encoding <N> images<what>``)."""
    chunks: list[list[torch.Tensor]] = []
    device = next(run.task.parameters()).device
    starts = range(0, len(images), batch_size)
    for start in track(starts, f"encoding {len(images)} images{what} ({run.task.backbone.name})"):
        taps = run.task.encode(images[start : start + batch_size].to(device))
        chunks.append([t.float().cpu() for t in taps])
    return [torch.cat(parts) for parts in zip(*chunks)]


def sides_of(data: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """Which side each image's content is on (+1 left, -1 right, 0 centred), from its object mask
    (canvases) or its foreground pixels (segmentation masks: not background 0, not void 255)."""
    if "object_mask" in data:
        return content_sides(data["object_mask"].bool())
    if "mask" in data:
        mask = data["mask"].long()
        return content_sides((mask != 0) & (mask != IGNORE_INDEX))
    return None


def score_layer(
    run: LoadedRun,
    data: dict[str, torch.Tensor],
    layer: str,
    batch_size: int = 64,
    taps: list[torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Scores and rankings of ``layer``'s channels on ``data``'s images (``taps``: their cached
    taps, when the caller has them already; the flipped images are encoded here)."""
    index = layer_index(run, layer)
    images = data["image"]
    taps = taps if taps is not None else encode_all(run, images, batch_size)
    flipped = encode_all(run, images.flip(-1), batch_size, ", flipped")
    sides = sides_of(data)
    scores = channel_scores(global_pool(taps[index]), global_pool(flipped[index]), sides)
    return {
        "layer": layer,
        "num_channels": int(taps[index].shape[1]),
        "num_images": int(len(images)),
        "sides": None
        if sides is None
        else {"left": int((sides > 0).sum()), "right": int((sides < 0).sum()), "centred": int((sides == 0).sum())},
        "scores": {k: v.tolist() for k, v in scores.items()},
        "ranking": rank_channels(scores),
    }


def output_dir(run_dir: str | Path, out: str | None) -> Path:
    """``--out`` (default ``RUN_DIR/analysis``), created and checked writable before any work."""
    path = Path(out).expanduser() if out else Path(run_dir).expanduser() / "analysis"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write_test_{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise invalid_value("--out", str(path), f"cannot write there ({exc.strerror or exc})") from exc
    return path


def check_device(name: str) -> str:
    """``--device``: a torch device that exists on this machine (one line otherwise)."""
    from posenc.config.devices import check_device as check

    check("--device", name)
    return name


def parser(description: str) -> argparse.ArgumentParser:
    p = OneLineParser(description=description)
    p.add_argument("run_dir", help="a posenc run dir of a trained task (its config.yaml and checkpoints/last.ckpt)")
    p.add_argument("--layer", default="f5", help="the tap whose channels are ranked (f1..f5; default f5)")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None, help="output folder (default RUN_DIR/analysis)")
    add_trust_flag(p)
    return p


@command
def main(argv: Sequence[str] | None = None) -> Path:
    args = parser(__doc__.split("\n\n")[0].rstrip(":")).parse_args(argv)
    start = time.perf_counter()
    device = check_device(args.device)
    out = output_dir(args.run_dir, args.out)
    run = load_run(args.run_dir, device, args.trusted)
    data = test_set(run)
    layer_index(run, args.layer)
    result = score_layer(run, data, args.layer, args.batch_size)
    write_json(out / f"rank_channels_{args.layer}.json", result)
    from posenc.viz.figures import save_figure

    save_figure(
        scores_figure({k: torch.tensor(v) for k, v in result["scores"].items()}, args.layer),
        out / f"rank_channels_{args.layer}.png",
    )
    top = result["ranking"]
    print(
        f"{result['num_channels']} channels of {args.layer} on {result['num_images']} test images "
        f"({time.perf_counter() - start:.1f} s); top overall {top['overall'][:5]}, left {top['left'][:5]}, "
        f"right {top['right'][:5]}"
    )
    return out


if __name__ == "__main__":
    sys.exit(main())
