"""posenc entry point: ``python train.py [group=option ...] [key=value ...]`` (Hydra).

Examples: ``python train.py backbone=vgg16 padding=reflect task=posenet``;
``python train.py -m padding=zeros,reflect,replicate,circular,partial,none``;
``python train.py --resume outputs/runs/<run>`` continues a killed run from its last checkpoint
(``--trust-target pkg.module.factory``: the run dir may name that code of yours; posenc.config.trust).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import hydra
from omegaconf import DictConfig

import posenc.config.schema  # noqa: F401 - registers the config schemas before Hydra composes
from posenc.cli.argv import (
    AlreadyComplete,
    check_group_overrides,
    check_run_dir,
    reserved_dir,
    resume_argv,
    with_output_dir,
)
from posenc.config.trust import pop_trust_flags, user_targets
from posenc.config.validation import user_error
from posenc.errors import PosencError
from posenc.io import discard_if_empty
from posenc.run.slurm import lost_job
from posenc.run.train import run  # imported before Hydra sets up logging: Lightning keeps its own handler


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> None:
    run(cfg)


def prepare_argv(argv: list[str]) -> list[str]:
    argv, trusted = pop_trust_flags(argv)  # --trust-target: the user's own module, named in a run dir
    if argv[:1] == ["--resume"]:
        if len(argv) < 2:
            raise PosencError("--resume needs a run dir: python train.py --resume outputs/runs/<run>")
        argv = [*resume_argv(Path(argv[1]), [*trusted, *user_targets(argv[2:])]), *argv[2:]]
    check_group_overrides(argv)
    check_run_dir(argv)
    return with_output_dir(argv, datetime.now())


def cli(argv: Sequence[str]) -> int:
    """``python train.py ARGV`` as a function: its exit status (0; 2 on a user error, in one line on stderr;
    1 when a SLURM sweep's job ended without a result, in one line; a signal's ``128 + n`` and a bug's
    traceback propagate as ``SystemExit`` / the exception)."""
    try:
        sys.argv = [str(Path(__file__).resolve()), *prepare_argv(list(argv))]
    except AlreadyComplete as done:
        print(done, file=sys.stderr)
        print(done.run_dir)  # the run dir, as every run's last line
        return 0
    except PosencError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # Hydra prints its own multi-line report of a compose error and exits 1; with this set it
    # re-raises instead, so a config mistake becomes one line here and a bug keeps its traceback.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    try:
        main()
    except Exception as exc:
        user = user_error(exc)
        if user is None:
            lost = lost_job(exc)  # a SLURM sweep job that ended without a result stops submitit's launcher
            if lost is None:
                raise
            sweep = next((a.split("=", 1)[1] for a in reversed(sys.argv) if a.startswith("hydra.sweep.dir=")), "")
            print(
                f"error: {lost}; the sweep's other jobs go on on the cluster: python sweep.py collect {sweep} "
                "reports each",
                file=sys.stderr,
            )
            return 1
        print(f"error: {user}", file=sys.stderr)
        discard_if_empty(reserved_dir(argv, sys.argv[1:]))  # a config Hydra could not compose: nothing ran there
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
