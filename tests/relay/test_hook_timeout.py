"""The application's hooks are bounded by `RelayConfig.hook_timeout`.

A hook stuck on its database must not stall the relay: not its timers (typing expiry,
presence), not the connection that asked, not the other clients.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

import anyio
import pytest

from chatrelay import Delivery, Identity, Relay, RelayConfig
from chatrelay.testing import MemoryTransport
from relay_helpers import WAIT, join, message
from waiting import eventually

pytestmark = pytest.mark.anyio

HOOKS = RelayConfig(typing_timeout=0.05, presence_grace=0.05, hook_timeout=0.05)


def test_hook_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="hook_timeout"):
        RelayConfig(hook_timeout=0)


async def test_a_stuck_authorize_join_is_refused_and_the_connection_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def authorize(identity: Identity, conversation: str) -> bool:
        if conversation == "stuck":
            await anyio.sleep_forever()
        return True

    async with (
        Relay(config=HOOKS, authorize_join=authorize) as relay,
        MemoryTransport(relay).connect("alice") as alice,
    ):
        with caplog.at_level(logging.ERROR, logger="chatrelay"):
            reply = await alice.request("conversation:join", {"conversationId": "stuck"})
        assert reply["ok"] is False
        assert reply["error"]["code"] == "internal_error"
        assert "in time" in reply["error"]["message"]
        error = await alice.receive("error", timeout=WAIT)
        assert error.data["event"] == "conversation:join"
        assert "authorize_join did not answer within 0.05s" in caplog.text
        assert relay.members("stuck") == frozenset()
        await join(alice)  # the next request is served
        assert relay.members("c1") == {"alice"}


async def test_a_stuck_presence_audience_does_not_stall_the_timers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Carol going offline (a timer's work) hangs her audience hook; bob's typing
    # episode must still time out, which the same timer task does.
    async def audience(user: str) -> Collection[str]:
        if user == "carol":
            await anyio.sleep_forever()
        return ["alice", "bob"]

    async with Relay(config=HOOKS, presence_audience=audience) as relay:
        transport = MemoryTransport(relay)
        async with transport.connect("alice") as alice, transport.connect("bob") as bob:
            await join(alice)
            await join(bob)
            with caplog.at_level(logging.ERROR, logger="chatrelay"), anyio.fail_after(WAIT):
                async with transport.connect("carol"):
                    pass  # her online announcement hangs too, in her own task
                await bob.request("typing:start", {"conversationId": "c1"})
                await alice.receive("typing:start", timeout=WAIT)
                stop = await alice.receive("typing:stop", timeout=WAIT)
            assert stop.data["userId"] == "bob"
            await eventually(lambda: not relay.is_online("carol"))
            assert "presence_audience did not answer within 0.05s for 'carol'" in caplog.text
            assert not [e for e in alice.received if e.data.get("userId") == "carol"]


async def test_a_stuck_on_delivered_lets_the_client_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reported: list[str] = []

    async def on_delivered(delivery: Delivery) -> None:
        if delivery.message_id == "m1":
            await anyio.sleep_forever()
        reported.append(delivery.message_id)

    async with (
        Relay(config=HOOKS, on_delivered=on_delivered) as relay,
        MemoryTransport(relay).connect("bob") as bob,
    ):
        await join(bob)
        await relay.message_received(message("m1", sender="alice"))
        first = await bob.receive("message:received", timeout=WAIT)
        with caplog.at_level(logging.ERROR, logger="chatrelay"), anyio.fail_after(WAIT):
            await bob.ack(first)
        assert "on_delivered did not return within 0.05s" in caplog.text
        await relay.message_received(message("m2", sender="alice"))
        second = await bob.receive("message:received", timeout=WAIT)
        with anyio.fail_after(WAIT):
            await bob.ack(second)
        assert reported == ["m2"]
