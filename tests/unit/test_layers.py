"""The import graph of posenc: no cycle, every module in its layer, and no module importing a layer above its
own (the contract import-linter checks in CI, pyproject.toml; this one also checks that siblings of one layer
never import each other, and that the foundation and ``sweep.py collect`` never import torch)."""

from __future__ import annotations

import ast
import subprocess
import sys

from helpers.runs import ROOT

PACKAGE = ROOT / "src" / "posenc"
# the layers, bottom to top; the packages of one layer are siblings that never import each other
LAYERS = (
    ("posenc.errors",),
    ("posenc.io", "posenc.registry", "posenc.progress", "posenc.constants"),
    ("posenc.config",),
    ("posenc.models", "posenc.data", "posenc.viz"),
    ("posenc.metrics",),
    ("posenc.engine",),
    ("posenc.tasks",),
    ("posenc.run", "posenc.analysis"),
    ("posenc.sweeps",),
    ("posenc.cli",),
    ("posenc.tools", "posenc.api"),
)
TORCH_FREE = ("posenc.errors", "posenc.io", "posenc.registry", "posenc.progress", "posenc.constants",
              "posenc.sweeps.presets", "posenc.sweeps.collect", "posenc.sweeps.probe", "posenc.sweeps.tables",
              "posenc.sweeps.reports", "posenc.analysis.atlas", "posenc.viz.figures", "posenc.viz.sweep_figures",
              "posenc.viz.atlas_figure", "posenc.viz.loss_curve", "posenc.viz.tables")


def package_of(module: str) -> str | None:
    """The layer package ``module`` belongs to (``posenc.run.train`` -> ``posenc.run``), else None."""
    return next((p for layer in LAYERS for p in layer if module == p or module.startswith(p + ".")), None)


def layer_of(module: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if package_of(module) in layer)


def import_graph() -> dict[str, set[str]]:
    modules = {
        ".".join(("posenc", *p.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__"): p
        for p in PACKAGE.rglob("*.py")
    }
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("posenc"):
                found.add(node.module)
                found.update(f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("posenc"))
        graph[name] = {m for m in found if m in modules and m != name}
    return graph



def test_no_import_cycle() -> None:
    graph = import_graph()
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            assert state.get(dep) != 1, "import cycle: " + " -> ".join([*path[path.index(dep) :], dep])
            if dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_every_module_lives_in_a_layer() -> None:
    loose = sorted(m for m in import_graph() if m != "posenc" and not m.startswith("posenc.assets")
                   and package_of(m) is None)
    assert loose == []
    assert not (PACKAGE / "core").exists()  # the mixed floor of foundation and orchestration is gone


def test_no_module_imports_a_layer_above_its_own() -> None:
    graph = import_graph()
    upward = sorted(f"{m} imports {d}" for m, deps in graph.items() if package_of(m)
                    for d in deps if layer_of(d) > layer_of(m))
    assert upward == []


def test_siblings_of_one_layer_never_import_each_other() -> None:
    graph = import_graph()
    across = sorted(f"{m} imports {d}" for m, deps in graph.items() if package_of(m) for d in deps
                    if layer_of(d) == layer_of(m) and package_of(d) != package_of(m))
    assert across == []


def test_the_foundation_and_collect_import_no_torch() -> None:
    """Importing the foundation and the sweep reader (``sweep.py collect``) loads neither torch nor Lightning."""
    code = (f"import sys; import {', '.join(TORCH_FREE)}; "
            "print(sorted(m for m in ('torch', 'lightning', 'torchvision') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
