"""The shape of the code: no import circle, no module too big to learn.

Read from the source with ``ast`` (nothing is imported), so the test sees what a
newcomer reads.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1] / "src" / "tollway"
#: Generated or tabular: their length is not code to learn.
EXEMPT_FROM_LENGTH = ("migrations/", "kit/countries.py")
MAX_LINES = 700
#: In these domains no module may hold more than this share of the domain's lines.
SPLIT_DOMAINS = ("payments", "billing", "marketplace")
MAX_SHARE = 0.25


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in SOURCE.rglob("*.py"):
        relative = path.relative_to(SOURCE.parent).with_suffix("")
        parts = list(relative.parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _runtime_imports(tree: ast.Module, module: str, is_package: bool) -> Iterator[str]:
    """Every name the module imports, at module level or inside a function (an import
    deferred into a function hides a circle, it does not remove it), except under
    ``if TYPE_CHECKING:``, which never runs."""
    package = module if is_package else module.rpartition(".")[0]
    yield from _imports_of(tree, package)


def _imports_of(node: ast.AST, package: str) -> Iterator[str]:
    if isinstance(node, ast.If):
        test = node.test
        name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", "")
        if name == "TYPE_CHECKING":
            for child in node.orelse:
                yield from _imports_of(child, package)
            return
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join([*anchor, base] if base else anchor)
        yield base
        for alias in node.names:
            yield f"{base}.{alias.name}"
    else:
        for child in ast.iter_child_nodes(node):
            yield from _imports_of(child, package)


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        targets = {
            imported
            for imported in _runtime_imports(tree, name, path.name == "__init__.py")
            if imported in modules and imported != name
        }
        graph[name] = targets
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines())


class TestImportGraph:
    def test_no_two_modules_import_each_other_even_through_others(self) -> None:
        assert _circles(_graph()) == []

    def test_the_walk_finds_a_circle_when_there_is_one(self) -> None:
        graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
        assert _circles(graph) == [["a", "b", "c"]]


class TestModuleSize:
    def test_no_module_is_over_700_lines(self) -> None:
        too_long = {
            str(path.relative_to(SOURCE)): _lines(path)
            for path in SOURCE.rglob("*.py")
            if not str(path.relative_to(SOURCE)).startswith(EXEMPT_FROM_LENGTH)
            and _lines(path) > MAX_LINES
        }
        assert too_long == {}

    def test_no_module_holds_a_quarter_of_payments_billing_or_marketplace(self) -> None:
        heavy: dict[str, float] = {}
        for domain in SPLIT_DOMAINS:
            files = list((SOURCE / domain).rglob("*.py"))
            total = sum(_lines(path) for path in files)
            for path in files:
                share = _lines(path) / total
                if share > MAX_SHARE:
                    heavy[str(path.relative_to(SOURCE))] = round(share, 3)
        assert heavy == {}
