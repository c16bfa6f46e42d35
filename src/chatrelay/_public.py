"""How the public modules present the names they re-export from private ones.

Two helpers, for the ``__init__`` of each public package (and each public module
that re-exports):

- `publish` sets the ``__module__`` of the classes and functions a public module
  exports to that module, so that reprs, tracebacks, pickles and ``help()`` name
  ``chatrelay.Relay`` rather than ``chatrelay._relay.Relay``.
- `moved` builds a module ``__getattr__`` that keeps an old name importable from its
  old home, with a `DeprecationWarning` that says where it lives now.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import sys
import warnings
from collections.abc import Callable, Iterable, Mapping
from types import FunctionType
from typing import Any, NewType

__all__ = ["is_private", "moved", "publish"]


def is_private(module_name: str) -> bool:
    """Whether a dotted module name has a private part, such as ``chatrelay._relay``."""
    return any(part.startswith("_") for part in module_name.split("."))


def publish(module_name: str, names: Iterable[str]) -> None:
    """Give each name that ``module_name`` exports that module as ``__module__``.

    Only classes, functions and ``NewType`` s whose ``__module__`` is private are
    changed: a name that a public module already owns (``chatrelay.abc`` re-exports
    ``chatrelay.Authenticator``) keeps its home. Type aliases (``UserId = str``) have
    no module of their own and are left alone.

    A class's annotations are resolved first, against the module that defines
    them: ``typing.get_type_hints`` (and so attrs and cattrs) looks names up in the
    module that ``__module__`` names, which is no longer the one they were written in.
    """
    namespace = vars(sys.modules[module_name])
    for name in names:
        obj = namespace[name]
        if not isinstance(obj, type | FunctionType | NewType):
            continue
        if not is_private(obj.__module__):
            continue
        if isinstance(obj, type):
            _resolve_annotations(obj)
        obj.__module__ = module_name


def _resolve_annotations(cls: type) -> None:
    own = inspect.get_annotations(cls)
    if not any(isinstance(value, str) for value in own.values()):
        return
    globalns = vars(sys.modules[cls.__module__])
    localns = dict(vars(cls))
    for key, value in own.items():
        # A name imported only for type checkers never resolved: it stays a string.
        with contextlib.suppress(NameError):
            if isinstance(value, str):
                own[key] = eval(value, globalns, localns)  # what get_type_hints does
    cls.__annotations__ = own


def moved(module_name: str, homes: Mapping[str, str]) -> Callable[[str], Any]:
    """Build the ``__getattr__`` of a module whose names ``homes`` moved elsewhere.

    Args:
        module_name: The module that used to export the names.
        homes: Each old name and the module that exports it now; a private module
            (such as ``chatrelay._limits``) means the name is no longer public.

    Returns:
        A module ``__getattr__`` that returns the name from its new home with a
        `DeprecationWarning`, and raises `AttributeError` for any other name.
    """

    def __getattr__(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        if is_private(home):
            advice = "it is internal and will be removed from the public API"
        else:
            advice = f"import it from {home} instead"
        warnings.warn(
            f"{module_name}.{name} is deprecated: {advice}",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(home), name)

    return __getattr__
