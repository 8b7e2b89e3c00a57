"""The one-line promise for the newer options (issue 30 §4): each bad input below is one line on stderr,
``error: <the value and what would be valid>``, exit status 2, before anything expensive is built; each
valid one below is taken. The QA probe found them ending in a traceback, silently accepted, hanging, or
(valid paths) refused. The rule behind the list is tested key by key in test_option_properties.py."""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
from helpers.runs import sweep_in_process, train_in_process

TINY = ["backbone=tiny", "data.num_train=8", "data.num_test=4", "trainer.max_epochs=1", "callbacks.progress=null"]


def one_line(proc) -> str:
    """The one ``error:`` line of a command that exited 2 (and nothing else on stderr)."""
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    return lines[0]


# -- backbone=module: the factory's arguments --------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["backbone.kwargs={width:abc}"], ["backbone.kwargs={'width': 'abc'}", "make_net(width: int = 16)"]),
        (
            ["backbone.kwargs={depth:2}"],
            ["backbone.kwargs={'depth': 2}", "unexpected keyword argument 'depth'", "make_net(width: int = 16)"],
        ),
        (["backbone.kwargs=[1,2]"], ["backbone.kwargs=[1, 2]", "a mapping of keyword arguments"]),
        (["backbone.kwargs=abc"], ["backbone.kwargs='abc'", "a mapping of keyword arguments"]),
        (["backbone.kwargs={width:0}"], ["backbone.kwargs={'width': 0}", "does not run"]),
        (["backbone.target=os.path.join"], ["backbone.kwargs=null", "missing a required argument: 'a'", "join(a, *p)"]),
        (["backbone.target=builtins.dict"], ["backbone.target=builtins.dict returned a dict, not an nn.Module"]),
    ],
)
def test_a_module_factory_refusing_its_arguments_is_one_line(tmp_path, args, names):
    line = one_line(train_in_process(*TINY, "backbone=module", *args, f"paths.output_root={tmp_path}"))
    for name in names:
        assert name in line, line


# -- input sizes a ViT asserts on ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "names"),
    [
        (
            ["backbone=timm", "backbone.name=vit_tiny_patch16_224", "data.image_size=32"],
            ["data.image_size=32", "224 px images only", "valid: data.image_size=224"],
        ),
        (["backbone=vit_tiny", "data.image_size=8"], ["data.image_size=8", "a multiple of 16", "data.image_size=16"]),
        (["backbone=vit_tiny", "data.image_size=100"], ["data.image_size=100", "data.image_size=96 or 112"]),
    ],
)
def test_a_vit_names_the_sizes_it_takes(tmp_path, args, names):
    pytest.importorskip("timm")
    line = one_line(train_in_process(*TINY, *args, f"paths.output_root={tmp_path}"))
    for name in names:
        assert name in line, line


def test_ppp_of_squeeze_excitation_is_refused_without_measuring(tmp_path):
    """EfficientNet's squeeze-excitation puts every pixel in every tap's field: one forward pass says so
    (the measurement took 63-101 s to find it at its largest input)."""
    pytest.importorskip("timm")
    start = time.perf_counter()
    line = one_line(
        train_in_process(
            "backbone=efficientnet_b0",
            "task=ppp",
            "data.image_size=64",
            "data.num_test=4",
            "callbacks.progress=null",
            f"paths.output_root={tmp_path}",
        )
    )
    assert "tap f1 of backbone timm/efficientnet_b0" in line and "squeeze-excitation" in line, line
    assert time.perf_counter() - start < 30


# -- where the run is written ---------------------------------------------------------------------------
def test_an_output_root_nothing_can_be_written_into_is_one_line(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    for root in (blocker, blocker / "sub", Path("/proc/posenc_x")):
        line = one_line(train_in_process(*TINY, f"paths.output_root={root}"))
        assert line.startswith(f"error: paths.output_root={root} is not valid: cannot create"), line
    line = one_line(train_in_process(*TINY, f"hydra.run.dir={blocker}/run"))
    assert line.startswith(f"error: hydra.run.dir={blocker}/run is not valid: cannot create"), line
    assert one_line(train_in_process(*TINY, "paths.output_root=")).startswith("error: paths.output_root='' is not")


def test_a_full_disk_is_one_line_and_leaves_no_run_dir(tmp_path, monkeypatch):
    """A full file system still makes directories and empty files: the check writes a block (os.access
    says yes to root on a read-only mount, so nothing is taken on its word)."""
    import tempfile

    from posenc.cli.argv import with_output_dir
    from posenc.errors import PosencError

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(tempfile, "TemporaryFile", full)
    with pytest.raises(PosencError, match="paths.output_root=.* is not valid: cannot write into .*No space left"):
        with_output_dir([f"paths.output_root={tmp_path}"], datetime.now())
    assert list((tmp_path / "runs").iterdir()) == []


@pytest.mark.parametrize("name", ["a b", "é", "o'q", "back\\slash"])
@pytest.mark.parametrize("quoted", [False, True])
def test_any_path_that_exists_is_a_valid_output_root(tmp_path, name, quoted):
    """A space, a non-ASCII letter, a quote: the run dir appended to the overrides is quoted the way
    Hydra's grammar reads it back (the bad value after it is what the one line is about)."""
    from posenc.cli.argv import hydra_quoted

    root = tmp_path / name
    given = hydra_quoted(str(root)) if quoted and hydra_quoted(str(root)) != str(root) else str(root)
    line = one_line(train_in_process(*TINY, f"paths.output_root={given}", "data.num_train=0"))
    assert line.startswith("error: data.num_train=0 is not valid"), line
    (run,) = (root / "runs").iterdir()
    assert (run / ".hydra" / "overrides.yaml").is_file()


def test_hydra_reads_a_quoted_path_back_unchanged():
    from posenc.cli.argv import _parsed_value, hydra_quoted

    for path in ["/tmp/a b", "/tmp/é", "/tmp/o'q", "/tmp/x\\y", "/tmp/x\\", "/tmp/x\\'y", "/tmp/a,b", "/tmp/[a]"]:
        assert _parsed_value("hydra.run.dir", hydra_quoted(path)) == (True, path), path
    assert hydra_quoted("/tmp/plain-1.2/runs") == "/tmp/plain-1.2/runs"


def test_a_config_that_does_not_compose_leaves_no_run_dir(tmp_path):
    one_line(train_in_process(*TINY, "data.num_trian=3", f"paths.output_root={tmp_path}"))
    assert list((tmp_path / "runs").iterdir()) == []


# -- values the composed config no longer shows -----------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["readout.sigmoid=2"], "error: readout.sigmoid=2 is not valid: expected true or false"),
        (["readout.align_corners=0"], "error: readout.align_corners=0 is not valid: expected true or false"),
        (["backbone.normalize=yes"], "error: backbone.normalize='yes' is not valid: expected true or false"),
        (
            ["padding.none_upsample=authors"],
            "error: padding.none_upsample='authors' is not valid: it applies only with "
            "padding.name=none, and padding.name=zeros here",
        ),
        (["logger=[[wandb]]"], "error: unknown logger ['wandb']; valid: csv, tensorboard, wandb"),
        (["readout.feature_size=100000"], "error: readout.feature_size=100000 is not valid: a batch of"),
        (
            ["task=location_cls", "data.device=foo"],
            "error: data.device='foo' is not valid: expected auto or a torch device",
        ),
    ],
)
def test_values_taken_silently_or_with_a_traceback_are_one_line(tmp_path, args, line):
    assert one_line(train_in_process(*TINY, *args, f"paths.output_root={tmp_path}")).startswith(line)


def test_a_cuda_device_without_a_gpu_is_one_line(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    line = one_line(train_in_process(*TINY, "task=location_cls", "data.device=cuda", f"paths.output_root={tmp_path}"))
    assert line == "error: data.device='cuda' is not valid: no cuda device on this machine; valid: auto, cpu"


@pytest.mark.parametrize(
    "overrides",
    [
        ["readout.sigmoid=true", "readout.align_corners=False"],  # true / false, in any case
        ["padding=none", "padding.none_upsample=authors"],
        ["protocol=gps", "padding=zeros"],  # the protocol sets none_upsample for every padding: not the user's typo
        ["task.scheduler.fractions=[]", "logger=csv", "logger.csv.prefix="],  # empty where empty is meaningful
    ],
)
def test_what_is_valid_stays_valid(tmp_path, overrides):
    from helpers.runs import compose_run

    from posenc.config.validation import validate

    validate(compose_run(["backbone=tiny", *overrides], tmp_path), overrides)


# -- sweep.py -------------------------------------------------------------------------------------------
def test_a_sweep_refuses_a_typo_before_it_makes_a_sweep_dir(tmp_path):
    line = one_line(sweep_in_process("atlas", "groups=tiny", "data.num_trian=3", f"paths.output_root={tmp_path}"))
    assert line.startswith("error: data.num_trian=3 is not valid"), line
    assert not (tmp_path / "sweeps").exists() or not any((tmp_path / "sweeps").rglob("*"))


def test_parallel_without_groups_is_one_line(tmp_path):
    line = one_line(sweep_in_process("padding_study", "parallel=2", f"paths.output_root={tmp_path}"))
    assert (
        line == "error: parallel=2 is not valid for sweep padding_study: it has no groups; valid: a preset with "
        "groups (atlas)"
    )


def _sweep_dir(tmp_path: Path, multirun: str = "", overrides: str = "- backbone=tiny\n") -> Path:
    sweep, job = tmp_path / "sweep", tmp_path / "sweep" / "0"
    (job / ".hydra").mkdir(parents=True)
    (sweep / "multirun.yaml").write_text(multirun or "hydra:\n  overrides:\n    task: [backbone=tiny]\n")
    (job / ".hydra" / "overrides.yaml").write_text(overrides)
    (job / "status.json").write_text(json.dumps({"status": "failed", "error": "x"}))
    return sweep


@pytest.mark.parametrize(
    ("multirun", "overrides", "says"),
    [
        ("a: [\n", "- backbone=tiny\n", "multirun.yaml: not YAML"),
        ("- 1\n- 2\n", "- backbone=tiny\n", "multirun.yaml: a list, not the config Hydra writes"),
        ("", "- [a\n", "overrides.yaml: not YAML"),
        ("", "a: 1\n", "overrides.yaml: not the list of key=value overrides"),
    ],
)
def test_collect_of_damaged_yaml_is_one_line(tmp_path, multirun, overrides, says):
    line = one_line(sweep_in_process("collect", str(_sweep_dir(tmp_path, multirun, overrides))))
    assert line.startswith("error: cannot read") and says in line, line


def test_json_is_read_only_from_regular_files(tmp_path):
    """A FIFO as metrics.json blocked collect forever: it is no regular file, so nothing opens it."""
    from posenc.io import read_json

    fifo = tmp_path / "metrics.json"
    os.mkfifo(fifo)
    (tmp_path / "link.json").symlink_to(fifo)
    found: list = []
    reader = threading.Thread(
        target=lambda: found.extend([read_json(fifo), read_json(tmp_path / "link.json")]), daemon=True
    )
    reader.start()
    reader.join(timeout=10)
    assert not reader.is_alive() and found == [None, None]
    sweep = _sweep_dir(tmp_path / "s")
    os.mkfifo(sweep / "0" / "metrics.json")
    proc = sweep_in_process("collect", str(sweep))  # the job is reported (failed), nothing waits
    assert proc.returncode == 1 and proc.stdout.strip().splitlines()[-1] == str(sweep), proc.stderr[-2000:]
