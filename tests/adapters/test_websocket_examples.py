"""The WebSocket examples run as the how-to shows them."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from ws_support import join, request, until

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_starlette_app(backend: str) -> None:
    # A fresh module each time: a relay runs only once.
    app = runpy.run_path(str(EXAMPLES / "starlette_app.py"))["app"]
    headers = {"origin": "http://localhost:8000"}
    with (
        TestClient(app, backend=backend) as client,  # type: ignore[arg-type]
        client.websocket_connect("/ws?userId=alice", headers=headers) as alice,
        client.websocket_connect("/ws?userId=bob", headers=headers) as bob,
    ):
        join(alice)
        assert join(bob)["members"] == ["alice", "bob"]
        assert request(alice, "typing:start", {"conversationId": "c1"}, frame_id=2)["ok"]
        assert until(bob, "typing:start")[0]["data"]["userId"] == "alice"
