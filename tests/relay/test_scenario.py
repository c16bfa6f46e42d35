"""One conversation from first connect to last disconnect: the relay's contract as a story.

Two users, three tabs: Alice on her laptop and her phone, Bob on his desktop. Every
step is a request a real client sends or a call a real application makes, through
the in-memory transport (which encodes and decodes every frame as the adapters do),
on asyncio and on trio. Timers are short, and the story waits for their events,
never for time.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from unittest.mock import ANY

import pytest

from chatrelay import (
    Delivery,
    Identity,
    Limits,
    MessageStatus,
    Relay,
    RelayConfig,
    Sender,
    codec,
    is_forward,
)
from chatrelay.exceptions import ConnectionClosed
from chatrelay.testing import MemoryTransport, ReceivedEvent
from relay_helpers import WAIT, join, message, names, settle

pytestmark = pytest.mark.anyio

CONFIG = RelayConfig(
    typing_timeout=0.1,
    presence_grace=0.05,  # shorter than typing_timeout: a typing timeout serves as a clock
    limits=Limits(max_payload_bytes=1024, outgoing_bytes=2_000, rate=5, burst=60),
)

MEMBERS = {"c1": {"alice", "bob"}, "c2": {"alice"}}
"""The application's database: who belongs to which conversation."""


async def authorize_join(identity: Identity, conversation_id: str) -> bool:
    return identity.user_id in MEMBERS.get(conversation_id, set())


def error_of(reply: dict[str, Any]) -> tuple[int, str, str | None]:
    assert reply["ok"] is False
    error = reply["error"]
    return error["status"], error["code"], error.get("event")


def presence_of(events: list[ReceivedEvent], user: str) -> list[str]:
    return [e.event for e in events if e.event.startswith("user:") and e.data["userId"] == user]


async def test_a_conversation_from_first_connect_to_last_disconnect() -> None:
    deliveries: list[Delivery] = []

    async def on_delivered(delivery: Delivery) -> None:
        deliveries.append(delivery)

    relay = Relay(config=CONFIG, authorize_join=authorize_join, on_delivered=on_delivered)
    async with relay, MemoryTransport(relay).connect("bob") as desktop:
        transport = MemoryTransport(relay)

        # --- Alice opens her laptop and Bob is told; her phone adds nothing. -------
        async with transport.connect("alice") as laptop, transport.connect("alice") as phone:
            online = await desktop.receive("user:online", timeout=WAIT)
            assert online.data == {"userId": "alice"}
            assert relay.online_users() == {"alice", "bob"}
            assert await settle(desktop) == []

            # --- Joining: the ack tells who is there and who is typing. ------------
            assert await join(laptop, "c1") == {
                "ok": True,
                "conversationId": "c1",
                "members": ["alice"],
                "typing": [],
                "position": {"offset": 0, "epoch": ANY},
            }
            await laptop.request("typing:start", {"conversationId": "c1"})
            assert await desktop.request("conversation:join", {"conversationId": "c1"}) == {
                "ok": True,
                "conversationId": "c1",
                "members": ["alice", "bob"],
                "typing": ["alice"],
                "position": {"offset": 0, "epoch": ANY},
            }
            await join(phone, "c1")
            await join(laptop, "c2")  # Alice's notes to herself

            # Bob may not join Alice's notes: the application's authorize_join says no.
            reply = await desktop.request("conversation:join", {"conversationId": "c2"})
            assert error_of(reply) == (403, "forbidden", "conversation:join")
            [error] = await settle(desktop)
            assert (error.event, error.data) == ("error", reply["error"])

            # --- Typing: however many keystrokes, one start and one stop. ----------
            # The laptop's first episode ends by itself, by timeout.
            stop = await desktop.receive("typing:stop", timeout=WAIT)
            assert stop.data["userId"] == "alice"
            assert await settle(desktop) == []
            for _ in range(5):
                assert await laptop.request("typing:start", {"conversationId": "c1"}) == {
                    "ok": True
                }
            await laptop.request("typing:stop", {"conversationId": "c1"})
            typing = await settle(desktop)
            assert [(e.event, e.data["userId"], e.data["isTyping"]) for e in typing] == [
                ("typing:start", "alice", True),
                ("typing:stop", "alice", False),
            ]
            # Alice's other tab sees it too (room events reach the sender's other
            # tabs; it joined after the first start). The tab that typed is not told
            # what it did itself, only that its first episode timed out: nothing it
            # sent caused that, and it learns to send typing:start again.
            assert names(await settle(phone)) == ["typing:stop", "typing:start", "typing:stop"]
            assert names(await settle(laptop)) == ["typing:stop"]

            # Typing where one did not join, or in someone else's name: refused.
            reply = await desktop.request("typing:start", {"conversationId": "c2"})
            assert error_of(reply) == (409, "not_in_conversation", "typing:start")
            reply = await desktop.request(
                "typing:start", {"conversationId": "c1", "userId": "alice"}
            )
            assert error_of(reply) == (403, "forbidden", "typing:start")
            assert names(await settle(desktop)) == ["error", "error"]
            assert await settle(laptop) == []

            # --- A message: the application stored it and tells the room. ----------
            # Bob was typing; his message ends his episode.
            await desktop.request("typing:start", {"conversationId": "c1"})
            await relay.message_received(
                message("m1", sender="bob", text="Lunch?"),
                sender=Sender(id="bob", name="Bob"),
                exclude=desktop.connection.id,  # the tab that sent it shows it already
            )
            for tab in (laptop, phone):
                events = await settle(tab)
                assert names(events) == ["typing:start", "message:received", "typing:stop"]
                received = events[1]
                assert received.data["message"]["content"] == {"text": "Lunch?"}
                assert received.data["sender"] == {"id": "bob", "name": "Bob"}
                assert received.wants_ack
                # Acknowledging it tells the application it was delivered, once
                # however many of Alice's tabs acknowledge it.
                await tab.ack(received)
            assert await settle(desktop) == []
            assert [(d.user_id, d.message_id) for d in deliveries] == [("alice", "m1")]

            # Alice replies from her laptop. Bob's ack is a delivery; her phone's is
            # not: a sender's own tabs do not count.
            await relay.message_received(message("m2", text="Yes!"), exclude=laptop.connection.id)
            await phone.ack(await phone.receive("message:received", timeout=WAIT))
            await desktop.ack(await desktop.receive("message:received", timeout=WAIT))
            assert [(d.user_id, d.message_id) for d in deliveries] == [
                ("alice", "m1"),
                ("bob", "m2"),
            ]

            # A note in c2 reaches Alice's tab in c2, and nobody outside it.
            await relay.message_received(message("n1", conversation="c2", text="milk"))
            assert names(await settle(laptop)) == ["message:received"]
            assert await settle(desktop) == []
            assert await settle(phone) == []

            # --- Status: sent -> delivered -> read, forward only. ------------------
            current = MessageStatus.SENT
            for status in (MessageStatus.DELIVERED, MessageStatus.READ):
                assert is_forward(current, status)
                await relay.message_status("c1", "m2", status, user_id="bob")
                current = status
            assert not is_forward(current, MessageStatus.DELIVERED)  # the app holds it
            with pytest.raises(ValueError, match="unknown message status"):
                await relay.message_status("c1", "m2", "seen", user_id="bob")
            for tab in (laptop, phone, desktop):
                statuses = await settle(tab)
                assert [(e.event, e.data["status"]) for e in statuses] == [
                    ("message:status", "delivered"),
                    ("message:status", "read"),
                ]

            # --- Mistakes: one error each; the connection stays and works. ---------
            bad_requests: list[tuple[str, object, str]] = [
                ("conversation:join", {"conversationId": 42}, "invalid_payload"),
                ("conversation:join", {}, "invalid_payload"),
                ("conversation:leave", {"conversationId": "c1", "x": 1}, "invalid_payload"),
                ("typing:start", "c1", "invalid_payload"),
                ("message:send", {"conversationId": "c1"}, "unknown_event"),
                ("typing:start", {"conversationId": "x" * 2000}, "payload_too_large"),
            ]
            for event, data, code in bad_requests:
                reply = await desktop.request(event, data)
                assert (reply["ok"], reply["error"]["code"]) == (False, code)
                [error] = await settle(desktop)
                assert error.data == reply["error"]
            assert error_of(reply) == (413, "payload_too_large", "typing:start")
            assert await desktop.request("typing:stop", {"conversationId": "c1"}) == {"ok": True}

            # --- A flood: refused with rate_limited, and told so only once. --------
            refused = 0
            for _ in range(100):
                reply = await desktop.request("typing:stop", {"conversationId": "c1"})
                if not reply["ok"]:
                    assert error_of(reply) == (429, "rate_limited", "typing:stop")
                    refused += 1
            assert refused > 0
            errors = await settle(desktop)
            assert [(e.event, e.data["code"]) for e in errors] == [("error", "rate_limited")]

            # --- A phone on a stalled network cannot hold the others back. ---------
            phone.pause()
            # A status event is about 150 bytes: 40 of them overflow the phone's 2,000.
            for number in range(40):
                await relay.message_status("c1", f"s{number}", "read", user_id="bob")
                status_event = await laptop.receive("message:status", timeout=WAIT)
                assert status_event.data["messageId"] == f"s{number}"
            assert phone.connection.close_reason == "slow_consumer"
            phone.resume()
            with pytest.raises(ConnectionClosed):
                await phone.receive("user:offline", timeout=WAIT)
            assert phone.close_reason == "slow_consumer"
            assert relay.is_online("alice")  # her laptop is still there

            # --- Leaving a room ends one's typing there. ---------------------------
            await laptop.request("typing:start", {"conversationId": "c2"})
            assert await laptop.request("conversation:leave", {"conversationId": "c2"}) == {
                "ok": True,
                "conversationId": "c2",
            }
            assert relay.members("c2") == frozenset()
            assert relay.typing_users("c2") == frozenset()

            # --- A tab that vanishes while typing: the room still gets the stop. ---
            async with transport.connect("bob") as tablet:
                await join(tablet, "c1")
                await tablet.request("typing:start", {"conversationId": "c1"})
                await laptop.receive("typing:start", timeout=WAIT)
            stop = await laptop.receive("typing:stop", timeout=WAIT)
            assert stop.data["userId"] == "bob"
            assert await settle(laptop) == []

        # --- Alice closed every tab; she reopens the laptop at once (a reload). ----
        # Inside the grace period that is no departure: Bob hears nothing. Her new
        # tab's typing times out later than her grace period would have ended, so
        # once its stop arrives, an offline would have arrived before it.
        async with transport.connect("alice") as laptop:
            await join(laptop, "c1")
            await laptop.request("typing:start", {"conversationId": "c1"})
            await desktop.receive("typing:stop", timeout=WAIT)
            assert presence_of(desktop.received, "alice") == ["user:online"]
            left = datetime.now(UTC)

        # --- Alice leaves for real: after the grace period Bob hears it. -----------
        offline = await desktop.receive("user:offline", timeout=WAIT)
        assert offline.data["userId"] == "alice"
        last_seen = codec.parse_timestamp(offline.data["lastSeen"])
        assert abs((last_seen - left).total_seconds()) < CONFIG.presence_grace
        assert not relay.is_online("alice")
        assert relay.members("c1") == {"bob"}
        assert presence_of(desktop.received, "alice") == ["user:online", "user:offline"]
    assert relay.statistics().connections == 0
