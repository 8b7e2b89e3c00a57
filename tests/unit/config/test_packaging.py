"""A non-editable install carries everything a run needs: the wheel holds every config of conf/
as the package posenc.conf, and posenc composes from that copy when there is no checkout."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from helpers.runs import ROOT


def test_an_installed_wheel_composes_from_its_own_configs(tmp_path: Path) -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    source = tmp_path / "source"  # a copy: setuptools builds in-tree, and the checkout stays clean
    for name in tracked:
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-build-isolation",
            "--no-deps",
            "-q",
            str(source),
            "-w",
            str(tmp_path / "wheel"),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = (tmp_path / "wheel").glob("posenc-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = {n.removeprefix("posenc/conf/") for n in archive.namelist() if n.startswith("posenc/conf/")}
        archive.extractall(tmp_path / "site")
    in_checkout = {
        str(p.relative_to(ROOT / "conf"))
        for p in (ROOT / "conf").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert shipped == in_checkout
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); from posenc.config.compose import CONF_DIR, compose_run; "
        "cfg = compose_run(['backbone=resnet18', 'padding=reflect'], sys.argv[2]); "
        "print(CONF_DIR); print(cfg.backbone.name, cfg.backbone.padding.name)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path / "site"), str(tmp_path / "run")],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    ).stdout.split("\n")
    assert Path(out[0]) == tmp_path / "site" / "posenc" / "conf"
    assert out[1] == "resnet18 reflect"
