"""The recovery scenarios every backplane must pass, on whatever relays ``servers`` makes.

A test module collects them by importing them and defines the fixture ``servers``
(`MakeServers`): ``tests/relay/test_recovery.py`` on the memory backplane,
``tests/e2e/test_redis_recovery.py`` on Redis. A client that joins with the position
of the last room event it got receives every event after it, once, in offset order,
before the ack and before any live event of the room (``recovered: true``); or
nothing (``recovered: false``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest

from chatrelay import HistorySettings, Relay
from chatrelay.testing import MemoryClient, MemoryTransport, ReceivedEvent
from relay_helpers import WAIT, join, message, settle

ROOM_EVENTS = ("message:received", "message:status")


def position_of(event: ReceivedEvent) -> dict[str, Any]:
    position: dict[str, Any] = event.data["position"]
    return position


def ids(events: list[ReceivedEvent]) -> list[str]:
    """The message ids of ``message:received`` events, in order."""
    return [e.data["message"]["id"] for e in events if e.event == "message:received"]


async def resume(client: MemoryClient, position: dict[str, Any] | None) -> dict[str, Any]:
    reply = await client.request(
        "conversation:join", {"conversationId": "c1", "position": position}
    )
    assert reply["ok"] is True, reply
    return reply


async def received_until_ack(
    client: MemoryClient, position: dict[str, Any] | None
) -> tuple[list[ReceivedEvent], dict[str, Any]]:
    """Join with ``position``; return the room events pushed before the ack, and the ack."""
    reply = await resume(client, position)
    # Events pushed before the ack are in the client's record before request() returns.
    before = [e for e in client.received if e.event in ROOM_EVENTS]
    return before, reply


async def emit(relay: Relay, first: int, last: int) -> None:
    """Emit e<first>..e<last>, and return once they are out (numbered, on Redis)."""
    for n in range(first, last + 1):
        await relay.message_received(message(f"e{n}"))
    await relay.flush()


class Servers:
    """Relays sharing one history, and a way to lose it (as a flushed Redis would)."""

    def __init__(self, relays: list[Relay], lose: Callable[[], Awaitable[None]]) -> None:
        self.relays = relays
        self._lose = lose

    async def lose_history(self) -> None:
        await self._lose()


MakeServers = Callable[..., AbstractAsyncContextManager[Servers]]
"""``make(count=1, *, history=None)``: the scenarios below run on any backplane."""


async def received_five(relay: Relay) -> dict[str, Any]:
    """A client that got e1..e5 live and went away: the position of e5."""
    async with MemoryTransport(relay).connect("bob") as bob:
        reply = await resume(bob, None)
        assert reply["position"]["offset"] == 0
        await emit(relay, 1, 5)
        events = [await bob.receive("message:received", timeout=WAIT) for _ in range(5)]
        assert ids(events) == ["e1", "e2", "e3", "e4", "e5"]
        offsets = [position_of(e)["offset"] for e in events]
        assert offsets == [1, 2, 3, 4, 5]
        return position_of(events[-1])


@pytest.mark.parametrize("nodes", [1, 2], ids=["same-server", "other-server"])
async def test_missed_events_arrive_once_in_order_before_the_ack(
    servers: MakeServers, nodes: int
) -> None:
    async with servers(nodes) as running:
        first, last_node = running.relays[0], running.relays[-1]
        last = await received_five(first)
        await emit(first, 6, 255)
        async with MemoryTransport(last_node).connect("bob") as bob:
            before, reply = await received_until_ack(bob, last)
            assert reply["recovered"] is True
            assert ids(before) == [f"e{n}" for n in range(6, 256)]
            assert [position_of(e)["offset"] for e in before] == list(range(6, 256))
            assert reply["position"] == {"offset": 255, "epoch": last["epoch"]}
            # Replayed events ask for an ack like live ones.
            assert all(e.wants_ack for e in before)
            assert ids(await settle(bob)) == ids(before)  # consumed: what follows is live
            await first.message_received(message("e256"))
            live = await bob.receive("message:received", timeout=WAIT)
            assert ids([live]) == ["e256"]
            assert position_of(live)["offset"] == 256
            assert not [e for e in await settle(bob) if e.event in ROOM_EVENTS]


async def test_more_missed_than_the_recovery_limit_is_not_recovered(servers: MakeServers) -> None:
    async with servers(history=HistorySettings(recovery_limit=300)) as running:
        relay = running.relays[0]
        last = await received_five(relay)
        await emit(relay, 6, 306)  # 301 missed
        async with MemoryTransport(relay).connect("bob") as bob:
            before, reply = await received_until_ack(bob, last)
            assert reply["recovered"] is False
            assert before == []
            assert reply["position"]["offset"] == 306
        assert relay.statistics().recoveries_failed == 1


async def test_exactly_the_recovery_limit_is_recovered(servers: MakeServers) -> None:
    async with servers(history=HistorySettings(recovery_limit=300)) as running:
        relay = running.relays[0]
        last = await received_five(relay)
        await emit(relay, 6, 305)  # 300 missed
        async with MemoryTransport(relay).connect("bob") as bob:
            before, reply = await received_until_ack(bob, last)
            assert reply["recovered"] is True
            assert len(before) == 300


async def test_more_missed_than_the_history_keeps_is_not_recovered(servers: MakeServers) -> None:
    settings = HistorySettings(size=100, recovery_limit=5000)
    async with servers(history=settings) as running:
        relay = running.relays[0]
        last = await received_five(relay)
        await emit(relay, 6, 2005)
        async with MemoryTransport(relay).connect("bob") as bob:
            before, reply = await received_until_ack(bob, last)
            assert reply["recovered"] is False
            assert before == []


async def test_a_lost_history_is_a_new_epoch_and_not_recovered(servers: MakeServers) -> None:
    async with servers() as running:
        relay = running.relays[0]
        last = await received_five(relay)
        await running.lose_history()
        await emit(relay, 6, 7)
        async with MemoryTransport(relay).connect("bob") as bob:
            before, reply = await received_until_ack(bob, last)
            assert reply["recovered"] is False
            assert before == []
            assert reply["position"]["epoch"] != last["epoch"]


async def test_a_room_where_nothing_was_sent_resumes_with_nothing(servers: MakeServers) -> None:
    async with servers() as running:
        relay = running.relays[0]
        async with MemoryTransport(relay).connect("bob") as bob:
            first = await resume(bob, None)
        for _ in range(3):  # disconnect and resume, three times, with no new event
            async with MemoryTransport(relay).connect("bob") as bob:
                before, reply = await received_until_ack(bob, first["position"])
                assert reply["recovered"] is True
                assert before == []
                assert reply["position"] == first["position"]


async def test_typing_and_presence_are_never_replayed(servers: MakeServers) -> None:
    async with servers() as running:
        relay = running.relays[0]
        last = await received_five(relay)
        async with MemoryTransport(relay).connect("alice") as alice:
            await join(alice)
            await alice.request("typing:start", {"conversationId": "c1"})
            await alice.request("typing:stop", {"conversationId": "c1"})
            await relay.message_status("c1", "e5", "read", user_id="alice")
            await relay.flush()
        async with MemoryTransport(relay).connect("bob") as bob:
            await resume(bob, last)
            replayed = [e.event for e in bob.received]
            assert "typing:start" not in replayed
            assert "typing:stop" not in replayed
            assert [e for e in replayed if e in ROOM_EVENTS] == ["message:status"]


async def test_join_without_position_has_the_current_one_and_no_recovered_field(
    servers: MakeServers,
) -> None:
    async with servers() as running:
        relay = running.relays[0]
        await emit(relay, 1, 3)  # nobody in the room: recorded all the same
        async with MemoryTransport(relay).connect("bob") as bob:
            reply = await resume(bob, None)
            assert reply["position"]["offset"] == 3
            assert "recovered" not in reply
            assert await settle(bob, presence=False) == []


async def test_status_events_carry_positions_too(servers: MakeServers) -> None:
    async with servers(2) as running, MemoryTransport(running.relays[1]).connect("bob") as bob:
        a, b = running.relays
        await join(bob)
        await a.message_status("c1", "m1", "read", user_id="alice")
        await a.flush()  # numbered before b emits
        await b.message_received(message("m2"))
        first = await bob.receive("message:status", timeout=WAIT)
        second = await bob.receive("message:received", timeout=WAIT)
        assert position_of(first)["offset"] == 1
        assert position_of(second)["offset"] == 2
        assert position_of(first)["epoch"] == position_of(second)["epoch"]
