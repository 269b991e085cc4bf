"""The layer order of docs/architecture.md, checked from the modules' own imports (lazy imports
inside functions included, `if TYPE_CHECKING:` blocks not): no module imports a layer above its
own, and no import runs in a circle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("r1v_data", "r1v_train")

# lowest first; a module may import its own layer's package and the layers below it. Within the
# domain tier (backends .. outputs) a package imports only the ones listed before it.
LAYERS = [
    (
        "core",
        (
            "r1v_data",
            "r1v_data._compat",
            "r1v_data.config",
            "r1v_data.errors",
            "r1v_data.processes",
            "r1v_data.redact",
            "r1v_data.text",
        ),
    ),
    ("store", ("r1v_data.store",)),
    ("readers", ("r1v_data.readers", "r1v_data.sample_data")),
    ("backends", ("r1v_data.backends",)),
    ("grading", ("r1v_data.grading",)),
    ("alcotd", ("r1v_data.alcotd",)),
    ("curation", ("r1v_data.curation",)),
    ("outputs", ("r1v_data.outputs",)),
    ("executors", ("r1v_data.executors",)),
    ("stages", ("r1v_data.stages",)),
    ("cli", ("r1v_data.cli",)),
    ("train", ("r1v_train",)),
    ("train-cli", ("r1v_train.cli",)),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))}


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The r1v modules `path` imports, at any depth of its code."""
    found: set[str] = set()
    stack: list[ast.AST] = [ast.parse(path.read_text(), str(path))]
    while stack:
        node = stack.pop()
        if _type_checking_only(node):
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:  # `from pkg import module` imports the module
                sub = f"{node.module}.{a.name}"
                found.add(sub if sub in known else node.module)
        stack.extend(ast.iter_child_nodes(node))
    return {m for m in found if m in known}


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    known = set(modules)
    return {name: imports_of(path, known) - {name} for name, path in modules.items()}


def layer_of(module: str) -> tuple[int, str]:
    best: tuple[int, str, int] | None = None  # the longest matching prefix decides
    for rank, (layer, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            matches = module == prefix or (module.startswith(prefix + ".") and prefix != "r1v_data")
            if matches and (best is None or len(prefix) > best[2]):
                best = (rank, layer, len(prefix))
    assert best is not None, f"{module} belongs to no layer: add it to LAYERS and docs/architecture.md"
    return best[0], best[1]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_module_has_a_layer() -> None:
    for module in all_modules():
        layer_of(module)


def test_no_module_imports_a_layer_above_its_own() -> None:
    upward = []
    for module, targets in import_graph().items():
        rank, layer = layer_of(module)
        for target in targets:
            t_rank, t_layer = layer_of(target)
            if t_rank > rank:
                upward.append(f"{module} ({layer}) imports {target} ({t_layer})")
    assert not upward, "imports from a higher layer:\n" + "\n".join(sorted(upward))


def test_no_import_circles() -> None:
    assert cycles(import_graph()) == []


@pytest.mark.parametrize(
    ("graph", "expected"),
    [({"a": {"b"}, "b": {"a"}, "c": set()}, [["a", "b"]]), ({"a": {"b"}, "b": {"c"}, "c": set()}, [])],
)
def test_the_circle_finder_finds_circles(graph: dict[str, set[str]], expected: list[list[str]]) -> None:
    assert cycles(graph) == expected


def test_the_checker_sees_lazy_and_from_package_imports(tmp_path: Path) -> None:
    code = "def f():\n    from r1v_data.store import schema\n    import r1v_data.cli\n"
    (tmp_path / "m.py").write_text(code)
    known = {"r1v_data.store", "r1v_data.store.schema", "r1v_data.cli"}
    assert imports_of(tmp_path / "m.py", known) == {"r1v_data.store.schema", "r1v_data.cli"}


def test_old_import_paths_still_work_for_one_release() -> None:
    import importlib

    with pytest.warns(DeprecationWarning, match="moved to r1v_data.grading.rl_rewards"):
        old = importlib.import_module("r1v_data.rl_rewards")
    from r1v_data.grading import rl_rewards

    assert old.accuracy_rewards is rl_rewards.accuracy_rewards
    assert rl_rewards.__name__ == "r1v_data.grading.rl_rewards"
