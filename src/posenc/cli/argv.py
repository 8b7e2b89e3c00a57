"""Command-line checks run before Hydra composes the config, so that a bad option gives one
line (``unknown backbone 'vgg'; valid: ...``) instead of Hydra's multi-line report."""

from __future__ import annotations

import argparse
import functools
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

from omegaconf import ListConfig, OmegaConf

from posenc.config.groups import CONF_DIR, HYDRA_LAUNCHERS, group_options  # noqa: F401 - re-exported
from posenc.errors import PosencError, first_line, invalid_choice, require_extra
from posenc.io import check_writable, load_yaml, read_json, reserve_dir
from posenc.run.slurm import SLURM_RESTARTABLE

_SIMPLE_VALUES = re.compile(r"^[\w.\-]+(,[\w.\-]+)*$")
SUBMITIT_LAUNCHERS = ("slurm", "submitit_local", "submitit_slurm")  # need the slurm extra


def check_launcher(argv: Sequence[str]) -> None:
    """A submitit launcher without hydra-submitit-launcher installed: one line naming the extra (Hydra
    would report its config group as missing)."""
    chosen = [a.split("=", 1)[1] for a in argv if a.split("=", 1)[0].lstrip("+") == "hydra/launcher" and "=" in a]
    if chosen and chosen[-1] in SUBMITIT_LAUNCHERS:
        require_extra("hydra_plugins.hydra_submitit_launcher", f"hydra/launcher={chosen[-1]}", "slurm")


def check_group_overrides(
    argv: Sequence[str], conf_dir: Path = CONF_DIR, builtin: dict[str, list[str]] = HYDRA_LAUNCHERS
) -> None:
    """Raise ``PosencError`` for ``group=option`` arguments naming an option that does not exist.

    Plain values, comma lists (a multirun's ``a,b``) and lists of options (``logger=[csv,wandb]``,
    a multirun's ``logger=[csv],[csv,wandb]``) are checked; sweep functions (``choice(...)``,
    ``glob(...)``) and ``key.sub=value`` overrides are left to Hydra.
    """
    check_launcher(argv)
    groups = group_options(conf_dir)
    for group, builtin_options in builtin.items():
        groups.setdefault(group, []).extend(builtin_options)
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, value = arg.split("=", 1)
        key = key.lstrip("+~")
        if not key:
            raise PosencError(f"{arg!r} is not valid: an override names its key, key=value (e.g. data.image_size=32)")
        if key not in groups:
            continue
        options = (
            _listed_options(arg) if value.startswith("[") else value.split(",") if _SIMPLE_VALUES.match(value) else None
        )
        for option in options or ():
            if option not in groups[key]:
                raise invalid_choice(key, option, sorted(set(groups[key])))


def _listed_options(arg: str) -> list[Any] | None:
    """The options named by a list override, ``group=[a,b]`` (or a multirun's ``group=[a],[a,b]``),
    read by Hydra's own parser (its entries as parsed: a nested list stays a list); None when it is not
    a list (left to Hydra)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep

    try:
        value = OverridesParser.create().parse_override(arg).value()
    except Exception:  # noqa: BLE001 - Hydra reports what it cannot parse in its own words
        return None
    lists = value.list if isinstance(value, ChoiceSweep) and value.simple_form else [value]
    options: list[Any] = []
    for v in lists:
        if not isinstance(v, list):
            return None
        options.extend(v)  # an entry that is no name (logger=[[wandb]]) is no option either: refused by the caller
    return options


def _override_value(argv: Sequence[str], key: str) -> str | None:
    values = [a.split("=", 1)[1] for a in argv if a.split("=", 1)[0].lstrip("+") == key and "=" in a]
    return values[-1] if values else None


_PLAIN_PATH = re.compile(r"[A-Za-z0-9_./+:@%~-]+")
PATH_KEYS = ("paths.output_root", "hydra.run.dir", "hydra.sweep.dir")  # overrides whose value is a path


def hydra_quoted(value: str) -> str:
    """``value`` as an override's value that Hydra's grammar reads back unchanged: as it is when plain,
    else single-quoted, with each quote escaped and the backslashes before a quote (or before the
    closing one) doubled (a path with a space, ``é`` or ``'``)."""
    if _PLAIN_PATH.fullmatch(value):
        return value
    escaped = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", value)
    escaped = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, escaped)
    return f"'{escaped}'"


def _parsed_value(key: str, text: str) -> tuple[bool, Any]:
    """``(True, the value Hydra reads from key=text)``, or ``(False, None)`` when Hydra cannot parse it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        return True, OverridesParser.create().parse_override(f"{key}={text}").value()
    except Exception:  # noqa: BLE001 - unparseable: Hydra words it when it composes
        return False, None


def path_value(key: str, text: str) -> str:
    """The path ``key=text`` names: Hydra's reading of a quoted value, the text as typed otherwise."""
    parsed, value = _parsed_value(key, text) if text[:1] in ("'", '"') else (False, None)
    return value if parsed and isinstance(value, str) else text


def quote_paths(argv: Sequence[str]) -> list[str]:
    """The command line with each path override (:data:`PATH_KEYS`) that Hydra's grammar cannot read as
    typed (``paths.output_root=/data/é``) quoted, so that every path that exists is a valid value."""
    quoted = []
    for arg in argv:
        key, _, text = arg.partition("=")
        if key.lstrip("+") in PATH_KEYS and text and text[:1] not in ("'", '"') and not _parsed_value(key, text)[0]:
            arg = f"{key}={hydra_quoted(text)}"
        quoted.append(arg)
    return quoted


def output_root(argv: Sequence[str], conf_dir: Path = CONF_DIR) -> Path:
    """``paths.output_root`` as the run will see it: the last override, else ``train.yaml``'s."""
    given = _override_value(argv, "paths.output_root")
    if given is not None:
        folder = path_value("paths.output_root", given)
        if not folder:
            raise PosencError("paths.output_root='' is not valid: expected a directory (leave it unset for outputs)")
        return Path(folder)
    default = OmegaConf.select(OmegaConf.load(conf_dir / "train.yaml"), "paths.output_root", default="outputs")
    return Path(str(default) if "${" not in str(default) else "outputs")


def reserved_dir(given: Sequence[str], prepared: Sequence[str]) -> Path | None:
    """The run or sweep dir :func:`with_output_dir` named for the command line ``given`` (now ``prepared``):
    its ``hydra.run.dir`` / ``hydra.sweep.dir`` that ``given`` did not set; None when there is none."""
    typed = {a.partition("=")[0].lstrip("+") for a in given}
    added = [a for a in prepared if a.partition("=")[0] in {"hydra.run.dir", "hydra.sweep.dir"} - typed]
    if not added:
        return None
    key, _, text = added[-1].partition("=")
    return Path(path_value(key, text))


def check_dir(key: str, text: str) -> None:
    """``key=text`` (a ``hydra.run.dir`` / ``hydra.sweep.dir`` the command line names): created if missing,
    written into once; one line when that fails. A dir an interpolation names is Hydra's to make."""
    folder = path_value(key, text)
    if "${" in folder:
        return
    path = Path(folder).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PosencError(
            f"{key}={folder} is not valid: cannot create {exc.filename or path} ({exc.strerror or first_line(exc)}); "
            "valid: a directory this user can write into"
        ) from None
    check_writable(path, f"{key}={folder} is not valid")


def with_output_dir(argv: Sequence[str], now: datetime) -> list[str]:
    """Add ``hydra.run.dir`` / ``hydra.sweep.dir`` naming a freshly reserved, unique directory
    under ``paths.output_root`` (``runs/`` or ``multirun/``), unless the command line sets one."""
    argv = quote_paths(argv)
    multirun = "-m" in argv or "--multirun" in argv
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    printing = any(a in argv for a in ("--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i")) or any(
        a.startswith(("--cfg=", "--info=")) for a in argv
    )
    given = _override_value(argv, key)
    if given is not None:
        if not printing and not _child_rank():  # a DDP child runs in the dir its parent checked
            check_dir(key, given)
        return argv
    if printing:
        # Hydra only prints the config: name the dirs a run would get (made by no one), so that
        # `--cfg hydra --resolve` can resolve them without the job config hydra.run.dir refers to
        stamp = now.strftime("%Y-%m-%d_%H-%M-%S")
        dirs = [
            f"{k}={hydra_quoted(str(output_root(argv) / sub / stamp))}"
            for k, sub in (("hydra.run.dir", "runs"), ("hydra.sweep.dir", "multirun"))
            if _override_value(argv, k) is None
        ]
        # next to the other overrides: argparse takes them as one run of positionals, and `--info` takes an
        # optional value after it
        at = max((i + 1 for i, a in enumerate(argv) if "=" in a and not a.startswith("-")), default=0)
        return [*argv[:at], *dirs, *argv[at:]]
    requeued = None if multirun else slurm_run_dir(argv)
    if requeued is not None:  # the run a preempted job started: it resumes from its checkpoint
        return [*argv, f"{key}={hydra_quoted(str(requeued))}"]
    root = output_root(argv)
    path = reserve_dir(
        root / ("multirun" if multirun else "runs"), now.strftime("%Y-%m-%d_%H-%M-%S"), f"paths.output_root={root}"
    )
    return [*argv, f"{key}={hydra_quoted(str(path))}"]


class AlreadyComplete(Exception):
    """``--resume`` of a run that completed: nothing to do (``train.py`` says so and exits 0)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        super().__init__(f"run {run_dir} is complete: nothing to resume (its metrics.json is final)")


def resume_argv(run_dir: Path, trusted: Sequence[str] = ()) -> list[str]:
    """Overrides that continue the run in ``run_dir`` from its ``checkpoints/last.ckpt``; raises
    :class:`AlreadyComplete` for a completed run, which is left untouched. The run dir is someone's
    input: its overrides may name only code posenc ships or ``trusted`` names (:mod:`posenc.config.trust`)."""
    from posenc.config.renamed import renamed_override
    from posenc.config.trust import check_overrides

    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    if not overrides_file.is_file():
        raise PosencError(f"cannot resume {run_dir}: {overrides_file} not found (not a posenc run dir)")
    if (read_json(run_dir / "status.json") or {}).get("status") == "completed":
        raise AlreadyComplete(run_dir)
    try:
        read = load_yaml(overrides_file, "the list of key=value overrides Hydra writes for a run")
    except PosencError as exc:
        raise PosencError(f"cannot resume {run_dir}: {exc}") from None
    listed = OmegaConf.to_container(read) if isinstance(read, ListConfig) else None
    if not isinstance(listed, list) or not all(isinstance(o, str) for o in listed):
        raise PosencError(f"cannot resume {run_dir}: {overrides_file} is not a list of key=value overrides")
    # a run dir from before the re-layering may name a moved target by its old path (posenc.config.renamed)
    overrides = [renamed_override(o) for o in listed if o.split("=", 1)[0] not in ("ckpt_path", "hydra.run.dir")]
    check_overrides(overrides, f"run dir {run_dir}", trusted)
    check_writable(run_dir, f"cannot resume {run_dir}")
    return [*overrides, f"hydra.run.dir={run_dir}", "ckpt_path=last"]


def _child_rank() -> bool:
    """A DDP child process (Lightning re-runs the command line with the parent's run dir)."""
    return any(os.environ.get(k, "0") not in ("", "0") for k in ("LOCAL_RANK", "NODE_RANK", "RANK"))


def check_run_dir(argv: Sequence[str]) -> None:
    """Refuse, before Hydra writes into it, an explicit ``hydra.run.dir`` that already holds a run
    (``status.json``), unless the command resumes it (``ckpt_path``): a second run would overwrite
    the first one's ``.hydra`` overrides and mix its files with the first one's."""
    given = _override_value(argv, "hydra.run.dir")
    if given is None or "-m" in argv or "--multirun" in argv or _child_rank():
        return
    if not given.strip("'\""):
        raise PosencError("hydra.run.dir='' is not valid: expected a directory (leave it unset for a fresh one)")
    run_dir = Path(given.strip("'\"")).expanduser()
    if (run_dir / "status.json").exists() and _override_value(argv, "ckpt_path") is None:
        raise PosencError(
            f"hydra.run.dir={run_dir} already holds a run; valid: a dir of its own, or resume that "
            f"run: python train.py --resume {run_dir}"
        )


def slurm_run_dir(argv: Sequence[str], env: Mapping[str, str] = os.environ) -> Path | None:
    """The run dir a requeued SLURM job continues: the one under the output root's ``runs/`` whose
    ``status.json`` records this job id and an ending it continues from (:data:`SLURM_RESTARTABLE`:
    requeued by itself (``preempted``), stopped by the cluster's SIGTERM (``interrupted``, ``cancelled``),
    or killed while ``running``, e.g. by a node failure). The newest such dir when there are several."""
    job, restarts = env.get("SLURM_JOB_ID"), env.get("SLURM_RESTART_COUNT", "0")
    if not job or restarts in ("", "0"):
        return None
    runs = output_root(argv) / "runs"
    for status_file in sorted(runs.glob("*/status.json"), reverse=True) if runs.is_dir() else []:
        status = read_json(status_file) or {}
        if status.get("slurm_job_id") == job and status.get("status") in SLURM_RESTARTABLE:
            return status_file.parent
    return None


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (``error: ...``, exit 2), like every posenc error;
    ``--help`` still shows the full usage."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {self.prog}: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not valid: expected an int >= 1") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not valid: expected an int >= 1")
    return value


def command(main: Callable[..., Path]) -> Callable[..., int]:
    """An analysis command's ``main``: it returns its output folder, printed as the last line (as
    ``train.py`` prints its run dir), exit status 0; bad input (a ``PosencError``) ends it with
    ``error: <message>`` on stderr and exit status 2, without a traceback (tracebacks are for bugs)."""
    from posenc.errors import PosencError

    @functools.wraps(main)
    def wrapped(*args: Any, **kwargs: Any) -> int:
        try:
            out = main(*args, **kwargs)
        except PosencError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(out)
        return 0

    return wrapped
