"""Typed config schemas: every bad value is one line naming key, value and what is expected.

Wrong types and unknown keys fail while Hydra composes; ranges, choices, the keys of ``_target_``
nodes and loosely typed nodes fail in ``posenc.config.validation.validate`` before anything is
built; a value Lightning refuses fails when the Trainer is built. ``train.py`` exits 2 with one
line on stderr for all of them.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.runs import CONF_DIR, ROOT, compose_run, train_in_process
from hydra.core.hydra_config import HydraConfig
from hydra.errors import MissingConfigException
from hydra.types import RunMode
from omegaconf import MISSING, OmegaConf, read_write

from posenc.config import schema
from posenc.config.groups import group_options
from posenc.config.validation import user_error, validate
from posenc.errors import PosencError

GROUPS = group_options(CONF_DIR)
ALL_OPTIONS = [(g, o) for g, options in GROUPS.items() for o in options if not g.startswith("hydra")]

# train.py as a user runs it: (override, what the one line must name). Started all at once by
# the fixture below (they fail before any training: in this process, under a second each).
CLI_CASES = {
    "seed=abc": ["seed='abc'", "expected an int"],
    "data.image_size=abc": ["data.image_size='abc'", "expected an int >= 8"],
    "data.num_train=0": ["data.num_train=0", "expected an int >= 1"],
    "data.num_trian=3": ["data.num_trian=3", "num_train"],
    "trainer.devices=0": ["trainer.devices=0", "devices=0"],
}


@pytest.fixture(scope="module")
def cli_results(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """Each case as ``python train.py`` ends it (in this process: each stops before anything is built)."""
    out = tmp_path_factory.mktemp("cli")
    return {case: train_in_process("backbone=tiny", case, f"paths.output_root={out}") for case in CLI_CASES}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_train_py_bad_value_is_one_line_and_exit_2(cli_results, case):
    proc = cli_results[case]
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith("error: ") and "is not valid" in lines[0], lines[0]
    for name in CLI_CASES[case]:
        assert name in lines[0], lines[0]


# -- in process: compose, then validate -----------------------------------------------------------
def error_line(tmp_path: Path, *overrides: str) -> str:
    """The one-line message of ``overrides``, whether composing or validating refuses them."""
    try:
        cfg = compose_run(list(overrides), tmp_path)
    except Exception as exc:  # noqa: BLE001 - a compose error must be a user error
        user = user_error(exc)
        assert user is not None, f"{overrides} raised a non-user error: {exc!r}"
        return str(user)
    with pytest.raises(PosencError) as info:
        validate(cfg)
    return str(info.value)


def test_default_config_validates(tmp_path):
    validate(compose_run([], tmp_path))


@pytest.mark.parametrize(("group", "option"), ALL_OPTIONS)
def test_every_option_composes_typed_and_validates(tmp_path, group, option):
    cfg = compose_run([f"{group}={option}"], tmp_path)
    validate(cfg)
    node = cfg.task if group in ("invariance", "protocol", "experiment") else None if group == "sweep" else cfg[group]
    if node is not None:
        assert dataclasses.is_dataclass(OmegaConf.get_type(node)), f"{group}={option} is untyped"


@pytest.mark.parametrize(
    "overrides",
    [
        ["task.scheduler=null"],
        ["task.max_steps=-1", "task.max_epochs=3"],
        ["task.max_epochs=-1"],
        ["trainer.devices=auto", "trainer.limit_train_batches=0.5", "trainer.limit_test_batches=2"],
        ["trainer.precision=bf16-mixed", "trainer.deterministic=warn", "trainer.gradient_clip_val=1"],
        ["task.optimizer._target_=torch.optim.Adam", "~task.optimizer.momentum"],  # any optimizer
        ["backbone.taps=[f2,f3,f4,f5]", "readout.kernel_size=7", "readout.align_corners=false"],
        ["logger=wandb", "logger.wandb.entity=me"],
        ["callbacks.progress=null"],
    ],
)
def test_valid_values_validate(tmp_path, overrides):
    validate(compose_run(overrides, tmp_path))


@pytest.mark.parametrize(
    ("override", "names"),
    [
        # wrong types: refused while composing
        ("seed=abc", ["seed='abc'", "expected an int"]),
        ("data.image_size=abc", ["data.image_size='abc'", "expected an int >= 8"]),
        ("readout.align_corners=maybe", ["readout.align_corners='maybe'", "true or false"]),
        ("data.test_inputs=natural", ["data.test_inputs='natural'", "a list"]),
        ("trainer.max_steps=abc", ["trainer.max_steps='abc'", "expected an int >= -1"]),
        ("task.optimizer.lr=abc", ["task.optimizer.lr='abc'", "expected a number > 0"]),
        # out of range / not a choice
        ("readout.kernel_size=4", ["readout.kernel_size=4", "one of 1, 3, 5, 7"]),
        ("readout.depth=0", ["readout.depth=0", "one of 1, 2, 3"]),
        ("data.batch_size=0", ["data.batch_size=0", ">= 1"]),
        ("data.min_scale=0", ["data.min_scale=0.0", "in (0, 1]"]),
        ("task.max_steps=0", ["task.max_steps=0", "an int >= 1 or -1"]),
        ("task.max_epochs=0", ["task.max_epochs=0", "an int >= 1, -1 or null"]),
        ("task.targets=[H,X]", ["task.targets[1]='X'", "one of H, V, G, HS, VS"]),
        ("task.feature_cache=ram", ["task.feature_cache='ram'", "memory, disk, off"]),
        ("task.autocast=fp16", ["task.autocast='fp16'", "one of null, bf16"]),
        ("backbone.taps=[f1,f9]", ["backbone.taps[1]='f9'", "f1, f2, f3, f4, f5"]),
        ("padding.name=zero", ["padding.name='zero'", "zeros"]),
        ("task.optimizer.lr=0", ["task.optimizer.lr=0", "> 0"]),
        ("task.scheduler.fractions=[0.5,1.0]", ["task.scheduler.fractions[1]=1.0", "in (0, 1)"]),
        ("task.scheduler.gamma=0", ["task.scheduler.gamma=0", "> 0"]),
        ("callbacks.loss_curve.window=0.6", ["callbacks.loss_curve.window=0.6", "in (0, 0.5]"]),
        ("trainer.num_nodes=0", ["trainer.num_nodes=0", ">= 1"]),
        ("trainer.max_steps=-2", ["trainer.max_steps=-2", ">= -1"]),
        # unknown keys and targets
        ("data.num_trian=3", ["data.num_trian=3", "num_train"]),
        ("+data.num_trian=3", ["data.num_trian=3", "PositionDataModule has no argument", "num_train"]),
        ("+task.optimizer.weight_decy=0", ["task.optimizer.weight_decy=0", "weight_decay"]),
        ("logger.wandb.project=x", ["logger.wandb.project='x'", "logger wandb is not chosen", "logger=[csv,wandb]"]),
        ("task.optimizer._target_=torch.optim.SDG", ["task.optimizer._target_='torch.optim.SDG'", "cannot import"]),
        # interpolations that do not resolve
        ("trainer.max_epochs=${task.max_epoch}", ["trainer.max_epochs='${task.max_epoch}'", "task.max_epoch"]),
        # overrides Hydra cannot parse
        ("data.image_size=[1,", ["data.image_size=[1,", "cannot parse"]),
    ],
)
def test_bad_values_name_key_value_and_expectation(tmp_path, override, names):
    line = error_line(tmp_path, "backbone=tiny", override)
    assert "\n" not in line
    for name in names:
        assert name in line, line


def test_a_bad_job_of_a_multirun_is_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch):
    from posenc.run.train import run

    cfg = compose_run(["backbone=tiny", "data.num_train=0"], tmp_path / "job")
    with read_write(HydraConfig.get()):
        HydraConfig.get().mode = RunMode.MULTIRUN
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # a multirun job pins argv to its overrides
    assert run(cfg) is None  # returned, not raised: the launcher starts the next job
    status = json.loads((tmp_path / "job" / "status.json").read_text())
    assert status["status"] == "failed"
    assert "data.num_train=0 is not valid" in status["error"]


# -- the schemas are the signatures of the code they configure ----------------------------------------
TARGETED = [s for s in schema.GROUP_SCHEMAS.values() if getattr(s, "_target_", MISSING) not in (MISSING, "???")]


@pytest.mark.parametrize("schema_cls", TARGETED, ids=lambda s: s.__name__)
def test_a_schema_is_its_targets_signature(schema_cls):
    """Every field but ``_target_`` / ``_partial_`` is a keyword parameter of the target (its own or, through
    ``**kwargs``, a base class's, as the validator follows them) with the parameter's default and the rules its
    annotation states; a parameter without a field is one the calling code passes (a partial's), one the
    schema leaves out on purpose, or an argument ``**kwargs`` passes on (W&B's)."""
    from hydra.utils import get_object

    from posenc.config.rules import rules_of
    from posenc.config.signatures import parameters

    params = {p.name: p for p in parameters(get_object(schema_cls._target_))[0]}
    # _recursive_: Hydra's, not the target's (task=atlas builds its nested nodes itself)
    fields = {
        f.name: f for f in dataclasses.fields(schema_cls) if f.name not in ("_target_", "_partial_", "_recursive_")
    }
    passed_on = {"entity", "group", "job_type", "tags", "notes"} if schema_cls is schema.WandbLoggerSchema else set()
    assert set(fields) - passed_on <= set(params), set(fields) - set(params)
    for name, f in fields.items():
        if name in passed_on:
            continue
        code_default = params[name].default
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        wired = isinstance(default, str) and default.startswith("${")  # another group's node, not a value
        if code_default is not inspect.Parameter.empty and not wired and not dataclasses.is_dataclass(default):
            assert default == (list(code_default) if isinstance(code_default, tuple) else code_default), name
        assert rules_of(params[name].annotation).items() <= dict(f.metadata).items(), name
    left_out = set(params) - set(fields)
    assert all(params[n].default is inspect.Parameter.empty for n in left_out) or schema_cls in (
        schema.ReadoutSchema,  # PosENetTask passes num_maps and channel_groups
        schema.ContextDataSchema,  # num_val: PPP has no held-out set
        schema.TrainerSchema,  # logger, callbacks, plugins: posenc.run.train passes them
        schema.TensorBoardLoggerSchema,  # root_dir: set from save_dir by the logger
        schema.WandbLoggerSchema,  # a resumed run's id, artifact policies: not offered
    ), left_out


def test_the_schemas_read_the_codes_own_tuples():
    """A field's choices are the very tuple the code acts on (``get_args`` of the parameter's ``Literal``), not
    an equal copy."""
    from posenc.data import datamodule, feature_cache, location, position_maps
    from posenc.models import readouts
    from posenc.tasks import location_cls, posenet

    def rules(schema_cls, name):
        return next(f.metadata for f in dataclasses.fields(schema_cls) if f.name == name)

    assert rules(schema.PosENetTaskSchema, "targets")["items"]["choices"] is position_maps.TARGETS
    assert rules(schema.PosENetTaskSchema, "feature_cache")["choices"] is feature_cache.CACHE_MODES
    assert rules(schema.PosENetTaskSchema, "autocast")["choices"] is posenet.AUTOCAST
    assert rules(schema.LocationClsTaskSchema, "augment")["choices"] is location_cls.AUGMENTS
    assert rules(schema.ReadoutSchema, "kernel_size")["choices"] is readouts.KERNEL_SIZES
    assert rules(schema.DataSchema, "test_inputs")["items"]["choices"] is datamodule.TEST_INPUTS
    assert rules(schema.CanvasDataSchema, "test_placement")["choices"] is location.TEST_PLACEMENTS
    assert ("auto", *feature_cache.NUMPY_DTYPES) == feature_cache.CACHE_DTYPES  # auto: resolved to one of them


def test_every_family_yaml_fits_the_family_schema():
    """Every YAML typed by the shared family schema names a builder that takes exactly its fields."""
    import yaml
    from hydra.utils import get_object

    from posenc.config.signatures import parameters

    typed = []
    fields = {f.name for f in dataclasses.fields(schema.BackboneFamilySchema)} - {"_target_"}
    for path in (ROOT / "conf").rglob("*.yaml"):
        text = yaml.safe_load(path.read_text()) or {}
        if any("backbone_family" in str(d) for d in text.get("defaults", [])):
            typed.append(path.name)
            assert {p.name for p in parameters(get_object(text["_target_"]))[0]} == fields, path
    assert "timm.yaml" in typed  # the check saw the family configs at all


def test_schemas_are_not_options_of_the_user_facing_groups(tmp_path):
    assert schema.SCHEMA_GROUP not in GROUPS  # posenc.cli.argv lists conf/ only
    with pytest.raises(MissingConfigException):
        compose_run(["backbone=backbone"], tmp_path)


def test_nested_canvas_schema_matches_the_canvas_spec():
    from posenc.data.location import CanvasSpec

    assert dataclasses.asdict(schema.CanvasSpecSchema()) == dataclasses.asdict(CanvasSpec())


@pytest.mark.parametrize(
    ("overrides", "steps"),
    [
        ([], 1000),  # random init (conf/task/posenet.yaml)
        (["backbone.weights=imagenet"], 3000),  # trained weights need more readout steps
        (["backbone=none"], 1000),
        (["backbone.weights=imagenet", "task.max_steps=50"], 50),  # an override wins
    ],
)
def test_the_readout_budget_follows_the_weights(overrides, steps, tmp_path):
    cfg = compose_run(overrides, tmp_path / "run")
    assert cfg.task.max_steps == steps and cfg.trainer.max_steps == steps


def test_no_module_copies_a_choice_list():
    """Every list of valid values is written once, as a ``Literal`` (its tuple derived with ``get_args``) or a
    registry's live view: no module spells out the values of a ``Literal`` as a tuple of its own."""
    import ast

    def constants(node):
        elts = node.elts if isinstance(node, ast.Tuple) else [node]
        return tuple(e.value for e in elts) if all(isinstance(e, ast.Constant) for e in elts) else None

    modules = {p: ast.parse(p.read_text()) for p in (ROOT / "src" / "posenc").rglob("*.py")}
    literals = {
        values: f"{path.relative_to(ROOT)}:{node.lineno}"
        for path, tree in modules.items()
        for node in ast.walk(tree)
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "Literal"
        if (values := constants(node.slice)) is not None and len(values) > 1
    }
    copies = [
        f"{path.relative_to(ROOT)}:{node.lineno} copies the Literal of {literals[spelled]}"
        for path, tree in modules.items()
        for node in tree.body
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Tuple)
        if (spelled := constants(node.value)) in literals
    ]
    assert len(literals) > 10, "the check found too few Literals to mean anything"
    assert copies == []
