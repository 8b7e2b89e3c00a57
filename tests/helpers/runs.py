"""Run helpers shared by the tests: compose the real configs with Hydra's compose API, shrink them, and
run ``train.py`` / ``sweep.py`` / a tool's ``main`` in this process."""

from __future__ import annotations

import hashlib
import os
from functools import cache
from pathlib import Path

from posenc.config.compose import compose_run  # noqa: F401 - re-exported for the tests
from posenc.config.groups import CONF_DIR  # noqa: F401 - re-exported for the tests

ROOT = Path(__file__).resolve().parents[2]
# A run that finishes in seconds on 2 CPU cores: tiny backbone, 64 px images.
TINY = [
    "backbone=tiny",
    "data.image_size=64",
    "data.num_train=48",
    "data.num_test=8",
    "data.batch_size=16",
    "trainer.max_epochs=4",
    "callbacks.progress=null",
]


@cache
def cached_run(tmp_root: str, *overrides: str) -> dict:
    """Metrics of one composed run, trained once per worker and shared by the effect tests of a
    module (``tmp_root`` from a module-scoped ``tmp_path_factory`` dir)."""
    from posenc.run.train import run

    # a readable run dir name, short enough for any file system: the last overrides + a digest of all
    name = "_".join(o.replace("=", "-").replace(".", "-") for o in overrides[-2:]) or "default"
    name = f"{name[:60]}_{hashlib.sha1(repr(overrides).encode()).hexdigest()[:8]}"
    metrics = run(compose_run(list(overrides), f"{tmp_root}/{name}"))
    assert metrics is not None
    return metrics


@cache
def _script(name: str):
    """A top-level script (``train.py``, ``sweep.py``) loaded as a module once: its ``cli`` / ``main``
    is the command as a function."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"posenc_{name}_script", ROOT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def train_in_process(*args: str, env: dict[str, str] | None = None):
    """``python train.py ARGS`` run in this process: its exit status, stdout and stderr, as a subprocess's
    would be, without the seconds a fresh interpreter spends importing torch. For commands that stop with
    a one-line error or finish in a few steps; signals and DDP need a real process."""
    return main_in_process(_script("train").cli, "train.py", *args, env=env)


def sweep_in_process(*args: str):
    """``python sweep.py ARGS`` in this process; the jobs it launches are ``train.py`` processes as ever
    (their output is not in the result's)."""
    return main_in_process(_script("sweep").main, "sweep.py", *args)


def main_in_process(main, name: str, *args: str, env: dict[str, str] | None = None):
    """A command's ``main(argv) -> int`` (train.py's ``cli``, ``posenc.tools.*.main``) run in this process
    on ``args``: a ``subprocess.CompletedProcess`` of its exit status and what it printed."""
    import contextlib
    import io
    import subprocess
    import sys

    from hydra.core.global_hydra import GlobalHydra

    out, err = io.StringIO(), io.StringIO()
    argv, environ = list(sys.argv), dict(os.environ)
    os.environ.update(env or {})
    GlobalHydra.instance().clear()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv[:] = argv
        os.environ.clear()
        os.environ.update(environ)
        GlobalHydra.instance().clear()
    return subprocess.CompletedProcess([name, *args], code, out.getvalue(), err.getvalue())
