"""Command-line arguments the benchmarks share (run them as ``python benchmarks/<name>.py``)."""

from __future__ import annotations

import argparse


def add_data_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--backbone``, ``--image-size``, ``--num-train``, ``--num-test`` (the default run's values)."""
    parser.add_argument("--backbone", default="vgg16")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--num-train", type=int, default=256)
    parser.add_argument("--num-test", type=int, default=32)
    return parser
