"""Recovery on Redis: the memory scenarios again, and servers in processes, killed.

The scenarios of ``recovery_scenarios`` (also run on the memory bus) run here with
the relays on one Redis (the ``servers`` fixture
below). The history lives in Redis, so a client whose server was killed resumes on
another one and gets exactly what it missed.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis

from chatrelay import HistorySettings, Relay, RelayConfig
from chatrelay.backplanes.redis import RedisBackplane
from cluster_support import NodeProcess, cluster
from recovery_scenarios import (  # the scenarios, run here on Redis
    MakeServers,
    Servers,
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
from redis_support import RedisServer, new_prefix, redis_server, shared_or_private_redis

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

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # redis.asyncio; the nodes are separate processes anyway


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with shared_or_private_redis() as url:
        yield url


@pytest.fixture
def servers(redis_url: str) -> MakeServers:
    """Relays on one Redis (a prefix of their own), sharing its history."""

    @asynccontextmanager
    async def make(
        count: int = 1, *, history: HistorySettings | None = None
    ) -> AsyncIterator[Servers]:
        prefix = new_prefix()
        config = RelayConfig(history=history or HistorySettings())
        async with AsyncExitStack() as stack:
            nodes = [
                await stack.enter_async_context(
                    Relay(config=config, backplane=RedisBackplane(redis_url, prefix=prefix))
                )
                for _ in range(count)
            ]

            async def lose() -> None:
                client = aioredis.Redis.from_url(redis_url)
                try:
                    keys = [k async for k in client.scan_iter(match=f"{prefix}chatrelay:history:*")]
                    assert keys, "no history in Redis to lose"
                    await client.delete(*keys)
                finally:
                    await client.aclose()

            yield Servers(nodes, lose)

    return make


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with redis_server() as started:
        yield started


def received(node: NodeProcess, client: str) -> list[dict[str, Any]]:
    return [e["data"] for e in node.received(client, "message:received")]


async def emit(node: NodeProcess, first: int, last: int) -> None:
    """Emit e<first>..e<last> on ``node``; return once they went out."""
    for n in range(first, last + 1):
        await node.request("emit", conversation="c1", message=f"e{n}", sender="carol", text="x")
    await node.request("flush")


async def test_a_client_resumes_on_another_server_after_its_server_was_killed(
    server: RedisServer,
) -> None:
    async with cluster(server.url, new_prefix(), 2) as (a, b):
        await a.connect("bob", "bob", "c1")
        await emit(b, 1, 5)
        await a.wait_for(lambda: len(received(a, "bob")) == 5, what="e1..e5 on a")
        got = received(a, "bob")
        assert [d["message"]["id"] for d in got] == [f"e{n}" for n in range(1, 6)]
        last = got[-1]["position"]
        assert last["offset"] == 5

        a.signal(signal.SIGKILL)
        await a.wait_exit()
        await emit(b, 6, 40)

        await b.request("connect", client="bob2", user="bob")
        reply = await b.request("join", client="bob2", conversation="c1", position=last)
        assert reply["ok"] is True
        assert reply["recovered"] is True
        assert reply["position"]["offset"] == 40
        await b.wait_for(lambda: len(received(b, "bob2")) >= 35, what="e6..e40 on b")
        replayed = received(b, "bob2")
        assert [d["message"]["id"] for d in replayed] == [f"e{n}" for n in range(6, 41)]
        assert [d["position"]["offset"] for d in replayed] == list(range(6, 41))
        assert {d["position"]["epoch"] for d in replayed} == {last["epoch"]}

        await emit(b, 41, 41)
        await b.wait_for(lambda: len(received(b, "bob2")) == 36, what="the live e41")
        assert received(b, "bob2")[-1]["position"]["offset"] == 41


async def test_a_flushed_redis_is_a_new_epoch_and_not_recovered(server: RedisServer) -> None:
    import redis

    async with cluster(server.url, new_prefix(), 2) as (a, b):
        await a.connect("bob", "bob", "c1")
        await emit(b, 1, 3)
        await a.wait_for(lambda: len(received(a, "bob")) == 3, what="e1..e3 on a")
        last = received(a, "bob")[-1]["position"]
        client = redis.Redis.from_url(server.url)
        try:
            client.flushall()
        finally:
            client.close()
        await emit(b, 4, 5)
        await b.request("connect", client="bob2", user="bob")
        reply = await b.request("join", client="bob2", conversation="c1", position=last)
        assert reply["ok"] is True
        assert reply["recovered"] is False
        assert reply["position"]["epoch"] != last["epoch"]
        assert received(b, "bob2") == []


@pytest.mark.parametrize("outage", ["killed", "paused"])
async def test_emitting_while_redis_is_down_neither_stalls_nor_replays_a_hole(
    server: RedisServer, outage: str
) -> None:
    from chatrelay.testing import MemoryTransport
    from relay_helpers import message
    from waiting import eventually

    config = RelayConfig(heartbeat_interval=0.25, node_timeout=1.0)
    backplane = RedisBackplane(
        server.url, prefix=new_prefix(), block=0.2, max_backoff=0.2, operation_timeout=1.0
    )
    async with Relay(config=config, backplane=backplane) as relay:
        async with MemoryTransport(relay).connect("bob", auto_ack=True) as bob:
            ack = await bob.request("conversation:join", {"conversationId": "c1"})
            await relay.message_received(message("e1"))
            first = await bob.receive("message:received", timeout=5)
            last = first.data["position"]
            assert last == {"offset": 1, "epoch": ack["position"]["epoch"]}

            # Killed: connections are refused. Paused: they stay open and nothing answers.
            server.kill() if outage == "killed" else server.pause()
            await eventually(lambda: not relay.statistics().healthy, within=5)
            # Each append fails at once: 20 emits take nowhere near 20 operation timeouts.
            # (A bound, not fail_after: the emit shields its send, so a cancellation
            # would only land after the loop.)
            with anyio.move_on_after(2) as bound:
                for n in range(2, 22):
                    await relay.message_received(message(f"e{n}"))
            assert not bound.cancel_called, "emitting waited on the unreachable Redis"
            live = [await bob.receive("message:received", timeout=5) for _ in range(20)]
            assert [e.data["message"]["id"] for e in live] == [f"e{n}" for n in range(2, 22)]
            assert all("position" not in e.data for e in live)
            assert relay.statistics().unrecorded == 20

            server.start() if outage == "killed" else server.resume()
            await eventually(lambda: relay.statistics().healthy, within=10)
            # Right after Redis is back, an append may still meet a connection of the
            # pool that died with it: that event goes out unrecorded too. The first
            # recorded one is in a new epoch: no replay across the events it missed.
            after = None
            for n in range(22, 32):
                await relay.message_received(message(f"e{n}"))
                got = await bob.receive("message:received", timeout=5)
                if "position" in got.data:
                    after = got
                    break
            assert after is not None, "no event was recorded after Redis came back"
            assert after.data["position"]["epoch"] != last["epoch"]
        async with MemoryTransport(relay).connect("bob") as again:
            data = {"conversationId": "c1", "position": last}
            reply = await again.request("conversation:join", data)
            assert reply["recovered"] is False
