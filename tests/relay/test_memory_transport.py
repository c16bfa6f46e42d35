"""The in-memory transport: clients that go through the relay's real request path."""

from __future__ import annotations

from datetime import UTC, datetime

import anyio
import pytest

from chatrelay import Authenticator, Credentials, Identity, Message, MessageStatus, Relay
from chatrelay.exceptions import ConnectionClosed, Unauthorized
from chatrelay.lowlevel import Outbound
from chatrelay.testing import MemoryTransport, ReceivedEvent
from relay_helpers import WAIT, join, message
from waiting import eventually

pytestmark = pytest.mark.anyio


async def test_events_arrive_in_order_and_receive_can_pick_by_name() -> None:
    async with Relay() as relay, MemoryTransport(relay).connect("bob") as bob:
        assert bob.user_id == "bob"
        assert bob.connection.user_id == "bob"
        await join(bob)
        for status in ("sent", "delivered", "read"):
            await relay.message_status("c1", "m1", status, user_id="alice")
        await relay.message_received(message())
        # Picking a later event by name leaves the earlier ones for later calls.
        picked = await bob.receive("message:received", timeout=WAIT)
        assert picked.wants_ack
        first = await bob.receive(timeout=WAIT)
        assert (first.event, first.data["status"]) == ("message:status", "sent")
        rest = [await bob.receive(timeout=WAIT), await bob.receive(timeout=WAIT)]
        assert [e.data["status"] for e in rest] == ["delivered", "read"]
        assert not rest[0].wants_ack
        # Everything stays on record, in order.
        assert [e.event for e in bob.received] == [
            "message:status",
            "message:status",
            "message:status",
            "message:received",
        ]
        assert [e.data["status"] for e in bob.events("message:status")] == [
            "sent",
            "delivered",
            "read",
        ]
        assert len(bob.events()) == 4


async def test_receive_is_bounded() -> None:
    async with Relay() as relay, MemoryTransport(relay).connect("bob") as bob:
        with pytest.raises(TimeoutError):
            await bob.receive("message:received", timeout=0.01)


async def test_frames_go_through_json_both_ways() -> None:
    async with Relay() as relay, MemoryTransport(relay).connect("bob") as bob:
        await join(bob)
        stored = Message(
            id="m1",
            conversation_id="c1",
            sender_id="alice",
            type="text",
            content={"point": (1, 2), "text": "é"},
            status=MessageStatus.SENT,
            created_at=datetime(2026, 1, 1, tzinfo=UTC),
            extra={"replyTo": None},
        )
        await relay.message_received(stored)
        event = await bob.receive("message:received", timeout=WAIT)
        # What arrives is what a JSON frame carries: a tuple became an array.
        assert event.data["message"]["content"] == {"point": [1, 2], "text": "é"}
        assert event.data["message"]["replyTo"] is None
        # Requests are encoded too: what JSON cannot carry fails as on the wire.
        with pytest.raises(TypeError):
            await bob.request("typing:start", {"conversationId": object()})
        with pytest.raises(ValueError, match="JSON"):
            await bob.request("typing:start", {"conversationId": float("inf")})
        # A tuple is sent as an array, which the strict codec refuses for a string.
        reply = await bob.request("conversation:join", {"conversationId": ("c", "1")})
        assert reply["error"]["code"] == "invalid_payload"


async def test_emit_sends_without_returning_the_ack() -> None:
    async with (
        Relay() as relay,
        MemoryTransport(relay).connect("alice") as alice,
        MemoryTransport(relay).connect("bob") as bob,
    ):
        await join(alice)
        await join(bob)
        await alice.emit("typing:start", {"conversationId": "c1"})
        await bob.receive("typing:start", timeout=WAIT)
        # A failed emit is not raised: the error event says it, as on the wire.
        await alice.emit("typing:start", {"conversationId": "nowhere"})
        error = await alice.receive("error", timeout=WAIT)
        assert error.data["code"] == "not_in_conversation"


async def test_only_events_that_ask_for_an_ack_can_be_acked() -> None:
    async with Relay() as relay, MemoryTransport(relay).connect("bob") as bob:
        await join(bob)
        await relay.message_status("c1", "m1", "read", user_id="alice")
        event = await bob.receive("message:status", timeout=WAIT)
        with pytest.raises(ValueError, match="did not ask for an ack"):
            await bob.ack(event)
        forged = ReceivedEvent(event="message:received", data={}, wants_ack=True)
        with pytest.raises(ValueError, match="did not ask for an ack"):
            await bob.ack(forged)


async def test_pause_holds_events_until_resume() -> None:
    async with Relay() as relay, MemoryTransport(relay).connect("bob") as bob:
        await join(bob)
        bob.pause()
        await relay.message_status("c1", "m1", "read", user_id="alice")
        await anyio.wait_all_tasks_blocked()
        assert bob.received == []
        bob.resume()
        event = await bob.receive("message:status", timeout=WAIT)
        assert event.data["messageId"] == "m1"


async def test_credentials_reach_the_authenticator() -> None:
    seen: list[Credentials] = []

    class Recording(Authenticator):
        async def authenticate(self, credentials: Credentials) -> Identity:
            seen.append(credentials)
            if credentials.token != "secret":
                raise Unauthorized("bad token")
            return Identity(user_id="alice", name="Alice")

    async with Relay(authenticator=Recording()) as relay:
        transport = MemoryTransport(relay)
        assert transport.relay is relay
        async with transport.connect(
            "ignored",
            token="secret",
            query={"room": "c1"},
            headers={"X-Trace": "t1"},
        ) as alice:
            assert alice.user_id == "alice"
            assert alice.connection.identity.name == "Alice"
            assert alice.connection.transport == "memory"
        with pytest.raises(Unauthorized):
            async with transport.connect(token="wrong"):
                pass  # pragma: no cover - never entered
    first = seen[0]
    assert first.token == "secret"
    assert first.query == {"room": "c1", "userId": "ignored"}
    assert first.headers == {"x-trace": "t1"}
    assert first.transport == "memory"


async def test_a_client_closed_by_the_server_sees_the_reason() -> None:
    async with Relay() as relay, MemoryTransport(relay).connect("bob") as bob:
        await join(bob)
        await relay.message_status("c1", "m1", "read", user_id="alice")
        bob.connection.close("kicked")
        # What was queued before the close still arrives; then the close does.
        event = await bob.receive(timeout=WAIT)
        assert event.event == "message:status"
        with pytest.raises(ConnectionClosed) as caught:
            await bob.receive(timeout=WAIT)
        assert caught.value.reason == "kicked"
        assert bob.close_reason == "kicked"
        bob.connection.close("again")  # the first reason stands
        assert bob.connection.close_reason == "kicked"
        assert bob.connection.closed
        with pytest.raises(ConnectionClosed):
            await bob.emit("typing:start", {"conversationId": "c1"})
        # The relay's timer task forgets it, at its next turn.
        await eventually(lambda: relay.statistics().connections == 0)


async def test_connections_and_events_show_what_they_are() -> None:
    async with Relay() as relay, MemoryTransport(relay).connect("bob") as bob:
        assert (
            repr(bob.connection)
            == f"<Connection {bob.connection.id} user='bob' transport='memory'>"
        )
        assert repr(Outbound("typing:start", {"userId": "bob"})) == (
            "Outbound('typing:start', {'userId': 'bob'})"
        )


async def test_leaving_the_block_disconnects() -> None:
    async with Relay() as relay:
        async with MemoryTransport(relay).connect("bob") as bob:
            await join(bob)
            assert relay.statistics().connections == 1
        assert bob.connection.close_reason == "client_disconnected"
        assert relay.statistics().connections == 0
        assert relay.members("c1") == frozenset()
