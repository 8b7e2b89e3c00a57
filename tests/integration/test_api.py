"""posenc from Python (docs/api.md, the README's notebook example): the atlas engine behind ``posenc.atlas`` gives
a table and a figure for a user's own ``nn.Module`` with no config file or factory, the same numbers as the run
and the sweep for a backbone name, and one-line errors for what cannot be measured."""

from __future__ import annotations

import doctest
import re

import pytest
import torch.nn as nn
from helpers.runs import ROOT, train_in_process

import posenc
from posenc.errors import PosencError

FAST = ["task.max_steps=50", "task.ppp_contexts=4", "data.num_train=32", "data.num_val=8"]


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def tiny_model() -> nn.Module:
    """A model with the README example's tap names (layer1..layer4), small enough for a test."""
    model = nn.Sequential()
    for i, (cin, cout) in enumerate([(3, 8), (8, 8), (8, 16), (16, 16)], start=1):
        model.add_module(
            f"layer{i}", nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2 if i > 1 else 1))
        )
    return model


def test_the_readme_example_gives_a_table_and_a_figure_for_a_notebook_model():
    block = next(b for b in python_blocks((ROOT / "README.md").read_text()) if "posenc.atlas(" in b)
    namespace = {"my_model": tiny_model()}
    exec(block, namespace)  # the README's three lines, as written (3 seeds, the default protocol)
    table = namespace["table"]
    assert {r["padding"] for r in table} == {"zeros", "reflect", "none"}
    assert {r["seed"] for r in table} == {0, 1, 2}
    assert {r["tap"] for r in table} == {"layer1", "layer2", "layer3", "layer4", "all"}
    cells = {(r["padding"], r["tap"]): r for r in table.summary()}
    # zero padding gives the notebook model position, no padding none. Measured (1 and 2 torch threads): zeros
    # .833 [.810, .856] and .839 [.775, .902]; none .016 [-.326, .357] and -.007 [-.472, .458]
    assert cells[("zeros", "all")]["H_spc_ci_low"] > 0.6
    assert cells[("none", "all")]["H_spc"] < 0.3
    assert cells[("zeros", "all")]["H_spc"] - cells[("none", "all")]["H_spc"] > 0.5
    assert "Padding differences" in table.markdown()


def test_every_example_of_docs_api_runs():
    namespace: dict = {}
    for block in python_blocks((ROOT / "docs" / "api.md").read_text()):
        exec(block, namespace)
    assert namespace["figure"] is not None and len(namespace["table"]) > 0
    assert set(namespace["strengths"]) == {"layer1", "layer2"}


def test_the_api_docstrings_run():
    import posenc.api

    failed, tried = doctest.testmod(posenc.api, verbose=False)[:2]
    assert tried > 0 and failed == 0


def test_a_backbone_name_gives_the_numbers_of_the_run(tmp_path):
    """``posenc.atlas("tiny")`` and ``train.py task=atlas backbone=tiny`` are two faces of one engine: equal."""
    table = posenc.atlas("tiny", paddings=["zeros"], seeds=[0, 1], overrides=FAST)
    proc = train_in_process(
        "task=atlas",
        "backbone=tiny",
        "task.paddings=[zeros]",
        "task.seeds=[0,1]",
        *FAST,
        f"paths.output_root={tmp_path}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json
    from pathlib import Path

    metrics = json.loads((Path(proc.stdout.strip().splitlines()[-1]) / "metrics.json").read_text())
    for row in table:
        prefix = f"atlas/zeros/s{row['seed']}/" + ("test" if row["tap"] == "all" else f"tap/{row['tap']}")
        assert row["H_spc"] == pytest.approx(metrics[f"{prefix}/natural/H/spc"], abs=1e-6)
    assert metrics["test/zeros/H/spc/ci_low"] <= metrics["test/zeros/H/spc"] <= metrics["test/zeros/H/spc/ci_high"]


@pytest.mark.parametrize(
    ("call", "said"),
    [
        (lambda: posenc.atlas(tiny_model()), "taps"),
        (lambda: posenc.atlas(tiny_model(), taps=["layer9"]), "layer9"),
        (lambda: posenc.atlas(tiny_model(), taps=["layer1"], paddings=["mirror"]), "mirror"),
        (lambda: posenc.atlas(tiny_model(), taps=["layer1"], seeds=0), "seeds"),
        (lambda: posenc.atlas(42, taps=["layer1"]), "model"),
    ],
)
def test_what_cannot_be_measured_is_one_line(call, said):
    with pytest.raises(PosencError) as info:
        call()
    assert said in str(info.value) and "\n" not in str(info.value)
