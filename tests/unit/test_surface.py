"""The public surface by audience: what each module exports, documents, and used to."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
import warnings
from pathlib import Path

import pytest

import chatrelay
from test_package import OPTIONAL_MODULES, PUBLIC_MODULES

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "src" / "chatrelay"
REFERENCE = ROOT / "docs" / "reference"
DOCS = ROOT / "docs"

# The demo is an application, documented by its tutorial rather than the reference.
DOCUMENTED_MODULES = [
    name for name in PUBLIC_MODULES + OPTIONAL_MODULES if name != "chatrelay.demo"
]

# What `chatrelay` exported before the surface was split, and where it lives now.
EXCEPTIONS = [
    "BackplaneError",
    "ChatRelayError",
    "ConnectionClosed",
    "Forbidden",
    "InternalError",
    "InvalidPayload",
    "NotInConversation",
    "PayloadTooLarge",
    "ProtocolError",
    "RateLimited",
    "TooManyConnections",
    "Unauthorized",
    "UnknownEvent",
]
MOVED = {
    "Connection": "chatrelay.lowlevel",
    "Outbound": "chatrelay.lowlevel",
    "OutgoingStream": "chatrelay.lowlevel",
    **dict.fromkeys(EXCEPTIONS, "chatrelay.exceptions"),
}
INTERNAL = {"ClusterView": "chatrelay._cluster", "TokenBucket": "chatrelay._limits"}


# --- old names ------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "home"), sorted(MOVED.items()))
def test_moved_names_still_import_with_a_warning(name: str, home: str) -> None:
    namespace: dict[str, object] = {}
    with pytest.warns(DeprecationWarning, match=rf"^chatrelay\.{name} is deprecated: ") as caught:
        exec(f"from chatrelay import {name}", namespace)
    assert f"import it from {home} instead" in str(caught[0].message)
    assert caught[0].filename == "<string>"  # it points at the importing line
    assert namespace[name] is getattr(importlib.import_module(home), name)
    assert name not in chatrelay.__all__


@pytest.mark.parametrize(("name", "home"), sorted(INTERNAL.items()))
def test_internal_names_still_import_with_a_warning(name: str, home: str) -> None:
    with pytest.warns(
        DeprecationWarning, match=rf"^chatrelay\.{name} is deprecated: it is internal"
    ):
        found = getattr(chatrelay, name)
    assert found is getattr(importlib.import_module(home), name)
    assert name not in chatrelay.__all__


def test_unknown_names_are_still_attribute_errors() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not hasattr(chatrelay, "NoSuchName")
        with pytest.raises(ImportError, match="NoSuchName"):
            exec("from chatrelay import NoSuchName", {})


def test_public_names_import_without_a_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in chatrelay.__all__:
            getattr(chatrelay, name)


# --- the documented surface -------------------------------------------------------------


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def _split(path: str) -> tuple[str, str | None]:
    """``chatrelay.lowlevel.Connection.handle`` -> (``chatrelay.lowlevel``, ``Connection``)."""
    parts = path.split(".")
    for end in range(len(parts), 0, -1):
        module = ".".join(parts[:end])
        if _is_module(module):
            return module, (parts[end] if end < len(parts) else None)
    raise AssertionError(f"no module in {path}")


def _documented() -> dict[str, set[str]]:
    """Per module, the names the reference pages render with a ``:::`` directive."""
    documented: dict[str, set[str]] = {}
    for page in sorted(REFERENCE.glob("*.md")):
        text = page.read_text()
        for match in re.finditer(r"^::: (\S+)\n((?:[ \t]+\S.*\n)*)", text, re.MULTILINE):
            module, name = _split(match.group(1))
            if name is not None:
                documented.setdefault(module, set()).add(name)
                continue
            members = re.findall(r"^ +- (\w+)$", match.group(2), re.MULTILINE)
            exported = importlib.import_module(module).__all__
            documented.setdefault(module, set()).update(members or exported)
    return documented


def _home(module_name: str, name: str) -> str:
    """Where a name is documented: the public module it names as its own, if any."""
    home = getattr(getattr(importlib.import_module(module_name), name), "__module__", None)
    if isinstance(home, str) and home in DOCUMENTED_MODULES:
        return home
    return module_name


def test_the_reference_documents_exactly_what_all_exports() -> None:
    documented = _documented()
    expected: dict[str, set[str]] = {}
    for module_name in DOCUMENTED_MODULES:
        for name in importlib.import_module(module_name).__all__:
            if not name.startswith("__"):
                expected.setdefault(_home(module_name, name), set()).add(name)
    for module_name in sorted(set(documented) | set(expected)):
        assert documented.get(module_name, set()) == expected.get(module_name, set()), module_name


def test_cross_references_use_public_paths() -> None:
    # `[text][chatrelay.Foo]` in the docs: Foo is exported where the link says.
    wrong = []
    for page in sorted(DOCS.rglob("*.md")):
        for target in re.findall(r"\]\[(chatrelay[\w.]*)\]", page.read_text()):
            module, name = _split(target)
            if name is not None and name not in importlib.import_module(module).__all__:
                wrong.append(f"{page.relative_to(DOCS)}: {target}")
    assert wrong == []


# --- what adapters need ----------------------------------------------------------------


def _core_imports(path: Path) -> set[tuple[str, str]]:
    """The names a module imports from the core's private modules (``chatrelay._x``)."""
    package = ".".join(path.relative_to(SOURCE.parent).with_suffix("").parts[:-1])
    found: set[tuple[str, str]] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            origin = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
            if origin.count(".") == 1 and origin.split(".")[1].startswith("_"):
                found.update((origin, alias.name) for alias in node.names)
    return found


# The library's own plumbing: the base of its async context managers (anyio's
# AsyncResource does the same for a third-party adapter), and what public packages
# call to present their names.
CONVENIENCES = {
    ("chatrelay._resource", "AsyncResource"),
    ("chatrelay._public", "publish"),
}


def test_adapters_need_nothing_private_from_the_core() -> None:
    # What the adapters, the memory transport, the backplanes and the JWT
    # authenticator take from the core is what a third-party one can take too.
    public = {
        name
        for module_name in PUBLIC_MODULES
        for name in importlib.import_module(module_name).__all__
    }
    folders = ["adapters", "testing", "backplanes", "auth"]
    private = sorted(
        f"{path.relative_to(SOURCE)}: {origin}.{name}"
        for folder in folders
        for path in (SOURCE / folder).glob("*.py")
        for origin, name in _core_imports(path) - CONVENIENCES
        if name not in public
    )
    assert private == []
