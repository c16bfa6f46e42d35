"""The Relay through the in-memory transport, one behaviour per test, on asyncio and trio."""

from __future__ import annotations

import logging
from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from unittest.mock import ANY

import anyio
import pytest

from chatrelay import (
    Authenticator,
    Credentials,
    Delivery,
    DevelopmentAuthenticator,
    Identity,
    Limits,
    MessageStatus,
    Relay,
    RelayConfig,
    Sender,
    allow_all,
    codec,
    is_forward,
)
from chatrelay.backplanes import MemoryBackplane, MemoryBus
from chatrelay.events import ErrorEvent, ErrorReply
from chatrelay.exceptions import BackplaneError, ConnectionClosed, InternalError, Unauthorized
from chatrelay.testing import MemoryClient, MemoryTransport
from relay_helpers import (
    FAST,
    WAIT,
    in_background,
    join,
    message,
    names,
    settle,
)
from waiting import eventually

pytestmark = pytest.mark.anyio


def assert_error(reply: dict[str, Any], status: int, code: str, event: str | None) -> None:
    """Check an ack of a failed request: ``{ok: false, error: {status, code, message, event}}``."""
    decoded = codec.decode_reply(reply, ErrorReply)
    assert (decoded.error.status, decoded.error.code, decoded.error.event) == (
        status,
        code,
        event,
    )
    assert decoded.error.message


async def single_error(client: MemoryClient, reply: dict[str, Any]) -> ErrorEvent:
    """The one ``error`` event a failed request caused, which must equal its ack's error."""
    events = await settle(client, presence=False)
    assert names(events) == ["error"], events
    assert events[0].data == reply["error"]
    error = codec.decode_server_event("error", events[0].data)
    assert isinstance(error, ErrorEvent)
    return error


class TokenAuthenticator(Authenticator):
    """Accepts the tokens it knows; each names a user with a display name."""

    users: ClassVar[dict[str, Identity]] = {
        "t-alice": Identity(user_id="alice", name="Alice"),
        "t-bob": Identity(user_id="bob"),
    }

    async def authenticate(self, credentials: Credentials) -> Identity:
        identity = self.users.get(credentials.token or "")
        if identity is None:
            raise Unauthorized("unknown token")
        return identity


# --- lifecycle and configuration ----------------------------------------------------


async def test_emitter_outside_async_with_raises_runtime_error() -> None:
    relay = Relay()
    with pytest.raises(RuntimeError, match="not running"):
        await relay.message_received(message())
    with pytest.raises(RuntimeError, match="not running"):
        await relay.message_status("c1", "m1", "read", user_id="bob")
    async with relay:
        pass
    with pytest.raises(RuntimeError, match="not running"):
        await relay.message_received(message())
    with pytest.raises(RuntimeError, match="not running"):
        async with relay.connect(Identity(user_id="alice"), transport="memory"):
            pass  # pragma: no cover - never entered


async def test_a_relay_runs_only_once() -> None:
    relay = Relay()
    async with relay:
        with pytest.raises(RuntimeError, match="only once"):
            await relay.__aenter__()
    with pytest.raises(RuntimeError, match="only once"):
        await relay.__aenter__()
    await relay.aclose()  # closing again is harmless


async def test_production_mode_needs_an_authenticator_and_authorize_join() -> None:
    production = RelayConfig(production=True)
    with pytest.raises(ValueError, match="authenticator"):
        Relay(config=production)
    with pytest.raises(ValueError, match="authenticator"):
        Relay(config=production, authorize_join=allow_all)
    with pytest.raises(ValueError, match="development"):
        Relay(
            config=production,
            authenticator=DevelopmentAuthenticator(),
            authorize_join=allow_all,
        )
    with pytest.raises(ValueError, match="authorize_join"):
        Relay(config=production, authenticator=TokenAuthenticator())
    relay = Relay(config=production, authenticator=TokenAuthenticator(), authorize_join=allow_all)
    async with relay:
        async with MemoryTransport(relay).connect(token="t-alice") as alice:
            await join(alice)
        # The development shortcut (?userId=) is not an identity in production.
        with pytest.raises(Unauthorized):
            async with MemoryTransport(relay).connect("alice"):
                pass  # pragma: no cover - never entered


async def test_connect_without_user_id_is_unauthorized() -> None:
    async with Relay() as relay:
        transport = MemoryTransport(relay)
        with pytest.raises(Unauthorized, match="userId"):
            async with transport.connect():
                pass  # pragma: no cover - never entered
        with pytest.raises(Unauthorized):
            async with transport.connect(query={"userId": ""}):
                pass  # pragma: no cover - never entered
        assert relay.statistics().connections == 0


async def test_authenticator_failures_are_internal_errors_and_bad_results_type_errors() -> None:
    class Broken(Authenticator):
        async def authenticate(self, credentials: Credentials) -> Identity:
            raise RuntimeError("database password is hunter2")

    class Confused(Authenticator):
        async def authenticate(self, credentials: Credentials) -> Identity:
            return "alice"  # type: ignore[return-value]

    async with Relay(authenticator=Broken()) as relay:
        with pytest.raises(InternalError) as caught:
            await relay.authenticate(Credentials(token="x"))
        assert "hunter2" not in caught.value.message
    async with Relay(authenticator=Confused()) as relay:
        with pytest.raises(TypeError, match="Identity"):
            await relay.authenticate(Credentials(token="x"))


async def test_identity_comes_from_the_authenticator() -> None:
    async with Relay(authenticator=TokenAuthenticator()) as relay:
        transport = MemoryTransport(relay)
        async with (
            transport.connect(token="t-alice", query={"userId": "mallory"}) as alice,
            transport.connect(token="t-bob") as bob,
        ):
            assert alice.user_id == "alice"
            await join(alice)
            await join(bob)
            await alice.request("typing:start", {"conversationId": "c1"})
            started = await bob.receive("typing:start", timeout=WAIT)
            assert started.data["user"] == {"id": "alice", "name": "Alice"}


async def test_shutdown_closes_connections_with_server_shutdown() -> None:
    relay = Relay(config=FAST)
    async with in_background(relay) as shutdown:
        transport = MemoryTransport(relay)
        async with transport.connect("alice") as alice, transport.connect("bob") as bob:
            await join(alice)
            await shutdown()
            for client in (alice, bob):
                with pytest.raises(ConnectionClosed) as caught:
                    await client.receive("message:received", timeout=WAIT)
                assert caught.value.reason == "server_shutdown"
                assert client.close_reason == "server_shutdown"
                assert client.connection.close_reason == "server_shutdown"
                with pytest.raises(ConnectionClosed):
                    await client.request("conversation:join", {"conversationId": "c1"})
            assert relay.statistics().connections == 0
            with pytest.raises(RuntimeError):
                await relay.message_received(message())


async def test_statistics_describe_the_relay() -> None:
    limits = Limits(rate=1e-6, burst=2)
    async with Relay(config=RelayConfig(limits=limits)) as relay:
        empty = relay.statistics()
        assert (empty.connections, empty.rooms, empty.online_users, empty.nodes) == (0, 0, 0, 0)
        assert empty.node_id == relay.node_id
        transport = MemoryTransport(relay)
        async with (
            transport.connect("alice") as a1,
            transport.connect("alice") as a2,
            transport.connect("bob") as bob,
        ):
            await join(a1, "c1")
            await join(a2, "c2")
            await bob.request("nope", {})
            await bob.request("nope", {})
            await bob.request("nope", {})  # over the burst of 2: rate limited
            stats = relay.statistics()
            assert stats.connections == 3
            assert stats.rooms == 2
            assert stats.online_users == 2
            assert stats.nodes == 0
            assert stats.failed_requests == 3
            assert stats.rate_limited == 1
            assert stats.slow_consumers == 0
            assert stats.backplane_errors == 0


# --- joining and leaving ------------------------------------------------------------


async def test_join_ack_lists_members_and_typing_users() -> None:
    async with Relay(config=FAST) as relay:
        transport = MemoryTransport(relay)
        async with transport.connect("alice") as alice, transport.connect("bob") as bob:
            assert await join(alice) == {
                "ok": True,
                "conversationId": "c1",
                "members": ["alice"],
                "typing": [],
                "position": {"offset": 0, "epoch": ANY},
            }
            await alice.request("typing:start", {"conversationId": "c1"})
            reply = await bob.request(
                "conversation:join",
                {"conversationId": "c1", "since": "2026-01-01T00:00:00.000Z"},
            )
            assert reply == {
                "ok": True,
                "conversationId": "c1",
                "members": ["alice", "bob"],
                "typing": ["alice"],
                "position": {"offset": 0, "epoch": ANY},
            }
            assert relay.members("c1") == {"alice", "bob"}
            assert relay.typing_users("c1") == {"alice"}


async def test_joining_twice_asks_authorize_join_once() -> None:
    asked: list[tuple[str, str]] = []

    async def authorize(identity: Identity, conversation: str) -> bool:
        asked.append((identity.user_id, conversation))
        return True

    async with (
        Relay(authorize_join=authorize) as relay,
        MemoryTransport(relay).connect("alice") as alice,
    ):
        await join(alice)
        await join(alice)
        assert asked == [("alice", "c1")]
        assert await settle(alice) == []


@pytest.mark.parametrize("verdict", [False, None, 1, "yes"])
async def test_join_refused_unless_authorize_join_returns_true(verdict: object) -> None:
    async def authorize(identity: Identity, conversation: str) -> bool:
        return verdict  # type: ignore[return-value]

    async with (
        Relay(authorize_join=authorize) as relay,
        MemoryTransport(relay).connect("alice") as alice,
    ):
        reply = await alice.request("conversation:join", {"conversationId": "secret"})
        assert_error(reply, 403, "forbidden", "conversation:join")
        await single_error(alice, reply)
        assert relay.members("secret") == frozenset()
        # Still not in the room: it cannot type there.
        reply = await alice.request("typing:start", {"conversationId": "secret"})
        assert_error(reply, 409, "not_in_conversation", "typing:start")


async def test_authorize_join_that_raises_is_an_internal_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broken = True

    async def authorize(identity: Identity, conversation: str) -> bool:
        if broken:
            raise RuntimeError("db connection string postgres://secret")
        return True

    async with (
        Relay(authorize_join=authorize) as relay,
        MemoryTransport(relay).connect("alice") as alice,
    ):
        with caplog.at_level(logging.ERROR, logger="chatrelay"):
            reply = await alice.request("conversation:join", {"conversationId": "c1"})
        assert_error(reply, 500, "internal_error", "conversation:join")
        error = await single_error(alice, reply)
        assert "secret" not in error.message
        assert "Traceback" not in error.message
        # The server log keeps the details.
        assert "postgres://secret" in caplog.text
        broken = False
        await join(alice)
        assert relay.members("c1") == {"alice"}


async def test_connection_closed_during_authorize_join_raises_connection_closed() -> None:
    entered = anyio.Event()
    release = anyio.Event()

    async def authorize(identity: Identity, conversation: str) -> bool:
        entered.set()
        await release.wait()
        return True

    async with (
        Relay(authorize_join=authorize) as relay,
        MemoryTransport(relay).connect("alice") as alice,
    ):
        outcome: list[BaseException | dict[str, Any]] = []

        async def request_join() -> None:
            try:
                outcome.append(await alice.request("conversation:join", {"conversationId": "c1"}))
            except ConnectionClosed as exc:
                outcome.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(request_join)
            with anyio.fail_after(WAIT):
                await entered.wait()
            alice.connection.close("kicked")
            release.set()
        [result] = outcome
        assert isinstance(result, ConnectionClosed)
        assert result.reason == "kicked"
        assert relay.members("c1") == frozenset()
        assert relay.statistics().failed_requests == 0


async def test_leave_acks_and_stops_typing_and_membership() -> None:
    async with Relay(config=FAST) as relay:
        transport = MemoryTransport(relay)
        async with transport.connect("alice") as alice, transport.connect("bob") as bob:
            await join(alice)
            await join(bob)
            await alice.request("typing:start", {"conversationId": "c1"})
            reply = await alice.request("conversation:leave", {"conversationId": "c1"})
            assert reply == {"ok": True, "conversationId": "c1"}
            assert names(await settle(bob, presence=False)) == ["typing:start", "typing:stop"]
            assert await settle(alice, presence=False) == []  # its own stop is not echoed
            assert relay.members("c1") == {"bob"}
            assert relay.typing_users("c1") == frozenset()
            # Room events no longer reach it.
            await relay.message_received(message(sender="bob"))
            assert await settle(alice, presence=False) == []
            reply = await alice.request("conversation:leave", {"conversationId": "c1"})
            assert_error(reply, 409, "not_in_conversation", "conversation:leave")


async def test_leave_by_one_tab_keeps_the_user_a_member_and_typing() -> None:
    async with Relay(config=RelayConfig(typing_timeout=60)) as relay:
        transport = MemoryTransport(relay)
        async with (
            transport.connect("alice") as a1,
            transport.connect("alice") as a2,
            transport.connect("bob") as bob,
        ):
            for client in (a1, a2, bob):
                await join(client)
            await a1.request("typing:start", {"conversationId": "c1"})
            await a2.request("conversation:leave", {"conversationId": "c1"})
            assert relay.members("c1") == {"alice", "bob"}
            assert relay.typing_users("c1") == {"alice"}
            assert names(await settle(bob, presence=False)) == ["typing:start"]


async def test_disconnect_leaves_every_room() -> None:
    async with Relay(config=FAST) as relay:
        transport = MemoryTransport(relay)
        async with transport.connect("bob") as bob:
            async with transport.connect("alice") as alice:
                await join(alice, "c1")
                await join(alice, "c2")
                await join(bob, "c1")
                assert relay.statistics().rooms == 2
            assert relay.members("c1") == {"bob"}
            assert relay.members("c2") == frozenset()
            assert relay.statistics().rooms == 1


# --- typing -------------------------------------------------------------------------


async def test_typing_episode_starts_once_and_stops_once() -> None:
    async with Relay(config=RelayConfig(typing_timeout=60)) as relay:
        transport = MemoryTransport(relay)
        async with transport.connect("alice") as alice, transport.connect("bob") as bob:
            await join(alice)
            await join(bob)
            for _ in range(5):
                assert await alice.request("typing:start", {"conversationId": "c1"}) == {"ok": True}
            await alice.request("typing:stop", {"conversationId": "c1", "isTyping": False})
            await alice.request("typing:stop", {"conversationId": "c1"})
            events = await settle(bob, presence=False)
            assert [(e.event, e.data) for e in events] == [
                (
                    "typing:start",
                    {
                        "conversationId": "c1",
                        "userId": "alice",
                        "isTyping": True,
                        "user": {"id": "alice"},
                    },
                ),
                (
                    "typing:stop",
                    {
                        "conversationId": "c1",
                        "userId": "alice",
                        "isTyping": False,
                        "user": {"id": "alice"},
                    },
                ),
            ]
            assert await settle(alice, presence=False) == []  # never echoed to the typist


async def test_typing_times_out_by_itself() -> None:
    async with Relay(config=FAST) as relay:
        transport = MemoryTransport(relay)
        async with transport.connect("alice") as alice, transport.connect("bob") as bob:
            await join(alice)
            await join(bob)
            await alice.request("typing:start", {"conversationId": "c1", "isTyping": True})
            await bob.receive("typing:start", timeout=WAIT)
            stop = await bob.receive("typing:stop", timeout=WAIT)
            assert stop.data["userId"] == "alice"
            assert relay.typing_users("c1") == frozenset()
            assert await settle(bob, presence=False) == []
            # A later start is a new episode.
            await alice.request("typing:start", {"conversationId": "c1"})
            await bob.receive("typing:start", timeout=WAIT)
            await bob.receive("typing:stop", timeout=WAIT)


async def test_typing_stops_when_the_typing_connection_disconnects() -> None:
    async with Relay(config=RelayConfig(typing_timeout=60)) as relay:
        transport = MemoryTransport(relay)
        async with transport.connect("bob") as bob:
            async with transport.connect("alice") as alice:
                await join(alice)
                await join(bob)
                await alice.request("typing:start", {"conversationId": "c1"})
            assert names(await settle(bob, presence=False)) == ["typing:start", "typing:stop"]
            assert relay.typing_users("c1") == frozenset()


async def test_typing_stops_when_the_app_emits_the_typists_message() -> None:
    async with Relay(config=RelayConfig(typing_timeout=60)) as relay:
        transport = MemoryTransport(relay)
        async with transport.connect("alice") as alice, transport.connect("bob") as bob:
            await join(alice)
            await join(bob)
            await alice.request("typing:start", {"conversationId": "c1"})
            await relay.message_received(message(sender="alice"))
            assert names(await settle(bob, presence=False)) == [
                "typing:start",
                "message:received",
                "typing:stop",
            ]
            assert names(await settle(alice, presence=False)) == ["message:received", "typing:stop"]
            # A message from someone else ends nobody else's episode.
            await alice.request("typing:start", {"conversationId": "c1"})
            await relay.message_received(message("m2", sender="bob"))
            assert names(await settle(bob, presence=False)) == ["typing:start", "message:received"]
            # The connection that sent it (exclude) is told neither the message nor the
            # typing:stop it caused.
            await relay.message_received(message("m3"), exclude=alice.connection.id)
            assert names(await settle(alice, presence=False)) == ["message:received"]  # m2
            assert names(await settle(bob, presence=False)) == ["message:received", "typing:stop"]


async def test_typing_in_a_room_not_joined_is_not_in_conversation() -> None:
    async with Relay() as relay, MemoryTransport(relay).connect("alice") as alice:
        for event in ("typing:start", "typing:stop"):
            reply = await alice.request(event, {"conversationId": "c1"})
            assert_error(reply, 409, "not_in_conversation", event)
            await single_error(alice, reply)


async def test_spoofed_user_id_in_typing_is_forbidden() -> None:
    async with Relay(config=RelayConfig(typing_timeout=60)) as relay:
        transport = MemoryTransport(relay)
        async with transport.connect("alice") as alice, transport.connect("bob") as bob:
            await join(alice)
            await join(bob)
            for event in ("typing:start", "typing:stop"):
                reply = await alice.request(event, {"conversationId": "c1", "userId": "bob"})
                assert_error(reply, 403, "forbidden", event)
                await single_error(alice, reply)
            assert await settle(bob, presence=False) == []
            # Its own id is accepted, for compatibility with existing clients.
            await alice.request("typing:start", {"conversationId": "c1", "userId": "alice"})
            assert names(await settle(bob, presence=False)) == ["typing:start"]


# --- messages -----------------------------------------------------------------------


async def test_message_received_reaches_member_tabs_not_the_excluded_one() -> None:
    async with Relay() as relay:
        transport = MemoryTransport(relay)
        async with (
            transport.connect("alice") as a1,
            transport.connect("alice") as a2,
            transport.connect("bob") as bob,
            transport.connect("carol") as carol,
        ):
            for client in (a1, a2, bob):
                await join(client)
            stored = message(text="hello")
            await relay.message_received(
                stored, sender=Sender(id="alice", name="Alice"), exclude=a1.connection.id
            )
            assert await settle(a1, presence=False) == []
            assert await settle(carol, presence=False) == []
            expected = {
                "conversationId": "c1",
                "message": {
                    "id": "m1",
                    "conversationId": "c1",
                    "senderId": "alice",
                    "type": "text",
                    "content": {"text": "hello"},
                    "status": "sent",
                    "createdAt": "2026-01-02T03:04:05.000Z",
                },
                "sender": {"id": "alice", "name": "Alice"},
                "position": {"offset": 1, "epoch": ANY},
            }
            for client in (a2, bob):
                [event] = await settle(client, presence=False)
                assert event.event == "message:received"
                assert event.wants_ack
                assert event.data == expected


async def test_message_without_sender_names_the_sender_id() -> None:
    async with Relay() as relay, MemoryTransport(relay).connect("bob") as bob:
        await join(bob)
        await relay.message_received(message(sender="alice"))
        event = await bob.receive("message:received", timeout=WAIT)
        assert event.data["sender"] == {"id": "alice"}


async def test_message_status_forward_transitions() -> None:
    async with Relay() as relay:
        transport = MemoryTransport(relay)
        async with transport.connect("alice") as alice, transport.connect("bob") as bob:
            await join(alice)
            await join(bob)
            at = datetime(2026, 1, 2, 3, 4, 6, 500000, tzinfo=UTC)
            current = MessageStatus.SENT
            for new in (MessageStatus.DELIVERED, MessageStatus.READ):
                assert is_forward(current, new)
                await relay.message_status("c1", "m1", new, user_id="bob", updated_at=at)
                current = new
            assert not is_forward(current, MessageStatus.DELIVERED)
            # Strings are accepted too; `exclude` spares the connection that caused it.
            await relay.message_status("c1", "m1", "read", user_id="bob", exclude=bob.connection.id)
            events = await settle(alice, presence=False)
            assert [e.data["status"] for e in events] == ["delivered", "read", "read"]
            assert events[0].data == {
                "conversationId": "c1",
                "messageId": "m1",
                "status": "delivered",
                "userId": "bob",
                "updatedAt": "2026-01-02T03:04:06.500Z",
                "position": {"offset": 1, "epoch": ANY},
            }
            assert not events[0].wants_ack
            codec.decode_server_event("message:status", events[2].data)  # a timestamp of now
            assert len(await settle(bob, presence=False)) == 2


@pytest.mark.parametrize("status", ["seen", "READ", "", "unread"])
async def test_message_status_refuses_unknown_statuses(status: str) -> None:
    async with Relay() as relay, MemoryTransport(relay).connect("bob") as bob:
        await join(bob)
        with pytest.raises(ValueError, match="unknown message status"):
            await relay.message_status("c1", "m1", status, user_id="bob")
        assert await settle(bob, presence=False) == []


async def test_message_larger_than_the_backplane_accepts_reaches_nobody() -> None:
    bus = MemoryBus()
    small = bus.backplane(max_payload_bytes=2048)
    async with (
        Relay(config=RelayConfig(typing_timeout=60), backplane=small) as relay,
        Relay(backplane=bus.backplane()) as other,
    ):
        transport = MemoryTransport(relay)
        async with (
            transport.connect("alice") as alice,
            transport.connect("bob") as bob,
            MemoryTransport(other).connect("carol") as carol,
        ):
            for client in (alice, bob, carol):
                await join(client)
            await eventually(lambda: relay.members("c1") == {"alice", "bob", "carol"})
            await alice.request("typing:start", {"conversationId": "c1"})
            await carol.receive("typing:start", timeout=WAIT)
            with pytest.raises(BackplaneError, match="2048"):
                await relay.message_received(message(text="x" * 4096))
            with pytest.raises(BackplaneError):
                await relay.message_status("c1", "m" * 4096, "read", user_id="bob")
            assert names(await settle(bob, presence=False)) == ["typing:start"]
            assert await settle(alice, presence=False) == []
            # Nothing was sent, so the typist still types; a small message goes through.
            assert relay.typing_users("c1") == {"alice"}
            await relay.message_received(message("m2"))
            await carol.receive("typing:stop", timeout=WAIT)
            # Both went through the same bus in order: the big one would have come first.
            assert [e.data["message"]["id"] for e in carol.events("message:received")] == ["m2"]


# --- deliveries ---------------------------------------------------------------------


async def test_on_delivered_fires_once_per_recipient_not_for_the_sender() -> None:
    deliveries: list[Delivery] = []

    async def on_delivered(delivery: Delivery) -> None:
        deliveries.append(delivery)

    async with Relay(on_delivered=on_delivered) as relay:
        transport = MemoryTransport(relay)
        async with (
            transport.connect("alice") as a1,
            transport.connect("alice") as a2,
            transport.connect("bob") as b1,
            transport.connect("bob") as b2,
        ):
            for client in (a1, a2, b1, b2):
                await join(client)
            await relay.message_received(message(sender="alice"), exclude=a1.connection.id)
            own = await a2.receive("message:received", timeout=WAIT)
            await a2.ack(own)
            assert deliveries == []  # the sender's own tab is not a delivery
            first = await b1.receive("message:received", timeout=WAIT)
            await b1.ack(first)
            await b1.ack(first)
            second = await b2.receive("message:received", timeout=WAIT)
            await b2.ack(second)
            assert deliveries == [
                Delivery(
                    user_id="bob",
                    conversation_id="c1",
                    message_id="m1",
                    connection_id=b1.connection.id,
                )
            ]


async def test_auto_ack_reports_deliveries() -> None:
    delivered = anyio.Event()
    deliveries: list[Delivery] = []

    async def on_delivered(delivery: Delivery) -> None:
        deliveries.append(delivery)
        delivered.set()

    async with Relay(on_delivered=on_delivered) as relay:
        transport = MemoryTransport(relay)
        async with transport.connect("bob", auto_ack=True) as bob:
            await join(bob)
            await relay.message_received(message("m7", sender="alice"))
            with anyio.fail_after(WAIT):
                await delivered.wait()
            assert [(d.user_id, d.message_id) for d in deliveries] == [("bob", "m7")]


async def test_acks_without_a_hook_and_a_failing_hook_are_harmless(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def on_delivered(delivery: Delivery) -> None:
        raise RuntimeError("hook failed")

    for hook in (None, on_delivered):
        async with Relay(on_delivered=hook) as relay, MemoryTransport(relay).connect("bob") as bob:
            await join(bob)
            await relay.message_received(message(sender="alice"))
            event = await bob.receive("message:received", timeout=WAIT)
            with caplog.at_level(logging.ERROR, logger="chatrelay"):
                await bob.ack(event)
            # The relay keeps working.
            await relay.message_received(message("m2", sender="alice"))
            await bob.receive("message:received", timeout=WAIT)
    assert "on_delivered hook failed" in caplog.text


# --- presence -----------------------------------------------------------------------


FAST_SLACK = timedelta(seconds=FAST.presence_grace / 2)
"""Tolerance between the loop's clock and the wall clock: half a grace period."""


def parse_last_seen(data: dict[str, Any]) -> datetime:
    return codec.parse_timestamp(data["lastSeen"])


async def test_presence_online_and_offline_after_the_grace_period() -> None:
    async with Relay(config=FAST) as relay:
        transport = MemoryTransport(relay)
        async with transport.connect("bob") as bob:
            async with transport.connect("alice") as alice:
                online = await bob.receive("user:online", timeout=WAIT)
                assert online.data == {"userId": "alice"}
                assert relay.is_online("alice")
                assert relay.online_users() == {"alice", "bob"}
                assert await settle(alice) == []  # no own online
                left = datetime.now(UTC)
            # Inside the grace period the user is still online.
            assert relay.is_online("alice")
            offline = await bob.receive("user:offline", timeout=WAIT)
            assert offline.data["userId"] == "alice"
            last_seen = parse_last_seen(offline.data)
            assert left - FAST_SLACK <= last_seen <= datetime.now(UTC)
            assert not relay.is_online("alice")
            assert relay.online_users() == {"bob"}


async def test_reconnect_inside_the_grace_period_emits_nothing() -> None:
    async with Relay(config=FAST) as relay:
        transport = MemoryTransport(relay)
        async with transport.connect("bob") as bob:
            async with transport.connect("alice"):
                pass
            async with transport.connect("alice"):
                # carol serves as a clock: her grace period ends after alice's first one.
                async with transport.connect("carol"):
                    pass
                offline = await bob.receive("user:offline", timeout=WAIT)
                assert offline.data["userId"] == "carol"
                events = [(e.event, e.data["userId"]) for e in bob.received]
                assert events == [
                    ("user:online", "alice"),
                    ("user:online", "carol"),
                    ("user:offline", "carol"),
                ]
                assert relay.is_online("alice")


async def test_the_last_of_several_tabs_takes_the_user_offline() -> None:
    async with Relay(config=FAST) as relay:
        transport = MemoryTransport(relay)
        async with transport.connect("bob") as bob:
            async with transport.connect("alice"):
                async with transport.connect("alice"):
                    pass
                async with transport.connect("carol"):
                    pass
                await bob.receive("user:offline", timeout=WAIT)  # carol's
                assert relay.is_online("alice")
            offline = await bob.receive("user:offline", timeout=WAIT)
            assert offline.data["userId"] == "alice"
            online = [e.data["userId"] for e in bob.events("user:online")]
            assert online == ["alice", "carol"]


async def test_presence_audience_limits_who_is_told() -> None:
    friends = {"alice": {"bob"}, "bob": {"alice"}, "carol": set[str]()}

    async def audience(user: str) -> Collection[str]:
        return friends[user]

    async with Relay(config=FAST, presence_audience=audience) as relay:
        transport = MemoryTransport(relay)
        async with transport.connect("bob") as bob, transport.connect("carol") as carol:
            async with transport.connect("alice"):
                await bob.receive("user:online", timeout=WAIT)
            await bob.receive("user:offline", timeout=WAIT)
            assert await settle(carol) == []


async def test_presence_audience_failure_tells_nobody_and_keeps_the_relay(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def audience(user: str) -> Collection[str]:
        raise RuntimeError("audience lookup failed")

    async with Relay(config=FAST, presence_audience=audience) as relay:
        transport = MemoryTransport(relay)
        async with transport.connect("bob") as bob:
            with caplog.at_level(logging.ERROR, logger="chatrelay"):
                async with transport.connect("alice") as alice:
                    await join(alice)
                    await join(bob)
            assert await settle(bob) == []
            assert "presence_audience hook failed" in caplog.text


async def test_connection_cancelled_while_announcing_is_forgotten() -> None:
    entered = anyio.Event()

    async def audience(user: str) -> Collection[str]:
        if user == "alice" and not entered.is_set():
            entered.set()
            await anyio.sleep_forever()  # a hook that hangs, until the connect is cancelled
        return ()

    async with Relay(config=FAST, presence_audience=audience) as relay:
        transport = MemoryTransport(relay)

        async def connect_alice() -> None:
            async with transport.connect("alice"):
                pass  # pragma: no cover - cancelled before

        async with anyio.create_task_group() as tg:
            tg.start_soon(connect_alice)
            with anyio.fail_after(WAIT):
                await entered.wait()
            tg.cancel_scope.cancel()
        assert relay.statistics().connections == 0
        # Like any closed connection, alice goes offline after the grace period.
        async with transport.connect("bob") as bob:
            await eventually(lambda: not relay.is_online("alice"))
            assert await settle(bob) == []


# --- malformed requests and limits --------------------------------------------------


MALFORMED = [
    pytest.param("conversation:join", {"conversationId": 1}, id="wrong-type"),
    pytest.param("conversation:join", {"conversationId": None}, id="null"),
    pytest.param("conversation:join", {"conversationId": "c1", "since": "yesterday"}, id="date"),
    pytest.param("conversation:join", {}, id="missing-field"),
    pytest.param("conversation:leave", {"conversationId": "c1", "x": 1}, id="extra-field"),
    pytest.param("typing:start", {"conversationId": "c1", "isTyping": False}, id="contradiction"),
    pytest.param("typing:stop", {"conversationId": "c1", "userId": 7}, id="user-id-type"),
    pytest.param("typing:start", "c1", id="string"),
    pytest.param("typing:start", ["c1"], id="array"),
    pytest.param("typing:start", None, id="null-payload"),
    pytest.param("conversation:join", 3, id="number"),
]


@pytest.mark.parametrize(("event", "data"), MALFORMED)
async def test_malformed_payload_gets_one_error_and_the_connection_stays(
    event: str, data: object
) -> None:
    async with Relay() as relay, MemoryTransport(relay).connect("alice") as alice:
        reply = await alice.request(event, data)
        assert_error(reply, 400, "invalid_payload", event)
        error = await single_error(alice, reply)
        assert error.message.startswith("invalid payload")
        # Still connected and usable.
        await join(alice)
        assert await alice.request("typing:start", {"conversationId": "c1"}) == {"ok": True}
        assert relay.statistics().failed_requests == 1


async def test_unknown_event_is_answered_with_unknown_event() -> None:
    async with Relay() as relay, MemoryTransport(relay).connect("alice") as alice:
        reply = await alice.request("message:send", {"conversationId": "c1"})
        assert_error(reply, 400, "unknown_event", "message:send")
        await single_error(alice, reply)
        # An adapter may hand over a name that is not even a string.
        reply = await alice.connection.handle(42, {})
        assert_error(reply, 400, "unknown_event", None)
        await single_error(alice, reply)
        await join(alice)


async def test_oversized_payload_is_payload_too_large_and_the_connection_stays() -> None:
    config = RelayConfig(limits=Limits(max_payload_bytes=64))
    async with Relay(config=config) as relay, MemoryTransport(relay).connect("alice") as alice:
        reply = await alice.request("conversation:join", {"conversationId": "c" * 64})
        assert_error(reply, 413, "payload_too_large", "conversation:join")
        error = await single_error(alice, reply)
        assert "64" in error.message
        await join(alice)
        # Adapters that do not know the size leave the measuring to the relay.
        reply = await alice.connection.handle("typing:start", {"conversationId": "c" * 64})
        assert_error(reply, 413, "payload_too_large", "typing:start")
        await single_error(alice, reply)
        reply = await alice.connection.handle("typing:start", {"conversationId": float("nan")})
        assert_error(reply, 400, "invalid_payload", "typing:start")
        await single_error(alice, reply)
        assert await alice.connection.handle("typing:start", {"conversationId": "c1"}) == {
            "ok": True
        }


async def test_rate_limit_refuses_requests_and_errs_at_most_once_per_interval() -> None:
    limits = Limits(rate=1e-6, burst=2, rate_error_interval=0.05)
    async with (
        Relay(config=RelayConfig(limits=limits)) as relay,
        MemoryTransport(relay).connect("alice") as alice,
    ):
        await join(alice)
        assert await alice.request("typing:start", {"conversationId": "c1"}) == {"ok": True}
        flooded_at = anyio.current_time()
        for _ in range(10):
            reply = await alice.request("typing:start", {"conversationId": "c1"})
            assert_error(reply, 429, "rate_limited", "typing:start")
        first = await settle(alice)
        assert [(e.event, e.data["code"]) for e in first] == [("error", "rate_limited")]
        # The acks keep failing; the next error event comes once the interval passed.
        refused = 10
        with anyio.fail_after(WAIT):
            while True:
                reply = await alice.request("typing:stop", {"conversationId": "c1"})
                assert_error(reply, 429, "rate_limited", "typing:stop")
                refused += 1
                events = await settle(alice)
                if events:
                    break
        assert anyio.current_time() - flooded_at >= limits.rate_error_interval
        assert [(e.event, e.data["event"]) for e in events] == [("error", "typing:stop")]
        stats = relay.statistics()
        assert stats.rate_limited == refused
        assert stats.failed_requests == refused


async def test_slow_consumer_is_disconnected_and_others_get_everything() -> None:
    config = RelayConfig(presence_grace=0.05, limits=Limits(outgoing_queue=4))
    async with Relay(config=config) as relay:
        transport = MemoryTransport(relay)
        async with transport.connect("slow") as slow, transport.connect("fast") as fast:
            await join(slow)
            await join(fast)
            slow.pause()
            for i in range(20):
                await relay.message_status("c1", f"m{i}", "read", user_id="fast")
                received = await fast.receive(timeout=WAIT)
                assert (received.event, received.data["messageId"]) == ("message:status", f"m{i}")
            assert slow.connection.close_reason == "slow_consumer"
            assert relay.statistics().slow_consumers == 1
            # The relay forgets it promptly, without waiting for the client.
            await eventually(lambda: relay.members("c1") == {"fast"})
            with pytest.raises(ConnectionClosed):
                await slow.request("typing:start", {"conversationId": "c1"})
            slow.resume()
            with pytest.raises(ConnectionClosed) as caught:
                await slow.receive("user:offline", timeout=WAIT)
            assert caught.value.reason == "slow_consumer"
            assert slow.close_reason == "slow_consumer"
            got = [e.data["messageId"] for e in slow.events("message:status")]
            assert got == [f"m{i}" for i in range(len(got))]
            assert len(got) < 20
            offline = await fast.receive("user:offline", timeout=WAIT)
            assert offline.data["userId"] == "slow"


# --- concurrency with a backplane that takes time -----------------------------------


class GatedBackplane(MemoryBackplane):
    """Holds the next typing publish while armed, as a slow network (Redis) would."""

    def __init__(self, bus: MemoryBus) -> None:
        super().__init__(bus)
        self.armed = False
        self.held = anyio.Event()
        self.release = anyio.Event()

    async def publish(self, topic: str, payload: bytes) -> None:
        if self.armed and b'"typing"' in payload:
            self.armed = False
            self.held.set()
            await self.release.wait()
        await super().publish(topic, payload)


async def test_broadcast_while_a_connection_is_being_forgotten() -> None:
    backplane = GatedBackplane(MemoryBus())
    async with Relay(config=RelayConfig(typing_timeout=60), backplane=backplane) as relay:
        transport = MemoryTransport(relay)
        async with transport.connect("bob") as bob:
            await join(bob)
            typing = anyio.Event()
            leave = anyio.Event()

            async def alice_types_then_leaves() -> None:
                async with transport.connect("alice") as alice:
                    await join(alice)
                    await alice.request("typing:start", {"conversationId": "c1"})
                    typing.set()
                    await leave.wait()

            async with anyio.create_task_group() as tg:
                tg.start_soon(alice_types_then_leaves)
                with anyio.fail_after(WAIT):
                    await typing.wait()
                backplane.armed = True
                leave.set()
                with anyio.fail_after(WAIT):
                    await backplane.held.wait()
                # alice's connection is half forgotten: its typing:stop is being published.
                try:
                    await relay.message_received(message(sender="bob"))
                finally:
                    backplane.release.set()
            assert names(await settle(bob)) == [
                "user:online",
                "typing:start",
                "typing:stop",
                "message:received",
            ]
            assert relay.members("c1") == {"bob"}
