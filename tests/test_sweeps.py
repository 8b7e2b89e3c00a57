"""Sweeps end to end: presets, ``sweep.py``, collect's tables, failure isolation."""

from __future__ import annotations

import csv
import json
import shutil
import statistics
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from conftest import ROOT
from posenc.sweeps import collect, list_presets, reserve_sweep_dir, write_reports

TINY = ["backbone=tiny", "data.image_size=32", "data.num_train=8", "data.num_test=4", "data.batch_size=8",
        "trainer.max_epochs=1", "callbacks.progress=null"]


def run(script: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(ROOT / script), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def seeded_sweep(tmp_path_factory) -> Path:
    """A real 2 paddings x 2 seeds multirun (4 jobs) on the tiny config."""
    out = tmp_path_factory.mktemp("seeded")
    run("train.py", "-m", "padding=zeros,circular", "seed=0,1", *TINY, f"paths.output_root={out}")
    (sweep,) = (out / "multirun").iterdir()
    return sweep


def test_presets_are_listed_with_descriptions():
    presets = list_presets(ROOT / "conf")
    assert {"padding_study", "readout_ablation", "tap_ablation", "posenet_alone"} <= set(presets)
    assert all(presets.values())
    proc = run("sweep.py", "--list")
    for name in presets:
        assert name in proc.stdout


def test_unknown_preset_is_one_line_error():
    proc = run("sweep.py", "padding_studdy", check=False)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert "'padding_studdy'" in line and "padding_study" in line and "tap_ablation" in line


def test_collect_a_three_job_multirun(tmp_path):
    run("train.py", "-m", "padding=zeros,circular,none", *TINY, f"paths.output_root={tmp_path}")
    (sweep,) = (tmp_path / "multirun").iterdir()
    results = collect(sweep)
    assert [r.status for r in results] == ["completed"] * 3
    write_reports(sweep, results)
    rows = read_csv(sweep / "results.csv")
    assert [r["padding"] for r in rows] == ["zeros", "circular", "none"]
    md = (sweep / "results.md").read_text()
    for padding in ("zeros", "circular", "none"):
        assert f"padding={padding}" in md
    assert (sweep / "results_natural_spc.png").stat().st_size > 5_000


def test_seeds_become_mean_and_std(seeded_sweep, tmp_path):
    sweep = tmp_path / "copy"
    shutil.copytree(seeded_sweep, sweep)
    results = collect(sweep)
    write_reports(sweep, results)
    values = [json.loads((sweep / job / "metrics.json").read_text())["test/natural/H/spc"]
              for job in ("0", "1")]  # padding=zeros, seeds 0 and 1 (launch order)
    expected = f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"
    zeros_row = next(line for line in (sweep / "results.md").read_text().splitlines()
                     if line.startswith("| padding=zeros"))
    assert expected in zeros_row
    assert len(read_csv(sweep / "results.csv")) == 4


def test_failed_and_missing_jobs_are_rows_never_dropped(seeded_sweep, tmp_path):
    sweep = tmp_path / "copy"
    shutil.copytree(seeded_sweep, sweep)
    shutil.rmtree(sweep / "3")  # circular, seed 1: never started
    (sweep / "2" / "metrics.json").unlink()  # circular, seed 0: crashed
    (sweep / "2" / "status.json").write_text(json.dumps({"status": "failed", "error": "RuntimeError: boom"}))
    results = collect(sweep)
    assert sorted(r.status for r in results) == ["completed", "completed", "failed", "missing"]
    write_reports(sweep, results)
    rows = read_csv(sweep / "results.csv")
    assert len(rows) == 4
    failed = next(r for r in rows if r["status"] == "failed")
    assert "boom" in failed["error"]
    assert any(r["status"] == "missing" for r in rows)
    assert "boom" in (sweep / "results.md").read_text()


def test_a_failing_job_is_recorded_and_the_others_finish(tmp_path):
    proc = run("train.py", "-m", "readout.kernel_size=3,4", *TINY, f"paths.output_root={tmp_path}")
    (sweep,) = (tmp_path / "multirun").iterdir()
    status = {job: json.loads((sweep / job / "status.json").read_text()) for job in ("0", "1")}
    assert status["0"]["status"] == "completed"
    assert status["1"]["status"] == "failed" and "4" in status["1"]["error"] and "1, 3, 5, 7" in status["1"]["error"]
    assert "error:" in proc.stderr
    results = collect(sweep)
    write_reports(sweep, results)
    rows = {r["readout.kernel_size"]: r for r in read_csv(sweep / "results.csv")}
    assert rows["3"]["status"] == "completed" and rows["4"]["status"] == "failed"
    assert "kernel_size" in rows["4"]["error"]


def test_sweep_py_runs_a_preset_and_reports(tmp_path):
    proc = run("sweep.py", "posenet_alone", *[o for o in TINY if not o.startswith("backbone")],
               f"paths.output_root={tmp_path}")
    sweep = Path(proc.stdout.strip().splitlines()[-1])
    assert sweep.parent == (tmp_path / "sweeps" / "posenet_alone").resolve()
    rows = read_csv(sweep / "results.csv")
    assert sorted(r["backbone"] for r in rows) == ["none", "vgg16"]
    assert all(r["status"] == "completed" for r in rows)
    md = (sweep / "results.md").read_text()
    assert "backbone=none" in md and "backbone=vgg16" in md
    assert (sweep / "results_natural_spc.png").exists()
    again = run("sweep.py", "collect", str(sweep))
    assert again.stdout.strip().splitlines()[-1] == str(sweep)


def test_tap_ablation_expands_to_six_jobs(tmp_path):
    from posenc.compose import compose_run
    from posenc.sweeps import expand_overrides
    from hydra.core.hydra_config import HydraConfig

    compose_run(["sweep=tap_ablation"], tmp_path / "r")
    jobs = expand_overrides(HydraConfig.get().sweeper.params, [])
    taps = [dict(o.split("=", 1) for o in job)["backbone.taps"] for job in jobs]
    assert taps == ["[f1]", "[f2]", "[f3]", "[f4]", "[f5]", "[f1,f2,f3,f4,f5]"]


def test_two_sweeps_in_the_same_second_get_different_dirs(tmp_path):
    now = datetime(2026, 1, 1, 12, 0, 0)
    first = reserve_sweep_dir(tmp_path, "padding_study", now)
    second = reserve_sweep_dir(tmp_path, "padding_study", now)
    assert first != second and first.is_dir() and second.is_dir()
