"""Two relay servers and a worker on one Redis: what the worker emits reaches both.

In production each relay runs in its own server process behind a load balancer,
and the worker is a REST handler or a job queue. Here all three share one process
so that the example runs alone; clients use the in-memory transport.

Run it with a Redis at ``REDIS_URL`` (default ``redis://127.0.0.1:6379/0``)::

    python examples/redis_cluster.py
"""

import os
from datetime import UTC, datetime

import anyio

from chatrelay import Emitter, Message, MessageStatus, Relay
from chatrelay.backplanes.redis import RedisBackplane
from chatrelay.testing import MemoryTransport

# --8<-- [start:server]
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


def make_relay() -> Relay:
    """The relay of one server process: the same as alone, plus the Redis backplane."""
    return Relay(backplane=RedisBackplane(REDIS_URL))


# --8<-- [end:server]


# --8<-- [start:worker]
async def store_and_announce(text: str) -> None:
    """What a worker does after it stored a message: no sockets, only Redis."""
    message = Message(
        id="m1",
        conversation_id="c1",
        sender_id="alice",
        type="text",
        content={"text": text},
        status=MessageStatus.SENT,
        created_at=datetime.now(UTC),
    )
    async with Emitter(RedisBackplane(REDIS_URL)) as emitter:
        await emitter.message_received(message)


# --8<-- [end:worker]


async def main() -> list[str]:
    """Connect alice to one server and bob to the other, then let the worker speak."""
    seen: list[str] = []
    async with (
        make_relay() as server_a,
        make_relay() as server_b,
        MemoryTransport(server_a).connect("alice") as alice,
        MemoryTransport(server_b).connect("bob") as bob,
    ):
        for client in (alice, bob):
            await client.request("conversation:join", {"conversationId": "c1"})
        await store_and_announce("Hi from a worker!")
        for client in (alice, bob):
            event = await client.receive("message:received")
            seen.append(f"{client.user_id}: {event.data['message']['content']['text']}")
    return seen


if __name__ == "__main__":
    for line in anyio.run(main, backend="asyncio"):
        print(line)
