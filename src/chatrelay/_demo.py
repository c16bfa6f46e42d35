"""``chatrelay demo``: a conversation between two users, printed as it crosses the wire."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from ._config import RelayConfig
from ._relay import Relay
from .events import Message, MessageStatus
from .testing import MemoryClient, MemoryTransport

__all__ = ["run_demo"]


def _show(who: str, direction: str, event: str, data: object) -> None:
    print(f"  {who:<13} {direction} {event:<18} {json.dumps(data, separators=(',', ':'))}")


async def _request(client: MemoryClient, label: str, event: str, data: dict[str, str]) -> None:
    _show(label, "->", event, data)
    _show(label, "<-", "(ack)", await client.request(event, data))


async def _take(client: MemoryClient, label: str, event: str) -> None:
    received = await client.receive(event, timeout=5)
    _show(label, "<-", received.event, received.data)


async def run_demo(typing_timeout: float) -> None:
    """Run the scripted conversation and print every event (for ``chatrelay demo``)."""
    # The demo says itself that identity comes from ?userId=; the warning would repeat it.
    logging.getLogger("chatrelay.auth").setLevel(logging.ERROR)
    config = RelayConfig(typing_timeout=typing_timeout, presence_grace=0.3)
    join = {"conversationId": "c1"}
    async with Relay(config=config) as relay:
        transport = MemoryTransport(relay)
        print("chatrelay demo: one relay, in memory, development authentication (?userId=)")
        print("alice has two tabs (laptop, phone), bob one; -> is a request, <- an event\n")
        async with transport.connect("bob") as bob:
            async with transport.connect("alice") as laptop, transport.connect("alice") as phone:
                print("1. alice comes online (once, for two tabs)")
                await _take(bob, "bob", "user:online")

                print("\n2. everyone joins conversation c1")
                await _request(laptop, "alice/laptop", "conversation:join", join)
                await _request(phone, "alice/phone", "conversation:join", join)
                await _request(bob, "bob", "conversation:join", join)

                print(
                    f"\n3. alice types (3 keystrokes); it stops by itself after {typing_timeout}s"
                )
                for _ in range(3):
                    await laptop.request("typing:start", join)
                _show("alice/laptop", "->", "typing:start", join)
                await _take(bob, "bob", "typing:start")
                await _take(bob, "bob", "typing:stop")

                print("\n4. the app stores alice's message, then calls relay.message_received()")
                await relay.message_received(
                    Message(
                        id="m1",
                        conversation_id="c1",
                        sender_id="alice",
                        type="text",
                        content={"text": "Lunch at noon?"},
                        status=MessageStatus.SENT,
                        created_at=datetime.now(UTC),
                    )
                )
                await _take(bob, "bob", "message:received")
                await _take(phone, "alice/phone", "message:received")

                print("\n5. bob reads it; the app calls relay.message_status()")
                await relay.message_status("c1", "m1", MessageStatus.READ, user_id="bob")
                await _take(laptop, "alice/laptop", "message:status")

            print(f"\n6. alice closes both tabs; offline after the {config.presence_grace}s grace")
            await _take(bob, "bob", "user:offline")
        print(f"\n{relay.statistics()}")
