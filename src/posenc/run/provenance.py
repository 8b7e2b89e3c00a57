"""Where a measured table comes from: the commit (and whether the work tree had uncommitted changes),
the command that produced it, the machine it ran on and the date, as a dict and as a short markdown
block. Every table under ``docs/results/`` and every sweep's ``results.md`` carries one, so a number
can be traced to its code and regenerated instead of retyped.

The machine is described without naming it: OS, CPU model and core count, RAM, GPUs (via
``torch.cuda``, when torch is importable) and the torch / lightning versions. No hostname, user
name or path is recorded.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Mapping
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[3]  # the checkout an editable install runs from
KEYS = ("commit", "command", "machine", "date")  # the order of the block; other keys follow them


def _git(args: list[str], root: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state(root: Path | None = None) -> tuple[str, bool]:
    """``(short commit hash, dirty)`` of the git work tree at ``root`` (default: posenc's checkout);
    dirty when a tracked file is changed or an untracked, not ignored, file exists.
    ``("unknown", False)`` outside a git work tree (an installed wheel)."""
    root = Path(root) if root is not None else REPO_ROOT
    commit = _git(["rev-parse", "--short", "HEAD"], root)
    if not commit:
        return "unknown", False
    status = _git(["status", "--porcelain"], root)
    return commit, bool(status)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware")) and ":" in line:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _cores() -> str:
    total = os.cpu_count() or 0
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = total
    return f"{usable} of {total} cores" if usable and usable != total else f"{total} cores"


def _ram_gib() -> float | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (AttributeError, ValueError, OSError):
        return None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _gpus() -> list[str]:
    """The GPUs' names: from torch when a run already loaded it, else from ``nvidia-smi`` (``sweep.py
    collect`` writes its report's machine line without importing torch)."""
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        try:
            if not torch.cuda.is_available():
                return []
            return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        except Exception:  # a broken driver must not stop a report from being written
            return []
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


def machine() -> str:
    """One line, hostname-free: OS, CPU model and cores, RAM, GPUs, Python, torch and lightning."""
    ram = _ram_gib()
    gpus = _gpus()
    parts = [
        f"{platform.system()} {platform.release()} {platform.machine()}",
        f"{_cpu_model()} ({_cores()})",
        f"{ram:.0f} GiB RAM" if ram is not None else "RAM unknown",
        ("GPU: " + ", ".join(f"{n}× {name}" if n > 1 else name for name, n in _count(gpus).items()))
        if gpus
        else "no GPU",
        f"Python {platform.python_version()}",
    ]
    parts += [f"{dist} {v}" for dist in ("torch", "lightning") if (v := _version(dist))]
    return ", ".join(parts)


def _count(names: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    return counts


def provenance(command: str, root: Path | None = None, now: datetime | None = None) -> dict[str, Any]:
    """``{"commit", "dirty", "command", "machine", "date"}`` for a table produced by ``command``
    now, on this machine, from the checkout at ``root`` (default: posenc's)."""
    commit, dirty = git_state(root)
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return {
        "commit": commit,
        "dirty": dirty,
        "command": command,
        "machine": machine(),
        "date": now.strftime("%Y-%m-%d %H:%M UTC"),
    }


def provenance_lines(info: Mapping[str, Any] | str) -> list[str]:
    """A markdown list of ``info`` (a :func:`provenance` dict, or a command to describe now):
    commit (marked dirty), command, machine, date, then any other key the caller added, and a
    blank line after it."""
    info = provenance(info) if isinstance(info, str) else info
    commit = str(info.get("commit", "unknown"))
    lines = [
        f"- commit: `{commit}`" + (" + uncommitted changes (dirty)" if info.get("dirty") else ""),
        f"- command: `{info.get('command', '')}`",
        f"- machine: {info.get('machine', 'unknown')}",
        f"- date: {info.get('date', 'unknown')}",
    ]
    lines += [f"- {key}: {value}" for key, value in info.items() if key not in (*KEYS, "dirty")]
    return [*lines, ""]
