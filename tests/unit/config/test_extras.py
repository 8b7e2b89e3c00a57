"""Optional features are extras (``pip install 'posenc[wandb,slurm,timm]'``); a run that needs a missing
one says which extra installs it, in one line."""

from __future__ import annotations

import sys

import pytest
from helpers.runs import ROOT

from posenc.errors import PosencError

OPTIONAL = {"wandb": "wandb", "tensorboard": "tensorboard", "slurm": "hydra-submitit-launcher", "timm": "timm"}


def test_optional_packages_are_extras_not_dependencies():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"])
    extras = project["optional-dependencies"]
    for extra, package in OPTIONAL.items():
        assert package not in core, package
        assert any(dep.startswith(package) for dep in extras[extra]), extra
    assert "scipy" not in core and any(d.startswith("scipy") for d in extras["dev"])  # only the tests use it
    assert "posenc[all]" in extras["dev"]  # the README's test command installs every extra


def test_a_submitit_launcher_without_its_plugin_names_the_extra(monkeypatch):
    from posenc.cli.argv import check_group_overrides

    monkeypatch.setitem(sys.modules, "hydra_plugins.hydra_submitit_launcher", None)  # as if not installed
    with pytest.raises(
        PosencError,
        match=r"^hydra/launcher=submitit_slurm needs hydra-submitit-launcher: "
        r"pip install 'posenc\[slurm\]'$",
    ):
        check_group_overrides(["-m", "hydra/launcher=submitit_slurm", "padding=zeros,none"])
    check_group_overrides(["hydra/launcher=basic"])  # the basic launcher needs nothing


@pytest.mark.parametrize(
    "target, kwargs, feature",
    [
        ("posenc.models.backbones.timm.build_timm_backbone", {"name": "resnet18d"}, "backbone=timm"),
        ("posenc.models.backbones.vit.build_vit_backbone", {}, "backbone=vit_tiny"),
    ],
)
def test_a_timm_backbone_without_timm_names_the_extra(monkeypatch, target, kwargs, feature):
    from hydra.utils import get_method

    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(PosencError, match=rf"^{feature} needs timm: pip install 'posenc\[timm\]'$"):
        get_method(target)(**kwargs)
