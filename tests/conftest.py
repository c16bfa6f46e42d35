"""Shared pytest configuration: async tests run on asyncio and on trio; the e2e marker.

The tests live in folders by layer, decided by what a module starts:

- ``tests/unit/``: nothing. The core's sans-I/O pieces (codec, rooms, presence,
  debounce, hub, limits, the outbound engine, the Redis backplane's logs) and the
  package's shape. No relay runs; ``pytest tests/unit`` takes seconds.
- ``tests/relay/``: a ``Relay`` in process, on the memory transport (the scenario,
  the emitter, the transport contract over memory).
- ``tests/adapters/``: an adapter in process: Starlette's ``TestClient``, the bare
  ASGI app, the bindings' framing, handshake and origin rules. No socket is opened.
- ``tests/cluster/``: several relays on a backplane in one process (``MemoryBus``).
- ``tests/e2e/``: a real server on loopback (uvicorn), a subprocess, a browser or a
  Redis server: the Socket.IO adapter (its clients need a server), the WebSocket
  adapter over real sockets, the Redis backplane and cluster, the demo, the CLI, the
  examples and the benchmark harness. asyncio only, and slower.

The support modules (``*_support.py``, ``waiting.py``, ``relay_helpers.py``, ...)
stay in ``tests/``, which ``pythonpath`` in pyproject.toml puts on ``sys.path``.

``e2e`` marks, so that ``pytest -m "not e2e"`` is the fast loop:

- every test under ``tests/e2e/`` (the folder is the rule; no list of modules);
- a test elsewhere that takes a Redis fixture (``redis_url``, ``redis_target``), such
  as ``check_backplane`` run over Redis in ``tests/cluster/``;
- a case that marks itself: the transport contract's parameters over real servers
  (``tests/transport_clients.py``), or ``@pytest.mark.e2e`` on a test that starts a
  subprocess in an otherwise fast module.

A new module that starts a server, a subprocess, a browser or Redis belongs in
``tests/e2e/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import pytest

E2E_DIR: Final = Path(__file__).parent / "e2e"
E2E_FIXTURES: Final = frozenset({"redis_url", "redis_target"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the e2e tests: by folder, and elsewhere by the Redis fixtures they take."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if item.path.is_relative_to(E2E_DIR) or fixtures & E2E_FIXTURES:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run every ``anyio``-marked test once per backend; override per module to narrow it."""
    backend: str = request.param
    return backend
