"""The import graph of posenc: no cycle, and no module imports a layer above its own (models,
data and analyses never import the tasks or the run machinery that drives them)."""

from __future__ import annotations

import ast

from conftest import ROOT

PACKAGE = ROOT / "src" / "posenc"
# command-line tools over finished runs (python -m ...): they sit above the run layer, though they
# still live in analysis/ (issue 17's folder split is not done)
TOOLS = ("posenc.analysis.rank_channels", "posenc.analysis.attack")
RUN_LAYER = ("posenc.tasks", "posenc.training", "posenc.sweeps", "posenc.cli", "posenc.runs", "posenc.reporting")
BELOW_THE_TASKS = ("posenc.backbones", "posenc.padding", "posenc.registry", "posenc.choices", "posenc.readouts",
                   "posenc.heads", "posenc.receptive_field", "posenc.permutation", "posenc.timm_backbone",
                   "posenc.module_backbone", "posenc.data", "posenc.analysis", "posenc.position_maps",
                   "posenc.errors", "posenc.config_schema", "posenc.config_validation")


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


def test_models_data_and_analyses_do_not_import_the_run_layer() -> None:
    graph = import_graph()
    upward = sorted(f"{m} imports {d}" for m, deps in graph.items() if m.startswith(BELOW_THE_TASKS)
                    and m not in TOOLS for d in deps if d.startswith(RUN_LAYER))
    assert upward == []
