"""The core's outbound engine against a scripted wire, and the engine.io internals it uses.

`Outlet` owns order and flow for every transport; here a wire that the test
controls shows each rule without a network: the direct path, a write that waits
holding back the later ones, the queue, the ordering rule for acks, the one bound
on pending acks, and failures. Then `adapters/_sio_wire.py`'s assumptions about
python-engineio and python-socketio are pinned, so an upgrade that breaks them fails
here, by name, rather than somewhere in a Socket.IO test.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from importlib.metadata import version

import anyio
import anyio.lowlevel
import engineio
import pytest
import socketio

from chatrelay import ConversationId, Identity, Limits, MessageId, Relay, RelayConfig, UserId
from chatrelay._outbound import _AckContext
from chatrelay.adapters import _sio_wire
from chatrelay.lowlevel import Connection, Outbound, Outlet
from waiting import eventually

pytestmark = pytest.mark.anyio


class ScriptedWire:
    """A wire whose readiness, waits and failures the test decides."""

    def __init__(self) -> None:
        self.written: list[tuple[str, int | None]] = []
        self.ready_now = True
        self.hold: anyio.Event | None = None  # while set, a direct put has to wait
        self.fail_on: str | None = None
        self.error: Exception = ValueError("cannot frame this")
        self.forgotten: list[int] = []

    def frame(self, item: Outbound, ack_id: int | None) -> tuple[str, int | None]:
        if self.fail_on is not None and self.fail_on in item.json:
            raise self.error
        return item.json, ack_id

    def ready(self) -> bool:
        return self.ready_now

    def put(self, frame: tuple[str, int | None]) -> Awaitable[None] | None:
        if self.hold is None:
            self.written.append(frame)
            return None
        hold = self.hold
        self.hold = None

        async def finish() -> None:
            await hold.wait()
            self.written.append(frame)

        return finish()

    async def write(self, frame: tuple[str, int | None]) -> None:
        await anyio.lowlevel.checkpoint()
        self.written.append(frame)

    def gone(self, error: Exception) -> bool:
        return isinstance(error, OSError)

    def forget_ack(self, ack_id: int) -> None:
        self.forgotten.append(ack_id)


def status(n: int) -> Outbound:
    return Outbound("message:status", {"n": n})


def received(n: int) -> Outbound:
    ack = _AckContext(
        conversation_id=ConversationId("c1"), message_id=MessageId(f"m{n}"), sender_id=UserId("x")
    )
    return Outbound("message:received", {"n": n}, ack=ack)


def numbers(wire: ScriptedWire) -> list[int]:
    return [int(text.split(":")[1].rstrip("}")) for text, _ in wire.written]


async def test_events_go_direct_then_queue_behind_a_write_that_waits() -> None:
    wire = ScriptedWire()
    async with Relay() as relay, relay.connect(Identity(user_id="u"), transport="t") as conn:
        outlet = Outlet(conn, wire, pending_acks=10)
        async with anyio.create_task_group() as tg:
            outlet.start(tg)
            conn._push(status(0))
            gate = wire.hold = anyio.Event()
            for n in range(1, 5):
                conn._push(status(n))  # 1 waits; 2..4 queue behind it
            await anyio.wait_all_tasks_blocked()
            assert numbers(wire) == [0]
            gate.set()
            await outlet.flushed()
            assert numbers(wire) == [0, 1, 2, 3, 4]
            conn._push(status(5))  # the direct path takes over again
            assert numbers(wire) == [0, 1, 2, 3, 4, 5]
            outlet.stop()
            tg.cancel_scope.cancel()


async def test_an_ack_waits_for_what_was_handed_over_before_it() -> None:
    wire = ScriptedWire()
    async with Relay() as relay, relay.connect(Identity(user_id="u"), transport="t") as conn:
        outlet = Outlet(conn, wire, pending_acks=10)
        async with anyio.create_task_group() as tg:
            outlet.start(tg)
            wire.ready_now = False  # the client does not keep up: everything queues
            for n in range(20):
                conn._push(status(n))
            await outlet.reply(('{"ack":1}', None))
            texts = [text for text, _ in wire.written]
            assert texts[-1] == '{"ack":1}'
            assert texts[:-1] == [f'{{"n":{n}}}' for n in range(20)]
            tg.cancel_scope.cancel()


async def test_pending_acks_are_bounded_and_the_oldest_forgotten() -> None:
    wire = ScriptedWire()
    async with Relay() as relay, relay.connect(Identity(user_id="u"), transport="t") as conn:
        outlet = Outlet(conn, wire, pending_acks=2)
        async with anyio.create_task_group() as tg:
            outlet.start(tg)
            for n in range(3):
                conn._push(received(n))
            ids = [ack_id for _, ack_id in wire.written]
            assert ids == [1, 2, 3]
            assert wire.forgotten == [1]
            assert outlet.acked(1) is None
            item = outlet.acked(3)
            assert item is not None
            assert item.data == {"n": 2}
            assert outlet.acked(3) is None  # once
            tg.cancel_scope.cancel()


async def test_a_failure_is_logged_once_and_the_connection_stays(
    caplog: pytest.LogCaptureFixture,
) -> None:
    wire = ScriptedWire()
    wire.fail_on = "boom"
    async with Relay() as relay, relay.connect(Identity(user_id="u"), transport="t") as conn:
        outlet = Outlet(conn, wire, pending_acks=10)
        async with anyio.create_task_group() as tg:
            outlet.start(tg)
            for data in ({"x": "boom"}, {"x": "fine"}, {"x": "boom again"}):
                conn._push(Outbound("message:status", data))
            assert [text for text, _ in wire.written] == ['{"x":"fine"}']
            assert not conn.closed
            tg.cancel_scope.cancel()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage().split(" (")[0] for r in errors] == ["t send failed"]


async def test_a_gone_client_is_reported_once() -> None:
    wire = ScriptedWire()
    wire.fail_on = "x"
    wire.error = ConnectionResetError("gone")
    gone: list[bool] = []
    async with Relay() as relay, relay.connect(Identity(user_id="u"), transport="t") as conn:
        outlet = Outlet(conn, wire, pending_acks=10, on_gone=lambda: gone.append(True))
        async with anyio.create_task_group() as tg:
            outlet.start(tg)
            conn._push(Outbound("message:status", {"x": 1}))
            conn._push(Outbound("message:status", {"x": 2}))
            assert gone == [True]
            tg.cancel_scope.cancel()


async def test_what_waits_is_bounded_in_bytes() -> None:
    config = RelayConfig(limits=Limits(outgoing_bytes=1_000))
    async with Relay(config=config) as relay:
        async with relay.connect(Identity(user_id="u"), transport="t") as conn:
            assert isinstance(conn, Connection)
            conn.deliver_directly(lambda item: False)  # a client that takes nothing now
            n = 0
            while not conn.closed and n < 100:
                conn._push(Outbound("message:status", {"pad": "x" * 80}))
                n += 1
            assert conn.close_reason == "slow_consumer"
            assert 5 < n < 15  # about 1,000 bytes of ~110-byte events
        await eventually(lambda: relay.statistics().connections == 0)


# --- what _sio_wire assumes of python-engineio and python-socketio -----------------------


def test_the_engineio_and_socketio_versions_it_was_written_for() -> None:
    assert version("python-engineio").split(".")[0] == "4"
    assert version("python-socketio").split(".")[0] == "5"


def test_the_engineio_internals_it_uses() -> None:
    assert hasattr(engineio.payload.Payload, "max_decode_packets")
    packet = engineio.packet.Packet(engineio.packet.MESSAGE, '2/messages,["e",{}]')
    item = Outbound("e", {})
    frame = _sio_wire.Frame(_sio_wire.encoded(item, "2/messages,"), None)
    assert frame.text() == packet.encode()
    with_ack = _sio_wire.Frame(frame.encoded, 7)
    assert with_ack.text() == "42/messages,7[" + '"e",{}]'
    assert with_ack.packet().encode() == with_ack.text()
    queue: asyncio.Queue[object] = asyncio.Queue()
    assert hasattr(queue, "_getters")
    assert not _sio_wire._waits_on(queue)
    server = engineio.AsyncServer(async_mode="asgi")
    socket = engineio.async_socket.AsyncSocket(server, "sid")
    for name in ("queue", "closed", "closing", "last_ping", "upgraded", "upgrading"):
        assert name in socket.__dict__, name


def test_the_socketio_manager_routes_acks_through_its_callbacks() -> None:
    server = socketio.AsyncServer(async_mode="asgi")
    manager = server.manager
    assert isinstance(manager.callbacks, dict)
    ack_id = manager._generate_ack_id("sid", lambda *args: None)
    assert manager.callbacks["sid"][ack_id] is not None
