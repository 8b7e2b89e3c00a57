"""The import graph of posenc: no cycle, every module in a layer folder (core, models, data,
analysis, tasks, tools), and no module importing a layer above its own: models, data and analyses
never import the tasks, the tasks never the run machinery that drives them."""

from __future__ import annotations

import ast

from conftest import ROOT

PACKAGE = ROOT / "src" / "posenc"
# the layers, bottom to top: a module may import its own layer and the ones below it
LAYERS = (("posenc.core.registry", "posenc.core.choices", "posenc.core.errors", "posenc.core.jsonio"),
          ("posenc.core",), ("posenc.models", "posenc.data", "posenc.analysis"), ("posenc.tasks",),
          ("posenc.core.training", "posenc.core.sweeps", "posenc.core.cli"),
          ("posenc.tools",))


def layer_of(module: str) -> int:
    """The highest layer whose prefix names ``module`` (the run machinery in core/ sits above the tasks)."""
    found = [i for i, prefixes in enumerate(LAYERS) for p in prefixes if module == p or module.startswith(p + ".")]
    return max(found) if found else 0


def import_graph() -> dict[str, set[str]]:
    modules = {".".join(("posenc", *p.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__"): p
               for p in PACKAGE.rglob("*.py")}
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
            assert state.get(dep) != 1, "import cycle: " + " -> ".join([*path[path.index(dep):], dep])
            if dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_no_module_imports_a_layer_above_its_own() -> None:
    graph = import_graph()
    upward = sorted(f"{m} imports {d}" for m, deps in graph.items() for d in deps if layer_of(d) > layer_of(m))
    assert upward == []


def test_every_module_lives_in_a_layer_folder() -> None:
    loose = sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    assert loose == []
