"""The per-user connection cap (`Limits.max_connections_per_user`), on every transport.

One user may not hold more than the limit of connections on one relay: the next one
is refused at admission, with status 429 and code ``too_many_connections``, in the
way each binding refuses a handshake; the user's other connections, and other users,
are not affected, and a place frees up as soon as a connection closes. Real clients:
python-socketio's and the official socket.io-client (Node) on Socket.IO, the
`websockets` library on ``/ws``.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

import pytest

from chatrelay import Limits, Relay, RelayConfig
from chatrelay.adapters.starlette import WebSocketAdapter
from chatrelay.exceptions import ProtocolError, TooManyConnections
from chatrelay.testing import MemoryTransport
from socketio_support import CLIENT_KINDS, ClientKind, Refused, serving
from socketio_support import connect as sio_connect
from waiting import eventually
from ws_support import make_app, ws_client
from ws_support import serving as ws_serving

pytestmark = pytest.mark.anyio

CAPPED = RelayConfig(presence_grace=0.05, limits=Limits(max_connections_per_user=2))


def connections_of(relay: Relay, user: str) -> int:
    return relay._hub.presence.connection_count(user)


def test_the_default_limit_and_its_validation() -> None:
    assert Limits().max_connections_per_user == 100
    assert Limits(max_connections_per_user=None).max_connections_per_user is None
    for bad in (0, -1):
        with pytest.raises(ValueError, match="max_connections_per_user must be > 0"):
            Limits(max_connections_per_user=bad)


def test_too_many_connections_is_a_protocol_error() -> None:
    error = TooManyConnections("too many")
    assert isinstance(error, ProtocolError)
    assert (error.status, error.code) == (429, "too_many_connections")


async def test_memory_transport_refuses_past_the_limit_and_frees_on_close() -> None:
    async with Relay(config=CAPPED) as relay, AsyncExitStack() as stack:
        transport = MemoryTransport(relay)
        first = await stack.enter_async_context(transport.connect("bob"))
        async with transport.connect("bob"):
            with pytest.raises(TooManyConnections) as refused:
                await stack.enter_async_context(transport.connect("bob"))
            assert "limit is 2" in str(refused.value)
            # Others are not affected, nor are bob's open connections.
            async with transport.connect("alice"), transport.connect("alice"):
                pass
            reply = await first.request("conversation:join", {"conversationId": "c1"})
            assert reply["ok"] is True
        # The second one closed: its place is free at once.
        async with transport.connect("bob"):
            assert connections_of(relay, "bob") == 2


async def test_no_limit_when_none() -> None:
    config = RelayConfig(limits=Limits(max_connections_per_user=None))
    async with Relay(config=config) as relay, AsyncExitStack() as stack:
        transport = MemoryTransport(relay)
        for _ in range(150):
            await stack.enter_async_context(transport.connect("bob"))
        assert connections_of(relay, "bob") == 150


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("kind", CLIENT_KINDS)
async def test_socketio_refuses_past_the_limit_with_a_connect_error(kind: ClientKind) -> None:
    async with serving(config=CAPPED) as served, AsyncExitStack() as stack:
        url = served.url
        first = await stack.enter_async_context(sio_connect(kind, url, user="bob"))
        async with sio_connect(kind, url, user="bob"):
            with pytest.raises(Refused) as refused:
                await stack.enter_async_context(sio_connect(kind, url, user="bob"))
            data: Any = refused.value.data
            assert (data["status"], data["code"]) == (429, "too_many_connections")
            assert "limit is 2" in data["message"]
            async with sio_connect(kind, url, user="alice"):
                pass
            reply = await first.request("conversation:join", {"conversationId": "c1"})
            assert reply["ok"] is True
            assert first.disconnect_reason is None
        await eventually(lambda: connections_of(served.relay, "bob") == 1)
        async with sio_connect(kind, url, user="bob"):
            assert connections_of(served.relay, "bob") == 2


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_websocket_refuses_past_the_limit_with_an_error_and_1008() -> None:
    relay = Relay(config=CAPPED)
    async with ws_serving(make_app(WebSocketAdapter(relay))) as url, AsyncExitStack() as stack:
        bob = url + "/ws?userId=bob"
        first = await stack.enter_async_context(ws_client(bob))
        async with ws_client(bob):
            async with ws_client(bob) as third:
                error = await third.receive("error")
                code, reason = await third.closed()
            assert (error["data"]["status"], error["data"]["code"]) == (
                429,
                "too_many_connections",
            )
            assert "limit is 2" in error["data"]["message"]
            assert code == 1008
            assert reason.startswith("too_many_connections: too many connections")
            async with ws_client(url + "/ws?userId=alice") as alice:
                assert (await alice.request("conversation:join", {"conversationId": "c1"}))["ok"]
            assert (await first.request("conversation:join", {"conversationId": "c1"}))["ok"]
        await eventually(lambda: connections_of(relay, "bob") == 1)
        async with ws_client(bob) as again:
            assert (await again.request("conversation:join", {"conversationId": "c1"}))["ok"]
        assert first.close_code is None
