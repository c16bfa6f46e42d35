"""A Socket.IO client and a WebSocket client in one conversation, on one server.

The server is examples/both_transports.py under uvicorn on 127.0.0.1 (asyncio: the
Socket.IO adapter and uvicorn need it). Both the Python and the JavaScript Socket.IO
clients take part.
"""

from __future__ import annotations

import runpy
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from chatrelay import Message, MessageStatus, Relay
from socketio_support import CLIENT_KINDS, ClientKind
from socketio_support import connect as sio_connect
from ws_support import serving, ws_client

pytestmark = pytest.mark.anyio

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "both_transports.py"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def example_server() -> AsyncIterator[tuple[str, Relay]]:
    """The example's app under uvicorn; yields its base URL (http) and its relay."""
    namespace = runpy.run_path(str(EXAMPLE))  # fresh: a relay runs only once
    relay: Relay = namespace["relay"]
    async with serving(namespace["app"], ws_max_size=namespace["ws"].max_frame_bytes) as url:
        yield url.replace("ws://", "http://"), relay


def stored(sender: str) -> Message:
    return Message(
        id="m1",
        conversation_id="c1",
        sender_id=sender,
        type="text",
        content={"text": "hello from the app"},
        status=MessageStatus.SENT,
        created_at=datetime.now(UTC),
    )


@pytest.mark.parametrize("kind", CLIENT_KINDS)
async def test_mixed_conversation(kind: ClientKind) -> None:
    async with (
        example_server() as (url, relay),
        ws_client(url.replace("http://", "ws://") + "/ws?userId=alice") as alice,
    ):
        await alice.request("conversation:join", {"conversationId": "c1"})
        async with sio_connect(kind, url, user="bob", auto_ack=True) as bob:
            # Presence crosses: the WebSocket client hears of the Socket.IO one.
            assert (await alice.receive("user:online"))["data"] == {"userId": "bob"}
            ack = await bob.request("conversation:join", {"conversationId": "c1"})
            assert ack["members"] == ["alice", "bob"]

            # Typing, both ways.
            await bob.request("typing:start", {"conversationId": "c1"})
            typing = await alice.receive("typing:start")
            assert typing["data"]["userId"] == "bob"
            await alice.request("typing:start", {"conversationId": "c1"})
            assert (await bob.receive("typing:start")).data["userId"] == "alice"
            await alice.request("typing:stop", {"conversationId": "c1"})
            assert (await bob.receive("typing:stop")).data["userId"] == "alice"

            # The app's message reaches both, and ends bob's typing episode.
            await relay.message_received(stored("bob"))
            frame = await alice.receive("message:received")
            assert isinstance(frame["id"], str)
            received = await bob.receive("message:received")
            assert received.data == frame["data"]
            assert (await alice.receive("typing:stop"))["data"]["userId"] == "bob"
        offline: dict[str, Any] = await alice.receive("user:offline")
        assert offline["data"]["userId"] == "bob"
