"""Region-specific attack on a trained segmentation run (Islam, Kowal et al., ICCV 2021): zero the
top-N ranked channels of a layer before the head and score mIoU on the whole image and on its
left / centre / right thirds, against zeroing N random channels (seeded draws)::

    python -m posenc.cli.attack RUN_DIR [--layer f5] [--counts 1,2,4,8] [--draws 5] [--seed 0]

The test images go through the backbone once (and once flipped, for the ranking,
:mod:`posenc.cli.rank_channels`); every (ranking, N, draw) setting then reruns only the head
on the cached taps. The wall time of the whole sweep is printed against one forward pass (backbone
+ head) over the same images. Writes ``attack_<layer>.json`` and ``attack_<layer>.png`` (mIoU
against N per region) into ``RUN_DIR/analysis/``; the last printed line is that folder.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from posenc.analysis.channels import attack_curves, attack_figure, check_counts
from posenc.cli.argv import command
from posenc.cli.rank_channels import (
    check_device,
    encode_all,
    layer_index,
    output_dir,
    parser,
    positive_int,
    score_layer,
    test_set,
)
from posenc.cli.runs import LoadedRun, load_run
from posenc.errors import PosencError, invalid_value
from posenc.io import write_json

IGNORE_INDEX = 255


def default_counts(num_channels: int) -> list[int]:
    """1, 2, 4, ... up to half the layer's channels."""
    counts, n = [], 1
    while n <= max(1, num_channels // 2):
        counts.append(n)
        n *= 2
    return counts


def head_labels(run: LoadedRun) -> tuple[int, Callable[[list[torch.Tensor]], torch.Tensor]]:
    """(number of classes, head as a function of taps returning per-class logits): the saliency
    head's one logit becomes two classes, background and salient (logit > 0)."""
    task = run.task
    if task.head_kind != "segmentation":
        raise PosencError(
            f"the attack needs a segmentation run (task=semseg|location_seg|saliency); "
            f"{run.run_dir} is a run of {type(task).__name__}"
        )
    classes = task.num_outputs()

    def head(taps: list[torch.Tensor]) -> torch.Tensor:
        device = next(task.head.parameters()).device
        logits = task.head([t.to(device) for t in taps], task.image_size)
        return torch.cat([torch.zeros_like(logits), logits], dim=1) if classes == 1 else logits

    return max(classes, 2), head


def targets_of(run: LoadedRun, data: dict[str, torch.Tensor]) -> torch.Tensor:
    return run.task.targets({k: v for k, v in data.items()}).cpu()


def parse_counts(text: str | None, num_channels: int | None, layer: str) -> list[int]:
    """``--counts`` as ints; checked against the layer's ``num_channels`` (None: the syntax only)."""
    if text is None:
        return default_counts(num_channels) if num_channels is not None else []
    try:
        values = [int(v) for v in text.split(",")]  # an empty entry ("1,,4") is a mistake, not a skip
    except ValueError as exc:
        raise invalid_value("--counts", text, "expected comma-separated ints, e.g. 1,2,4,8") from exc
    return check_counts(values, num_channels, layer) if num_channels is not None else values


@command
def main(argv: Sequence[str] | None = None) -> Path:
    p = parser(__doc__.split("\n\n")[0].rstrip(":"))
    p.add_argument(
        "--counts",
        default=None,
        help="numbers of channels to zero, e.g. 1,2,4,8 (default: powers of 2 up to half the layer)",
    )
    p.add_argument("--draws", type=positive_int, default=5, help="random channel sets per N (default 5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random channel sets (draws of N use seed + N)")
    args = p.parse_args(argv)
    device = check_device(args.device)
    parse_counts(args.counts, None, args.layer)  # its syntax, before the run is loaded
    out = output_dir(args.run_dir, args.out)
    run = load_run(args.run_dir, device, args.trusted)
    num_classes, head = head_labels(run)
    index = layer_index(run, args.layer)
    parse_counts(args.counts, run.task.backbone.tap_channels[index], args.layer)  # before the passes it bounds
    data = test_set(run)
    target = targets_of(run, data)
    start = time.perf_counter()
    taps = encode_all(run, data["image"], args.batch_size)
    with torch.no_grad():
        for s in range(0, len(target), args.batch_size):
            head([t[s : s + args.batch_size] for t in taps])
    one_forward = time.perf_counter() - start
    counts = parse_counts(args.counts, taps[index].shape[1], args.layer)
    start = time.perf_counter()
    ranking = score_layer(run, data, args.layer, args.batch_size, taps=taps)
    result = attack_curves(
        head,
        taps,
        target,
        index,
        ranking["ranking"],
        counts,
        num_classes,
        draws=args.draws,
        seed=args.seed,
        batch_size=args.batch_size,
        ignore_index=IGNORE_INDEX,
    )
    sweep = time.perf_counter() - start
    settings = 1 + len(counts) * (len(ranking["ranking"]) + args.draws)
    result.update(
        {
            "layer": args.layer,
            "ranking": ranking,
            "settings": settings,
            "wall_time_s": {"one_forward": one_forward, "ranking_and_attack": sweep},
        }
    )
    write_json(out / f"attack_{args.layer}.json", result)
    from posenc.viz.figures import save_figure

    save_figure(attack_figure(result), out / f"attack_{args.layer}.png")
    base = result["baseline"]
    print(
        f"attack on {args.layer} ({ranking['num_channels']} channels, {len(target)} test images): baseline mIoU "
        + ", ".join(f"{k} {v:.3f}" for k, v in base.items())
    )
    for name, curves in result["ranked"].items():
        print(f"  {name:>7}-ranked, N={counts[-1]}: " + ", ".join(f"{k} {v[-1]:.3f}" for k, v in curves.items()))
    print(
        f"   random ({args.draws} draws), N={counts[-1]}: "
        + ", ".join(f"{k} {v['mean'][-1]:.3f}" for k, v in result["random"].items())
    )
    print(
        f"{settings} settings (ranking incl.) in {sweep:.2f} s vs one forward pass over the same images in "
        f"{one_forward:.2f} s: {sweep / one_forward:.1f}x"
    )
    return out


if __name__ == "__main__":
    sys.exit(main())
