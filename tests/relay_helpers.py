"""Helpers for the relay tests: a queue marker, relays in the background, joined clients.

No helper lets time pass by sleeping: each one waits for something to happen and gives
up after a bound (``anyio.fail_after``), so a test is as fast as the relay and fails
instead of hanging. The wait for a condition is ``waiting.eventually``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import anyio
import anyio.abc

from chatrelay import Message, MessageStatus, Relay, RelayConfig
from chatrelay.backplanes import MemoryBackplane
from chatrelay.exceptions import ConnectionClosed
from chatrelay.lowlevel import Outbound
from chatrelay.testing import MemoryClient, MemoryTransport, ReceivedEvent

WAIT = 2.0
"""The bound on every wait: far above what the relay needs, far below a hang."""

FAST = RelayConfig(typing_timeout=0.05, presence_grace=0.05)
"""Short timers, so a test waits for a timeout's event within milliseconds."""

MARKER = "test:marker"


PRESENCE = frozenset({"user:online", "user:offline"})


async def settle(client: MemoryClient, *, presence: bool = True) -> list[ReceivedEvent]:
    """Return the events pushed to ``client`` so far and not received yet, in order.

    A marker goes into the connection's queue behind them; a connection's events arrive
    in order, so once the marker arrives, nothing pushed before it is still on its way.
    Use it to assert that something was *not* sent (an echo, a second ``typing:start``).
    With ``presence=False``, ``user:online`` / ``user:offline`` (which every connect and
    disconnect causes) are left out.
    """
    client.connection._push(Outbound(MARKER, {}))
    events: list[ReceivedEvent] = []
    while True:
        event = await client.receive(timeout=WAIT)
        if event.event == MARKER:
            return events
        if presence or event.event not in PRESENCE:
            events.append(event)


def names(events: list[ReceivedEvent]) -> list[str]:
    """The event names, for a compact assertion on a sequence."""
    return [event.event for event in events]


async def join(client: MemoryClient, conversation: str = "c1") -> dict[str, object]:
    """Join a conversation and return the ack, which must be a success."""
    reply = await client.request("conversation:join", {"conversationId": conversation})
    assert reply["ok"] is True, reply
    return reply


def message(
    message_id: str = "m1", *, conversation: str = "c1", sender: str = "alice", text: str = "hi"
) -> Message:
    """A stored text message, as the application hands it to the emitter."""
    return Message(
        id=message_id,
        conversation_id=conversation,
        sender_id=sender,
        type="text",
        content={"text": text},
        status=MessageStatus.SENT,
        created_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )


@asynccontextmanager
async def in_background(relay: Relay) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """Run ``relay`` in a task of its own and yield a function that stops it.

    A relay is stopped by the task that started it; running it apart lets a test shut
    it down while clients (whose contexts live in the test's task) are still connected.
    """
    stop = anyio.Event()
    stopped = anyio.Event()

    async def run(*, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with relay:
            task_status.started()
            await stop.wait()
        stopped.set()

    async def shutdown() -> None:
        stop.set()
        with anyio.fail_after(WAIT):
            await stopped.wait()

    async with anyio.create_task_group() as tg:
        await tg.start(run)
        try:
            yield shutdown
        finally:
            stop.set()


class SilentBackplane(MemoryBackplane):
    """A memory backplane whose node can fall silent, like a server killed with -9.

    While :attr:`silent`, nothing it publishes reaches the bus (heartbeats included);
    it still receives. Setting it back to ``False`` is the node coming back.
    """

    silent = False

    async def publish(self, topic: str, payload: bytes) -> None:
        if not self.silent:
            await super().publish(topic, payload)


@asynccontextmanager
async def joined(relay: Relay, user: str, conversation: str = "c1") -> AsyncIterator[MemoryClient]:
    """Connect ``user`` to ``relay`` (acking every event) and join ``conversation``."""
    async with MemoryTransport(relay).connect(user, auto_ack=True) as client:
        await join(client, conversation)
        yield client


async def closed_with(client: MemoryClient, each: float = WAIT) -> str:
    """The reason the client's connection was closed with (waiting, bounded).

    What was sent before the close still arrives first: it is read past, each
    event within ``each`` seconds.
    """
    for _ in range(100):
        try:
            await client.receive(timeout=each)
        except ConnectionClosed as closed:
            return str(closed.reason)
    raise AssertionError("the connection was not closed")
