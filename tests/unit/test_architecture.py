"""The shape of the package, checked: no module of chatrelay imports itself back.

The import graph is read from the source (``TYPE_CHECKING`` imports count: a loop
that only type checkers see still ties two modules into one), and must have no
cycle. ``from . import codec`` is an edge to ``chatrelay.codec``, not to the package.

No module is longer than a newcomer reads in one go (500 lines), and the public
adapter modules, which only translate their wire to relay calls, stay short (350).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import chatrelay

ROOT = Path(chatrelay.__file__).parent
MAX_LINES = 500
MAX_ADAPTER_LINES = 350
PUBLIC_ADAPTERS = ("chatrelay.adapters.socketio", "chatrelay.adapters.starlette")


def modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> Iterator[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            submodules = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in known]
            if len(submodules) < len(node.names) and target in known:
                yield target
            yield from submodules


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_itself_back() -> None:
    known = modules()
    graph = {
        name: {target for target in imports(name, path, known) if target != name}
        for name, path in known.items()
    }
    assert len(graph) > 30  # the walk found the package
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_no_module_is_too_long() -> None:
    known = modules()
    lines = {name: len(path.read_text().splitlines()) for name, path in known.items()}
    assert set(PUBLIC_ADAPTERS) <= set(lines)
    too_long = {name: n for name, n in lines.items() if n > MAX_LINES}
    assert too_long == {}, f"over {MAX_LINES} lines: {too_long}"
    adapters = {name: lines[name] for name in PUBLIC_ADAPTERS if lines[name] > MAX_ADAPTER_LINES}
    assert adapters == {}, f"public adapter modules over {MAX_ADAPTER_LINES} lines: {adapters}"
