"""The WebSocket adapter driven as a bare ASGI app, on asyncio and trio.

Here the test plays the server: it hands the adapter ASGI messages and can make sends
fail, as a server does when the client's connection is gone.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from starlette.types import Message as AsgiMessage

from chatrelay import (
    Authenticator,
    Credentials,
    Delivery,
    Identity,
    Limits,
    Message,
    MessageStatus,
    Relay,
    RelayConfig,
)
from chatrelay.adapters.starlette import WebSocketAdapter
from chatrelay.exceptions import Unauthorized
from ws_support import WAIT

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


class FakeServer:
    """One ASGI WebSocket connection, with the test in the server's place."""

    def __init__(self, query: str = "userId=alice") -> None:
        self.scope: dict[str, Any] = {
            "type": "websocket",
            "asgi": {"version": "3.0"},
            "scheme": "ws",
            "path": "/ws",
            "root_path": "",
            "query_string": query.encode(),
            "headers": [(b"host", b"testserver")],
            "client": ("127.0.0.1", 5000),
            "server": ("127.0.0.1", 8000),
            "subprotocols": [],
        }
        self._to_app, self._from_test = anyio.create_memory_object_stream[AsgiMessage](100)
        self.sent: list[AsgiMessage] = []
        self.broken = False
        # While set, sends of frames wait for it: a client that does not read.
        self.gate: anyio.Event | None = None
        self._changed = anyio.Event()
        self._to_app.send_nowait({"type": "websocket.connect"})

    def __enter__(self) -> FakeServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._to_app.close()
        self._from_test.close()

    async def receive(self) -> AsgiMessage:
        return await self._from_test.receive()

    async def send(self, message: AsgiMessage) -> None:
        if self.broken and message["type"] in ("websocket.send", "websocket.close"):
            raise OSError("connection reset by peer")  # what servers raise
        if self.gate is not None and message["type"] == "websocket.send":
            await self.gate.wait()
            if self.broken:
                raise OSError("connection reset by peer")  # it left while we waited
        self.sent.append(message)
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    async def changed(self) -> None:
        await self._changed.wait()

    def client_sends(self, frame: Any) -> None:
        self._to_app.send_nowait({"type": "websocket.receive", "text": json.dumps(frame)})

    async def wait_for(self, kind: str) -> AsgiMessage:
        with anyio.fail_after(WAIT):
            while True:
                for message in self.sent:
                    if message["type"] == kind:
                        return message
                await self._changed.wait()

    async def wait_for_event(self, event: str) -> dict[str, Any]:
        with anyio.fail_after(WAIT):
            while True:
                for message in self.sent:
                    if message["type"] == "websocket.send":
                        frame: dict[str, Any] = json.loads(message["text"])
                        if frame["event"] == event:
                            return frame
                await self._changed.wait()


class _Nobody(Authenticator):
    async def authenticate(self, credentials: Credentials) -> Identity:
        raise Unauthorized("nobody gets in")


class _Verbose(Authenticator):
    async def authenticate(self, credentials: Credentials) -> Identity:
        raise Unauthorized("é" * 200)


async def _no(identity: Identity, conversation: str) -> bool:
    return False


@asynccontextmanager
async def running(relay: Relay, **options: Any) -> AsyncIterator[WebSocketAdapter]:
    async with relay:
        yield WebSocketAdapter(relay, **options)


async def until_connections(relay: Relay, expected: int) -> None:
    with anyio.fail_after(WAIT):
        while relay.statistics().connections != expected:
            await anyio.lowlevel.checkpoint()


def _message() -> Message:
    return Message(
        id="m1",
        conversation_id="c1",
        sender_id="bob",
        type="text",
        content={"text": "hi"},
        status=MessageStatus.SENT,
        created_at=datetime.now(UTC),
    )


async def test_a_send_to_a_vanished_client_ends_the_connection() -> None:
    async with running(Relay()) as adapter, anyio.create_task_group() as tg:
        with FakeServer() as server:
            tg.start_soon(adapter, server.scope, server.receive, server.send)
            server.client_sends({"event": "conversation:join", "data": {"conversationId": "c1"}})
            with anyio.fail_after(WAIT):
                while "alice" not in adapter.relay.members("c1"):
                    await anyio.lowlevel.checkpoint()
            server.broken = True
            await adapter.relay.message_received(_message())  # the writer's send fails
            await until_connections(adapter.relay, 0)


async def test_an_ack_to_a_vanished_client_ends_the_connection() -> None:
    async with running(Relay()) as adapter, anyio.create_task_group() as tg:
        with FakeServer() as server:
            tg.start_soon(adapter, server.scope, server.receive, server.send)
            await server.wait_for("websocket.accept")
            await until_connections(adapter.relay, 1)
            server.broken = True
            server.client_sends(
                {"event": "conversation:join", "data": {"conversationId": "c1"}, "id": 1}
            )
            await until_connections(adapter.relay, 0)


async def test_a_client_gone_while_told_to_authenticate_is_let_go() -> None:
    relay = Relay(config=RelayConfig(production=True), authenticator=_Nobody(), authorize_join=_no)
    async with running(relay, allowed_origins=["*"]) as adapter:
        with FakeServer(query="") as server:
            server.broken = True
            server.client_sends({"event": "typing:start", "data": {}})
            with anyio.fail_after(WAIT):
                await adapter(server.scope, server.receive, server.send)  # returns, no error


async def test_connection_closed_while_a_request_is_handled() -> None:
    # The relay closes the connection (a slow consumer) while the join waits for the
    # app's authorize_join: the reader stops, the writer closes with the relay's code.
    relay: Relay

    async def authorize(identity: Identity, conversation: str) -> bool:
        # The client reads nothing, and there is no checkpoint in between: the queue
        # of one overflows (on asyncio the first event is taken by the direct path,
        # whose send waits, so one more is needed).
        for _ in range(4):
            await relay.message_status("c0", "m1", "read", user_id="bob")
        return True

    relay = Relay(config=RelayConfig(limits=Limits(outgoing_queue=1)), authorize_join=authorize)
    async with running(relay) as adapter, anyio.create_task_group() as tg:
        with FakeServer() as server:
            server.gate = anyio.Event()
            tg.start_soon(adapter, server.scope, server.receive, server.send)
            server.client_sends({"event": "conversation:join", "data": {"conversationId": "c0"}})
            server.client_sends({"event": "conversation:join", "data": {"conversationId": "c1"}})
            close = await server.wait_for("websocket.close")
            assert (close["code"], close["reason"]) == (1013, "slow_consumer")


async def test_events_stay_in_order_when_a_send_has_to_wait() -> None:
    # On asyncio the first event is sent from the relay's fan-out and has to wait for
    # the client; the next ones queue behind it and follow it, in order, once it reads.
    async with running(Relay()) as adapter, anyio.create_task_group() as tg:
        with FakeServer() as server:
            tg.start_soon(adapter, server.scope, server.receive, server.send)
            server.client_sends({"event": "conversation:join", "data": {"conversationId": "c1"}})
            with anyio.fail_after(WAIT):
                while "alice" not in adapter.relay.members("c1"):
                    await anyio.lowlevel.checkpoint()
            gate = server.gate = anyio.Event()
            for n in range(5):
                await adapter.relay.message_status("c1", f"m{n}", "read", user_id="bob")
                # Let the adapter's tasks run: nothing may get past the held send.
                for _ in range(10):
                    await anyio.lowlevel.checkpoint()
            assert not [m for m in server.sent if "message:status" in m.get("text", "")]
            server.gate = None
            gate.set()
            await server.wait_for_event("message:status")
            with anyio.fail_after(WAIT):
                while True:
                    frames = [
                        json.loads(m["text"])
                        for m in server.sent
                        if "message:status" in m.get("text", "")
                    ]
                    if len(frames) == 5:
                        break
                    await server.changed()
            assert [f["data"]["messageId"] for f in frames] == [f"m{n}" for n in range(5)]
            tg.cancel_scope.cancel()


async def test_unanswered_acks_are_forgotten_beyond_the_limit() -> None:
    delivered: list[str] = []

    async def on_delivered(delivery: Delivery) -> None:
        delivered.append(delivery.message_id)

    async with (
        running(Relay(on_delivered=on_delivered), max_pending_acks=1) as adapter,
        anyio.create_task_group() as tg,
    ):
        with FakeServer() as server:
            tg.start_soon(adapter, server.scope, server.receive, server.send)
            server.client_sends(
                {"event": "conversation:join", "data": {"conversationId": "c1"}, "id": 1}
            )
            await server.wait_for_event("ack")
            await adapter.relay.message_received(_message())
            first = await server.wait_for_event("message:received")
            server.sent.clear()
            await adapter.relay.message_received(_message())
            second = await server.wait_for_event("message:received")
            assert first["id"] != second["id"]
            server.client_sends({"event": "ack", "id": first["id"], "data": {}})  # forgotten
            server.client_sends({"event": "ack", "id": second["id"], "data": {}})
            server.client_sends(
                {"event": "conversation:join", "data": {"conversationId": "c1"}, "id": 2}
            )
            server.sent.clear()
            await server.wait_for_event("ack")
            assert delivered == ["m1"]  # the second only
            tg.cancel_scope.cancel()


async def test_a_long_refusal_is_cut_to_fit_a_close_frame() -> None:
    relay = Relay(config=RelayConfig(production=True), authenticator=_Verbose(), authorize_join=_no)
    async with running(relay, allowed_origins=["*"]) as adapter:
        with FakeServer(query="token=x") as server:
            with anyio.fail_after(WAIT):
                await adapter(server.scope, server.receive, server.send)
            (close,) = server.sent
            assert close["code"] == 1008
            assert len(close["reason"].encode()) <= 123
            assert close["reason"].startswith("unauthorized: ééé")


async def test_a_basic_authorization_header_is_not_a_token() -> None:
    relay = Relay(config=RelayConfig(production=True), authenticator=_Nobody(), authorize_join=_no)
    async with running(relay, allowed_origins=["*"], auth_timeout=0.01) as adapter:
        with FakeServer(query="") as server:
            server.scope["headers"].append((b"authorization", b"Basic YWxpY2U6c2VjcmV0"))
            with anyio.fail_after(WAIT):
                await adapter(server.scope, server.receive, server.send)
            # Not refused at the handshake: accepted, then no auth frame in time.
            assert [m["type"] for m in server.sent] == ["websocket.accept", "websocket.close"]
            assert server.sent[1]["reason"] == "auth_timeout"


async def _joined(adapter: WebSocketAdapter, server: FakeServer, user: str = "alice") -> None:
    server.client_sends({"event": "conversation:join", "data": {"conversationId": "c1"}})
    with anyio.fail_after(WAIT):
        while user not in adapter.relay.members("c1"):
            await anyio.lowlevel.checkpoint()


def _frames(server: FakeServer) -> list[dict[str, Any]]:
    return [json.loads(m["text"]) for m in server.sent if m["type"] == "websocket.send"]


async def test_acks_and_events_wait_their_turn_behind_a_held_send() -> None:
    # One frame at a time: a held event holds the reader's ack and the next events,
    # which all follow once the client reads, events in order.
    async with running(Relay()) as adapter, anyio.create_task_group() as tg:
        with FakeServer() as server:
            tg.start_soon(adapter, server.scope, server.receive, server.send)
            await _joined(adapter, server)
            gate = server.gate = anyio.Event()
            await adapter.relay.message_status("c1", "m0", "read", user_id="bob")
            server.client_sends(
                {"event": "conversation:join", "data": {"conversationId": "c2"}, "id": 7}
            )
            await adapter.relay.message_status("c1", "m1", "read", user_id="bob")
            for _ in range(20):
                await anyio.lowlevel.checkpoint()  # nothing may get past the held send
            assert _frames(server) == []
            server.gate = None
            gate.set()
            with anyio.fail_after(WAIT):
                while len(_frames(server)) < 3:
                    await server.changed()
            frames = _frames(server)
            statuses = [f["data"]["messageId"] for f in frames if f["event"] == "message:status"]
            assert statuses == ["m0", "m1"]
            assert [f["id"] for f in frames if f["event"] == "ack"] == [7]
            tg.cancel_scope.cancel()


async def test_a_client_gone_during_a_held_send_ends_the_connection() -> None:
    async with running(Relay()) as adapter, anyio.create_task_group() as tg:
        with FakeServer() as server:
            tg.start_soon(adapter, server.scope, server.receive, server.send)
            await _joined(adapter, server)
            gate = server.gate = anyio.Event()
            await adapter.relay.message_status("c1", "m0", "read", user_id="bob")
            for _ in range(10):
                await anyio.lowlevel.checkpoint()  # the send is under way, and waits
            server.broken = True
            gate.set()
            await until_connections(adapter.relay, 0)


class _Held:
    """A presence audience that holds alice's own announcement until released."""

    def __init__(self) -> None:
        self.release = anyio.Event()
        self.holding = anyio.Event()

    async def __call__(self, user_id: str) -> list[str]:
        if user_id == "alice":
            self.holding.set()
            await self.release.wait()
            return []
        return ["alice"]


async def test_events_queued_before_the_session_starts_are_sent() -> None:
    # Alice's connection is known (and told of bob) while her own announcement is
    # still under way, before her session runs: what it queued reaches her then.
    held = _Held()
    async with running(Relay(presence_audience=held)) as adapter, anyio.create_task_group() as tg:
        with FakeServer() as alice, FakeServer(query="userId=bob") as bob:
            tg.start_soon(adapter, alice.scope, alice.receive, alice.send)
            with anyio.fail_after(WAIT):
                await held.holding.wait()
            tg.start_soon(adapter, bob.scope, bob.receive, bob.send)
            await until_connections(adapter.relay, 2)
            held.release.set()
            online = await alice.wait_for_event("user:online")
            assert online["data"]["userId"] == "bob"
            tg.cancel_scope.cancel()


async def test_a_connection_closed_before_its_session_starts_is_closed() -> None:
    # While alice's announcement is under way, two events overflow her queue of one:
    # the relay closes her connection as a slow consumer before her session runs.
    held = _Held()
    relay = Relay(presence_audience=held, config=RelayConfig(limits=Limits(outgoing_queue=1)))
    async with running(relay) as adapter, anyio.create_task_group() as tg:
        with (
            FakeServer() as alice,
            FakeServer(query="userId=bob") as bob,
            FakeServer(query="userId=carol") as carol,
        ):
            tg.start_soon(adapter, alice.scope, alice.receive, alice.send)
            with anyio.fail_after(WAIT):
                await held.holding.wait()
            tg.start_soon(adapter, bob.scope, bob.receive, bob.send)
            tg.start_soon(adapter, carol.scope, carol.receive, carol.send)
            await until_connections(adapter.relay, 2)  # bob and carol; alice is gone
            held.release.set()
            close = await alice.wait_for("websocket.close")
            assert (close["code"], close["reason"]) == (1013, "slow_consumer")
            assert _frames(alice) == []
            tg.cancel_scope.cancel()
