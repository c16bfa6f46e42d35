"""The write-only emitter: a node without connections, on the memory bus.

What it emits is built by the same code as a relay's emits, so clients cannot tell
where an event came from; it answers presence like any node.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from chatrelay import Delivery, Emitter, Message, MessageStatus, Relay, RelayConfig
from chatrelay.backplanes import LocalBackplane, MemoryBus
from chatrelay.exceptions import BackplaneError
from relay_helpers import joined, message
from waiting import eventually

pytestmark = pytest.mark.anyio

CONFIG = RelayConfig(heartbeat_interval=0.05, node_timeout=0.3, presence_grace=0.05)
WAIT = 5.0


async def test_the_emitter_reaches_every_relay_and_its_acks_count() -> None:
    bus = MemoryBus()
    deliveries: list[Delivery] = []

    async def on_delivered(delivery: Delivery) -> None:
        deliveries.append(delivery)

    async with (
        Relay(config=CONFIG, backplane=bus.backplane(), on_delivered=on_delivered) as a,
        Relay(config=CONFIG, backplane=bus.backplane()) as b,
        Emitter(bus.backplane(), config=CONFIG) as emitter,
        joined(a, "alice") as alice,
        joined(b, "carol") as carol,
    ):
        await emitter.message_received(message("m1", sender="bob"))
        await emitter.message_status("c1", "m1", "read", user_id="carol")
        for client in (alice, carol):
            received = await client.receive("message:received", timeout=WAIT)
            assert received.wants_ack
            assert received.data["message"]["id"] == "m1"
            status = await client.receive("message:status", timeout=WAIT)
            assert status.data["status"] == "read"
        await eventually(lambda: len(deliveries) == 1)
        assert deliveries[0].user_id == "alice"
        await eventually(lambda: emitter.is_online("carol") and emitter.is_online("alice"))
        assert emitter.online_users() == {"alice", "carol"}
        assert emitter.members("c1") == {"alice", "carol"}
        await carol.request("typing:start", {"conversationId": "c1"})
        await eventually(lambda: emitter.typing_users("c1") == {"carol"})
        assert emitter.statistics().nodes == 2
        assert a.statistics().nodes == 2  # b and the emitter


async def test_the_emitter_leaves_the_cluster_when_closed() -> None:
    bus = MemoryBus()
    async with Relay(config=CONFIG, backplane=bus.backplane()) as a:
        async with Emitter(bus.backplane(), config=CONFIG) as emitter:
            await emitter.message_received(message(sender="bob"))
            await eventually(lambda: a.statistics().nodes == 1)
        await eventually(lambda: a.statistics().nodes == 0)


async def test_the_emitter_needs_a_shared_running_backplane() -> None:
    with pytest.raises(ValueError, match="shared backplane"):
        Emitter(LocalBackplane())
    emitter = Emitter(MemoryBus().backplane())
    with pytest.raises(RuntimeError, match="not running"):
        await emitter.message_received(message(sender="bob"))
    async with emitter:
        with pytest.raises(BackplaneError):
            await emitter.message_received(
                Message(
                    id="big",
                    conversation_id="c1",
                    sender_id="bob",
                    type="text",
                    content={"text": "x" * (1 << 20)},
                    status=MessageStatus.SENT,
                    created_at=datetime(2026, 1, 2, tzinfo=UTC),
                )
            )
