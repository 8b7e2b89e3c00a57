"""A disk feature cache is trusted only when complete and intact: every way an entry goes bad
(wrong rows or channels, zeros, NaNs, foreign bytes, Fortran order, truncation, a missing or
mismatched completion marker) is discarded with one log line and encoded again; what cannot be
fixed (an entry that cannot be removed, a bad ``task.cache_dir``, a full disk, non-finite features)
is one ``PosencError`` line before the encoding; temporary files never outlive their run."""

from __future__ import annotations

import errno
import fcntl
import gc
import json
import logging
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from posenc.data import feature_cache
from posenc.data.datamodule import IndexedImages
from posenc.data.feature_cache import FeatureFile, cached_features, npy_header_bytes, sample_digest
from posenc.errors import PosencError
from posenc.io import DiskFullError

LOGGER = "posenc.data.feature_cache"
SHAPE = (7, 8, 8, 2)  # what _encode makes of _images()


def _encode(x: torch.Tensor) -> torch.Tensor:
    """A stand-in encoder: [B, 3, 16, 16] -> [B, 2, 8, 8]."""
    pooled = torch.nn.functional.avg_pool2d(x, 2)
    return torch.cat([pooled.mean(dim=1, keepdim=True), pooled.amax(dim=1, keepdim=True) * 3], dim=1)


def _images(n: int = 7) -> IndexedImages:
    return IndexedImages((torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8))


class Counting:
    """``_encode`` counting the images it encodes; ``fail_on``: raise ``error`` on that call."""

    def __init__(self, fail_on: int | None = None, error: BaseException | None = None, scale: float = 1.0) -> None:
        self.calls, self.images, self.fail_on, self.error, self.scale = 0, 0, fail_on, error, scale

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.images += len(x)
        if self.calls == self.fail_on:
            raise self.error or RuntimeError("encoder failed")
        return _encode(x) * self.scale


def _cache(cache_dir, mode="disk", dtype="float32", encode=_encode):
    return cached_features(
        mode, "key", cache_dir, encode, _images(), 3, torch.device("cpu"), dtype, what="stand-in, f1"
    )


def _one_line(excinfo: pytest.ExceptionInfo) -> str:
    line = str(excinfo.value)
    assert "\n" not in line and line.strip() == line, line
    return line


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".tmp." in p.name)


@pytest.fixture
def fresh(tmp_path):
    """A good entry in ``tmp_path`` and its features: ``(path, features)``."""
    features = _cache(tmp_path)
    assert isinstance(features, FeatureFile)
    return features.path, np.asarray(features)


def test_a_written_entry_has_its_completion_marker_and_is_reused_as_is(tmp_path, fresh, caplog):
    path, first = fresh
    marker = json.loads(path.with_suffix(".json").read_text())
    header = npy_header_bytes(SHAPE, "float32")
    assert marker["shape"] == list(SHAPE) and marker["dtype"] == "float32" and marker["header_bytes"] == header
    assert marker["file_bytes"] == path.stat().st_size == header + int(np.prod(SHAPE)) * 4
    assert marker["blake2b"] == sample_digest(path, header, int(np.prod(SHAPE)) * 4)
    stamp = path.stat().st_mtime_ns
    encoder = Counting()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        again = _cache(tmp_path, encode=encoder)
    assert path.stat().st_mtime_ns == stamp and encoder.images == 1  # one image, for the expected shape
    np.testing.assert_array_equal(np.asarray(again), first)
    assert caplog.text.rstrip().endswith("(reused)") and "feature cache: discarded" not in caplog.text
    assert _leftovers(tmp_path) == []


def _rewrite(array: np.ndarray):
    return lambda path, first: np.save(path, array(first))


def _remove_marker(path: Path) -> None:
    path.with_suffix(".json").unlink()


CORRUPTIONS = {
    # a file of the right name, written by something else: the header tells
    "wrong_rows": (_rewrite(lambda a: a[:5]), "holds 5 x 8 x 8 x 2 features, this run's are 7 x 8 x 8 x 2"),
    "wrong_channels": (_rewrite(lambda a: a[..., :1]), "holds 7 x 8 x 8 x 1 features"),
    "wrong_dtype": (_rewrite(lambda a: a.astype(np.float16)), "holds float16 values, not float32"),
    "fortran_order": (_rewrite(lambda a: np.asfortranarray(a)), "Fortran-ordered"),
    "not_npy": (lambda path, _: path.write_bytes(b"these bytes are not a .npy file"), "not a .npy file"),
    "zeros_of_the_same_size": (lambda path, _: path.write_bytes(bytes(path.stat().st_size)), "not a .npy file"),
    "truncated": (lambda path, _: os.truncate(path, path.stat().st_size // 2), "(truncated)"),
    # a right-looking file: the marker (written last) and its checksum tell
    "zero_rows_no_marker": (
        lambda path, first: (np.save(path, np.zeros_like(first)), _remove_marker(path)),
        "no completion marker key-float32.json",
    ),
    "zero_rows": (_rewrite(np.zeros_like), "differ from the checksum"),
    "nan_rows": (_rewrite(lambda a: np.full_like(a, np.nan)), "differ from the checksum"),
    "nan_rows_no_marker": (
        lambda path, first: (np.save(path, np.full_like(first, np.nan)), _remove_marker(path)),
        "no completion marker",
    ),
    "marker_garbage": (
        lambda path, _: path.with_suffix(".json").write_text("{"),
        "marker key-float32.json is unreadable",
    ),
    "marker_of_another_file": (
        lambda path, _: path.with_suffix(".json").write_text(json.dumps({"version": 1, "shape": [7, 8, 8, 3]})),
        "describes another file",
    ),
    "marker_without_data": (lambda path, _: path.unlink(), "its data file is missing"),
}


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_a_bad_entry_is_discarded_in_one_line_and_encoded_again(tmp_path, fresh, caplog, case):
    path, first = fresh
    corrupt, reason = CORRUPTIONS[case]
    corrupt(path, first)
    encoder = Counting()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        features = _cache(tmp_path, encode=encoder)
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("feature cache: discarded")]
    assert line.startswith(f"feature cache: discarded {path}: ") and reason in line, line
    assert "\n" not in line and encoder.images == 1 + SHAPE[0]  # the shape, then all of them again
    assert isinstance(features, FeatureFile) and features.shape == SHAPE
    np.testing.assert_array_equal(np.asarray(features), first)
    assert json.loads(path.with_suffix(".json").read_text())["blake2b"] == sample_digest(
        path, features.offset, features.nbytes
    )
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        _cache(tmp_path)
    assert "(reused)" in caplog.text and "feature cache: discarded" not in caplog.text
    assert _leftovers(tmp_path) == []


def test_an_entry_that_cannot_be_removed_is_refused_in_one_line(tmp_path):
    path = tmp_path / "key-float32.npy"
    path.mkdir()
    (path / "inside").write_text("a directory where the cache file belongs")
    encoder = Counting()
    with pytest.raises(PosencError) as excinfo:
        _cache(tmp_path, encode=encoder)
    line = _one_line(excinfo)
    assert f"feature cache {path} is not usable (it is not a regular file) and cannot be removed" in line
    assert "task.cache_dir" in line and encoder.images == 1


@pytest.mark.parametrize("content", [b"", b"not numpy at all", b"\x93NUMPY\x01\x00\xff\xff{'descr'"])
def test_feature_file_on_foreign_bytes_is_one_line_and_silent_when_collected(tmp_path, monkeypatch, content):
    unraisable: list = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    path = tmp_path / "x.npy"
    path.write_bytes(content)
    with pytest.raises(PosencError) as excinfo:
        FeatureFile(path)
    assert _one_line(excinfo).startswith(f"feature cache {path} is not a .npy file (")
    np.save(path, np.asfortranarray(np.ones((3, 2), np.float32)))
    with pytest.raises(PosencError, match="not a C-ordered"):
        FeatureFile(path)
    del excinfo
    gc.collect()
    assert unraisable == []  # no AttributeError from __del__


def _dead_pid() -> int:
    for pid in range(4_194_303, 300_000, -1):  # pid_max is at most 2**22: these are almost surely free
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except OSError:
            continue
    pytest.skip("no free process id found")


def test_temporary_files_of_ended_processes_are_removed_by_the_next_run(tmp_path, caplog):
    dead, host = _dead_pid(), feature_cache._hostname()
    stale = [
        f"key-float32.{host}.{dead}.tmp.npy",
        f"other-float16.{host}.{dead}.tmp.json",
        f"old-float16.{dead}.tmp.npy",  # named as before the host went in
    ]
    kept = [
        f"key-float32.{host}.{os.getppid()}.tmp.npy",  # a live process: being written
        f"key-float32.elsewhere.{dead}.tmp.npy",  # another machine's: its pid cannot be checked here
        "notes.txt",
    ]
    for name in stale + kept:
        (tmp_path / name).write_bytes(b"x" * 100_000)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        _cache(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name in stale + kept) == sorted(kept)
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("feature cache: removed")]
    assert line.startswith(f"feature cache: removed 3 temporary files of ended runs from {tmp_path} (")
    assert line.endswith(" MB reclaimed)")


@pytest.mark.parametrize("error", [RuntimeError("encoder failed"), KeyboardInterrupt()])
def test_an_encode_stopped_midway_leaves_no_file_behind(tmp_path, error):
    """An exception, or the interruption a SIGTERM / Ctrl-C becomes, on the 2nd batch."""
    encoder = Counting(fail_on=3, error=error)  # call 1: the expected shape; 2, 3: the batches
    with pytest.raises(type(error)):
        _cache(tmp_path, encode=encoder)
    assert encoder.calls == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key-float32.lock"]
    np.testing.assert_array_equal(np.asarray(_cache(tmp_path)), np.asarray(_cache(tmp_path, mode="memory")))


def test_too_little_free_space_is_refused_before_encoding(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda _: SimpleNamespace(total=10**9, used=10**9 - 1000, free=1000))
    encoder = Counting()
    with pytest.raises(DiskFullError) as excinfo:
        _cache(tmp_path, encode=encoder)
    line = _one_line(excinfo)
    need = npy_header_bytes(SHAPE, "float32") + int(np.prod(SHAPE)) * 4
    assert line.startswith(f"no room for the feature cache in {tmp_path}: it needs ")
    assert f"({need} bytes)" in line and "(1000 bytes) are free" in line and "task.cache_dir" in line
    assert encoder.images == 1 and _leftovers(tmp_path) == []


def test_a_full_disk_while_writing_is_one_line_and_leaves_no_file(tmp_path, monkeypatch):
    def full(*_):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "pwrite", full)
    with pytest.raises(DiskFullError) as excinfo:  # a PosencError: one line, exit 2
        _cache(tmp_path)
    line = _one_line(excinfo)
    need = npy_header_bytes(SHAPE, "float32") + int(np.prod(SHAPE)) * 4
    assert line.startswith(f"cannot write the feature cache in {tmp_path}: No space left on device (")
    assert f"({need} bytes) needed" in line and "free there now" in line
    assert _leftovers(tmp_path) == [] and not list(tmp_path.glob("*.npy")) and not list(tmp_path.glob("*.json"))


@pytest.mark.parametrize("mode", ["disk", "auto"])
def test_an_empty_cache_dir_is_refused_before_encoding(tmp_path, monkeypatch, mode):
    monkeypatch.chdir(tmp_path)
    encoder = Counting()
    with pytest.raises(PosencError) as excinfo:
        _cache("", mode=mode, encode=encoder)
    assert _one_line(excinfo).startswith("task.cache_dir='' is not valid: expected a directory")
    assert encoder.calls == 0 and list(tmp_path.iterdir()) == []
    assert isinstance(_cache("", mode="memory"), torch.Tensor)  # a memory cache does not use it


def _unwritable_cases(tmp_path: Path) -> dict[str, tuple[Path, str, int]]:
    """cache_dir -> (the words of its error line, the images encoded before it)."""
    (tmp_path / "a_file").write_text("")
    cases = {
        "a file": (tmp_path / "a_file", "expected a directory, it is a file", 0),
        "under a file": (tmp_path / "a_file" / "cache", "cannot create that directory (Not a directory)", 0),
    }
    if Path("/proc/self").is_dir():
        cases["/proc"] = (Path("/proc"), "cannot write there (", 1)  # exists, takes no files
        cases["under /proc"] = (Path("/proc/posenc-cache"), "cannot create that directory (", 0)
    return {name: (path, words, images) for name, (path, words, images) in cases.items()}


@pytest.mark.parametrize("case", ["a file", "under a file", "/proc", "under /proc", "read-only"])
def test_an_unusable_cache_dir_is_one_line_before_encoding(tmp_path, case):
    if case == "read-only":
        if os.geteuid() == 0:
            pytest.skip("root writes into a read-only (chmod 555) directory; /proc stands in for it")
        directory = tmp_path / "read_only"
        directory.mkdir()
        directory.chmod(0o555)
        cache_dir, words, images = directory, "cannot write there (Permission denied)", 1
    else:
        cases = _unwritable_cases(tmp_path)
        if case not in cases:
            pytest.skip("no /proc on this system")
        cache_dir, words, images = cases[case]
    encoder = Counting()
    with pytest.raises(PosencError) as excinfo:
        _cache(cache_dir, encode=encoder)
    line = _one_line(excinfo)
    assert line.startswith(f"task.cache_dir='{cache_dir}' is not valid: ") and words in line, line
    assert encoder.images == images  # at most the one image that tells the features' shape


def test_non_finite_features_are_reported_as_the_backbones(tmp_path):
    with pytest.raises(PosencError) as excinfo:
        _cache(tmp_path, encode=Counting(scale=float("nan")))
    line = _one_line(excinfo)
    assert line.startswith("the backbone's features (stand-in, f1) are not finite: 896 NaN/inf values over the 7")
    assert "lr" in line and not list(tmp_path.glob("*.npy")) and _leftovers(tmp_path) == []
    with pytest.raises(PosencError, match="not finite"):
        _cache(tmp_path, mode="memory", encode=Counting(scale=float("inf")))
    with pytest.raises(PosencError) as excinfo:
        _cache(tmp_path, dtype="float16", encode=Counting(scale=1e5))
    assert "beyond float16's 65504" in _one_line(excinfo) and "task.cache_dtype=float32" in str(excinfo.value)


def test_the_checksum_samples_blocks_of_a_large_entry(tmp_path, monkeypatch):
    """Up to SAMPLE_BLOCKS x SAMPLE_BLOCK_BYTES every byte counts; above, the blocks spread evenly
    from the first byte to the last (here 4 blocks of 16 bytes over 1000: at 0, 328, 656 and 984)."""
    monkeypatch.setattr(feature_cache, "SAMPLE_BLOCKS", 4)
    monkeypatch.setattr(feature_cache, "SAMPLE_BLOCK_BYTES", 16)
    path = tmp_path / "data.bin"
    data = bytearray(np.random.default_rng(0).integers(0, 256, 1010, dtype=np.uint8).tobytes())
    path.write_bytes(data)
    base = sample_digest(path, 10, 1000)
    for position, counted in [(10, True), (10 + 330, True), (10 + 999, True), (10 + 100, False), (5, False)]:
        changed = data.copy()
        changed[position] ^= 0xFF
        path.write_bytes(changed)
        assert (sample_digest(path, 10, 1000) != base) == counted, position
    path.write_bytes(data[:64])
    assert sample_digest(path, 0, 64) != sample_digest(path, 0, 63)  # small: all of it
    with pytest.raises(ValueError, match="ends at byte"):
        sample_digest(path, 10, 1000)


def test_a_run_waits_for_another_writing_the_same_entry(tmp_path, caplog):
    fd = os.open(tmp_path / "key-float32.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another run, encoding this entry
    result: list = []
    worker = threading.Thread(target=lambda: result.append(_cache(tmp_path)))
    with caplog.at_level(logging.INFO, logger=LOGGER):
        worker.start()
        time.sleep(0.5)
        assert worker.is_alive() and not (tmp_path / "key-float32.npy").exists()
        os.close(fd)
        worker.join(60)
    assert "feature cache: waiting for another run writing" in caplog.text
    assert isinstance(result[0], FeatureFile) and result[0].shape == SHAPE


def test_a_corrupt_cache_is_rebuilt_by_the_cli_with_a_fresh_caches_metrics(tmp_path):
    """``python train.py``: a cache whose data were overwritten with NaNs (before: "training
    diverged ... lower task.optimizer.lr") is discarded and encoded again, and the run ends as on a
    fresh cache."""
    from helpers.runs import TINY, train_in_process

    args = [*TINY, "data.num_train=16", "trainer.max_epochs=1", "task.feature_cache=disk", "task.cache_dtype=float32"]

    def train():
        proc = train_in_process(*args, f"paths.output_root={tmp_path}")
        assert proc.returncode == 0, proc.stderr[-3000:]
        run_dir = Path(proc.stdout.strip().splitlines()[-1])
        logged = "".join(f.read_text(errors="replace") for f in run_dir.glob("*.log"))
        return proc.stdout + proc.stderr + logged, json.loads((run_dir / "metrics.json").read_text())

    _, fresh_metrics = train()
    (path,) = (tmp_path / ".feature_cache").glob("*.npy")
    header = FeatureFile(path).offset
    with open(path, "r+b") as f:
        f.seek(header)
        f.write(np.full((path.stat().st_size - header) // 4, np.nan, np.float32).tobytes())
    output, rebuilt_metrics = train()
    assert f"feature cache: discarded {path}: its bytes differ from the checksum" in output
    assert np.isfinite(np.load(path)).all()
    assert fresh_metrics.keys() == rebuilt_metrics.keys()
    for key, value in fresh_metrics.items():
        if isinstance(value, float):
            assert rebuilt_metrics[key] == pytest.approx(value, abs=1e-6), key
