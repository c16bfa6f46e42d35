"""Shared pytest configuration: async tests run on asyncio and on trio; e2e markers."""

from __future__ import annotations

from pathlib import Path
from typing import Final

import pytest

# Which tests are `e2e` (they start a real server, a subprocess, a browser, or use a
# Redis server), so that `pytest -m "not e2e"` is the fast loop.
#
# Marked here, by module name, rather than by a `pytestmark` in each module: the test
# files are being reshaped in parallel, and one list here keeps those edits apart.
# When the tests move into folders by layer, the folder (tests/e2e/) replaces this
# list. A module that mixes fast tests with e2e ones is e2e as a whole; a test
# elsewhere that needs Redis is found by its fixtures; a parametrized test marks its
# own e2e cases (tests/transport_clients.py).
E2E_MODULES: Final = frozenset(
    {
        "test_benchmarks_smoke",
        "test_both_transports",
        "test_cli",
        "test_connection_cap",
        "test_demo",
        "test_demo_browser",
        "test_demo_cluster",
        "test_examples",
        "test_odd_strings",
        "test_package",
        "test_redis_backplane",
        "test_redis_cluster",
        "test_slow_consumer_close",
        "test_socketio_adapter",
        "test_socketio_churn",
        "test_socketio_direct",
        "test_socketio_fidelity",
        "test_socketio_handshake",
        "test_socketio_hostile",
        "test_websocket_jwt",
        "test_websocket_server",
        "test_websocket_subprotocols",
    }
)
E2E_FIXTURES: Final = frozenset({"redis_url", "redis_target"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the e2e tests; fail on a listed module that no longer exists."""
    here = Path(__file__).parent
    missing = sorted(m for m in E2E_MODULES if not (here / f"{m}.py").is_file())
    if missing:
        raise pytest.UsageError(f"tests/conftest.py lists e2e modules that do not exist: {missing}")
    for item in items:
        module = item.module.__name__ if isinstance(item, pytest.Function) else ""
        fixtures = set(getattr(item, "fixturenames", ()))
        if module.rpartition(".")[2] in E2E_MODULES or fixtures & E2E_FIXTURES:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run every ``anyio``-marked test once per backend; override per module to narrow it."""
    backend: str = request.param
    return backend
