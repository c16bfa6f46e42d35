"""Connections that come and go leave nothing behind on the Socket.IO adapter.

Real python-socketio clients connect, join a room and disconnect, hundreds of times,
over WebSocket and over long-polling; afterwards the server holds no engine.io
socket, no session, no environ, and the number of live engine.io socket objects
does not grow with the number of cycles.
"""

from __future__ import annotations

import gc

import anyio
import engineio.async_socket
import pytest

from chatrelay import RelayConfig
from socketio_support import Served, connect, serving
from waiting import eventually

pytestmark = pytest.mark.anyio

FAST = RelayConfig(presence_grace=0.01)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def live_engineio_sockets() -> int:
    gc.collect()
    return sum(isinstance(o, engineio.async_socket.AsyncSocket) for o in gc.get_objects())


async def cycles(served: Served, count: int, *, first: int, transports: list[str]) -> None:
    for n in range(first, first + count):
        async with connect("python", served.url, user=f"u{n}", transports=transports) as client:
            reply = await client.request("conversation:join", {"conversationId": "c1"})
            assert reply["ok"] is True


async def settled(served: Served) -> None:
    """Wait until the server has let go of every client."""
    server = served.adapter.server
    await eventually(
        lambda: (
            not server.eio.sockets
            and not served.adapter._sessions
            and not server.environ
            and served.adapter._guard.pending == 0
            and served.relay.statistics().connections == 0
        )
    )


async def test_churn_leaves_no_engineio_socket_behind() -> None:
    with anyio.fail_after(60):
        async with serving(config=FAST) as served:
            await cycles(served, 10, first=0, transports=["websocket"])
            await settled(served)
            baseline = live_engineio_sockets()
            counts = []
            for round_ in range(3):
                await cycles(served, 80, first=1000 * (round_ + 1), transports=["websocket"])
                await cycles(served, 20, first=1000 * (round_ + 1) + 500, transports=["polling"])
                await settled(served)
                counts.append(live_engineio_sockets())
            server = served.adapter.server
            assert server.manager.callbacks == {}
            assert all(not rooms for rooms in server.manager.rooms.values())
    # Not one per closed client (300 of them): what a ping task or a loop of
    # engine.io's still holds for a moment, whatever the number of cycles.
    assert max(counts) <= baseline + 2, (baseline, counts)
