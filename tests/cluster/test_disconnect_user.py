"""``disconnect_user``: every connection of a user closed, on every node, nobody else's."""

from __future__ import annotations

from contextlib import AsyncExitStack

import pytest

from chatrelay import Emitter, Relay, RelayConfig
from chatrelay.backplanes import MemoryBus
from chatrelay.exceptions import CloseReason
from chatrelay.testing import MemoryTransport
from relay_helpers import closed_with, join
from waiting import eventually

pytestmark = pytest.mark.anyio

CONFIG = RelayConfig(heartbeat_interval=0.1, node_timeout=0.5, presence_grace=0.05)


async def test_a_relay_closes_every_tab_of_the_user_and_no_one_else() -> None:
    async with Relay() as relay:
        transport = MemoryTransport(relay)
        async with (
            transport.connect("alice") as tab1,
            transport.connect("alice") as tab2,
            transport.connect("bob") as bob,
        ):
            await join(tab1)
            await join(bob)
            await relay.disconnect_user("alice")
            assert await closed_with(tab1) == CloseReason.DISCONNECTED
            assert await closed_with(tab2) == CloseReason.DISCONNECTED
            assert not bob.connection.closed
            await eventually(lambda: relay.members("c1") == {"bob"})
            # A user with no connection: nothing to do, nothing fails.
            await relay.disconnect_user("nobody", "account_blocked")


async def test_an_emitter_closes_the_users_tabs_on_every_server() -> None:
    bus = MemoryBus()
    async with AsyncExitStack() as stack:
        relays = [
            await stack.enter_async_context(Relay(config=CONFIG, backplane=bus.backplane()))
            for _ in range(3)
        ]
        tabs = [
            await stack.enter_async_context(MemoryTransport(relay).connect("alice"))
            for relay in relays
        ]
        others = [
            await stack.enter_async_context(MemoryTransport(relay).connect("bob"))
            for relay in relays
        ]
        emitter = await stack.enter_async_context(Emitter(bus.backplane(), config=CONFIG))
        await emitter.disconnect_user("alice", "account_blocked")
        for tab in tabs:
            assert await closed_with(tab) == "account_blocked"
        await eventually(lambda: not any(r.is_online("alice") for r in relays), within=2)
        assert not any(other.connection.closed for other in others)
