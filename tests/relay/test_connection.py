"""`Connection`'s queue, made on first use, and its close callback."""

from __future__ import annotations

import anyio
import pytest

from chatrelay import Identity, Limits, Relay, RelayConfig
from chatrelay.exceptions import CloseReason
from chatrelay.lowlevel import Outbound
from relay_helpers import WAIT

pytestmark = pytest.mark.anyio


async def test_the_queue_is_made_by_the_first_event_that_needs_it() -> None:
    async with Relay() as relay, relay.connect(Identity(user_id="alice"), transport="test") as conn:
        assert conn.queued == 0
        conn._push(Outbound("test:one", {"n": 1}))
        conn._push(Outbound("test:two", {"n": 2}))
        assert conn.queued == 2
        with anyio.fail_after(WAIT):
            assert (await conn.outgoing.receive()).event == "test:one"
        assert conn.queued == 1


async def test_a_sink_that_takes_every_event_leaves_no_queue() -> None:
    taken: list[str] = []

    def sink(item: Outbound) -> bool:
        taken.append(item.event)
        return True

    async with Relay() as relay, relay.connect(Identity(user_id="alice"), transport="test") as conn:
        conn.deliver_directly(sink)
        conn._push(Outbound("test:one", {}))
        assert taken == ["test:one"]
        assert conn.queued == 0


async def test_a_queue_asked_for_after_the_close_has_ended() -> None:
    async with Relay() as relay, relay.connect(Identity(user_id="alice"), transport="test") as conn:
        conn.close("test")
        with anyio.fail_after(WAIT), pytest.raises(anyio.EndOfStream):
            await conn.outgoing.receive()


async def test_the_close_callback_is_called_once_by_whoever_closes() -> None:
    calls: list[str | None] = []
    config = RelayConfig(limits=Limits(outgoing_queue=1))
    async with (
        Relay(config=config) as relay,
        relay.connect(Identity(user_id="alice"), transport="test") as conn,
    ):
        conn.on_close(lambda: calls.append(conn.close_reason))
        conn._push(Outbound("test:one", {}))
        conn._push(Outbound("test:two", {}))  # past the bound: a slow consumer
        conn.close("again")
        assert calls == ["slow_consumer"]


async def test_a_forgotten_close_callback_is_not_called() -> None:
    calls: list[str] = []
    async with Relay() as relay, relay.connect(Identity(user_id="alice"), transport="test") as conn:
        conn.on_close(lambda: calls.append("closed"))
        conn.on_close(None)
        conn.close("test")
    assert calls == []


async def test_close_reasons_are_close_reason_members() -> None:
    async with Relay() as relay:
        async with relay.connect(Identity(user_id="alice"), transport="test") as conn:
            conn.close("slow_consumer")  # text equal to a reason becomes the reason
            assert conn.close_reason is CloseReason.SLOW_CONSUMER
        async with relay.connect(Identity(user_id="bob"), transport="test") as other:
            other.close("kicked")  # an application's own reason stays as it is
            assert other.close_reason == "kicked"
            assert not isinstance(other.close_reason, CloseReason)
        async with relay.connect(Identity(user_id="carol"), transport="test") as left:
            pass
        assert left.close_reason is CloseReason.CLIENT_DISCONNECTED
