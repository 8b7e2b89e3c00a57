"""Loggers (issue 20): every logger gets the run's whole record, whatever its ending: the summary of
``metrics.json`` (convergence flag, steps, rel_decrease, ...), the run's status and every figure.
Checked on what each logger writes to disk: the offline W&B run's ``.wandb`` transaction log and
media files, TensorBoard's event files, the CSV copy. W&B stays offline throughout (WANDB_MODE)."""

from __future__ import annotations

import json
import signal
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.runs import TINY, compose_run

from posenc.errors import PosencError

STEPS = [
    "data.image_size=32",
    "data.num_train=32",
    "data.num_val=8",
    "data.num_test=2",
    "trainer.max_epochs=6",  # 12 steps,
    "trainer.val_check_interval=2",
]  # and 6 held-out checks, enough for the rel_decrease values
BOTH = "logger=[wandb,tensorboard]"


@pytest.fixture(scope="module")
def offline_wandb(tmp_path_factory) -> Iterator[None]:
    """W&B offline, silent, with every dir it writes under a temporary one."""
    home = tmp_path_factory.mktemp("wandb_home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WANDB_MODE", "offline")
        patch.setenv("WANDB_SILENT", "true")
        for name in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
            patch.setenv(name, str(home))
        yield


def run_job(run_dir: Path, *overrides: str) -> dict[str, Any] | None:
    from posenc.run.train import run

    return run(compose_run([*TINY, *STEPS, *overrides], run_dir))


@pytest.fixture(scope="module")
def completed(tmp_path_factory, offline_wandb) -> tuple[Path, dict[str, Any]]:
    """One completed run with W&B and TensorBoard (and the CSV copy): (run dir, metrics.json)."""
    run_dir = tmp_path_factory.mktemp("completed") / "run"
    run_job(run_dir, BOTH)
    return run_dir, json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture(scope="module")
def failed(tmp_path_factory, offline_wandb) -> Path:
    """A run that diverges at its first steps (a user error: exit 2), after its loggers started."""
    run_dir = tmp_path_factory.mktemp("failed") / "run"
    with pytest.raises(SystemExit) as info:
        run_job(run_dir, BOTH, "task.optimizer.lr=1e12", "data.num_val=0")
    assert info.value.code == 2
    return run_dir


# -- reading what the loggers wrote ---------------------------------------------------------------
def wandb_records(run_dir: Path) -> list[Any]:
    """The records of the run's offline ``.wandb`` file: a LevelDB-style log (a 7-byte header
    ``:W&B`` + magic + version, then 32 KiB blocks of chunks: crc32, length, type, data; a record is
    one FULL chunk or FIRST, MIDDLE..., LAST), each record a ``wandb_internal_pb2.Record``."""
    from wandb.proto import wandb_internal_pb2

    (path,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    raw = path.read_bytes()
    assert raw[:4] == b":W&B"
    block, pos, parts, records = 32768, 7, b"", []
    while pos + 7 <= len(raw):
        room = block - pos % block
        if room < 7:  # a block's tail too short for a chunk header is padding
            pos += room
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos : pos + 7])
        if pos + 7 + length > len(raw):  # a chunk still being written
            break
        parts += raw[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL, LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(parts)
            records.append(record)
            parts = b""
    return records


def wandb_summary(run_dir: Path, timeout: float = 120) -> tuple[dict[str, Any], int]:
    """The run's final W&B summary (top-level keys; a nested value as a dict) and its exit code.
    W&B's service process writes the log after ``finish()`` returns: wait for its exit record."""
    deadline = time.time() + timeout
    while not any(r.WhichOneof("record_type") == "exit" for r in wandb_records(run_dir)):
        assert time.time() < deadline, f"no exit record in {run_dir}'s W&B log after {timeout} s"
        time.sleep(0.2)
    summary: dict[str, Any] = {}
    exit_code = None
    for record in wandb_records(run_dir):
        kind = record.WhichOneof("record_type")
        if kind == "summary":
            for item in record.summary.update:
                keys = [item.key] if item.key else list(item.nested_key)
                node = summary
                for key in keys[:-1]:
                    node = node.setdefault(key, {})
                node[keys[-1]] = json.loads(item.value_json)
        elif kind == "exit":
            exit_code = record.exit.exit_code
    assert exit_code is not None
    return summary, exit_code


def tensorboard_events(run_dir: Path) -> Any:
    """Every event file of the run's TensorBoard dir, read by TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    return events


def tb_text(events: Any, key: str) -> str:
    (entry,) = events.Tensors(f"{key}/text_summary")
    return entry.tensor_proto.string_val[0].decode()


def summary_of(metrics: dict[str, Any]) -> dict[str, Any]:
    """What every logger must get of ``metrics.json``: its non-list, non-null values."""
    return {k: v for k, v in metrics.items() if v is not None and not isinstance(v, (list, dict))}


# -- a completed run -----------------------------------------------------------------------------
def test_wandb_gets_the_summary_the_status_and_every_figure(completed):
    run_dir, metrics = completed
    summary, exit_code = wandb_summary(run_dir)
    expected = summary_of(metrics)
    assert {"train/converged", "train/steps", "status"} <= set(expected)
    assert [k for k in expected if k.endswith("/rel_decrease")], "no rel_decrease value to check"
    for key, value in expected.items():
        assert summary[key] == pytest.approx(value), key
    assert summary["status"] == "completed" and summary["train/steps"] == 12
    assert isinstance(summary["wall_time_s"], float)  # status.json's fields too
    assert exit_code == 0
    figures = sorted(p.stem for p in (run_dir / "figures").glob("*.png"))
    assert {"loss_curve", "predictions"} <= set(figures)
    (files,) = run_dir.glob("wandb/offline-run-*/files")
    for stem in figures:
        assert summary[f"figures/{stem}"]["_type"].startswith("images"), stem
        (image,) = (files / "media" / "images" / "figures").glob(f"{stem}_*.png")
        assert image.stat().st_size > 1000


def test_tensorboard_gets_the_scalars_the_status_the_hparams_and_every_figure(completed):
    run_dir, metrics = completed
    events = tensorboard_events(run_dir)
    expected = summary_of(metrics)
    numbers = {k: v for k, v in expected.items() if isinstance(v, (bool, int, float))}
    assert {"train/converged", "train/steps"} <= set(numbers)
    for key, value in numbers.items():
        last = events.Scalars(key)[-1]
        assert last.value == pytest.approx(float(value), rel=1e-6), key
        assert last.step == 12, key
    assert tb_text(events, "status") == "completed"
    assert tb_text(events, "backbone") == "tiny"
    # the hparams record pairs the config with the summary's numbers
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = events.PluginTagToContent("hparams")
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert "train/converged" in {m.name.tag for m in experiment.metric_infos}
    assert "data/image_size" in {h.name for h in experiment.hparam_infos}
    for stem in ("loss_curve", "predictions"):
        (image,) = events.Images(f"figures/{stem}")
        assert image.step == 12 and image.width > 100 and image.height > 100, stem


def test_the_csv_copy_is_kept_beside_the_others(completed):
    run_dir, metrics = completed
    header = (run_dir / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "train/loss" in header and "test/natural/H/spc" in header


# -- runs that do not complete -------------------------------------------------------------------
def test_a_failed_run_gives_every_logger_its_status_and_error(failed):
    status = json.loads((failed / "status.json").read_text())
    assert status["status"] == "failed" and status["error"].startswith("TrainingDiverged: ")
    summary, exit_code = wandb_summary(failed)
    assert summary["status"] == "failed" and summary["error"] == status["error"]
    assert summary["step"] == status["step"]
    assert exit_code == 1  # W&B marks the run failed
    events = tensorboard_events(failed)
    assert tb_text(events, "status") == "failed"
    assert tb_text(events, "error") == status["error"]
    assert (failed / "csv" / "metrics.csv").is_file()


def test_an_interrupted_run_gives_its_loggers_its_status(tmp_path, monkeypatch):
    from posenc.run.convergence import LossCurve
    from posenc.run.interruption import RunInterrupted

    original = LossCurve.on_train_batch_end

    def stop_at_step_two(self, trainer, *args, **kwargs):  # as a SIGTERM acted on at a batch boundary
        original(self, trainer, *args, **kwargs)
        if trainer.global_step >= 3:  # after the first epoch's metrics reached the CSV copy
            raise RunInterrupted(signal.SIGTERM)

    monkeypatch.setattr(LossCurve, "on_train_batch_end", stop_at_step_two)
    with pytest.raises(SystemExit) as info:
        run_job(tmp_path / "run", "logger=tensorboard")
    assert info.value.code == 143
    events = tensorboard_events(tmp_path / "run")
    assert tb_text(events, "status") == "interrupted"
    assert tb_text(events, "signal") == "SIGTERM"
    assert (tmp_path / "run" / "csv" / "metrics.csv").is_file()


# -- composing several loggers -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("option", "kinds"),
    [
        ("logger=csv", {"CSVLogger"}),
        ("logger=wandb", {"CSVLogger", "WandbLogger"}),
        ("logger=tensorboard", {"CSVLogger", "TensorBoardLogger"}),
        ("logger=[csv,wandb]", {"CSVLogger", "WandbLogger"}),
        ("logger=[wandb,csv]", {"CSVLogger", "WandbLogger"}),
        ("logger=[wandb,tensorboard]", {"CSVLogger", "WandbLogger", "TensorBoardLogger"}),
        ("logger=[tensorboard,wandb]", {"CSVLogger", "WandbLogger", "TensorBoardLogger"}),
        ("logger=[csv,tensorboard,wandb]", {"CSVLogger", "WandbLogger", "TensorBoardLogger"}),
    ],
)
def test_every_combination_composes_validates_and_keeps_the_csv_copy(tmp_path, offline_wandb, option, kinds):
    from posenc.config.validation import validate
    from posenc.run.loggers import build_loggers

    cfg = compose_run([option], tmp_path)
    validate(cfg)
    loggers = build_loggers(cfg.logger)
    assert {type(logger).__name__ for logger in loggers} == kinds
    assert len(loggers) == len(kinds)
    (csv,) = [logger for logger in loggers if type(logger).__name__ == "CSVLogger"]
    assert Path(csv.log_dir) == tmp_path / "csv"
    for logger in loggers:
        if type(logger).__name__ == "TensorBoardLogger":
            assert Path(logger.log_dir) == tmp_path / "tensorboard"
        if type(logger).__name__ == "WandbLogger":
            assert logger._offline is True and Path(logger.save_dir) == tmp_path


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["logger=[csv,wandbb]"], "unknown logger 'wandbb'; valid: csv, tensorboard, wandb"),
        (["-m", "logger=[csv],[csv,tensorbord]"], "unknown logger 'tensorbord'; valid: csv, tensorboard, wandb"),
        (["logger=wandbb"], "unknown logger 'wandbb'; valid: csv, tensorboard, wandb"),
    ],
)
def test_a_bad_logger_option_is_one_line_naming_it_and_the_valid_ones(argv, line):
    from posenc.cli.argv import check_group_overrides

    with pytest.raises(PosencError) as info:
        check_group_overrides(argv)
    assert str(info.value) == line
    check_group_overrides(["logger=[csv,wandb]"])  # and good lists pass
    check_group_overrides(["-m", "logger=[csv],[wandb,tensorboard]"])


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        (
            ["logger=wandb", "logger.csv=null"],
            ["logger.csv=null is not valid", "the CSV copy of the metrics is always on"],
        ),
        (["logger=[]"], ["logger=[] is not valid", "the CSV copy of the metrics is always on"]),
        (
            ["logger=csv", "logger.tensorboard.name=x"],
            [
                "logger.tensorboard.name='x' is not valid",
                "logger tensorboard is not chosen",
                "logger=[csv,tensorboard]",
            ],
        ),
    ],
)
def test_a_config_without_the_csv_copy_or_with_an_unchosen_logger_is_one_line(tmp_path, overrides, names):
    from posenc.config.validation import user_error

    with pytest.raises(Exception) as info:
        compose_run(overrides, tmp_path)
    error = user_error(info.value)
    assert error is not None, info.value
    assert "\n" not in str(error)
    for name in names:
        assert name in str(error), str(error)


@pytest.mark.parametrize(
    ("option", "modules", "line"),
    [
        (
            "logger=tensorboard",
            ("tensorboard", "tensorboardX"),
            "logger=tensorboard needs tensorboard: pip install 'posenc[tensorboard]'",
        ),
        ("logger=[wandb,tensorboard]", ("wandb",), "logger=wandb needs wandb: pip install 'posenc[wandb]'"),
    ],
)
def test_a_logger_without_its_package_names_the_extra(tmp_path, monkeypatch, option, modules, line):
    import sys

    from posenc.run.loggers import build_loggers

    cfg = compose_run([option], tmp_path)
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    with pytest.raises(PosencError) as info:
        build_loggers(cfg.logger)
    assert str(info.value) == line


def test_the_tensorboard_schema_has_the_loggers_arguments_and_defaults():
    import dataclasses
    import inspect

    from lightning.pytorch.loggers import TensorBoardLogger

    from posenc.config.schema import TensorBoardLoggerSchema

    params = inspect.signature(TensorBoardLogger).parameters
    for f in dataclasses.fields(TensorBoardLoggerSchema):
        if f.name.startswith("_"):
            continue
        assert f.name in params, f.name
        if f.default is not dataclasses.MISSING and f.default != "???":
            assert f.default == params[f.name].default, f.name
