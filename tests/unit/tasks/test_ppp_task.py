"""``task=ppp`` end to end (Lin et al., ICML 2023; our definition, docs/ppp.md): the run contract,
an exact zero for valid convolutions, a clear pattern for zero padding, the reference reused
across paddings, and one-line errors. The PPP arithmetic itself is tested in test_ppp.py."""

from __future__ import annotations

import json

import pytest
from helpers.runs import compose_run, train_in_process

SMALL = [
    "task=ppp",
    "backbone=tiny",
    "data.image_size=32",
    "data.num_test=8",
    "data.batch_size=4",
    "callbacks.progress=null",
]


def run(tmp_path, name: str, *overrides: str) -> dict:
    from posenc.run.train import run as run_job

    metrics = run_job(compose_run([*SMALL, f"paths.cache_dir={tmp_path / 'cache'}", *overrides], tmp_path / name))
    assert metrics is not None and metrics["status"] == "completed"
    return metrics


def test_ppp_is_zero_for_valid_convolutions_and_clear_for_zero_padding(tmp_path):
    zeros = run(tmp_path, "zeros", "padding=zeros")
    shrink = run(tmp_path, "shrink", "padding=none_shrink", "data.image_size=160")
    for layer in ("f1", "f2", "f3", "f4", "f5"):
        assert zeros[f"ppp/{layer}/snr"] > 1e-3, layer
        assert shrink[f"ppp/{layer}/snr"] < 1e-9, layer
        profile = zeros[f"ppp/{layer}/border_profile"]
        assert profile[0] == max(profile), layer  # strongest on the border
    assert zeros["test/ppp_snr_f1"] == pytest.approx(zeros["ppp/f1/snr"])
    assert (tmp_path / "zeros" / "figures" / "ppp.png").stat().st_size > 10_000
    on_disk = json.loads((tmp_path / "zeros" / "metrics.json").read_text())
    assert on_disk["ppp/f5/border_profile"] == zeros["ppp/f5/border_profile"]
    assert on_disk["task"] == "ppp" and on_disk["padding"] == "zeros"


def test_the_reference_is_computed_once_for_the_paddings_that_share_it(tmp_path):
    first = run(tmp_path, "zeros", "padding=zeros")
    second = run(tmp_path, "reflect", "padding=reflect")
    assert not first["ppp/reference_cached"] and second["ppp/reference_cached"]
    assert second["ppp/time/contexts_s"] == 0.0 and first["ppp/time/contexts_s"] > 0.0
    assert second["ppp/f3/variance"] == pytest.approx(first["ppp/f3/variance"])  # the same reference
    assert second["ppp/f3/snr"] != pytest.approx(first["ppp/f3/snr"])  # another padding, another pattern


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["data.context_size=40"], ["data.context_size=40", "at least", "layer f5 of tiny"]),
        (["task.layers=[f2,f7]"], ["'f7'", "f1, f2, f3, f4, f5"]),
        (["backbone=none"], ["backbone=none has no padding"]),
        (["data.num_train=5"], ["data.num_train=5", "0"]),
    ],
)
def test_bad_ppp_input_is_one_line_and_exit_2(tmp_path, args, words):
    proc = train_in_process(*SMALL, *args, f"paths.output_root={tmp_path}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    for word in words:
        assert word in lines[0], lines[0]
