"""The import boundaries, read from the source (imports inside functions included): no module of the app or the plugin
imports itself back through others, the app uses the plugin only through its public module ``job``, the plugin never
imports the app, and the plugin's distribution declares every library the plugin imports."""

from __future__ import annotations

import ast
import sys
import tomllib
from pathlib import Path

from tests.helpers.cli import ROOT

PLUGIN = "hydra_plugins.optuna_mlflow_sweeper"


def import_graph(root: Path, packages: list[str]) -> dict[str, set[str]]:
    """module -> the modules of ``packages`` it imports (absolute and relative imports, at any depth)."""
    modules: dict[str, Path] = {}
    for package in packages:
        for path in (root / package.replace(".", "/")).rglob("*.py"):
            modules[".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(here[: len(here) - node.level + 1] + ([node.module] if node.module else []))
                found |= {base, *(f"{base}.{a.name}" for a in node.names)}
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm): each is an import circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_itself_back_through_others():
    assert cycles(import_graph(ROOT, ["src", PLUGIN])) == []


def test_the_cycle_check_finds_a_circle_hidden_in_a_function(tmp_path):
    """The check can fail: a circle closed by an import inside a function (the kind a late import hides)."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.b import helper\n")
    (package / "b.py").write_text("def helper():\n    from . import c\n")
    (package / "c.py").write_text("import pkg.a\n")
    (package / "d.py").write_text("from pkg import a\n")
    assert cycles(import_graph(tmp_path, ["pkg"])) == [["pkg.a", "pkg.b", "pkg.c"]]


def test_the_app_uses_only_the_plugins_public_module_and_the_plugin_never_the_app():
    graph = import_graph(ROOT, ["src", PLUGIN])
    private = {f"{m} -> {d}" for m, deps in graph.items() if m.startswith("src") for d in deps
               if d.startswith(f"{PLUGIN}.") and d != f"{PLUGIN}.job"}
    assert not private, f"the app imports private plugin modules: {sorted(private)}"
    reaching = {f"{m} -> {d}" for m, deps in graph.items() if m.startswith(PLUGIN) for d in deps
                if d.startswith("src")}
    assert not reaching, f"the plugin imports the app: {sorted(reaching)}"


def test_the_plugins_distribution_declares_every_library_the_plugin_imports():
    spec = tomllib.loads((ROOT / "plugins" / "optuna_mlflow_sweeper" / "pyproject.toml").read_text())["project"]
    declared = {d.split(">")[0].split("<")[0].split("=")[0].split("[")[0].strip().lower()
                for d in spec["dependencies"]}
    distribution_of = {"hydra": "hydra-core", "mlflow": "mlflow-skinny"}  # its client only
    imported: set[str] = set()
    for path in (ROOT / PLUGIN.replace(".", "/")).glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    optional = {"torch", "cmaes", "psycopg"}  # the extras: imported only when that sampler or storage is chosen
    third_party = imported - set(sys.stdlib_module_names) - {"__future__", "hydra_plugins"} - optional
    missing = {distribution_of.get(m, m) for m in third_party} - declared
    assert not missing, f"the plugin imports {sorted(missing)} but its pyproject.toml does not declare them"


def test_the_readmes_maps_list_every_module_once():
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("## Layout"):]
    app = [p.relative_to(ROOT / "src").as_posix() for p in (ROOT / "src").rglob("*.py")
           if p.name != "__init__.py" and "__pycache__" not in p.parts]
    plugin = [p.name for p in (ROOT / PLUGIN.replace(".", "/")).glob("*.py") if p.name != "__init__.py"]
    plugin_table = layout[layout.index("| Plugin file |"):layout.index("| App module |")]
    app_table = layout[layout.index("| App module |"):]
    for table, modules in ((plugin_table, plugin), (app_table, app)):
        missing = [m for m in modules if f"`{m}`" not in table]
        twice = [m for m in modules if table.count(f"`{m}`") > 1]
        assert not missing and not twice, (missing, twice)
