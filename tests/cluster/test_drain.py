"""``Relay.drain``: connections told, closed spread over the window, nobody seen leaving."""

from __future__ import annotations

from contextlib import AsyncExitStack

import anyio
import pytest

from chatrelay import Relay, RelayConfig
from chatrelay.backplanes import MemoryBus
from chatrelay.exceptions import CloseReason, ConnectionClosed, Unavailable
from chatrelay.testing import MemoryClient, MemoryTransport
from relay_helpers import WAIT, settle

pytestmark = pytest.mark.anyio

GRACE = 0.2
CONFIG = RelayConfig(heartbeat_interval=0.1, node_timeout=0.5, presence_grace=GRACE)


async def close_time(client: MemoryClient) -> float:
    """When the client's connection closed (waiting, bounded), by the event loop's clock."""
    for _ in range(100):
        try:
            await client.receive(timeout=WAIT)
        except ConnectionClosed:
            break
    else:
        raise AssertionError("the connection was not closed")
    assert client.close_reason == CloseReason.SERVER_RESTART
    return anyio.current_time()


async def test_each_connection_is_told_its_slot_then_closed_there() -> None:
    window = 0.6
    async with Relay(config=CONFIG) as relay, AsyncExitStack() as stack:
        transport = MemoryTransport(relay)
        clients = [await stack.enter_async_context(transport.connect(f"u{n}")) for n in range(6)]
        for client in clients:
            await settle(client)  # the others' user:online
        started = anyio.current_time()
        closes: list[float] = []
        async with anyio.create_task_group() as tg:

            async def watch(client: MemoryClient) -> None:
                closes.append(await close_time(client) - started)

            for client in clients:
                tg.start_soon(watch, client)
            with anyio.fail_after(window + WAIT):
                await relay.drain(window)
        told = [c.events("server:draining")[0].data["reconnectAfterMs"] for c in clients]
        assert told == sorted(told)
        assert told[0] > 0  # a slot to write server:draining before the close
        assert told[-1] <= window * 1000
        assert len(set(told)) == len(told)  # spread, not all at once
        assert relay.draining
        # Closed in their slots: the last no sooner than its slot, none long after.
        assert sorted(closes)[-1] >= told[-1] / 1000
        with pytest.raises(Unavailable):
            async with transport.connect("late"):
                pass


async def test_users_who_come_back_elsewhere_within_the_window_never_go_offline() -> None:
    bus = MemoryBus()
    async with (
        Relay(config=CONFIG, backplane=bus.backplane()) as a,
        Relay(config=CONFIG, backplane=bus.backplane()) as b,
        MemoryTransport(b).connect("watcher") as watcher,
    ):
        window = 0.5
        async with MemoryTransport(a).connect("alice") as alice:
            await watcher.receive("user:online", timeout=WAIT)
            async with anyio.create_task_group() as tg:
                tg.start_soon(a.drain, window)
                await close_time(alice)
        # Alice comes back on b after a pause longer than the grace, inside the window.
        await anyio.sleep(GRACE * 1.5)
        async with MemoryTransport(b).connect("alice"):
            await anyio.sleep(window + GRACE)  # past the held-back offline's deadline
            offline = [e for e in await settle(watcher) if e.event == "user:offline"]
            assert offline == []
