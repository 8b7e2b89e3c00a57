"""Measured tables, produced instead of typed: each NAME below runs one command and turns what it
wrote into a markdown table in ``docs/results/<NAME>.md`` (a sweep: ``sweep-<preset>.md``), headed
by its provenance (commit, command, machine, date: posenc.run.provenance).

    python scripts/results.py --list                      # the measurements, their commands and cost
    python scripts/results.py main_job                    # README's main job: python train.py
    python scripts/results.py train_overhead -- --repeats 5   # arguments after -- go to the command
    python scripts/results.py sweep:padding_study data.image_size=112   # a preset; overrides go to it
    python scripts/results.py --at HEAD main_job          # measure a commit, not the work tree
    python scripts/results.py --out /tmp/results main_job # write elsewhere (options before NAME)

The command runs from the checkout's root with this Python as ``python`` (``--at REV``: from a ``git
archive`` export of commit REV, its ``src/`` first on the path, so the page names a clean commit while
the work tree is being edited); its output streams to the terminal. Its wall time, the peak resident
memory of its process (and of the children it waited for) and the machine's load average are recorded.
A command that fails writes nothing (the previous page stays) and exits 1.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))  # run from a checkout without an install too

from posenc.io import read_json  # noqa: E402
from posenc.run.provenance import provenance, provenance_lines  # noqa: E402


@dataclass
class Output:
    """What the command left: its stdout + stderr, exit status, wall time (s) and peak RSS (MiB)."""

    text: str
    returncode: int
    wall_s: float
    peak_rss_mib: float | None
    workdir: Path  # where it ran
    load: tuple[float, float] | None = None  # the 1-min load average at its start and end

    @property
    def last_line(self) -> str:
        lines = [line.strip() for line in self.text.splitlines() if line.strip()]
        return lines[-1] if lines else ""


@dataclass
class Measurement:
    name: str
    title: str
    command: list[str]  # as shown; "python" is replaced by this interpreter when run
    cost: str  # what it takes, roughly, on the 2-core CPU this repo is developed on
    table: Callable[[Output], list[str]]  # markdown lines below the provenance block
    shell: bool = False  # a bash command line, run in a temp dir (setup: clone, then set up there)


# ----------------------------------------------------------------------------- running


def run_command(argv: Sequence[str], cwd: Path, shell: bool = False, env: dict[str, str] | None = None) -> Output:
    """Run ``argv`` in ``cwd`` (``python`` = this interpreter), echo and keep its output, time it and
    read its peak RSS from ``wait4`` (Linux: KiB)."""
    real = list(argv)
    if shell:
        real = ["bash", "-c", " ".join(shlex.quote(str(ROOT)) if a == CHECKOUT else a for a in argv)]
    elif real and real[0] == "python":
        real[0] = sys.executable
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    start = time.perf_counter()
    proc = subprocess.Popen(
        real, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, env=env
    )
    chunks = []
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stdout.write(line)
        chunks.append(line)
    proc.stdout.close()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    rss = usage.ru_maxrss / 1024 if sys.platform != "darwin" else usage.ru_maxrss / 2**20
    end = os.getloadavg()[0] if load is not None else None
    return Output(
        "".join(chunks),
        proc.returncode,
        wall,
        rss or None,
        Path(cwd),
        (load, end) if load is not None and end is not None else None,
    )


def process_line(out: Output) -> str:
    rss = f", peak RSS {out.peak_rss_mib / 1024:.2f} GiB" if out.peak_rss_mib else ""
    return f"Process: {out.wall_s:.0f} s wall{rss}, exit {out.returncode}."


def fmt(value: object, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "—"


def text_block(lines: Sequence[str]) -> list[str]:
    return ["```text", *lines, "```", ""]


def summary(out: Output, marker: str = "config:") -> list[str]:
    """The lines a benchmark prints last: from its final ``marker`` line on."""
    lines = out.text.rstrip().splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(marker)]
    return lines[starts[-1] :] if starts else lines[-20:]


# ----------------------------------------------------------------------------- tables


def ordered(names, order: Sequence[str]) -> list[str]:
    """``names`` in ``order`` first (metrics.json sorts its keys), the others after them."""
    return [n for n in order if n in names] + sorted(n for n in names if n not in order)


def grid(metrics: dict) -> list[str]:
    """PosENet's SPC / MAE per test input (rows) x target map (columns)."""
    cells: dict[str, dict[str, dict[str, float]]] = {}
    targets: list[str] = []
    for key, value in metrics.items():
        parts = key.split("/")
        if len(parts) == 4 and parts[0] == "test" and parts[1] != "by_distance":
            cells.setdefault(parts[1], {}).setdefault(parts[2], {})[parts[3]] = value
            targets += [parts[2]] if parts[2] not in targets else []
    targets = ordered(targets, ("H", "V", "G", "HS", "VS"))
    lines = ["| input | " + " | ".join(f"{t} SPC / MAE" for t in targets) + " |", "|---" * (len(targets) + 1) + "|"]
    for name in ordered(cells, ("natural", "black", "white", "noise")):
        row = cells[name]
        lines.append(
            f"| {name} | "
            + " | ".join(f"{fmt(row.get(t, {}).get('spc'))} / {fmt(row.get(t, {}).get('mae'))}" for t in targets)
            + " |"
        )
    return [*lines, ""]


def main_job_table(out: Output) -> list[str]:
    run_dir = Path(out.last_line)
    run_dir = run_dir if run_dir.is_absolute() else out.workdir / run_dir
    metrics = read_json(run_dir / "metrics.json")
    status = read_json(run_dir / "status.json") or {}
    if metrics is None:
        raise SystemExit(f"error: no metrics.json in {run_dir} (the command's last line should be its run dir)")
    changes = {
        k.removeprefix("val/").removeprefix("train/").removesuffix("/rel_decrease"): v
        for k, v in metrics.items()
        if k.endswith("/rel_decrease") and isinstance(v, (int, float))
    }
    worst = max(changes.items(), key=lambda kv: abs(kv[1])) if changes else None
    config = ", ".join(
        f"{k} `{metrics[k]}`" for k in ("backbone", "padding", "task", "readout", "data", "seed") if k in metrics
    )
    lines = [
        f"Run: {config}. SPC / MAE per test input and target map (`metrics.json`):",
        "",
        *grid(metrics),
        "| record | value |",
        "|---|---|",
        f"| `train/steps` | {metrics.get('train/steps')} |",
        f"| `train/converged` | {metrics.get('train/converged')}"
        + (f" (judged on the {metrics['train/converged_on']} loss)" if metrics.get("train/converged_on") else "")
        + " |",
    ]
    if worst is not None:
        lines.append(f"| largest relative change, last window | {-100 * worst[1]:+.1f}% ({worst[0]}) |")
    lines += [
        f"| `status` | {status.get('status')} |",
        f"| `wall_time_s` (status.json) | {fmt(status.get('wall_time_s'), 1)} |",
        f"| process wall time (interpreter start to exit) | {out.wall_s:.1f} s |",
        f"| peak RSS of the process | {fmt((out.peak_rss_mib or 0) / 1024, 2)} GiB |",
        "",
    ]
    return lines


def setup_table(out: Output) -> list[str]:
    venv = out.workdir / "clone" / ".venv"
    size = sum(p.stat().st_size for p in venv.rglob("*") if p.is_file() and not p.is_symlink()) if venv.is_dir() else 0
    return [
        "| what | value |",
        "|---|---|",
        f"| wall time of clone + `bash scripts/setup.sh` | {out.wall_s:.0f} s |",
        f"| size of `.venv` | {size / 2**30:.2f} GiB |",
        "",
        "pip's cache was as this machine had it (a cold cache downloads torch too: minutes more).",
        "",
    ]


def config_line(line: str) -> str:
    """A benchmark's ``config: <overrides>`` line as markdown."""
    return f"Config: `{line.removeprefix('config:').strip()}`." if line.startswith("config:") else line


def posenet_cache_table(out: Output) -> list[str]:
    """``<measure>   <value>`` lines (two spaces or more apart) as a table; the metric drift below it."""
    lines = summary(out)
    rows = [re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in lines[1:] if not line.startswith("max ")]
    table = ["| measure | value |", "|---|---|"] + [f"| {r[0]} | {r[1]} |" for r in rows if len(r) == 2]
    rest = [f"- {line}" for line in lines[1:] if line.startswith("max ")]
    return [config_line(lines[0]), "", *table, "", *rest, ""]


ROW = re.compile(r"^(bare|posenc)\s+([\d.]+) ms/step\s+([\d.]+) images/s\s+\(CPU\s+([\d.]+) ms/step\)")


def train_overhead_table(out: Output) -> list[str]:
    """bare and posenc per step (wall, images/s, CPU) as a table; the ratios and checks below it."""
    lines = summary(out)
    table = ["| loop | ms/step (wall) | images/s | ms/step (CPU) |", "|---|---|---|---|"]
    table += [f"| {m[1]} | {m[2]} | {m[3]} | {m[4]} |" for line in lines if (m := ROW.match(line))]
    rest = [f"- {line}" for line in lines[2:] if not ROW.match(line) and line.strip()]
    return [config_line(lines[0]), "", *lines[1:2], "", *table, "", *rest, ""]


BUDGET = re.compile(
    r"^(trained|random)\s+(\d+) steps\s+(.*?)\s+loss (\S+)\s+val loss (\S+)\s+converged (\w+) "
    r"\(held-out loss fell (\S+)%\)\s+\((\d+) s\)"
)


def readout_budget_table(out: Output) -> list[str]:
    """One row per backbone x budget: natural SPC / MAE per target, held-out change, flag, time."""
    rows, targets = [], []
    for line in out.text.splitlines():
        if m := BUDGET.match(line.strip()):
            cells = dict(re.findall(r"(\w+) (-?[\d.]+/-?[\d.]+|nan/nan)", m[3]))
            targets = targets or list(cells)
            rows.append(
                f"| {m[1]} | {m[2]} | "
                + " | ".join(cells.get(t, "") for t in targets)
                + f" | {m[7]}% | {m[6]} | {m[8]} s |"
            )
    head = [
        f"| backbone | steps | {' | '.join(targets)} | held-out loss fell | converged | time |",
        "|---" * (len(targets) + 5) + "|",
    ]
    notes = [line for line in out.text.splitlines() if line.startswith(("proxy-trained", "backbone="))]
    return [*text_block(notes), "Natural test crops, SPC / MAE per target map:", "", *head, *rows, ""]


def sweep_table(out: Output) -> list[str]:
    sweep_dir = Path(out.last_line)
    sweep_dir = sweep_dir if sweep_dir.is_absolute() else out.workdir / sweep_dir
    md = sweep_dir / "results.md"
    if not md.is_file():
        raise SystemExit(f"error: no results.md in {sweep_dir} (the sweep's last line should be its dir)")
    lines = md.read_text().splitlines()
    body = lines[1:]  # results.md's own title goes; its provenance block (the jobs' command) stays
    shown = sweep_dir.relative_to(out.workdir) if sweep_dir.is_relative_to(out.workdir) else sweep_dir
    return [f"Copied from the sweep's `{shown}/results.md`.", "", *body, ""]


CHECKOUT = "<checkout>"  # the setup's clone source: this checkout (shown by this name)
REV = "<rev>"  # the commit it checks out: HEAD, or --at
MEASUREMENTS = {
    m.name: m
    for m in [
        Measurement(
            "main_job",
            "The main job: `python train.py` on the embedded default",
            ["python", "train.py"],
            "2.5-4 min on an idle 2-core CPU",
            main_job_table,
        ),
        Measurement(
            "setup",
            "Setup on a fresh clone: `bash scripts/setup.sh`",
            [
                "git",
                "clone",
                "-q",
                CHECKOUT,
                "clone",
                "&&",
                "cd",
                "clone",
                "&&",
                "git",
                "checkout",
                "-q",
                REV,
                "&&",
                "bash",
                "scripts/setup.sh",
            ],
            "1-3 min with a warm pip cache",
            setup_table,
            shell=True,
        ),
        Measurement(
            "posenet_cache",
            "Benchmark: PosENet with and without the frozen-feature cache",
            ["python", "benchmarks/posenet_cache.py"],
            "~12 min, estimated (the uncached run dominates)",
            posenet_cache_table,
        ),
        Measurement(
            "train_overhead",
            "Benchmark: training through posenc vs a bare PyTorch loop",
            ["python", "benchmarks/train_overhead.py"],
            "~2 min on an idle 2-core CPU",
            train_overhead_table,
        ),
        Measurement(
            "readout_budget",
            "Benchmark: the PosENet readout budget (task.max_steps)",
            ["python", "benchmarks/readout_budget.py"],
            "~20 min, estimated (two backbones, six budgets)",
            readout_budget_table,
        ),
    ]
}
SWEEP = "sweep:"  # sweep:<preset> runs python sweep.py <preset>


def sweep_presets() -> list[str]:
    return sorted(p.stem for p in (ROOT / "conf" / "sweep").glob("*.yaml"))


def measurement(name: str) -> Measurement:
    if name.startswith(SWEEP) and name[len(SWEEP) :] in sweep_presets():
        preset = name[len(SWEEP) :]
        return Measurement(
            f"sweep-{preset}", f"Sweep `{preset}`", ["python", "sweep.py", preset], "the preset's jobs", sweep_table
        )
    if name not in MEASUREMENTS:
        valid = [*MEASUREMENTS, *(SWEEP + p for p in sweep_presets())]
        raise ValueError(f"unknown measurement {name!r}; valid: {', '.join(valid)}")
    return MEASUREMENTS[name]


def render(m: Measurement, name: str, extra: Sequence[str], out: Output, at: str | None, commit: str | None) -> str:
    """The page: title, provenance (``commit`` when the command ran from a clean tree of it), how to
    regenerate, the process line, the table."""
    shown = " ".join(a if a != REV else (at or "HEAD") for a in [*m.command, *map(shlex.quote, extra)])
    if m.shell:
        shown = f"cd $(mktemp -d) && {shown}"
    regenerate = " ".join(
        [
            "python scripts/results.py",
            *([f"--at {shlex.quote(at)}"] if at else []),
            shlex.quote(name),
            *(["--"] if extra and not name.startswith(SWEEP) else []),
            *map(shlex.quote, extra),
        ]
    )
    info = provenance(shown)
    if commit is not None:
        info.update(commit=commit, dirty=False)
        info["tree"] = (
            "a fresh clone of that commit"
            if m.shell
            else "a `git archive` export of that commit (the work tree's uncommitted changes left out)"
        )
    if out.load is not None:  # a shared machine: how busy it was besides this command
        info["load"] = (
            f"1-min load average {out.load[0]:.1f} at the start, {out.load[1]:.1f} at the end ({os.cpu_count()} cores)"
        )
    lines = [
        f"# {m.title}",
        "",
        *provenance_lines(info),
        f"Regenerate: `{regenerate}` ({m.cost}). {process_line(out)}",
        "",
        *m.table(out),
    ]
    return "\n".join(lines).rstrip() + "\n"


def short_commit(rev: str) -> str:
    found = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "--verify", f"{rev}^{{commit}}"],
        capture_output=True,
        text=True,
    )
    if found.returncode != 0:
        raise ValueError(f"--at {rev}: not a commit of {ROOT}")
    return found.stdout.strip()


def export(rev: str, dest: Path) -> Path:
    """The tree of commit ``rev`` in ``dest`` (``git archive``): what ran there is that commit exactly."""
    dest.mkdir(parents=True)
    archive = subprocess.Popen(["git", "-C", str(ROOT), "archive", rev], stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(dest)], stdin=archive.stdout, check=True)
    if archive.wait() != 0:
        raise ValueError(f"git archive {rev} failed")
    return dest


def measure(m: Measurement, name: str, extra: list[str], at: str | None) -> tuple[Output, str | None]:
    """Run ``m`` (in the work tree; ``at``: in an export of that commit, its ``src/`` first on the path;
    setup: in a fresh clone) and render its page; the page is None when the command failed."""
    commit = short_commit(at or "HEAD") if (at or m.shell) else None
    with tempfile.TemporaryDirectory(prefix=f"posenc-{m.name}-") as tmp:
        if m.shell:
            argv = [a if a != REV else shlex.quote(at or "HEAD") for a in [*m.command, *extra]]
            out = run_command(argv, Path(tmp), shell=True)
        elif at:
            tree = export(at, Path(tmp) / "tree")
            env = {
                **os.environ,
                "PYTHONPATH": os.pathsep.join(filter(None, [str(tree / "src"), os.environ.get("PYTHONPATH")])),
            }
            out = run_command([*m.command, *extra], tree, env=env)
        else:
            out = run_command([*m.command, *extra], ROOT)
        return out, (render(m, name, extra, out, at, commit) if out.returncode == 0 else None)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/results.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )
    parser.add_argument("--list", action="store_true", help="list the measurements and exit")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results", help="where <name>.md goes")
    parser.add_argument(
        "--at",
        metavar="REV",
        default=None,
        help="measure commit REV (a git archive export of it) instead of the work tree",
    )
    parser.add_argument("name", nargs="?", help="a measurement of --list, or sweep:<preset>")
    parser.add_argument(
        "args", nargs=argparse.REMAINDER, help="passed to its command (after --, or a sweep's overrides)"
    )
    ns = parser.parse_args(argv)
    if ns.list:
        width = max(map(len, [*MEASUREMENTS, SWEEP + "<preset>"]))
        for m in MEASUREMENTS.values():
            print(f"{m.name:<{width}}  {' '.join(m.command)}   [{m.cost}]")
        print(
            f"{SWEEP + '<preset>':<{width}}  python sweep.py <preset> [overrides]   "
            f"[presets: {', '.join(sweep_presets())}]"
        )
        return 0
    if ns.name is None:
        parser.print_usage(sys.stderr)
        print("error: name a measurement (see --list)", file=sys.stderr)
        return 2
    try:
        m = measurement(ns.name)
        out, text = measure(m, ns.name, [a for a in ns.args if a != "--"], ns.at)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if text is None:
        print(f"error: {' '.join(m.command)} exited {out.returncode}; nothing written", file=sys.stderr)
        return 1
    ns.out.mkdir(parents=True, exist_ok=True)
    path = ns.out / f"{m.name}.md"
    path.write_text(text)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
