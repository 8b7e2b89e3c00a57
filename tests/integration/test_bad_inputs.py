"""The one-line promise (issue 22): each mistake below is one line on stderr, exit 2, before a
Trainer is built or a file of the run is written."""

from __future__ import annotations

import pytest
from helpers.runs import ROOT, compose_run, train_in_process

TINY = ["backbone=tiny", "data.num_train=8", "data.num_test=4", "trainer.max_epochs=1", "callbacks.progress=null"]

IN_RUN = {  # overrides -> the start of the one line
    "vgg16 at 8 px": (
        ["backbone=vgg16", "data.image_size=8"],
        "data.image_size=8 is too small for backbone vgg16: its tap f5 would have no pixels; valid: "
        "data.image_size >= 16",
    ),
    "semseg at 8 px": (["task=semseg", "data.image_size=8"], "data.image_size=8 is too small for backbone tiny"),
    "val_check_interval=0": (
        ["trainer.val_check_interval=0"],
        "trainer.val_check_interval=0 is not valid: expected a number > 0",
    ),
    "semseg on canvases": (
        ["task=semseg", "data=canvas"],
        "SemanticSegmentationTask cannot train on CanvasDataModule; valid: data=shapes|voc|duts",
    ),
    "absurd size": (["data.image_size=100000"], "data.image_size=100000 is not valid: 44 images of 100000 px need"),
    "test_dir without folder": (
        ["data.test_dir=/tmp"],
        "data.test_dir=/tmp is not valid with data.source=natural: only data=folder reads",
    ),
    "no test inputs": (["data.test_inputs=[]"], "data.test_inputs=[] is not valid: a run with no test set"),
    "fuse_at out of range": (
        ["task=semseg", "readout.fuse_at=9"],
        "readout.fuse_at=9 is not valid: the backbone has 5 taps; valid: 0..4",
    ),
    "a tap twice": (["backbone.taps=[f1,f1]"], "backbone.taps=['f1', 'f1'] is not valid: f1 listed twice"),
    "shift blamed only when used": (
        ["task=location_cls", "data.image_size=18", "data.canvas.patch_size=6", "task.label=class", "task.shift=9"],
        "task.shift=9 is not valid: expected pixels in [1, 8] at data.image_size=18",
    ),
}


@pytest.mark.parametrize("case", sorted(IN_RUN))
def test_one_line_before_anything_is_built(tmp_path, capsys, case):
    from posenc.run.train import run

    overrides, message = IN_RUN[case]
    cfg = compose_run([*TINY, *overrides], tmp_path / "r")
    with pytest.raises(SystemExit) as stop:
        run(cfg)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {err[0].removeprefix('error: ')}"] and err[0].startswith(f"error: {message}"), err
    assert not (tmp_path / "r" / "checkpoints").exists() and not (tmp_path / "r" / "csv").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["=32"], "error: '=32' is not valid: an override names its key, key=value (e.g. data.image_size=32)"),
        (
            ["hydra.run.dir="],
            "error: hydra.run.dir='' is not valid: expected a directory (leave it unset for a fresh one)",
        ),
    ],
)
def test_command_line_mistakes_are_one_line(args, message):
    proc = train_in_process(*args)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [message]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--batch-size", "0"], "--batch-size: 0 is not valid: expected an int >= 1"),
        (["--batch-size", "-1"], "--batch-size: -1 is not valid: expected an int >= 1"),
        (["--counts", "1,,4"], "--counts='1,,4' is not valid: expected comma-separated ints"),
        (["--device", "foo"], "--device='foo' is not valid: expected a torch device"),
        (["--out", "/proc/forbidden"], "--out='/proc/forbidden' is not valid: cannot write there"),
        (["--frobnicate"], "unrecognized arguments: --frobnicate"),
    ],
)
def test_analysis_command_mistakes_are_one_line(tmp_path, capsys, args, message):
    """``python -m posenc.tools.attack`` (its ``main``, in this process)."""
    from posenc.cli.attack import main

    run_dir = tmp_path / "not_a_run"
    run_dir.mkdir()
    try:
        code = main([str(run_dir), *args])
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    assert code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: ") and message in line, line


def test_ppp_with_no_layers_is_refused(tmp_path, capsys):
    from posenc.run.train import run

    cfg = compose_run(
        [
            "task=ppp",
            "backbone=tiny",
            "data.image_size=32",
            "data.num_test=4",
            "task.layers=[]",
            "callbacks.progress=null",
        ],
        tmp_path / "r",
    )
    with pytest.raises(SystemExit) as stop:
        run(cfg)
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: task.layers=[] is not valid: PPP measures at least one tap; valid: a list of at least 1 entry, each "
        "entry one of f1, f2, f3, f4, f5 or null"
    ]


def test_sweep_usage_mistakes_are_one_line(capsys):
    """``python sweep.py --frobnicate`` (its ``main``, in this process)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("posenc_sweep_script", ROOT / "sweep.py")
    sweep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sweep)
    with pytest.raises(SystemExit) as stop:
        sweep.main(["--frobnicate"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: sweep.py: unrecognized arguments: --frobnicate (see --help)"
    ]
