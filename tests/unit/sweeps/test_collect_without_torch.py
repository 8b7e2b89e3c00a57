"""``python sweep.py collect`` reads JSON and YAML files: in a fresh interpreter it writes a plain sweep's
reports and a grouped sweep's atlas without importing torch, Lightning or torchvision for them (issue 32:
the report order comes from ``metrics.json``, not from the job's task). A watcher on the import system
records which posenc function first asks for each of them, whenever it does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from helpers.runs import ROOT
from helpers.sweeps import fake_job, fake_metrics, fake_multirun

# sweep.py run as __main__ under a meta-path watcher; the last stderr line lists who imported what
WATCHED = """
import json, runpy, sys, traceback
HEAVY = {"torch", "lightning", "torchvision"}
importers = []
class Watch:
    def find_spec(self, name, path=None, target=None):
        if name in HEAVY:
            ours = [f for f in traceback.extract_stack()[:-1] if "/posenc/" in f.filename]
            where = f"{ours[-1].filename.split('/posenc/')[-1]}:{ours[-1].name}" if ours else "?"
            importers.append(f"{name} <- {where}")
        return None
sys.meta_path.insert(0, Watch())
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
    code = 0
except SystemExit as stop:
    code = stop.code
print("heavy imports: " + json.dumps(importers), file=sys.stderr)
sys.exit(code)
"""


def heavy_imports(sweep_dir: Path) -> tuple[subprocess.CompletedProcess, list[str]]:
    """``python sweep.py collect SWEEP_DIR`` in a fresh interpreter: its result, and each import of torch,
    Lightning or torchvision as ``"<module> <- <posenc file>:<function>"``."""
    proc = subprocess.run(
        [sys.executable, "-c", WATCHED, str(ROOT / "sweep.py"), "collect", str(sweep_dir)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("heavy imports: "), proc.stderr[-2000:]
    return proc, json.loads(last.removeprefix("heavy imports: "))


def finished(job: Path, wall_time_s: float) -> None:
    (job / "status.json").write_text(json.dumps({"status": "completed", "wall_time_s": wall_time_s}))


def plain_sweep(tmp_path: Path) -> Path:
    """Two completed PosENet-like jobs with distance curves and timed forward passes."""
    sweep = fake_multirun(tmp_path / "sweep", ["padding=zeros,circular"])
    for num, padding in enumerate(("zeros", "circular")):
        metrics = {
            **fake_metrics(0.4 + num / 10),
            "test/by_distance/ring0/accuracy": 0.5,
            "test/by_distance/ring1/accuracy": 0.7,
            "ppp/time/crops_s": 2.0,
        }
        finished(fake_job(sweep, num, [f"padding={padding}"], None, metrics=metrics), wall_time_s=5.0)
    return sweep


def test_collect_of_a_sweep_imports_no_task_and_no_torch_for_its_reports(tmp_path):
    sweep = plain_sweep(tmp_path)
    proc, imported = heavy_imports(sweep)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == str(sweep)
    assert imported == []  # tasks, tables, figures, the machine line: none
    names = {"results.md", "results.csv", "results_natural_spc.png", "results_noise_spc.png", "results_by_distance.png"}
    assert names <= {p.name for p in sweep.iterdir()}
    report = (sweep / "results.md").read_text()
    assert "| row | n | status | H SPC | H MAE | V SPC |" in report  # the order metrics.json recorded
    assert "2 ppp runs: 10.0 s of run wall time, of which forward passes 4.0 s (crops 4.0 s)." in report


def test_collect_of_a_grouped_sweep_writes_its_atlas_without_torch(tmp_path):
    sweep = tmp_path / "atlas"
    group = fake_multirun(sweep / "tiny", ["experiment=atlas_posenet,atlas_ppp", "padding=zeros"])
    spec = {"preset": "atlas", "report": "atlas", "groups": [["tiny", ["backbone=tiny"]]], "overrides": []}
    (sweep / "groups.json").write_text(json.dumps(spec))
    posenet = {"task": "posenet", "padding": "zeros", "test/natural/H/spc": 0.6, "test/natural/G/spc": 0.5}
    posenet.update({"tap/f1/rf_px": 5, "tap/f1/stride": 1, "tap/f1/rf_rel": 0.1, "tap/f1/natural/H/spc": 0.4})
    ppp = {"task": "ppp", "padding": "zeros", "test/ppp_snr_f1": 0.2, "ppp/f1/snr": 0.2, "ppp/f1/rel_energy": 0.01}
    for num, (experiment, metrics) in enumerate((("atlas_posenet", posenet), ("atlas_ppp", ppp))):
        job = fake_job(group, num, [f"experiment={experiment}", "padding=zeros"], None, metrics=metrics)
        finished(job, wall_time_s=3.0)
    proc, imported = heavy_imports(sweep)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert imported == []
    assert {"atlas.csv", "atlas.md", "atlas.png"} <= {p.name for p in sweep.iterdir()}
    assert "| tiny | zeros | random init | f1 0.40 (0.10) | 0.600 / 0.500 |" in (sweep / "atlas.md").read_text()


def test_collect_never_imports_torch(tmp_path):
    _, imported = heavy_imports(plain_sweep(tmp_path))
    assert imported == []
