"""posenc.engine.network: one network under paddings x seeds, one pass feeding PosENet and PPP (issue 34)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from helpers.runs import compose_run
from hydra.utils import instantiate

SMALL = ["task.max_steps=40", "task.ppp_contexts=4", "data.num_train=16", "data.num_val=8", "data.num_test=4"]


def _task(tmp_path: Path, *overrides: str):
    cfg = compose_run(["task=atlas", "backbone=tiny", *SMALL, *overrides], tmp_path / "run")
    return instantiate(cfg.task)


def test_every_padding_and_seed_is_a_cell_with_the_per_cell_runs_keys(tmp_path):
    task = _task(tmp_path, "task.paddings=[zeros,none]", "task.seeds=[0,1]")
    cells = task.cells(progress=lambda line: None)
    assert [(c.padding, c.seed) for c in cells] == [("zeros", 0), ("zeros", 1), ("none", 0), ("none", 1)]
    for cell in cells:
        m = cell.metrics
        assert cell.error is None
        for key in ("test/natural/H/spc", "tap/f3/natural/G/spc", "ppp/f2/rel_energy", "tap/f5/rf_px"):
            assert key in m, key
        low, high = m["test/natural/H/spc/ci_low"], m["test/natural/H/spc/ci_high"]
        assert low <= m["test/natural/H/spc"] <= high
        assert "ppp/f2/snr/ci_low" not in m  # two seeds: the atlas's interval is over the seeds
        assert m["train/steps"] == 40 and m["atlas/time/forward_s"] > 0
    zeros0, none0 = cells[0].metrics, cells[2].metrics
    assert zeros0["ppp/reference_cached"] is False and none0["ppp/reference_cached"] is False  # none: own interior


def test_one_seed_gets_the_ppp_bootstrap_and_a_padding_class_shares_its_reference(tmp_path):
    task = _task(tmp_path, "task.paddings=[zeros,circular]", "task.seeds=[3]")
    zeros, circular = task.cells(progress=lambda line: None)
    assert zeros.metrics["ppp/f1/rel_energy/ci_low"] <= zeros.metrics["ppp/f1/rel_energy/ci_high"]
    assert circular.metrics["ppp/reference_cached"] is True  # zeros and circular compute the same interior
    assert math.isclose(zeros.metrics["ppp/f3/variance"], circular.metrics["ppp/f3/variance"], rel_tol=1e-9)


def test_a_padding_the_network_refuses_is_its_one_line_and_the_others_go_on(tmp_path):
    task = _task(
        tmp_path, "data.image_size=32", "task.paddings=[none_shrink,zeros]", "task.seeds=[0]", "task.ppp=false"
    )
    shrink, zeros = task.cells(progress=lambda line: None)  # valid convs: tiny needs 140 px
    assert shrink.error is not None and "none_shrink" in shrink.error and "\n" not in shrink.error
    assert zeros.error is None and "test/natural/H/spc" in zeros.metrics


def test_a_restarted_job_keeps_the_paddings_it_measured(tmp_path):
    task = _task(tmp_path, "task.paddings=[zeros,none]", "task.seeds=[0]", "task.ppp=false")
    kept = tmp_path / "checkpoints" / "atlas_cells.json"
    first = task.cells(progress=lambda line: None, kept=kept)
    saved = json.loads(kept.read_text())
    assert set(saved["paddings"]) == {"zeros", "none"}
    said: list[str] = []
    again = task.cells(progress=said.append, kept=kept)
    assert said == ["zeros: measured before, kept", "none: measured before, kept"]
    assert [c.metrics["test/natural/H/spc"] for c in again] == [c.metrics["test/natural/H/spc"] for c in first]
    other = _task(tmp_path, "task.paddings=[zeros,none]", "task.seeds=[0]", "task.ppp=false", "task.max_steps=41")
    said.clear()
    other.cells(progress=said.append, kept=kept)  # another config: nothing kept is used
    assert not any("measured before" in line for line in said)


@pytest.mark.parametrize(
    ("settings", "said"), [({"paddings": ["zeros", "mirror"]}, "mirror"), ({"seeds": [1, 1]}, "distinct")]
)
def test_a_bad_list_is_one_line(settings, said):
    import posenc
    from posenc.errors import PosencError

    with pytest.raises(PosencError) as info:
        posenc.atlas("tiny", **settings)
    assert said in str(info.value) and "\n" not in str(info.value)


def test_resume_of_a_stopped_atlas_run_keeps_its_measured_paddings(tmp_path):
    """``train.py --resume`` of a task=atlas run that stopped after its first padding (no Lightning checkpoint: its
    kept cells are the checkpoint) measures only the paddings it had not measured."""
    from helpers.runs import train_in_process

    args = ["task=atlas", "backbone=tiny", "task.paddings=[zeros,none]", "task.seeds=[0]", *SMALL, "task.ppp=false"]
    proc = train_in_process(*args, f"paths.output_root={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    run_dir = Path(proc.stdout.strip().splitlines()[-1])
    kept = run_dir / "checkpoints" / "atlas_cells.json"
    saved = json.loads(kept.read_text())
    del saved["paddings"]["none"]  # as if stopped while measuring `none`
    kept.write_text(json.dumps(saved))
    (run_dir / "metrics.json").unlink()
    (run_dir / "status.json").write_text(json.dumps({"status": "interrupted", "signal": "SIGTERM"}))
    again = train_in_process("--resume", str(run_dir))
    assert again.returncode == 0, again.stderr[-2000:]
    assert "zeros: measured before, kept" in again.stdout and "none, seed 0: encoded" in again.stdout
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"atlas/zeros/s0/test/natural/H/spc", "atlas/none/s0/test/natural/H/spc"} <= set(metrics)
    assert json.loads((run_dir / "status.json").read_text())["resumed_from"].endswith("atlas_cells.json")
