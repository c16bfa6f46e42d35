"""The Socket.IO adapter's direct path: events written on the client's WebSocket at once.

For a client that connected over WebSocket from the start, the adapter writes an event
on the WebSocket itself while engine.io's writer is idle, and queues it on engine.io
otherwise. These tests check, with real clients on loopback, that events keep their
order whichever way each one goes, that a client that stops reading becomes a slow
consumer without delaying anyone, and that a client that leaves while a send to it
waits ends cleanly.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import anyio
import anyio.lowlevel
import engineio
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect

from chatrelay import Limits, Message, MessageStatus, RelayConfig
from chatrelay.adapters import _sio_session, _sio_wire
from chatrelay.adapters.socketio import SocketIOAdapter
from socketio_support import CLIENT_KINDS, TIMEOUT, ClientKind, connect, serving
from waiting import eventually

pytestmark = pytest.mark.anyio

WEBSOCKET = ["websocket"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=CLIENT_KINDS)
def kind(request: pytest.FixtureRequest) -> ClientKind:
    value: ClientKind = request.param
    return value


def message(n: int, *, text: str = "hello") -> Message:
    return Message(
        id=f"m{n}",
        conversation_id="c1",
        sender_id="carol",
        type="text",
        content={"text": text},
        status=MessageStatus.SENT,
        created_at=datetime(2024, 5, 1, 12, 30, tzinfo=UTC),
    )


class Paths:
    """Counts the events each path took: written directly, or queued on engine.io."""

    def __init__(self, adapter: SocketIOAdapter, monkeypatch: pytest.MonkeyPatch) -> None:
        self.direct = 0
        (session,) = adapter._sessions.values()
        wire = session.wire
        assert wire is not None
        send = wire._ws_send
        if send is None:
            return  # no direct path for this client

        def counting(message: dict[str, Any]) -> Any:
            self.direct += 1
            return send(message)

        monkeypatch.setattr(wire, "_ws_send", counting)


async def received_ids(client: Any, count: int) -> list[str]:
    return [(await client.receive("message:received")).data["message"]["id"] for _ in range(count)]


async def test_events_keep_their_order_whether_sent_directly_or_queued(
    kind: ClientKind, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with (
        serving() as served,
        connect(kind, served.url, user="alice", transports=WEBSOCKET) as alice,
    ):
        await alice.request("conversation:join", {"conversationId": "c1"})
        paths = Paths(served.adapter, monkeypatch)
        (session,) = served.adapter._sessions.values()
        assert session.ws_send is not None
        queue = session.socket.queue
        noop = engineio.packet.Packet(engineio.packet.NOOP)
        for n in range(300):
            if n % 10 == 0:
                # Something of engine.io's own is queued (clients ignore a NOOP): the
                # events after it queue behind it until the writer has sent it.
                queue.put_nowait(noop)
            elif n % 10 == 5:
                with anyio.fail_after(TIMEOUT):
                    while queue.qsize() or not _sio_wire._waits_on(queue):
                        await anyio.lowlevel.checkpoint()  # until the writer sent it
            await served.relay.message_received(message(n))
        assert await received_ids(alice, 300) == [f"m{n}" for n in range(300)]
        assert paths.direct == 150  # n % 10 in 5..9


async def test_a_send_that_waits_holds_back_the_later_events(
    kind: ClientKind, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = anyio.Event()
    held: list[str] = []
    websocket_send = _sio_wire.websocket_send

    def gated(environ: dict[str, Any], socket: Any) -> Any:
        send = websocket_send(environ, socket)
        assert send is not None, "the client should have connected over WebSocket"

        async def gated_send(message: dict[str, Any]) -> None:
            if not held:
                held.append(message["text"])
                await gate.wait()  # the client's buffer is full, say
            await send(message)

        return gated_send

    monkeypatch.setattr(_sio_session, "websocket_send", gated)
    async with (
        serving() as served,
        connect(kind, served.url, user="alice", transports=WEBSOCKET) as alice,
    ):
        await alice.request("conversation:join", {"conversationId": "c1"})
        paths = Paths(served.adapter, monkeypatch)
        for n in range(100):
            await served.relay.message_received(message(n))
        await anyio.wait_all_tasks_blocked()
        # m0 waits at the gate, the rest behind it: nothing has overtaken it.
        assert len(held) == 1
        assert '"m0"' in held[0]
        assert alice.events("message:received") == []
        assert paths.direct == 1
        gate.set()
        assert await received_ids(alice, 100) == [f"m{n}" for n in range(100)]
        # Once the backlog is sent, the direct path takes over again.
        for n in range(100, 110):
            await served.relay.message_received(message(n))
        assert await received_ids(alice, 10) == [f"m{n}" for n in range(100, 110)]
        assert paths.direct > 1


@asynccontextmanager
async def stalled_client(url: str, user: str) -> AsyncIterator[ClientConnection]:
    """A raw Engine.IO WebSocket client that joins ``c1``, then reads no more."""
    ws_url = (
        url.replace("http://", "ws://") + f"/socket.io/?EIO=4&transport=websocket&userId={user}"
    )
    # max_queue=1: once one frame waits unread, the client stops reading its socket.
    async with ws_connect(ws_url, max_queue=1, compression=None, max_size=None) as ws:
        with anyio.fail_after(TIMEOUT):
            opened = await ws.recv()
            assert str(opened).startswith("0"), opened
            await ws.send("40/messages,")
            assert str(await ws.recv()).startswith("40/messages,")
            await ws.send('42/messages,1["conversation:join",{"conversationId":"c1"}]')
            while not str(reply := await ws.recv()).startswith("43/messages,1"):
                pass
            assert json.loads(str(reply)[len("43/messages,1") :])[0]["conversationId"] == "c1"
        try:
            yield ws
        finally:
            # Its close handshake would wait for a close frame it cannot read now.
            ws.transport.abort()


async def test_a_websocket_client_that_stops_reading_is_a_slow_consumer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = RelayConfig(limits=Limits(outgoing_queue=8, rate=1000.0, burst=1000))
    big = "x" * 32_000  # fills the socket buffers in a few hundred events
    async with (
        serving(config=config) as served,
        connect("python", served.url, user="alice", transports=WEBSOCKET) as alice,
        stalled_client(served.url, "bob"),
    ):
        await alice.request("conversation:join", {"conversationId": "c1"})
        n = 0
        with anyio.fail_after(TIMEOUT):
            while served.relay.statistics().slow_consumers == 0:
                await served.relay.message_received(message(n, text=big))
                # alice reads all, and in order, meanwhile: bob delays no one.
                assert (await alice.receive("message:received")).data["message"]["id"] == f"m{n}"
                n += 1
        stats = served.relay.statistics()
        assert stats.slow_consumers == 1
        assert stats.connections == 1
        assert served.relay.members("c1") == frozenset({"alice"})
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_client_that_leaves_while_a_send_to_it_waits(
    caplog: pytest.LogCaptureFixture,
) -> None:
    big = "x" * 32_000
    async with serving() as served:
        async with stalled_client(served.url, "bob") as bob:
            n = 0
            with anyio.fail_after(TIMEOUT):
                (session,) = served.adapter._sessions.values()
                # Until the client's buffers are full and a direct send waits for it.
                while session.outlet is None or not session.outlet._busy:
                    await served.relay.message_received(message(n, text=big))
                    n += 1
                    await anyio.lowlevel.checkpoint()
            bob.transport.abort()  # the client vanishes mid-send
            await eventually(lambda: served.relay.statistics().connections == 0, within=TIMEOUT)
        assert session.outlet is not None
        assert not session.outlet._busy  # the waiting send ended with the connection
        assert served.adapter._sessions == {}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_client_that_upgraded_from_polling_keeps_engineio_queue(
    kind: ClientKind, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with (
        serving() as served,
        connect(kind, served.url, user="alice", transports=["polling", "websocket"]) as alice,
    ):
        await alice.request("conversation:join", {"conversationId": "c1"})
        paths = Paths(served.adapter, monkeypatch)
        (session,) = served.adapter._sessions.values()
        # Its connect came over polling: the adapter does not know its WebSocket.
        assert session.ws_send is None
        for n in range(20):
            await served.relay.message_received(message(n))
        assert await received_ids(alice, 20) == [f"m{n}" for n in range(20)]
        assert paths.direct == 0
