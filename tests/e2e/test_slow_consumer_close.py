"""A client that stops reading loses its connection for real, not only its place.

The relay forgets a slow consumer at once; the transport must follow within 2 s, or
the server keeps its buffers (megabytes in the kernel and the ASGI server) for as long
as the client holds the connection open without reading. The client here is a raw
socket with a small receive buffer that reads its handshake and join ack, then
nothing; the test watches the server's side of the connection in ``/proc/net/tcp``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final
from urllib.parse import urlsplit

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest

from chatrelay import Limits, Relay, RelayConfig
from chatrelay.adapters.starlette import WebSocketAdapter
from raw_ws_support import StalledClient, server_side_open
from relay_helpers import message
from socketio_support import polling_client
from socketio_support import serving as serving_socketio
from waiting import eventually
from ws_support import make_app
from ws_support import serving as serving_websocket

pytestmark = pytest.mark.anyio

# Small enough for a test to overflow quickly; the default is 4 MiB.
LIMITS: Final = Limits(outgoing_bytes=64 * 1024, rate=1000.0, burst=1000)
# Seconds from the relay's detection to the connection's end: the contract says 2.
CLOSED_WITHIN: Final = 2.0
PADDING: Final = "x" * 1000


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def overflow(relay: Relay) -> None:
    """Send room events until the relay closes a slow consumer (bounded)."""
    for n in range(100_000):
        await relay.message_received(message(f"m{n}", sender="carol", text=PADDING))
        if relay.statistics().slow_consumers:
            return
        if n % 50 == 0:
            await anyio.lowlevel.checkpoint()  # let the server write what it can
    raise AssertionError("the client was never found slow")


async def assert_closed_soon(server_port: int, client: StalledClient) -> None:
    assert server_side_open(server_port, client.port)
    await eventually(lambda: not server_side_open(server_port, client.port), within=CLOSED_WITHIN)


@asynccontextmanager
async def websocket_server() -> AsyncIterator[tuple[Relay, int]]:
    relay = Relay(config=RelayConfig(limits=LIMITS))
    async with serving_websocket(make_app(WebSocketAdapter(relay))) as url:
        port = urlsplit(url).port
        assert port is not None
        yield relay, port


async def test_websocket_a_slow_consumer_loses_its_connection() -> None:
    async with websocket_server() as (relay, port):
        client = StalledClient(port)
        with client.sock:

            def join() -> None:
                client.handshake("/ws?userId=bob")
                client.send_text(
                    '{"event":"conversation:join","data":{"conversationId":"c1"},"id":1}'
                )
                client.read_until(b'"event":"ack"')

            await client.run(join)
            await overflow(relay)
            await assert_closed_soon(port, client)


async def sio_join_over_websocket(client: StalledClient, query: str) -> None:
    def join() -> None:
        client.handshake(f"/socket.io/?EIO=4&transport=websocket&{query}")
        client.read_until(b'0{"sid"')
        client.send_text("40/messages,")
        client.read_until(b"40/messages,{")
        client.send_text('42/messages,1["conversation:join",{"conversationId":"c1"}]')
        client.read_until(b"43/messages,1[")

    await client.run(join)


def port_of(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


async def test_socketio_websocket_a_slow_consumer_loses_its_connection() -> None:
    async with serving_socketio(config=RelayConfig(limits=LIMITS)) as served:
        port = port_of(served.url)
        client = StalledClient(port)
        with client.sock:
            await sio_join_over_websocket(client, "userId=bob")
            await overflow(served.relay)
            await assert_closed_soon(port, client)


async def test_socketio_upgraded_a_slow_consumer_loses_its_connection() -> None:
    async with (
        serving_socketio(config=RelayConfig(limits=LIMITS)) as served,
        polling_client(served.url, userId="bob") as polling,
    ):
        port = port_of(served.url)
        await polling.send("40/messages,")
        assert (await polling.poll())[0].startswith("40/messages,")
        await polling.send('42/messages,1["conversation:join",{"conversationId":"c1"}]')
        assert (await polling.poll())[0].startswith("43/messages,1[")
        client = StalledClient(port)
        with client.sock:

            def upgrade() -> None:
                client.handshake(f"/socket.io/?EIO=4&transport=websocket&sid={polling.sid}")
                client.send_text("2probe")
                client.read_until(b"3probe")
                client.send_text("5")

            await client.run(upgrade)
            await eventually(lambda: _upgraded(served.adapter.server, polling.sid))
            await overflow(served.relay)
            await assert_closed_soon(port, client)


def _upgraded(server: Any, sid: str) -> bool:
    socket_ = server.eio.sockets.get(sid)
    return bool(socket_ is not None and socket_.upgraded)
