"""The position atlas (``python sweep.py atlas``; posenc.analysis.atlas, docs/atlas.md): per-tap readouts
over one feature pass, the ViT controls, the table and figure of a real grouped sweep, and cells
without weights marked, never filled."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from helpers.runs import cached_run, sweep_in_process

from posenc.analysis.atlas import ALL_TAPS, COLUMNS, NO_WEIGHTS, atlas_cells, atlas_rows
from posenc.errors import MissingWeights
from posenc.sweeps.collect import JobResult

# PosENet at the atlas's cell size (conf/experiment/atlas_posenet.yaml), shrunk for the suite
SMALL = [
    "experiment=atlas_posenet",
    "data.num_train=64",
    "data.num_val=16",
    "data.num_test=16",
    "callbacks.progress=null",
]


def test_each_tap_has_its_readout_and_its_depth(root) -> None:
    """``task.tap_readouts=each`` on the zero-padded tiny backbone: every tap gets its SPC and its
    receptive field (the recursion's 5, 14, 32, 68, 140 px for tiny's 3x3 convs and pools), and the
    deepest tap reads more position than the first, as in PosENet's tap ablation (measured at
    this setting: f1 H .78, f5 .99)."""
    m = cached_run(root, *SMALL, "backbone=tiny", "task.max_steps=200")
    assert [m[f"tap/f{i}/rf_px"] for i in range(1, 6)] == [5, 14, 32, 68, 140]
    assert [m[f"tap/f{i}/stride"] for i in range(1, 6)] == [1, 2, 4, 8, 16]
    assert m["tap/f5/rf_rel"] == pytest.approx(140 / 64)
    assert m["tap/f5/natural/H/spc"] - m["tap/f1/natural/H/spc"] > 0.1
    assert m["test/natural/H/spc"] > 0.8  # the multi-tap readout
    assert m["posenet/time/encode_s"] > 0


def test_vit_without_its_position_embedding_reads_no_position(root) -> None:
    """The transformer controls: a ViT's learned position embedding is explicit position (H SPC
    clearly above PosENet alone), and without it nothing in the ViT knows where a patch sits (H SPC at
    PosENet-alone's floor). Measured at this setting: learned .37, none -.09, PosENet alone .00."""
    vit = ["backbone=vit_tiny", "backbone.taps=[f1,f6]", "task.tap_readouts=all", "task.max_steps=300"]
    learned = cached_run(root, *SMALL, *vit)
    removed = cached_run(root, *SMALL, *vit, "backbone.position_embedding=none")
    alone = cached_run(root, *SMALL, "backbone=none", "task.tap_readouts=all", "task.max_steps=300")
    floor = alone["test/natural/H/spc"]
    assert abs(removed["test/natural/H/spc"] - floor) < 0.2
    assert learned["test/natural/H/spc"] - max(floor, removed["test/natural/H/spc"]) > 0.2


def _job(
    tmp_path: Path, name: str, overrides: list[str], status: str, metrics: dict | None = None, error: str | None = None
) -> JobResult:
    return JobResult(tmp_path / name, overrides, status, error, metrics or {}, wall_time_s=1.0)


def test_a_cell_without_weights_is_marked_and_never_filled(tmp_path) -> None:
    missing = "MissingWeights: ImageNet weights for vgg16 not found: put vgg16-397923af.pth into /x"
    jobs = [
        _job(
            tmp_path,
            "0",
            ["experiment=atlas_posenet", "padding=zeros", "backbone.weights=imagenet"],
            "failed",
            error=missing,
        ),
        _job(
            tmp_path,
            "1",
            ["experiment=atlas_ppp", "padding=zeros", "backbone.weights=imagenet"],
            "failed",
            error=missing,
        ),
    ]
    rows = atlas_rows(atlas_cells({"vgg16": jobs}))
    assert len(rows) == 1
    assert rows[0]["note"] == NO_WEIGHTS and rows[0]["weights"] == "imagenet"
    assert all(rows[0][k] is None for k in ("H_spc", "G_spc", "ppp_snr", "rf_px"))


def test_missing_imagenet_weights_raise_missing_weights(tmp_path, monkeypatch) -> None:
    """The real loaders raise :class:`MissingWeights` (what the atlas marks), naming the file."""
    pytest.importorskip("timm")
    from posenc.models.backbones import build_backbone
    from posenc.models.backbones.timm import build_timm_backbone

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(MissingWeights, match="vgg16-397923af.pth"):
        build_backbone("vgg16", weights="imagenet")
    with pytest.raises(MissingWeights, match="model.safetensors"):
        build_timm_backbone("resnet18d", weights="imagenet")


def test_the_atlas_of_two_models_by_two_paddings(tmp_path) -> None:
    """``sweep.py atlas`` with two groups (any backbone option names one: tiny is not in the preset) and two
    paddings: the table has one row per model x padding x tap plus the multi-tap readout, PPP beside PosENet,
    the figure is drawn, and ``collect`` redraws it."""
    small = ["data.num_test=8", "task.max_steps=20", "task.ppp_contexts=8", "seed=0"]  # seed=0: task.seeds=[0]
    sweep = tmp_path / "atlas"
    proc = sweep_in_process("atlas", "groups=tiny,resnet18", "padding=zeros,none", *small, f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == str(sweep)
    with open(sweep / "atlas.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == COLUMNS
    taps = ["f1", "f2", "f3", "f4", "f5", ALL_TAPS]
    assert [(r["model"], r["padding"], r["tap"]) for r in rows] == [
        (m, p, t) for m in ("tiny", "resnet18") for p in ("zeros", "none") for t in taps
    ]
    for r in rows:
        # resnet18 at 64 px: its stem, max-pool and strided convs read their far padding less (Alsallakh et al.)
        assert r["H_spc"] and r["G_spc"] and r["note"] == ("uneven padding: 8 strided layers" if r["model"] == "resnet18" else "")
        assert bool(r["ppp_snr"]) == (r["tap"] != ALL_TAPS) and bool(r["rf_px"]) == (r["tap"] != ALL_TAPS)
    snr = {(r["model"], r["padding"], r["tap"]): float(r["ppp_snr"]) for r in rows if r["ppp_snr"]}
    assert snr[("tiny", "zeros", "f5")] > 10 * snr[("tiny", "none", "f5")]  # zero padding's pattern, none's nearly 0
    assert "| tiny | zeros | random init |" in (sweep / "atlas.md").read_text()
    (sweep / "atlas.png").unlink()
    proc = sweep_in_process("collect", str(sweep))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (sweep / "atlas.png").stat().st_size > 10_000
