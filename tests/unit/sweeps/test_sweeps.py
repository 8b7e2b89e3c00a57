"""Sweeps: presets, collecting a multirun's job dirs (completed / failed / running / missing),
the reports, and ``python sweep.py`` as a user runs it."""

from __future__ import annotations

import csv
import json
import statistics
import subprocess
from datetime import datetime
from pathlib import Path

import pytest
from helpers.runs import CONF_DIR, compose_run, sweep_in_process, train_in_process
from helpers.sweeps import TWO_STAGE_SMALL, fake_job, fake_metrics, fake_multirun
from omegaconf import OmegaConf

from posenc.errors import PosencError
from posenc.sweeps.collect import COMPLETED, FAILED, MISSING, RUNNING, collect, expected_jobs
from posenc.sweeps.presets import expand_overrides, list_presets, reserve_sweep_dir
from posenc.sweeps.reports import write_reports
from posenc.sweeps.tables import build_rows

TINY_FAST = [
    "data.image_size=32",
    "data.num_train=4",
    "data.num_test=2",
    "data.batch_size=4",
    "trainer.max_epochs=1",
    "callbacks.progress=null",
]


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# ----------------------------------------------------------------------------- presets


def test_presets_are_listed_with_their_descriptions():
    presets = list_presets(CONF_DIR)
    assert {"padding_study", "readout_ablation", "tap_ablation", "posenet_alone"} <= set(presets)
    assert all(description and not description.startswith("@") for description in presets.values())


@pytest.mark.parametrize(
    ("name", "n_jobs", "swept"),
    [
        ("padding_study", 12, {"padding", "backbone"}),
        ("readout_ablation", 12, {"readout.kernel_size", "readout.depth"}),
        ("tap_ablation", 6, {"backbone.taps"}),
        ("posenet_alone", 2, {"backbone"}),
        ("canvas_study", 24, {"data.canvas.fill", "padding"}),
        ("canvas_frame", 8, {"data.canvas.fill", "padding"}),
        ("border_study", 24, {"task", "padding"}),
        ("padding_then_probe", 6, {"padding"}),
        ("channel_order", 144, {"readout", "readout.permute_at", "padding", "task.label"}),
        ("translation_invariance", 30, {"invariance", "padding"}),
        ("ppp_artifact", 6, {"padding"}),
    ],
)
def test_presets_expand_to_their_jobs(name, n_jobs, swept):
    cfg = OmegaConf.load(CONF_DIR / "sweep" / f"{name}.yaml")
    assert cfg.sweep_name == name
    jobs = expand_overrides(OmegaConf.to_container(cfg.hydra.sweeper.params), [f"sweep={name}"])
    assert len(jobs) == n_jobs
    keys = {o.split("=", 1)[0] for job in jobs for o in job}
    varying = {k for k in keys if len({o for job in jobs for o in job if o.startswith(k + "=")}) > 1}
    assert varying == swept


def test_tap_ablation_sweeps_one_list_per_job(tmp_path):
    params = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "sweep" / "tap_ablation.yaml").hydra.sweeper.params)
    taps = [o for job in expand_overrides(params, []) for o in job if o.startswith("backbone.taps=")]
    assert taps == [f"backbone.taps=[{t}]" for t in ("f1", "f2", "f3", "f4", "f5", "f1,f2,f3,f4,f5")]
    assert list(compose_run(["sweep=tap_ablation", taps[1]], tmp_path).backbone.taps) == ["f2"]
    assert len(compose_run([taps[-1]], tmp_path).backbone.taps) == 5


def test_the_atlas_groups_are_its_models_and_any_backbone_option_names_one():
    from posenc.errors import PosencError
    from posenc.sweeps.presets import preset_groups, select_groups

    groups, report = preset_groups("atlas")
    assert report == "atlas" and len(groups) == 11
    assert groups["vgg16_hed"] == ["backbone=vgg16", "backbone.weights=hed"]
    assert groups["vit_tiny_no_pos_embed"] == [
        "backbone=vit_tiny",
        "backbone.position_embedding=none",
        "task.paddings=[zeros]",
    ]
    assert OmegaConf.select(OmegaConf.load(CONF_DIR / "sweep" / "atlas.yaml"), "hydra.sweeper.params") is None
    assert select_groups(groups, "vgg16,tiny") == {"vgg16": ["backbone=vgg16"], "tiny": ["backbone=tiny"]}
    with pytest.raises(PosencError, match="'vgg61' is not valid; valid: vgg16, resnet18"):
        select_groups(groups, "vgg61")
    assert preset_groups("padding_study") == ({}, None)


def test_command_line_overrides_replace_swept_values():
    params = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "sweep" / "padding_study.yaml").hydra.sweeper.params)
    jobs = expand_overrides(params, ["sweep=padding_study", "backbone=tiny", "seed=1"])
    assert len(jobs) == 6
    assert all("backbone=tiny" in job and "seed=1" in job and "backbone=vgg16" not in job for job in jobs)


def test_overrides_expand_to_jobs_in_hydras_launch_order():
    """The basic sweeper's order, written out by hand: the cartesian product of the keys in the order they
    first appear, the last varying fastest; a key given again (the command line over a param) keeps its
    place and takes the new values; range() and choice() expand to their values, a group sweeps like a key."""
    params = {"padding": "zeros,reflect", "backbone": "tiny,vgg16"}
    assert expand_overrides(params, ["seed=range(1,3)", "backbone=choice(tiny,resnet18)", "+task.lr=0.1"]) == [
        ["padding=zeros", "backbone=tiny", "seed=1", "+task.lr=0.1"],
        ["padding=zeros", "backbone=tiny", "seed=2", "+task.lr=0.1"],
        ["padding=zeros", "backbone=resnet18", "seed=1", "+task.lr=0.1"],
        ["padding=zeros", "backbone=resnet18", "seed=2", "+task.lr=0.1"],
        ["padding=reflect", "backbone=tiny", "seed=1", "+task.lr=0.1"],
        ["padding=reflect", "backbone=tiny", "seed=2", "+task.lr=0.1"],
        ["padding=reflect", "backbone=resnet18", "seed=1", "+task.lr=0.1"],
        ["padding=reflect", "backbone=resnet18", "seed=2", "+task.lr=0.1"],
    ]
    assert expand_overrides({}, ["a=range(0,7,3)", "hydra/launcher=basic", "b.taps=[f1],[f2,f3]"]) == [
        ["a=0", "hydra/launcher=basic", "b.taps=[f1]"],
        ["a=0", "hydra/launcher=basic", "b.taps=[f2,f3]"],
        ["a=3", "hydra/launcher=basic", "b.taps=[f1]"],
        ["a=3", "hydra/launcher=basic", "b.taps=[f2,f3]"],
        ["a=6", "hydra/launcher=basic", "b.taps=[f1]"],
        ["a=6", "hydra/launcher=basic", "b.taps=[f2,f3]"],
    ]
    assert expand_overrides({"padding": "zeros,reflect"}, ["padding=circular"]) == [["padding=circular"]]
    assert expand_overrides({}, []) == [[]]
    with pytest.raises(Exception, match="ConfigLoader is not set"):  # glob() needs Hydra's config loader
        expand_overrides({"padding": "glob(*)"}, [])
    with pytest.raises(Exception, match="BasicSweeper does not support sweep type : INTERVAL_SWEEP"):
        expand_overrides({}, ["task.lr=interval(0,1)"])


def test_the_report_takes_the_order_a_run_recorded_and_else_the_names_order(tmp_path, capsys):
    """metrics.json's ``report_order`` orders the columns; a job from before it has none: name order, no warning."""
    sweep = fake_multirun(tmp_path / "s", ["padding=zeros,circular"])
    for num, padding in enumerate(("zeros", "circular")):
        fake_job(sweep, num, [f"padding={padding}"], COMPLETED, metrics=fake_metrics(0.5))
    write_reports(sweep, collect(sweep))
    assert "| row | n | status | H SPC | H MAE | V SPC | V MAE | G SPC |" in (sweep / "results.md").read_text()
    for num in (0, 1):
        metrics = json.loads((sweep / str(num) / "metrics.json").read_text())
        del metrics["report_order"]
        (sweep / str(num) / "metrics.json").write_text(json.dumps(metrics))
    write_reports(sweep, collect(sweep))
    report = (sweep / "results.md").read_text()
    assert "| row | n | status | G MAE | G SPC | H MAE | H SPC | HS MAE |" in report
    assert report.index("## natural") < report.index("## noise")
    assert capsys.readouterr().err == ""


def test_a_tasks_report_order_lists_its_metrics_then_its_grid():
    from posenc.tasks.location_cls import LocationClassificationTask
    from posenc.tasks.posenet import PosENetTask

    assert LocationClassificationTask.report_order() == ["accuracy", "chance", "majority"]
    inputs, targets, metrics = PosENetTask.grid_order or ((), (), ())
    assert PosENetTask.report_order() == [*inputs, *targets, *metrics]
    assert targets[:3] == ("H", "V", "G") and metrics == ("spc", "mae")


# ----------------------------------------------------------------------------- collect and tables


def test_mean_and_std_over_seeds(tmp_path):
    sweep = fake_multirun(tmp_path / "s", ["padding=zeros,circular", "seed=0,1,2"])
    jobs = expected_jobs(sweep)
    assert len(jobs) == 6
    values = {"zeros": [0.1, 0.3, 0.8], "circular": [0.5, 0.5, 0.5]}
    seen = {"zeros": 0, "circular": 0}
    for num, job in enumerate(jobs):
        padding = job[0].split("=")[1]
        fake_job(sweep, num, job, COMPLETED, metrics=fake_metrics(values[padding][seen[padding]]))
        seen[padding] += 1
    results = collect(sweep)
    rows = build_rows(results)
    assert [r.label for r in rows] == ["padding=zeros", "padding=circular"]
    mean, std, n = rows[0].stats("test/natural/H/spc")
    assert n == 3
    assert mean == pytest.approx(statistics.mean(values["zeros"]))
    assert std == pytest.approx(statistics.stdev(values["zeros"]))  # sample std, ddof=1
    assert rows[1].stats("test/noise/G/spc")[:2] == (pytest.approx(0.7), pytest.approx(0.0))
    paths = write_reports(sweep, results)
    md = (sweep / "results.md").read_text()
    z = values["zeros"]
    half = 4.302653 * statistics.stdev(z) / 3**0.5  # t(.975, df 2): the 95% t-interval of the mean
    assert (statistics.mean(z), statistics.stdev(z), half) == pytest.approx((0.4, 0.3606, 0.8957), abs=1e-4)
    assert "| padding=zeros | 3 | completed | .400 ± .361 [-.496, 1.296] |" in md  # the console's format
    assert "| padding=zeros | 3 | completed |" in md
    assert len(read_csv(sweep / "results.csv")) == 6
    assert {p.name for p in paths} >= {"results.csv", "results.md", "results_natural_spc.png", "results_noise_spc.png"}


def test_distance_curves_of_tasks_with_different_bins_get_their_own_panels(tmp_path):
    """border_study mixes grid rings (location_cls) with pixel bands (saliency) under one metric
    name; collect draws them in separate panels instead of failing (it did, on the real sweep)."""
    from posenc.sweeps.reports import plot_distance_curves

    sweep = fake_multirun(tmp_path / "s", ["task=location_cls,saliency"])
    rings = {"test/by_distance/ring0/accuracy": 0.5, "test/by_distance/ring1/accuracy": 0.9}
    bands = {f"test/by_distance/px{a:02d}-{a + 5:02d}/accuracy": 0.7 + a / 100 for a in (0, 6, 12, 18)}
    for num, (task, curve) in enumerate((("location_cls", rings), ("saliency", bands))):
        fake_job(
            sweep,
            num,
            [f"task={task}"],
            "completed",
            metrics={"status": "completed", "seed": 0, "test/accuracy": 0.8, **curve},
        )
    path = plot_distance_curves(sweep / "curves.png", build_rows(collect(sweep)))
    assert path is not None and path.stat().st_size > 1000
    write_reports(sweep, collect(sweep))
    assert (sweep / "results_by_distance.png").is_file()


def test_a_pivot_key_becomes_columns_of_the_task_table(tmp_path):
    """channel_order: rows = readout.permute_at, columns = accuracy per task.label."""
    sweep = fake_multirun(tmp_path / "s", ["readout.permute_at=null,5", "task.label=location,class"])
    cfg = OmegaConf.load(sweep / "multirun.yaml")
    cfg.pivot = "task.label"
    OmegaConf.save(cfg, sweep / "multirun.yaml")
    accuracy = {("null", "location"): 1.0, ("null", "class"): 0.9, ("5", "location"): 0.2, ("5", "class"): 0.8}
    for num, ((permute, label), value) in enumerate(accuracy.items()):
        fake_job(
            sweep,
            num,
            [f"readout.permute_at={permute}", f"task.label={label}"],
            "completed",
            metrics={
                "status": "completed",
                "seed": 0,
                "test/accuracy": value,
                "test/by_distance/ring0/accuracy": value,
            },
        )
    write_reports(sweep, collect(sweep))
    md = (sweep / "results.md").read_text()
    assert "| row | n | status | accuracy (location) | accuracy (class) |" in md
    assert "| readout.permute_at=null | 2 | completed | 1.000 | 0.900 |" in md
    assert "| readout.permute_at=5 | 2 | completed | 0.200 | 0.800 |" in md
    assert (sweep / "results_by_distance.png").is_file()


def test_several_probes_at_init_and_trained(tmp_path):
    """ppp_artifact's second stage: every probe on every trained backbone and on its init weights."""
    from posenc.sweeps.probe import probe_jobs

    sweep = fake_multirun(tmp_path / "s", ["padding=zeros,circular"])
    cfg = OmegaConf.load(sweep / "multirun.yaml")
    cfg.probe = [["task=ppp"], ["task=posenet", "data.image_size=64"]]
    cfg.probe_init = True
    OmegaConf.save(cfg, sweep / "multirun.yaml")
    for num, padding in enumerate(["zeros", "circular"]):
        fake_job(
            sweep,
            num,
            [f"padding={padding}"],
            "completed",
            metrics={"status": "completed", "seed": 0, "backbone": "tiny_bn", "padding": padding, "test/accuracy": 0.9},
        )
    jobs = probe_jobs(sweep, collect(sweep))
    assert len(jobs) == 2 * 2 * 2  # jobs x probes x (trained, init)
    init = [j.overrides for j in jobs if "probe_stage=init" in j.overrides]
    assert len(init) == 4 and all(
        f"backbone.weights={sweep / '0' / 'checkpoints' / 'init.ckpt'}" in j for j in init if "padding=zeros" in j
    )
    assert sorted(j.name for j in jobs) == ["0_0", "0_0_init", "0_1", "0_1_init", "1_0", "1_0_init", "1_1", "1_1_init"]
    assert all("backbone.trainable=false" in j.overrides and "backbone=tiny_bn" in j.overrides for j in jobs)


def test_the_probe_stage_carries_what_applies_to_it():
    """The probe stage runs on the user's launcher, trainer and data sizes; not with the first stage's
    task, its settings, its sweeps, or its run dirs."""
    from posenc.sweeps.probe import carried_overrides

    given = [
        "hydra.sweep.dir=/s",
        "task=semseg",
        "task.max_steps=4",
        "padding=zeros,circular",
        "seed=1",
        "trainer=gpu",
        "hydra/launcher=submitit_slurm",
        "hydra.launcher.partition=gpu",
        "data.num_train=64",
        "data.image_size=32,64",
        "backbone.width=8",
        "readout.depth=2",
        "invariance=shift",
        "logger=wandb",
    ]
    assert carried_overrides(given) == [
        "trainer=gpu",
        "hydra/launcher=submitit_slurm",
        "hydra.launcher.partition=gpu",
        "data.num_train=64",
        "backbone.width=8",
        "logger=wandb",
    ]


def test_a_probe_becomes_a_config_hydra_composes(tmp_path):
    """Each probe run is a generated ``@package _global_`` config: its group choices are defaults-list
    overrides, its keys values; composed, it is the run the overrides describe."""
    from posenc.sweeps.probe import ProbeJob, overrides_config, write_probe_stage

    overrides = [
        "task=posenet",
        "data.image_size=40",
        "task.targets=[H,V]",
        "backbone=tiny_bn",
        "padding=circular",
        "seed=3",
        "backbone.trainable=false",
        "probe_stage=init",
    ]
    assert overrides_config(overrides)["defaults"] == [
        {"override /task": "posenet"},
        {"override /backbone": "tiny_bn"},
        {"override /padding": "circular"},
    ]
    with pytest.raises(PosencError, match="'padding=zeros,none' is not valid"):
        overrides_config(["padding=zeros,none"])
    probe = write_probe_stage(tmp_path, [ProbeJob("0_init", overrides)])
    cfg = compose_run([f"hydra.searchpath=['file://{probe / '.conf'}']", "+probe_job=job0_init"], tmp_path / "run")
    direct = compose_run(overrides, tmp_path / "direct")
    for key in (
        "backbone.name",
        "padding.name",
        "seed",
        "data.image_size",
        "task.targets",
        "probe_stage",
        "task._target_",
    ):
        assert OmegaConf.select(cfg, key) == OmegaConf.select(direct, key), key


def test_failed_missing_and_unfinished_jobs_are_rows_with_their_status(tmp_path):
    sweep = fake_multirun(tmp_path / "s", ["padding=zeros,circular,none,reflect"], params={"backbone": "tiny"})
    jobs = expected_jobs(sweep)
    assert jobs == [["backbone=tiny", f"padding={p}"] for p in ("zeros", "circular", "none", "reflect")]
    fake_job(sweep, 0, jobs[0], COMPLETED, metrics=fake_metrics(0.5))
    fake_job(sweep, 1, jobs[1], FAILED, error="RuntimeError: boom at layer 3")
    fake_job(sweep, 2, jobs[2], RUNNING, metrics={"status": "running", "epoch": 0})  # killed
    # job 3 never started; a stray dir of another sweep matches no expected job
    fake_job(sweep, 7, ["backbone=tiny", "padding=partial"], COMPLETED, metrics=fake_metrics(0.2))
    results = collect(sweep)
    assert [(r.name, r.status) for r in results] == [
        ("0", COMPLETED),
        ("1", FAILED),
        ("2", RUNNING),
        ("", MISSING),
        ("7", COMPLETED),
    ]
    assert [r.expected for r in results] == [True, True, True, True, False]
    assert results[3].overrides == jobs[3]
    write_reports(sweep, results)
    rows = read_csv(sweep / "results.csv")
    assert [(r["job"], r["status"], r["padding"]) for r in rows] == [
        ("0", "completed", "zeros"),
        ("1", "failed", "circular"),
        ("2", "running", "none"),
        ("", "missing", "reflect"),
        ("7", "completed", "partial"),
    ]
    assert rows[1]["error"] == "RuntimeError: boom at layer 3"
    assert rows[0]["test/natural/H/spc"] and not rows[1]["test/natural/H/spc"]
    md = (sweep / "results.md").read_text()
    assert "| padding=circular | 0 | failed: RuntimeError: boom at layer 3 |" in md
    assert "| padding=reflect | 0 | missing: never started" in md
    assert "| padding=none | 0 | running: unfinished" in md
    assert "**failed** — RuntimeError: boom at layer 3" in md


def test_reserved_sweep_dirs_never_collide(tmp_path):
    now = datetime(2024, 5, 1, 12, 0, 0)
    first, second = reserve_sweep_dir(tmp_path, "x", now), reserve_sweep_dir(tmp_path, "x", now)
    assert first != second and first.is_dir() and second.is_dir()
    assert first.parent == second.parent == tmp_path / "sweeps" / "x"


# ----------------------------------------------------------------------------- command line


def test_list_and_unknown_sweep(tmp_path):
    proc = sweep_in_process("--list")
    assert proc.returncode == 0
    for name in ("padding_study", "readout_ablation", "tap_ablation", "posenet_alone"):
        assert any(line.startswith(name + " ") for line in proc.stdout.splitlines())
    proc = sweep_in_process("padding_studdy", f"paths.output_root={tmp_path}")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: unknown sweep 'padding_studdy'; valid: atlas, border_study, canvas_frame, canvas_study, channel_order, "
        "padding_study, padding_then_probe, posenet_alone, posenet_trained, ppp_artifact, readout_ablation, tap_ablation, "
        "translation_invariance"
    ]
    assert not (tmp_path / "sweeps").exists()
    proc = sweep_in_process("collect", str(tmp_path / "nowhere"))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert str(tmp_path / "nowhere") in proc.stderr


@pytest.fixture(scope="module")
def posenet_alone(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path_factory.mktemp("sweep")
    return sweep_in_process("posenet_alone", *TINY_FAST, f"paths.output_root={out}"), out


def test_sweep_runs_a_preset_and_reports_it(posenet_alone):
    proc, out = posenet_alone
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = Path(proc.stdout.strip().splitlines()[-1])
    assert sweep.parent == out / "sweeps" / "posenet_alone"
    rows = read_csv(sweep / "results.csv")
    assert [(r["backbone"], r["status"]) for r in rows] == [("none", "completed"), ("vgg16", "completed")]
    assert all(r["data.image_size"] == "32" for r in rows)
    md = (sweep / "results.md").read_text()
    for backbone in ("none", "vgg16"):
        line = next(line for line in md.splitlines() if line.startswith(f"| backbone={backbone} |"))
        assert line.split("|")[2:4] == [" 1 ", " completed "]
        cells = line.strip("| \n").split(" | ")[3:]  # a single run's value [its 95% bootstrap interval]
        assert all(float(cell.split(" [")[0]) == float(cell.split(" [")[0]) for cell in cells)
        assert all(cell.endswith("]") for cell in cells)
    assert "| backbone=vgg16 | 1 | completed |" in proc.stdout  # the table is printed
    from posenc.tasks.posenet import PosENetTask

    metrics = json.loads((sweep / "0" / "metrics.json").read_text())
    assert metrics["report_order"] == PosENetTask.report_order()  # what collect orders by, without the task
    assert (sweep / "results_natural_spc.png").stat().st_size > 1000
    assert sweep_in_process("collect", str(sweep)).stdout.strip().splitlines()[-1] == str(sweep)


def multirun(*args: str, sweep: Path) -> subprocess.CompletedProcess:
    """``python train.py -m ARGS`` into ``sweep``, in this process (Hydra's basic launcher runs the jobs in turn)."""
    return train_in_process("-m", *args, f"hydra.sweep.dir={sweep}", f"paths.output_root={sweep.parent}")


def test_collect_a_real_three_job_multirun(tmp_path):
    sweep = tmp_path / "m"
    proc = multirun("backbone=tiny", "padding=zeros,circular,none", *TINY_FAST, sweep=sweep)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = expected_jobs(sweep)
    assert [
        OmegaConf.to_container(OmegaConf.load(sweep / str(i) / ".hydra" / "overrides.yaml")) for i in range(3)
    ] == jobs
    results = collect(sweep)
    assert [(r.name, r.status) for r in results] == [("0", COMPLETED), ("1", COMPLETED), ("2", COMPLETED)]
    write_reports(sweep, results)
    md = (sweep / "results.md").read_text()
    for padding in ("zeros", "circular", "none"):
        assert f"| padding={padding} | 1 | completed | " in md


def test_a_failing_job_is_recorded_and_the_others_complete(tmp_path):
    sweep = tmp_path / "f"
    proc = multirun("backbone=tiny", "readout.kernel_size=3,4", *TINY_FAST, sweep=sweep)
    assert proc.returncode == 0, proc.stderr[-3000:]
    status = json.loads((sweep / "1" / "status.json").read_text())
    assert status["status"] == "failed" and "4" in status["error"]
    assert json.loads((sweep / "0" / "status.json").read_text())["status"] == "completed"
    proc = sweep_in_process("collect", str(sweep))
    assert proc.returncode == 1 and proc.stdout.strip().splitlines()[-1] == str(sweep)
    rows = read_csv(sweep / "results.csv")
    assert [(r["readout.kernel_size"], r["status"]) for r in rows] == [("3", "completed"), ("4", "failed")]
    assert "readout.kernel_size=4 is not valid" in rows[1]["error"]
    assert "| readout.kernel_size=4 | 0 | failed: " in (sweep / "results.md").read_text()


@pytest.mark.slow  # CI runs this preset on a real launcher: tests/integration/test_slurm_cluster.py (the slurm step)
def test_padding_then_probe_runs_both_stages_on_the_users_launcher(tmp_path):
    """``hydra/launcher=submitit_local`` and a small-data override: stage 1 (semseg, two paddings) and stage 2
    (PosENet on each trained backbone, its padding) both run as submitit jobs with the override applied,
    and each is reported like a sweep of its own."""
    small = TWO_STAGE_SMALL
    proc = sweep_in_process(
        "padding_then_probe",
        "padding=zeros,circular",
        "hydra/launcher=submitit_local",
        *small,
        f"paths.output_root={tmp_path}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    probe_dir = Path(proc.stdout.strip().splitlines()[-1])
    sweep = probe_dir.parent
    assert probe_dir.name == "probe"
    md = (sweep / "results.md").read_text()
    assert "## test metrics" in md and "miou by distance to the border" in md
    assert (sweep / "results_by_distance.png").stat().st_size > 1000
    rows = read_csv(probe_dir / "results.csv")
    assert sorted((r["padding"], r["status"]) for r in rows) == [("circular", "completed"), ("zeros", "completed")]
    for stage in (sweep, probe_dir):  # both stages ran as submitit jobs, with the small-data override
        assert len(list((stage / ".submitit").glob("*/*_log.out"))) == 2, stage
        for job in [d for d in stage.iterdir() if (d / "config.yaml").is_file()]:
            cfg = OmegaConf.load(job / "config.yaml")
            assert (cfg.data.num_train, cfg.data.image_size, cfg.trainer.max_steps) == (16, 32, 4), job
    for r in rows:  # each probe read the backbone its own padding's job trained
        assert json.loads((Path(r["backbone.weights"]) / "metrics.json").read_text())["padding"] == r["padding"]
        assert OmegaConf.load(probe_dir / r["job"] / "config.yaml").task._target_.endswith("PosENetTask")
    assert "| padding=zeros | 1 | completed |" in (probe_dir / "results.md").read_text()


def test_collect_prints_the_papers_numbers_beside_ours(tmp_path):
    """A preset that mirrors a paper's table carries its numbers (padding_study: PosENet Tables 1
    and 4); the report shows them as rows of their own under ours, with the source and how the
    settings differ."""
    preset = compose_run(["sweep=padding_study"], tmp_path / "compose")
    sweep_dir = fake_multirun(tmp_path / "sweep", ["sweep=padding_study"], {"padding": "zeros,none"})
    cfg = OmegaConf.load(sweep_dir / "multirun.yaml")
    cfg.paper = preset.paper
    OmegaConf.save(cfg, sweep_dir / "multirun.yaml")
    for num, (padding, value) in enumerate((("zeros", 0.5), ("none", 0.1))):
        # metrics.json records the task's order: the table takes it (input x target x metric)
        fake_job(sweep_dir, num, ["sweep=padding_study", f"padding={padding}"], COMPLETED, metrics=fake_metrics(value))
    write_reports(sweep_dir, collect(sweep_dir))
    report = (sweep_dir / "results.md").read_text()
    assert "PosENet (Islam et al. ICLR 2020), Table 1" in report and "ImageNet-pretrained" in report
    natural = report.split("## natural")[1].split("##")[0]
    rows = [line for line in natural.splitlines() if line.startswith("| paper:")]
    assert len(rows) == 2
    zeros = rows[0].split(" | ")
    assert zeros[0] == "| paper: padding=zeros backbone=vgg16" and zeros[2] == "published"
    assert zeros[3:5] == ["0.742", "0.149"]  # H SPC / MAE, in the table's column order
    assert rows[1].split(" | ")[3:5] == ["0.381", ""]  # Table 4 gives no MAE
    assert "| paper:" not in report.split("## noise")[1]  # the paper has no numbers for that input


@pytest.mark.parametrize(
    "name", ["padding_study", "posenet_alone", "tap_ablation", "readout_ablation", "padding_then_probe"]
)
def test_a_presets_paper_rows_name_its_swept_values_and_real_metric_keys(name, tmp_path):
    """A typo in a paper block would print an empty row: its settings are values the preset
    sweeps, its keys metrics that the preset's task writes."""
    from posenc.viz.tables import parse_task_key, parse_test_key

    cfg = compose_run([f"sweep={name}"], tmp_path)
    sweeper = OmegaConf.load(CONF_DIR / "sweep" / f"{name}.yaml").hydra.sweeper.params
    assert cfg.paper.rows
    for row in cfg.paper.rows:
        for key, value in row.match.items():
            assert key in sweeper, key
            assert str(value) in str(sweeper[key]), (key, value)
        for key in row.metrics:
            assert parse_test_key(key) or parse_task_key(key), key
