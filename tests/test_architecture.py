"""The shape of the package, checked: imports run one way (down the layers below), with no cycle, and
nothing below the public API imports the package root. Every import counts, module-level or inside a
function, because a function-local import is still a dependency."""

import ast
from pathlib import Path

import pytest
from fresh_python import assert_runs_without_importing

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "lenet"

# Bottom to top. A module may import from its own layer or any layer below it, never above.
LAYERS = [
    ["lenet.errors", "lenet._io", "lenet._version", "lenet._paths", "lenet._lazy", "lenet.hardware", "lenet.idx"],
    ["lenet.registry"],
    ["lenet.data", "lenet.augment", "lenet.losses", "lenet.recipes", "lenet.models", "lenet.optim",
     "lenet.shipped_onnx", "lenet.shipped"],
    ["lenet.inference"],
    ["lenet.checkpoint", "lenet.weights", "lenet.trainer", "lenet.predict", "lenet.viz", "lenet.export",
     "lenet.bench", "lenet.committee", "lenet.speedrun"],
    ["lenet.api", "lenet", "lenet.sweep"],
    ["lenet.cli", "lenet.serve", "lenet.__main__"],
]


def module_names() -> dict[str, Path]:
    names = {}
    for path in (SRC / PACKAGE).rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _imported(module: str, path: Path, node: ast.AST, modules: dict[str, Path]) -> list[str]:
    """The modules of ours that one import statement names (the deepest existing module of each name)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
            package = package[:len(package) - node.level + 1]
            base = ".".join(package + ([node.module] if node.module else []))
        # `from pkg import x` names the submodule pkg.x where there is one, else a name defined in pkg
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
    else:
        return []
    found = []
    for name in names:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if name and name != module:
            found.append(name)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = module_names()
    graph = {}
    for module, path in modules.items():
        graph[module] = {target for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                         for target in _imported(module, path, node, modules)}
    return graph


def layer_of(module: str) -> int:
    for level, prefixes in enumerate(LAYERS):
        if any(module == p or (p != PACKAGE and module.startswith(p + ".")) for p in prefixes):
            return level
    raise AssertionError(f"{module} is in no layer of tests/test_architecture.py: add it where it belongs")


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (iterative Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return found


def test_the_graph_is_read():
    graph = import_graph()
    assert len(graph) >= 30
    trainer_imports = set().union(*(targets for m, targets in graph.items() if m.startswith("lenet.trainer")))
    assert {"lenet.inference", "lenet.checkpoint", "lenet.optim"} <= trainer_imports
    assert "lenet.errors" in graph["lenet.registry"]


def test_no_import_cycle():
    assert cycles(import_graph()) == []


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_nothing_below_the_public_api_imports_the_package_root():
    below = [m for m in import_graph() if layer_of(m) < layer_of("lenet.api")]
    offenders = [m for m in below if PACKAGE in import_graph()[m]]
    assert offenders == []


def test_imports_run_down_the_layers():
    upward = [f"{module} -> {target}" for module, targets in import_graph().items() for target in targets
              if target != PACKAGE and layer_of(target) > layer_of(module)]
    assert upward == []


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["eval", "--help"], ["summary", "--help"],
                                  ["predict", "--help"], ["viz", "--help"], ["export", "--help"],
                                  ["bench", "--help"], ["serve", "--help"], ["speedrun", "--help"], ["--version"]])
def test_help_imports_no_torch(argv):
    code = ("import time\nt = time.perf_counter()\nfrom lenet.cli import main\n"
            f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\nprint(time.perf_counter() - t)")
    out = assert_runs_without_importing(code, ("torch", "numpy"))
    assert "usage: lenet" in out or "lenet " in out
    assert float(out.strip().splitlines()[-1]) < 1.0


def test_import_lenet_is_lazy():
    out = assert_runs_without_importing("import lenet\nprint(lenet.__version__)")
    assert out.strip() == __import__("lenet").__version__
