"""posenc entry point: ``python train.py [group=option ...] [key=value ...]`` (Hydra).

Examples: ``python train.py backbone=vgg16 padding=reflect task=posenet``;
``python train.py -m padding=zeros,reflect,replicate,circular,partial,none``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from posenc.cli import check_group_overrides
from posenc.errors import PosencError
from posenc.training import run

CONF_DIR = Path(__file__).resolve().parent / "conf"
HYDRA_LAUNCHERS = {"hydra/launcher": ["basic", "submitit_local", "submitit_slurm"]}


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = run(cfg)
    return None if metrics is None else metrics.get("wall_time_s")


if __name__ == "__main__":
    try:
        check_group_overrides(sys.argv[1:], CONF_DIR, HYDRA_LAUNCHERS)
    except PosencError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    main()
