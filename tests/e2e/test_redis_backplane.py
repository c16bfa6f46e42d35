"""The Redis backplane inside one process: outages, full buffers, restarts, refusals.

Every test that stops Redis runs its own ``redis-server`` on a private port. Relays
here run in the test's process with ``MemoryTransport`` clients, so a test can look
at both sides at once.
"""

from __future__ import annotations

import runpy
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest
import redis

from chatrelay import Message, MessageStatus, Relay, RelayConfig
from chatrelay.abc import BackplaneMessage
from chatrelay.backplanes.redis import RedisBackplane
from chatrelay.exceptions import BackplaneError
from chatrelay.testing import MemoryClient, MemoryTransport
from redis_support import RedisServer, free_port, new_prefix, redis_server
from waiting import eventually

pytestmark = pytest.mark.anyio

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "redis_cluster.py"
CONFIG = RelayConfig(heartbeat_interval=0.1, node_timeout=0.6, presence_grace=0.05)
WAIT = 5.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with redis_server() as running:
        yield running


def message(message_id: str, conversation: str = "c1") -> Message:
    return Message(
        id=message_id,
        conversation_id=conversation,
        sender_id="bob",
        type="text",
        content={"text": message_id},
        status=MessageStatus.SENT,
        created_at=datetime.now(UTC),
    )


def ids(client: MemoryClient) -> list[str]:
    return [e.data["message"]["id"] for e in client.events("message:received")]


@asynccontextmanager
async def two_relays(server: RedisServer, **options: object) -> AsyncIterator[tuple[Relay, Relay]]:
    prefix = new_prefix()

    def backplane() -> RedisBackplane:
        return RedisBackplane(server.url, prefix=prefix, max_backoff=0.1, **options)  # type: ignore[arg-type]

    async with (
        Relay(config=CONFIG, backplane=backplane()) as a,
        Relay(config=CONFIG, backplane=backplane()) as b,
    ):
        yield a, b


async def kill(server: RedisServer) -> None:
    await anyio.to_thread.run_sync(server.kill)


async def restart(server: RedisServer) -> None:
    await anyio.to_thread.run_sync(server.start)


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_it_fails_fast_under_trio() -> None:
    with pytest.raises(RuntimeError, match="needs asyncio"):
        await RedisBackplane("redis://127.0.0.1:1/0").start()


async def test_start_fails_when_redis_cannot_be_reached() -> None:
    url = f"redis://user:secret@127.0.0.1:{free_port()}/0"
    with pytest.raises(BackplaneError, match="cannot reach Redis") as caught:
        await RedisBackplane(url, operation_timeout=1.0).start()
    assert "secret" not in str(caught.value)


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="must be > 0"):
        RedisBackplane(block=0)


def test_importing_chatrelay_does_not_import_redis() -> None:
    code = (
        "import sys, chatrelay, chatrelay.abc, chatrelay.backplanes, chatrelay.testing\n"
        "print('redis' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr


async def test_relay_reports_the_outage_and_recovers(server: RedisServer) -> None:
    async with two_relays(server) as (a, b):
        transport_a, transport_b = MemoryTransport(a), MemoryTransport(b)
        async with transport_a.connect("alice") as alice, transport_b.connect("bob") as bob:
            await alice.request("conversation:join", {"conversationId": "c1"})
            await bob.request("conversation:join", {"conversationId": "c1"})
            assert a.statistics().healthy
            await kill(server)
            await eventually(lambda: not a.statistics().healthy)
            assert not a.statistics().backplane.healthy
            await b.message_received(message("during"))
            await b.flush()  # out, without a position: buffered, not failed
            assert b.statistics().backplane.buffered >= 1
            await restart(server)
            await alice.receive("message:received", timeout=WAIT)
            await eventually(lambda: a.statistics().healthy and b.statistics().healthy)
            statistics = a.statistics()
            assert statistics.backplane.reconnects == 1
            assert statistics.backplane_errors == 0
            assert ids(alice) == ["during"]
            assert alice.events("user:offline") == []  # bob never went offline for alice


async def test_a_full_buffer_is_counted_and_the_room_told_to_resync(server: RedisServer) -> None:
    async with (
        two_relays(server, buffer_limit=5) as (a, b),
        MemoryTransport(a).connect("alice") as alice,
    ):
        await alice.request("conversation:join", {"conversationId": "c1"})
        await eventually(lambda: "alice" in b.members("c1"))
        await kill(server)
        await eventually(lambda: not b.statistics().healthy)
        for index in range(20):
            await b.message_received(message(f"m{index}"))
        await b.flush()
        dropped = b.statistics().backplane.dropped
        assert dropped >= 15  # heartbeats may have taken some of the 5 places too
        await restart(server)
        resync = await alice.receive("sync:required", timeout=WAIT)
        assert resync.data == {"conversationId": "c1"}
        kept = ids(alice)
        assert kept == [f"m{i}" for i in range(len(kept))]  # a prefix, in order
        assert len(kept) + dropped >= 20
        assert a.statistics().resyncs == 1
        assert a.statistics().backplane.lost >= 20 - len(kept)


async def test_joining_during_an_outage_is_told_to_resync(server: RedisServer) -> None:
    async with two_relays(server) as (a, _), MemoryTransport(a).connect("alice") as alice:
        await kill(server)
        await eventually(lambda: not a.statistics().healthy)
        reply = await alice.request("conversation:join", {"conversationId": "c9"})
        assert reply["ok"] is True
        await restart(server)
        resync = await alice.receive("sync:required", timeout=WAIT)
        assert resync.data == {"conversationId": "c9"}


async def collect(backplane: RedisBackplane, into: list[bytes]) -> None:
    async for event in backplane.messages():
        if isinstance(event, BackplaneMessage):
            into.append(event.payload)


async def test_a_reader_ahead_of_a_fresh_stream_reads_it_from_the_start(
    server: RedisServer,
) -> None:
    prefix = new_prefix()
    got: list[bytes] = []
    async with (
        RedisBackplane(server.url, prefix=prefix, max_backoff=0.1) as a,
        RedisBackplane(server.url, prefix=prefix, max_backoff=0.1) as b,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(collect, b, got)
        await b.subscribe("t")
        # An entry far in the future (another clock) moves b's position ahead.
        client = redis.Redis.from_url(server.url)
        client.xadd(f"{prefix}t", {"foreign": "entry"}, id="99999999999999-0")
        client.close()
        await a.publish("t", b"sentinel")  # appended after it, in the future too
        await eventually(lambda: got == [b"sentinel"])
        await kill(server)
        await restart(server)
        await a.publish("t", b"after the restart")
        await eventually(lambda: b"after the restart" in got)
        tg.cancel_scope.cancel()


async def test_a_restart_replays_what_a_reader_had_not_read(
    server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = new_prefix()
    got: list[bytes] = []
    gate = anyio.Event()
    gate.set()
    async with (
        RedisBackplane(server.url, prefix=prefix, max_backoff=0.1) as a,
        RedisBackplane(server.url, prefix=prefix, max_backoff=0.1) as b,
        anyio.create_task_group() as tg,
    ):
        reader = b._reader
        assert reader is not None
        read_once = reader._read_once

        async def slow_read_once() -> None:
            await gate.wait()
            await read_once()

        monkeypatch.setattr(reader, "_read_once", slow_read_once)
        tg.start_soon(collect, b, got)
        await b.subscribe("t")
        await a.publish("t", b"read")
        await eventually(lambda: got == [b"read"])
        gate = anyio.Event()  # b stops reading after its read in progress:
        await a.publish("t", b"flush")  # this one ends it
        await eventually(lambda: b"flush" in got)
        await a.publish("t", b"unread")  # so this one reaches Redis only
        await eventually(lambda: a.statistics().buffered == 0)
        await kill(server)  # ... and dies with it
        await restart(server)
        gate.set()
        await eventually(lambda: b"unread" in got)
        await a.publish("t", b"next")
        await eventually(lambda: b"next" in got)
        assert got == [b"read", b"flush", b"unread", b"next"]
        assert b.statistics().duplicates >= 2  # "read" and "flush", sent again
        tg.cancel_scope.cancel()


async def test_an_entry_redis_refuses_is_dropped_and_the_rest_goes_on(
    server: RedisServer,
) -> None:
    prefix = new_prefix()
    got: list[bytes] = []
    client = redis.Redis.from_url(server.url)
    client.set(f"{prefix}wrong", "a string, not a stream")
    client.close()
    async with (
        RedisBackplane(server.url, prefix=prefix) as a,
        RedisBackplane(server.url, prefix=prefix) as b,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(collect, b, got)
        await b.subscribe("right")
        await a.publish("wrong", b"refused")
        await a.publish("right", b"accepted")
        await eventually(lambda: got == [b"accepted"])
        assert a.statistics().dropped == 1
        assert a.statistics().healthy
        tg.cancel_scope.cancel()


async def test_the_cluster_example_runs(
    server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", server.url)
    namespace = runpy.run_path(str(EXAMPLE))
    assert await namespace["main"]() == ["alice: Hi from a worker!", "bob: Hi from a worker!"]
