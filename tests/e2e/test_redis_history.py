"""The Redis history: the contract, its keys and TTL, lost histories, relays sharing it.

Tests run on the shared test Redis (``CHATRELAY_REDIS_URL``) with a key prefix of
their own; the one that flushes a database runs its own ``redis-server``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import attrs
import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot

from chatrelay import ConversationId, HistorySettings, Relay
from chatrelay.backplanes._redis_history import RedisHistory
from chatrelay.backplanes.redis import RedisBackplane
from chatrelay.events import Position
from chatrelay.exceptions import BackplaneError
from chatrelay.testing import MemoryClient, MemoryTransport, ReceivedEvent, check_history
from redis_support import (
    RedisTarget,
    free_port,
    fresh_target,
    redis_server,
    shared_or_private_redis,
)
from relay_helpers import WAIT, join, message
from waiting import eventually

pytestmark = pytest.mark.anyio

C1, C2 = ConversationId("c1"), ConversationId("c2")
EVENT = "message:received"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # redis.asyncio


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with shared_or_private_redis() as url:
        yield url


@pytest.fixture
def target(redis_url: str) -> Iterator[RedisTarget]:
    with fresh_target(redis_url) as target:
        yield target


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    connection = aioredis.Redis.from_url(redis_url)
    try:
        yield connection
    finally:
        await connection.aclose()


def history_on(
    client: aioredis.Redis, target: RedisTarget, settings: HistorySettings | None = None
) -> RedisHistory:
    return RedisHistory(settings or HistorySettings(), lambda: client, prefix=target.prefix)


def payload(n: int) -> str:
    return f'{{"n":{n}}}'


# --- the history alone ---------------------------------------------------------------


async def test_redis_history_passes_the_check(target: RedisTarget) -> None:
    async with target.backplane() as backplane:
        await check_history(backplane.history)


async def test_it_raises_before_start_and_after_close(target: RedisTarget) -> None:
    backplane = target.backplane()
    history = backplane.history(HistorySettings())
    with pytest.raises(BackplaneError, match="not running"):
        await history.position(C1)
    async with backplane:
        assert (await history.append(C1, EVENT, payload(1))).offset == 1
    with pytest.raises(BackplaneError, match="not running"):
        await history.read(C1, Position(0, "e"), 10)


async def test_an_unreachable_redis_is_a_backplane_error() -> None:
    unreachable = aioredis.Redis.from_url(f"redis://user:secret@127.0.0.1:{free_port()}/0")
    history = RedisHistory(HistorySettings(), lambda: unreachable, operation_timeout=1.0)
    try:
        with pytest.raises(BackplaneError, match="cannot read the position of 'c1' in Redis"):
            await history.position(C1)
        with pytest.raises(BackplaneError, match="cannot record an event of 'c1'") as caught:
            await history.append(C1, EVENT, payload(1))
        assert "secret" not in str(caught.value)
    finally:
        await unreachable.aclose()


async def test_keys_share_a_slot_and_live_the_ttl_after_the_last_event(
    client: aioredis.Redis, target: RedisTarget
) -> None:
    history = history_on(client, target, HistorySettings(ttl=60))
    meta, log = history.keys(C1)
    assert meta == f"{target.prefix}chatrelay:history:{{c1}}:meta"
    assert key_slot(meta.encode()) == key_slot(log.encode())
    position = await history.append(C1, EVENT, payload(1))
    assert [0 < await client.pttl(key) <= 60_000 for key in (meta, log)] == [True, True]
    assert await client.hget(meta, "epoch") == position.epoch.encode()
    # Positions and reads do not extend it; an event does.
    for key in (meta, log):
        await client.pexpire(key, 10_000)
    await history.position(C1)
    await history.read(C1, position, 10)
    assert [await client.pttl(key) <= 10_000 for key in (meta, log)] == [True, True]
    await history.append(C1, EVENT, payload(2))
    assert [await client.pttl(key) > 10_000 for key in (meta, log)] == [True, True]
    # A position asked of an empty conversation starts an epoch that expires too.
    await history.position(C2)
    assert 0 < await client.pttl(history.keys(C2)[0]) <= 60_000


async def test_an_expired_history_starts_a_new_epoch(
    client: aioredis.Redis, target: RedisTarget
) -> None:
    history = history_on(client, target, HistorySettings(ttl=0.3))
    await history.append(C1, EVENT, payload(1))
    last = await history.append(C1, EVENT, payload(2))
    keys = history.keys(C1)
    with anyio.fail_after(WAIT):
        # Polling, with a bound: Redis announces no expiry.
        while await client.exists(*keys):  # noqa: ASYNC110
            await anyio.sleep(0.05)
    read = await history.read(C1, last, 10)
    assert read.entries == "epoch_changed"
    assert read.position.offset == 0
    assert read.position.epoch != last.epoch
    assert await history.append(C1, EVENT, payload(3)) == Position(1, read.position.epoch)


async def test_a_flushed_redis_starts_new_epochs() -> None:
    with redis_server() as server:
        async with RedisBackplane(server.url) as backplane:
            history = backplane.history(HistorySettings())
            for n in (1, 2, 3):
                last = await history.append(C1, EVENT, payload(n))
            admin = aioredis.Redis.from_url(server.url)
            try:
                await admin.flushdb()
                await admin.script_flush()  # the scripts are loaded again
            finally:
                await admin.aclose()
            read = await history.read(C1, last, 10)
            assert read.entries == "epoch_changed"
            assert read.position.offset == 0
            assert read.position.epoch != last.epoch
            assert await history.append(C1, EVENT, payload(4)) == Position(1, read.position.epoch)


async def test_a_log_without_its_meta_is_dropped_with_its_epoch(
    client: aioredis.Redis, target: RedisTarget
) -> None:
    history = history_on(client, target)
    for n in (1, 2, 3):
        last = await history.append(C1, EVENT, payload(n))
    meta, _ = history.keys(C1)
    await client.delete(meta)  # as an eviction under maxmemory may
    first = await history.append(C1, EVENT, payload(4))
    assert first.offset == 1
    assert first.epoch != last.epoch
    read = await history.read(C1, Position(0, first.epoch), 10)
    assert [(e.offset, e.json) for e in read.entries if not isinstance(e, str)] == [(1, payload(4))]


@pytest.fixture
async def broken() -> AsyncIterator[aioredis.Redis]:
    """A client of a port where nothing listens."""
    connection = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")
    try:
        yield connection
    finally:
        await connection.aclose()


@attrs.define
class Switch:
    """The Redis client of a history, which a test can swap for a broken one."""

    client: aioredis.Redis

    def __call__(self) -> aioredis.Redis:
        return self.client


async def test_after_a_failed_append_the_next_operation_starts_a_new_epoch(
    client: aioredis.Redis, broken: aioredis.Redis, target: RedisTarget
) -> None:
    switch = Switch(client)
    history = RedisHistory(HistorySettings(), switch, prefix=target.prefix, operation_timeout=1)
    other = history_on(client, target)  # another node's
    for n in (1, 2, 3):
        last = await history.append(C1, EVENT, payload(n))
    untouched = await history.append(C2, EVENT, payload(1))
    switch.client = broken
    with pytest.raises(BackplaneError):
        await history.read(C1, last, 10)
    switch.client = client
    assert await history.position(C1) == last  # a failed read forgets nothing
    switch.client = broken
    with pytest.raises(BackplaneError, match="cannot record an event of 'c1'"):
        await history.append(C1, EVENT, payload(4))  # sent without a position
    switch.client = client
    assert await other.position(C1) == last  # nothing reached Redis yet
    read = await history.read(C1, last, 10)  # the next operation: the history goes
    assert read.entries == "epoch_changed"
    assert read.position.offset == 0
    assert read.position.epoch != last.epoch
    assert await other.position(C1) == read.position  # for every node
    assert await history.append(C1, EVENT, payload(5)) == Position(1, read.position.epoch)
    assert await history.position(C2) == untouched  # only the conversation that failed


# --- relays on Redis ----------------------------------------------------------------------


@asynccontextmanager
async def two_relays(target: RedisTarget) -> AsyncIterator[tuple[Relay, Relay]]:
    async with (
        Relay(backplane=target.backplane()) as a,
        Relay(backplane=target.backplane()) as b,
    ):
        yield a, b


def offsets(events: list[ReceivedEvent]) -> list[int]:
    return [e.data["position"]["offset"] for e in events]


def ids(events: list[ReceivedEvent]) -> list[str]:
    return [e.data["message"]["id"] for e in events]


async def receive(client: MemoryClient, count: int) -> list[ReceivedEvent]:
    return [await client.receive(EVENT, timeout=WAIT) for _ in range(count)]


async def test_two_relays_number_one_conversation_together(target: RedisTarget) -> None:
    async with two_relays(target) as (a, b), MemoryTransport(b).connect("bob") as bob:
        reply: dict[str, Any] = await join(bob)
        epoch = reply["position"]["epoch"]
        for n in range(1, 21):  # alternately on each server, each after the one before
            relay = a if n % 2 else b
            await relay.message_received(message(f"e{n}"))
            await relay.flush()
        events = await receive(bob, 20)
        assert ids(events) == [f"e{n}" for n in range(1, 21)]
        assert offsets(events) == list(range(1, 21))
        assert {e.data["position"]["epoch"] for e in events} == {epoch}

        async def emit(relay: Relay, name: str) -> None:
            for n in range(20):
                await relay.message_received(message(f"{name}{n}"))

        async with anyio.create_task_group() as tg:  # at once on both servers
            tg.start_soon(emit, a, "a")
            tg.start_soon(emit, b, "b")
        events = await receive(bob, 40)
        assert offsets(events) == list(range(21, 61))
        assert sorted(ids(events)) == sorted(f"{x}{n}" for x in "ab" for n in range(20))
        assert bob.events("sync:required") == []


async def test_a_client_resumes_on_another_relay(target: RedisTarget) -> None:
    async with two_relays(target) as (a, b):
        async with MemoryTransport(a).connect("bob") as bob:
            await join(bob)
            for n in range(1, 6):
                await a.message_received(message(f"e{n}"))
            last = (await receive(bob, 5))[-1].data["position"]
        assert last["offset"] == 5
        for n in range(6, 11):  # missed, sent by both servers, one after the other
            relay = b if n % 2 else a
            await relay.message_received(message(f"e{n}"))
            await relay.flush()
        async with MemoryTransport(b).connect("bob") as bob:
            reply = await bob.request(
                "conversation:join", {"conversationId": "c1", "position": last}
            )
            before = bob.events(EVENT)  # pushed before the ack
            assert reply["ok"] is True, reply
            assert reply["recovered"] is True
            assert reply["position"] == {"offset": 10, "epoch": last["epoch"]}
            assert ids(before) == [f"e{n}" for n in range(6, 11)]
            assert offsets(before) == list(range(6, 11))


# --- emitting without waiting for Redis ------------------------------------------------


async def evalsha_calls(client: aioredis.Redis) -> int:
    stats = await client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_a_burst_of_emits_is_numbered_in_a_few_round_trips_and_sent_in_order(
    client: aioredis.Redis, target: RedisTarget
) -> None:
    async with (
        Relay(backplane=target.backplane()) as relay,
        MemoryTransport(relay).connect("bob") as bob,
    ):
        start: Any = (await join(bob))["position"]
        before = await evalsha_calls(client)
        for n in range(1, 201):  # one conversation, one emitter: no wait per event
            await relay.message_received(message(f"e{n}"))
        await relay.flush()
        scripts = await evalsha_calls(client) - before
        events = await receive(bob, 200)
    assert ids(events) == [f"e{n}" for n in range(1, 201)]
    assert offsets(events) == list(range(start["offset"] + 1, start["offset"] + 201))
    assert scripts <= 10, f"{scripts} scripts for 200 events: one round trip each"


async def test_a_message_comes_before_the_end_of_its_senders_typing(target: RedisTarget) -> None:
    async with (
        Relay(backplane=target.backplane()) as relay,
        MemoryTransport(relay).connect("alice") as alice,
        MemoryTransport(relay).connect("bob") as bob,
    ):
        await join(alice)
        await join(bob)
        await alice.emit("typing:start", {"conversationId": "c1"})
        await bob.receive("typing:start", timeout=WAIT)
        await relay.message_received(message("m1", sender="alice"))
        first = await bob.receive(timeout=WAIT)
        second = await bob.receive(timeout=WAIT)
    assert [first.event, second.event] == ["message:received", "typing:stop"]


async def test_a_closing_relay_sends_the_events_still_being_numbered(target: RedisTarget) -> None:
    async with (
        Relay(backplane=target.backplane()) as other,
        MemoryTransport(other).connect("bob") as bob,
    ):
        await join(bob)
        async with Relay(backplane=target.backplane()) as relay:
            await eventually(lambda: "bob" in relay.members("c1"))
            for n in range(1, 601):  # more than one round trip's worth
                await relay.message_received(message(f"e{n}"))
            # Leaving at once: nothing was waited for.
        events = await receive(bob, 600)
    assert ids(events) == [f"e{n}" for n in range(1, 601)]


async def test_a_burst_of_operations_waits_for_connections_instead_of_failing(
    client: aioredis.Redis, target: RedisTarget
) -> None:
    # As when hundreds of clients resume at once on a restarted server: more
    # operations at once than the node has connections (32 by default).
    before = len(await client.client_list())
    async with target.backplane() as backplane:
        history = backplane.history(HistorySettings())
        last = await history.append(C1, EVENT, payload(1))
        failures: list[BaseException] = []

        async def read() -> None:
            try:
                await history.read(C1, Position(0, last.epoch), 10)
            except BackplaneError as exc:
                failures.append(exc)

        async with anyio.create_task_group() as tg:
            for _ in range(300):
                tg.start_soon(read)
        clients = await client.client_list()
    assert failures == []
    assert len(clients) - before <= 32
