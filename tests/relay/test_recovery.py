"""Positions and recovery on the memory backplane, with a fake clock where time matters.

The scenarios shared with Redis (``recovery_scenarios``) run here on the memory bus;
the ones below need what only memory gives: a fake clock, a slowed history.

A client that joins with the position of the last room event it got receives every
event after it, once, in offset order, before the ack and before any live event of the
room (``recovered: true``); or nothing (``recovered: false``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from chatrelay import Emitter, HistorySettings, Relay, RelayConfig
from chatrelay.abc import History, HistoryRead
from chatrelay.backplanes import LocalBackplane, MemoryBus
from chatrelay.events import Position
from chatrelay.testing import MemoryClient, MemoryTransport
from recovery_scenarios import (  # the shared scenarios, run here on the memory bus
    ROOM_EVENTS,
    MakeServers,
    Servers,
    emit,
    ids,
    position_of,
    received_five,
    received_until_ack,
    resume,
    test_a_lost_history_is_a_new_epoch_and_not_recovered,
    test_a_room_where_nothing_was_sent_resumes_with_nothing,
    test_exactly_the_recovery_limit_is_recovered,
    test_join_without_position_has_the_current_one_and_no_recovered_field,
    test_missed_events_arrive_once_in_order_before_the_ack,
    test_more_missed_than_the_history_keeps_is_not_recovered,
    test_more_missed_than_the_recovery_limit_is_not_recovered,
    test_status_events_carry_positions_too,
    test_typing_and_presence_are_never_replayed,
)
from relay_helpers import WAIT, join, message, settle

pytestmark = pytest.mark.anyio

__all__ = [
    "test_a_lost_history_is_a_new_epoch_and_not_recovered",
    "test_a_room_where_nothing_was_sent_resumes_with_nothing",
    "test_exactly_the_recovery_limit_is_recovered",
    "test_join_without_position_has_the_current_one_and_no_recovered_field",
    "test_missed_events_arrive_once_in_order_before_the_ack",
    "test_more_missed_than_the_history_keeps_is_not_recovered",
    "test_more_missed_than_the_recovery_limit_is_not_recovered",
    "test_status_events_carry_positions_too",
    "test_typing_and_presence_are_never_replayed",
]


class FakeClock:
    """Seconds that pass only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def memory_servers(
    count: int = 1, *, history: HistorySettings | None = None, clock: FakeClock | None = None
) -> AsyncIterator[Servers]:
    bus = MemoryBus(clock=clock)
    config = RelayConfig(history=history or HistorySettings())
    async with AsyncExitStack() as stack:
        nodes = [
            await stack.enter_async_context(Relay(config=config, backplane=bus.backplane()))
            for _ in range(count)
        ]

        async def lose() -> None:
            bus.lose_history()

        yield Servers(nodes, lose)


@pytest.fixture
def servers() -> MakeServers:
    """The memory backplane; ``tests/e2e/test_redis_recovery.py`` runs these on Redis."""
    return memory_servers


@pytest.mark.parametrize(("offline", "recovered"), [(59.0, True), (61.0, False)])
async def test_history_expires_its_ttl_after_the_last_event(
    offline: float, recovered: bool
) -> None:
    clock = FakeClock()
    async with memory_servers(history=HistorySettings(ttl=60), clock=clock) as running:
        relay = running.relays[0]
        last = await received_five(relay)
        clock.now += offline  # no traffic meanwhile
        async with MemoryTransport(relay).connect("bob") as bob:
            before, reply = await received_until_ack(bob, last)
            assert reply["recovered"] is recovered
            assert before == []


class SlowReads(History):
    """A memory history whose reads wait until a test lets them go."""

    def __init__(self, inner: History) -> None:
        self.settings = inner.settings
        self.inner = inner
        self.reads = 0
        self.reading = anyio.Event()
        self.go = anyio.Event()

    async def position(self, conversation: str) -> Position:
        return await self.inner.position(conversation)

    async def append(self, conversation: str, event: str, json: str) -> Position:
        return await self.inner.append(conversation, event, json)

    async def read(self, conversation: str, after: Position, limit: int) -> HistoryRead:
        self.reads += 1
        self.reading.set()
        await self.go.wait()
        return await self.inner.read(conversation, after, limit)


class SlowBackplane(LocalBackplane):
    def __init__(self) -> None:
        super().__init__()
        self.slow: SlowReads | None = None

    def history(self, settings: HistorySettings) -> History:
        self.slow = SlowReads(super().history(settings))
        return self.slow


@asynccontextmanager
async def slowed_relay() -> AsyncIterator[tuple[Relay, SlowReads]]:
    """A relay whose history reads wait for ``slow.go`` (set, until a test clears it)."""
    backplane = SlowBackplane()
    async with Relay(backplane=backplane) as relay:
        assert backplane.slow is not None
        backplane.slow.go.set()
        yield relay, backplane.slow


async def test_live_events_racing_the_history_read_leave_no_gap_and_no_duplicate() -> None:
    async with slowed_relay() as (relay, slow):
        last = await received_five(relay)
        await emit(relay, 6, 10)
        slow.go = anyio.Event()
        async with MemoryTransport(relay).connect("bob") as bob, anyio.create_task_group() as tg:
            replies: list[dict[str, Any]] = []

            async def resuming() -> None:
                replies.append(await resume(bob, last))

            tg.start_soon(resuming)
            with anyio.fail_after(WAIT):
                await slow.reading.wait()
            await emit(relay, 11, 60)  # 50 emitted while the read is held
            slow.go.set()
        assert replies[0]["recovered"] is True
        got = [e for e in bob.received if e.event == "message:received"]
        assert ids(got) == [f"e{n}" for n in range(6, 61)]
        assert replies[0]["position"]["offset"] == 60


async def test_many_clients_resuming_one_room_share_the_reads() -> None:
    async with slowed_relay() as (relay, slow):
        last = await received_five(relay)
        earlier = dict(last, offset=3)
        await emit(relay, 6, 8)
        slow.go = anyio.Event()
        slow.reads = 0
        transport = MemoryTransport(relay)
        outcomes: list[tuple[int, list[str]]] = []

        async def resuming(client: MemoryClient, position: dict[str, Any]) -> None:
            reply = await resume(client, position)
            assert reply["recovered"] is True
            outcomes.append((position["offset"], ids(client.events("message:received"))))

        async with AsyncExitStack() as stack:
            clients = [
                await stack.enter_async_context(transport.connect(f"u{n}")) for n in range(1000)
            ]
            async with anyio.create_task_group() as tg:
                for n, client in enumerate(clients):
                    tg.start_soon(resuming, client, last if n % 2 else earlier)
                with anyio.fail_after(WAIT):
                    await slow.reading.wait()
                await anyio.lowlevel.checkpoint()  # let every join reach the read
                slow.go.set()
        assert slow.reads <= 2 + 1  # distinct positions + 1
        assert len(outcomes) == 1000
        for offset, got in outcomes:
            assert got == [f"e{n}" for n in range(offset + 1, 9)]


async def test_a_conversation_one_may_no_longer_join_replays_nothing() -> None:
    allowed = {"bob"}

    async def authorize(identity: Any, conversation: str) -> bool:
        return identity.user_id in allowed

    async with Relay(authorize_join=authorize) as relay:
        last = await received_five(relay)
        await emit(relay, 6, 9)
        allowed.clear()
        async with MemoryTransport(relay).connect("bob") as bob:
            reply = await bob.request(
                "conversation:join", {"conversationId": "c1", "position": last}
            )
            assert reply["ok"] is False
            assert reply["error"]["code"] == "forbidden"
            assert [e for e in await settle(bob) if e.event in ROOM_EVENTS] == []


async def test_history_off_sends_no_positions() -> None:
    config = RelayConfig(history=HistorySettings(size=0))
    async with Relay(config=config) as relay, MemoryTransport(relay).connect("bob") as bob:
        reply = await join(bob)
        assert "position" not in reply
        await relay.message_received(message())
        event = await bob.receive("message:received", timeout=WAIT)
        assert "position" not in event.data
        again = await resume(bob, {"offset": 1, "epoch": "x"})
        assert "recovered" not in again or again["recovered"] is None


@pytest.mark.parametrize(
    "position",
    [{"offset": -1, "epoch": "e"}, {"offset": "1", "epoch": "e"}, {"offset": 1}, "p", 1],
    ids=["negative", "string-offset", "no-epoch", "string", "number"],
)
async def test_a_malformed_position_is_an_invalid_payload(position: object) -> None:
    async with Relay() as relay, MemoryTransport(relay).connect("bob") as bob:
        reply = await bob.request(
            "conversation:join", {"conversationId": "c1", "position": position}
        )
        assert reply["ok"] is False
        assert reply["error"]["code"] == "invalid_payload"
        error = await bob.receive("error", timeout=WAIT)
        assert error.data["code"] == "invalid_payload"


async def test_the_write_only_emitter_numbers_events_like_a_relay() -> None:
    bus = MemoryBus()
    async with (
        Relay(backplane=bus.backplane()) as relay,
        Emitter(bus.backplane()) as emitter,
        MemoryTransport(relay).connect("bob") as bob,
    ):
        ack = await resume(bob, None)
        await emitter.message_received(message("w1"))
        await relay.message_status("c1", "w1", "read", user_id="bob")
        await emitter.message_status("c1", "w1", "read", user_id="carol")
        first = await bob.receive("message:received", timeout=WAIT)
        statuses = [await bob.receive("message:status", timeout=WAIT) for _ in range(2)]
        offsets = [position_of(e)["offset"] for e in (first, *statuses)]
        assert offsets == [1, 2, 3]
        assert {position_of(e)["epoch"] for e in (first, *statuses)} == {ack["position"]["epoch"]}


async def test_a_replayed_message_is_reported_delivered_once_per_user() -> None:
    reported: list[tuple[str, str]] = []

    async def on_delivered(delivery: Any) -> None:
        reported.append((delivery.message_id, delivery.user_id))

    async with Relay(on_delivered=on_delivered) as relay:
        last = await received_five(relay)  # a tab of bob's got e1..e5 (and acked none)
        await emit(relay, 6, 7)
        transport = MemoryTransport(relay)
        earlier = dict(last, offset=4)  # each tab resumes from a position of its own
        async with (
            transport.connect("bob", auto_ack=True) as one,
            transport.connect("bob", auto_ack=True) as two,
            transport.connect("carol", auto_ack=True) as carol,
        ):
            for client, position in ((one, last), (two, earlier), (carol, last)):
                assert (await resume(client, position))["recovered"] is True
            with anyio.fail_after(5):
                await anyio.wait_all_tasks_blocked()  # every ack went through
    assert sorted(reported) == [
        ("e5", "bob"),
        ("e6", "bob"),
        ("e6", "carol"),
        ("e7", "bob"),
        ("e7", "carol"),
    ]
