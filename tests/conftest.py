"""Shared pytest configuration: async tests run on asyncio and on trio."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run every ``anyio``-marked test once per backend; override per module to narrow it."""
    backend: str = request.param
    return backend
