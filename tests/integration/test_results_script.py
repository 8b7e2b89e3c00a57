"""``scripts/results.py``: the registry of measurements and the parsers that turn a command's output
into a docs/results page (fake outputs and run dirs; nothing is trained here)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.runs import ROOT

SPEC = importlib.util.spec_from_file_location("results_script", ROOT / "scripts" / "results.py")
results = importlib.util.module_from_spec(SPEC)
sys.modules[SPEC.name] = results  # dataclasses look their module up
SPEC.loader.exec_module(results)


def output(text: str, workdir: Path = ROOT, **kw) -> results.Output:
    return results.Output(text, 0, kw.get("wall_s", 151.0), kw.get("peak_rss_mib", 2048.0), workdir, kw.get("load"))


def test_list_names_every_measurement_and_the_sweep_presets():
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "results.py"), "--list"], capture_output=True, text=True, check=True
    ).stdout
    for name in ("main_job", "setup", "posenet_cache", "train_overhead", "readout_budget", "sweep:<preset>"):
        assert name in out
    assert "padding_study" in out
    assert results.measurement("sweep:padding_study").name == "sweep-padding_study"
    with pytest.raises(ValueError, match="unknown measurement 'nope'"):
        results.measurement("nope")


def test_main_job_page_has_provenance_then_the_grid_and_the_record(tmp_path):
    run = tmp_path / "outputs" / "runs" / "r"
    run.mkdir(parents=True)
    metrics = {
        "backbone": "vgg16",
        "padding": "zeros",
        "task": "posenet",
        "seed": 0,
        "status": "completed",
        "train/steps": 1000,
        "train/converged": True,
        "train/converged_on": "val",
        "val/loss/rel_decrease": 0.004,
        "val/loss_H/rel_decrease": 0.014,
    }
    for name in ("noise", "natural"):  # metrics.json sorts its keys; the page keeps the paper's order
        for target in ("VS", "H"):
            metrics[f"test/{name}/{target}/spc"] = 0.9
            metrics[f"test/{name}/{target}/mae"] = 0.1
    (run / "metrics.json").write_text(json.dumps(metrics))
    (run / "status.json").write_text(json.dumps({"status": "completed", "wall_time_s": 140.25}))
    out = output(f"table...\n{run.relative_to(tmp_path)}\n", tmp_path, load=(1.0, 2.0))
    page = results.render(results.MEASUREMENTS["main_job"], "main_job", [], out, None, None)
    lines = page.splitlines()
    assert lines[0].startswith("# The main job")
    assert lines[2].startswith("- commit: `") and lines[3] == "- command: `python train.py`"
    assert any(line.startswith("- load: 1-min load average 1.0 at the start, 2.0 at the end") for line in lines)
    assert "Regenerate: `python scripts/results.py main_job`" in page
    assert "| input | H SPC / MAE | VS SPC / MAE |" in page
    assert page.index("| natural |") < page.index("| noise |")
    assert "| `train/steps` | 1000 |" in page and "| `train/converged` | True (judged on the val loss) |" in page
    assert "| largest relative change, last window | -1.4% (loss_H) |" in page
    assert "| `wall_time_s` (status.json) | 140.2 |" in page or "| `wall_time_s` (status.json) | 140.3 |" in page
    assert "| peak RSS of the process | 2.00 GiB |" in page


def test_at_a_commit_the_page_names_it_clean():
    out = output("x\n/nonexistent\n")
    m = results.Measurement("t", "T", ["python", "x.py"], "1 s", lambda o: ["| a |"])
    page = results.render(m, "t", ["--n", "2"], out, "HEAD", "abc1234")
    assert "- commit: `abc1234`\n" in page and "dirty" not in page
    assert "- tree: a `git archive` export of that commit" in page
    assert "Regenerate: `python scripts/results.py --at HEAD t -- --n 2`" in page
    assert "- command: `python x.py --n 2`" in page


def test_benchmark_outputs_become_tables():
    overhead = output(
        "bare   run 0: ...\n\nconfig: task=location_cls backbone=resnet18_cifar\n"
        "device cpu, torch threads 1, precision 32, channels-last False; medians of 3 runs\n"
        "bare      2776.0 ms/step     11.5 images/s  (CPU   2700.5 ms/step)\n"
        "posenc    2744.0 ms/step     11.7 images/s  (CPU   2690.0 ms/step)\n"
        "posenc / bare   0.988x wall   (target <= 1.10)\n"
        "max |loss difference| per step, bare vs posenc: 0.00e+00\n"
    )
    table = results.train_overhead_table(overhead)
    assert table[0] == "Config: `task=location_cls backbone=resnet18_cifar`."
    assert "| bare | 2776.0 | 11.5 | 2700.5 |" in table and "| posenc | 2744.0 | 11.7 | 2690.0 |" in table
    assert "- posenc / bare   0.988x wall   (target <= 1.10)" in table
    cache = output(
        "noise\nconfig: backbone=vgg16\ncached run            12.3 s\n"
        "cached / bare           1.22x   (target <= 1.3)\nmax |metric difference| cached vs uncached: 1e-06\n"
    )
    table = results.posenet_cache_table(cache)
    assert "| cached run | 12.3 s |" in table and "| cached / bare | 1.22x   (target <= 1.3) |" in table
    budget = output(
        "proxy-trained vgg16 weights: /tmp/p.pth (90 s)\n"
        "random       1000 steps  H 0.952/0.076  V 0.948/0.081  loss 0.0123  val loss 0.0200  "
        "converged True (held-out loss fell 0.4%)  (95 s)\n"
    )
    table = results.readout_budget_table(budget)
    assert "| backbone | steps | H | V | held-out loss fell | converged | time |" in table
    assert "| random | 1000 | 0.952/0.076 | 0.948/0.081 | 0.4% | True | 95 s |" in table


def test_a_sweep_page_copies_results_md_keeping_its_provenance(tmp_path):
    sweep = tmp_path / "outputs" / "sweeps" / "padding_study" / "t"
    sweep.mkdir(parents=True)
    (sweep / "results.md").write_text(
        "# Sweep padding_study: x\n\n- commit: `abc`\n- command: `python sweep.py "
        "padding_study`\n\n## natural\n\n| row |\n"
    )
    page = results.sweep_table(output(f"...\n{sweep}\n", tmp_path))
    assert page[0] == "Copied from the sweep's `outputs/sweeps/padding_study/t/results.md`."
    assert "- command: `python sweep.py padding_study`" in page and "## natural" in page
    assert not any(line.startswith("# Sweep") for line in page)
