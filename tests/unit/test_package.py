"""The shape of the public package: light imports, complete `__all__`, documented names."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import itertools
import json
import pickle
import subprocess
import sys
import types
import typing
from typing import TypeVar

import attrs
import cattrs
import pytest

# The modules whose `__all__` is the public API; keep in step with the docs reference.
PUBLIC_MODULES = [
    "chatrelay",
    "chatrelay.abc",
    "chatrelay.backplanes",
    "chatrelay.codec",
    "chatrelay.events",
    "chatrelay.exceptions",
    "chatrelay.lowlevel",
    "chatrelay.testing",
]
# Public modules that bring an optional dependency along: the same checks of their
# names and docstrings, but importing them is allowed to import that dependency.
OPTIONAL_MODULES = [
    "chatrelay.adapters.socketio",
    "chatrelay.adapters.starlette",
    "chatrelay.auth.jwt",
    "chatrelay.backplanes.redis",
    "chatrelay.demo",
    "chatrelay.metrics",
]

# Dependencies that only the extras bring; `import chatrelay` must work without them.
OPTIONAL_DEPENDENCIES = [
    "socketio",
    "engineio",
    "starlette",
    "uvicorn",
    "redis",
    "jwt",
    "prometheus_client",
]


# A subprocess per module: e2e by the rule of tests/conftest.py, though it takes ~2 s.
@pytest.mark.e2e
@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_import_pulls_no_optional_dependency(module_name: str) -> None:
    # A fresh interpreter: in this one, other tests may already have imported them.
    code = f"import json, sys\nimport {module_name}\nprint(json.dumps(sorted(sys.modules)))\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    leaked = sorted(
        name
        for name in loaded
        if any(name == dep or name.startswith(dep + ".") for dep in OPTIONAL_DEPENDENCIES)
    )
    assert leaked == [], f"import {module_name} imported {leaked}"


def _source_tree(module: types.ModuleType) -> ast.Module:
    return ast.parse(inspect.getsource(module))


def _defined_names(module: types.ModuleType) -> set[str]:
    """The names a module's own top-level code binds by `def`, `class` or assignment."""
    names: set[str] = set()
    for node in _source_tree(module).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def _imports_from_package(module: types.ModuleType) -> dict[str, tuple[str, str]]:
    """Map each name bound by `from <a module of this package> import x as name` to its origin."""
    imports: dict[str, tuple[str, str]] = {}
    package = module.__name__ if hasattr(module, "__path__") else module.__package__
    top = module.__name__.partition(".")[0]
    for node in _source_tree(module).body:
        if not isinstance(node, ast.ImportFrom):
            continue
        source = "." * node.level + (node.module or "")
        origin = importlib.util.resolve_name(source, package) if node.level else source
        if origin != top and not origin.startswith(top + "."):
            continue
        for alias in node.names:
            imports[alias.asname or alias.name] = (origin, alias.name)
    return imports


def _expected_exports(module: types.ModuleType) -> set[str]:
    """The public names `module.__all__` must list.

    A submodule exports what it defines. The package exports what it defines and
    what it re-exports from its own (private) modules: that is what `__init__.py` is for.
    """
    names = _defined_names(module)
    if hasattr(module, "__path__"):
        names |= set(_imports_from_package(module))
    return {
        name
        for name in names
        if not name.startswith("_")
        and name != "__all__"
        # Submodules are reached by their dotted name, and type variables are not API.
        and not isinstance(getattr(module, name, None), types.ModuleType | TypeVar)
    }


def _public_all(module_name: str) -> list[str]:
    module = importlib.import_module(module_name)
    assert hasattr(module, "__all__"), f"{module_name} has no __all__"
    exported: list[str] = list(module.__all__)
    return exported


@pytest.mark.parametrize("module_name", PUBLIC_MODULES + OPTIONAL_MODULES)
def test_all_is_sorted_without_duplicates(module_name: str) -> None:
    exported = _public_all(module_name)
    assert exported == sorted(set(exported))


@pytest.mark.parametrize("module_name", PUBLIC_MODULES + OPTIONAL_MODULES)
def test_all_lists_every_public_name(module_name: str) -> None:
    module = importlib.import_module(module_name)
    missing = _expected_exports(module) - set(_public_all(module_name))
    assert missing == set(), f"{module_name}.__all__ misses {sorted(missing)}"


@pytest.mark.parametrize("module_name", PUBLIC_MODULES + OPTIONAL_MODULES)
def test_all_names_exist(module_name: str) -> None:
    module = importlib.import_module(module_name)
    absent = [name for name in _public_all(module_name) if not hasattr(module, name)]
    assert absent == [], f"{module_name}.__all__ names what it lacks: {absent}"


def _assignment_docstring(module: types.ModuleType, name: str) -> str | None:
    """The docstring of `name` if the module (or the one it re-exports from) assigns it.

    That is the string literal after `name = ...`, which mkdocstrings shows; "" when the
    assignment has none, and None when `name` is not bound by an assignment at all.
    """
    body = _source_tree(module).body
    for node, after in itertools.pairwise([*body, ast.Pass()]):
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            if (
                isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                return after.value.value
            return ""
    origin = _imports_from_package(module).get(name)
    if origin is None:
        return None
    return _assignment_docstring(importlib.import_module(origin[0]), origin[1])


def _docstring(module: types.ModuleType, name: str) -> str:
    # An alias (`UserId = str`, `ClientRequest = A | B`, a NewType) or a constant has
    # the __doc__ of its value's type, which documents nothing of ours: read the string
    # after the assignment instead. Classes and functions carry their own __doc__ (a
    # class without one has None, not its base's).
    doc = _assignment_docstring(module, name)
    if doc is None:
        doc = getattr(module, name).__doc__
    return inspect.cleandoc(doc or "")


@pytest.mark.parametrize("module_name", PUBLIC_MODULES + OPTIONAL_MODULES)
def test_exported_names_have_docstrings(module_name: str) -> None:
    module = importlib.import_module(module_name)
    undocumented = [
        name
        for name in _public_all(module_name)
        # Dunders such as __version__ explain themselves and the docs skip them.
        if not (name.startswith("__") and name.endswith("__"))
        and hasattr(module, name)
        and not _docstring(module, name)
    ]
    assert undocumented == [], f"{module_name}: no docstring for {undocumented}"


def _is_private(module_name: str) -> bool:
    return any(part.startswith("_") for part in module_name.split("."))


def _owned_exports(module_name: str) -> list[tuple[str, typing.Any]]:
    """The exported names that carry a module of their own: classes, functions, NewTypes."""
    module = importlib.import_module(module_name)
    return [
        (name, obj)
        for name in _public_all(module_name)
        if isinstance(obj := getattr(module, name), type | types.FunctionType | typing.NewType)
    ]


@pytest.mark.parametrize("module_name", PUBLIC_MODULES + OPTIONAL_MODULES)
def test_exported_names_say_their_public_home(module_name: str) -> None:
    # reprs, tracebacks and pickles name `obj.__module__`: it must be a public module
    # that exports the name, and where the object is found again.
    wrong = []
    for name, obj in _owned_exports(module_name):
        home = obj.__module__
        if home.partition(".")[0] != "chatrelay":
            continue  # re-exported from another library
        if (
            _is_private(home)
            or name not in _public_all(home)
            or getattr(importlib.import_module(home), obj.__qualname__, None) is not obj
        ):
            wrong.append(f"{name}: {home}")
    assert wrong == [], f"{module_name}: names without a public home: {wrong}"


def test_reprs_say_the_public_path() -> None:
    import traceback

    import chatrelay
    from chatrelay.exceptions import Forbidden
    from chatrelay.lowlevel import Connection

    assert repr(chatrelay.Relay) == "<class 'chatrelay.Relay'>"
    assert repr(Connection) == "<class 'chatrelay.lowlevel.Connection'>"
    assert repr(Forbidden) == "<class 'chatrelay.exceptions.Forbidden'>"
    assert repr(chatrelay.ConnectionId) == "chatrelay.ConnectionId"
    assert repr(chatrelay.allow_all).startswith("<function allow_all ")
    assert chatrelay.allow_all.__module__ == "chatrelay"
    assert traceback.format_exception_only(Forbidden("no")) == [
        "chatrelay.exceptions.Forbidden: no\n"
    ]


@pytest.mark.parametrize("module_name", PUBLIC_MODULES + OPTIONAL_MODULES)
def test_annotations_of_exported_classes_resolve(module_name: str) -> None:
    # get_type_hints looks names up in the module `__module__` names; attrs and cattrs
    # call it. The annotations were resolved where they were written.
    for name, obj in _owned_exports(module_name):
        if isinstance(obj, type):
            assert isinstance(typing.get_type_hints(obj), dict), name
            if attrs.has(obj):
                attrs.resolve_types(obj)
                assert not [f.name for f in attrs.fields(obj) if isinstance(f.type, str)], name


def test_exported_objects_pickle_and_structure() -> None:
    import chatrelay
    from chatrelay.exceptions import ConnectionClosed, Forbidden

    identity = chatrelay.Identity(user_id="alice", name="Alice")
    delivery = chatrelay.Delivery(
        user_id="bob",
        conversation_id="c1",
        message_id="m1",
        connection_id=chatrelay.ConnectionId("x"),
    )
    for obj in [identity, delivery, chatrelay.Limits(), chatrelay.RelayConfig()]:
        assert pickle.loads(pickle.dumps(obj)) == obj
    for exc in [Forbidden("no", event="conversation:join"), ConnectionClosed("slow_consumer")]:
        again = pickle.loads(pickle.dumps(exc))
        assert type(again) is type(exc)
        assert again.args == exc.args
    assert pickle.loads(pickle.dumps(chatrelay.allow_all)) is chatrelay.allow_all
    converter = cattrs.Converter()
    assert converter.structure(converter.unstructure(delivery), chatrelay.Delivery) == delivery
