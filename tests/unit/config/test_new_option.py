"""A new choice-valued option touches only the task's module and its YAML (issue 32 §2): its choices, type and
default are read from the ``_target_``'s signature (posenc.config.signatures), and its one-line error appears
without an edit anywhere else (no schema, no list of choices, no test holding copies equal)."""

from __future__ import annotations

import shutil
import textwrap

import pytest
from helpers.runs import CONF_DIR

from posenc.config.compose import validate_job
from posenc.errors import PosencError

TASK_MODULE = '''
from typing import Any, Literal

from posenc.tasks.location_cls import LocationClassificationTask


class ColourTask(LocationClassificationTask):
    """location_cls with a colour: the option is its parameter's Literal and default, nothing else."""

    def __init__(self, colour: Literal["red", "green"] = "red", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.colour = colour
'''

# conf/task/location_cls.yaml's settings with the new task as _target_; a task without a schema of its own in
# posenc.config.schema is typed by its target's signature when the config is validated
TASK_YAML = """
# @package _global_
defaults:
  - override /backbone: tiny
  - override /readout: gap_linear
  - override /data: canvas
  - _self_
task:
  _target_: mytasks.colour_task.ColourTask
  backbone: ${backbone}
  head: ${readout}
  image_size: ${data.image_size}
  colour: red
  max_steps: 300          # the budget, which the trainer config reads
  max_epochs: null
  optimizer:
    _target_: torch.optim.Adam
    _partial_: true
    lr: 1.0e-3
backbone:
  trainable: true
"""


@pytest.fixture
def conf_with_colour(tmp_path, monkeypatch):
    """A package ``mytasks`` on ``sys.path`` and a copy of ``conf/`` with ``task/colour.yaml``: nothing else."""
    package = tmp_path / "mytasks"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "colour_task.py").write_text(textwrap.dedent(TASK_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    (conf / "task" / "colour.yaml").write_text(TASK_YAML)
    return conf


def test_a_bad_value_of_the_new_option_is_one_line_naming_its_choices(conf_with_colour):
    with pytest.raises(PosencError) as info:
        validate_job(["task=colour", "task.colour=blue"], conf_dir=conf_with_colour)
    line = str(info.value)
    assert "\n" not in line
    for name in ("task.colour", "'blue'", "red, green"):
        assert name in line, line


def test_a_valid_value_of_the_new_option_composes(conf_with_colour):
    validate_job(["task=colour", "task.colour=green"], conf_dir=conf_with_colour)
    validate_job(["task=colour"], conf_dir=conf_with_colour)  # the YAML's value
