"""The transport contract: every transport passes `check_transport`; broken ones do not.

One parametrized client factory (`transport_clients.transport_factory`) runs the same
behaviours over the memory transport, the WebSocket adapter and the Socket.IO adapter
with both Socket.IO clients on each engine.io transport.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from chatrelay import Relay
from chatrelay.testing import (
    BEHAVIOURS,
    Connect,
    MemoryClient,
    MemoryTransport,
    ReceivedEvent,
    TransportClient,
    TransportFactory,
    TransportReport,
    check_transport,
)
from transport_clients import SOCKETIO_KINDS, WIRE_KINDS, transport_factory

pytestmark = pytest.mark.anyio

NO_PAUSE = ("slow_consumer", "the client cannot pause reading (it has no pause()/resume())")


def expected(kind: str) -> TransportReport:
    if kind in SOCKETIO_KINDS:
        return TransportReport(
            transport=kind,
            checked=tuple(b for b in BEHAVIOURS if b != "slow_consumer"),
            not_checked=(NO_PAUSE,),
        )
    return TransportReport(transport=kind, checked=BEHAVIOURS, not_checked=())


async def test_memory_keeps_the_contract() -> None:
    report = await check_transport(transport_factory("memory"), name="memory", presence_grace=0.05)
    assert report == expected("memory")


@pytest.mark.e2e
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("kind", WIRE_KINDS)
async def test_wire_transports_keep_the_contract(kind: str) -> None:
    # Node and engine.io's polling take a while to reconnect: a grace they fit in.
    grace = 2.0 if kind.startswith("socketio-js") else 1.0
    report = await check_transport(transport_factory(kind), name=kind, presence_grace=grace)
    assert report == expected(kind)


# --- the check finds what is broken ----------------------------------------------------


class Unpausable:
    """A memory client without pause()/resume(), as many transports' test clients are."""

    def __init__(self, client: MemoryClient) -> None:
        self.client = client

    @property
    def received(self) -> list[ReceivedEvent]:
        return self.client.received

    async def request(self, event: str, data: Any) -> dict[str, Any]:
        return await self.client.request(event, data)

    async def receive(self, event: str, *, timeout: float) -> ReceivedEvent:  # noqa: ASYNC109
        return await self.client.receive(event, timeout=timeout)

    async def ack(self, received: ReceivedEvent) -> None:
        await self.client.ack(received)


class Impatient(Unpausable):
    """Shows a request's ack before the events sent before it: they lag until it reads.

    (The memory transport writes events as they are sent, so an ack cannot overtake
    them there; this client lets what arrived show only once it reads again.)
    """

    def __init__(self, client: MemoryClient) -> None:
        super().__init__(client)
        self._shown = 0

    @property
    def received(self) -> list[ReceivedEvent]:
        return self.client.received[: self._shown]

    async def request(self, event: str, data: Any) -> dict[str, Any]:
        return await self.client.connection.handle(event, data)

    async def receive(self, event: str, *, timeout: float) -> ReceivedEvent:  # noqa: ASYNC109
        got = await self.client.receive(event, timeout=timeout)
        self._shown = len(self.client.received)
        return got


class ErrorsLost(Unpausable):
    """Never shows the ``error`` events the server sent."""

    @property
    def received(self) -> list[ReceivedEvent]:
        return [e for e in self.client.received if e.event != "error"]

    async def receive(self, event: str, *, timeout: float) -> ReceivedEvent:  # noqa: ASYNC109
        if event == "error":
            raise TimeoutError
        return await self.client.receive(event, timeout=timeout)


def memory_with(
    wrap: Callable[[MemoryClient], TransportClient], *, auto_ack: bool = False
) -> TransportFactory:
    @asynccontextmanager
    async def factory(relay: Relay) -> AsyncIterator[Connect]:
        transport = MemoryTransport(relay)

        @asynccontextmanager
        async def connect(user: str) -> AsyncIterator[TransportClient]:
            async with transport.connect(user, auto_ack=auto_ack) as client:
                yield wrap(client)

        yield connect

    return factory


async def test_a_client_that_cannot_pause_is_reported_not_silently_skipped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="chatrelay.testing"):
        report = await check_transport(
            memory_with(Unpausable), name="unpausable", presence_grace=0.05
        )
    assert report.checked == tuple(b for b in BEHAVIOURS if b != "slow_consumer")
    assert report.not_checked == (NO_PAUSE,)
    assert "unpausable: slow_consumer not checked: the client cannot pause" in caplog.text


@pytest.mark.parametrize(
    ("wrap", "auto_ack", "complaint"),
    [
        (Impatient, False, "ack_ordering: a request's ack arrived after"),
        (ErrorsLost, False, "errors_keep_connection: no error arrived within 0.5 s"),
        (Unpausable, True, "delivery_ack: on_delivered got .* more than the clients acked"),
    ],
)
async def test_broken_transports_fail_naming_the_transport_and_the_behaviour(
    wrap: Callable[[MemoryClient], TransportClient], auto_ack: bool, complaint: str
) -> None:
    with pytest.raises(AssertionError, match=f"^broken: {complaint}"):
        await check_transport(
            memory_with(wrap, auto_ack=auto_ack), name="broken", timeout=0.5, presence_grace=0.05
        )


async def test_a_reconnect_slower_than_the_grace_is_named_as_such() -> None:
    @asynccontextmanager
    async def factory(relay: Relay) -> AsyncIterator[Connect]:
        transport = MemoryTransport(relay)
        connects = 0

        @asynccontextmanager
        async def connect(user: str) -> AsyncIterator[TransportClient]:
            nonlocal connects
            if user == "alice":
                connects += 1
                if connects == 2:  # a reload, in the presence behaviour
                    await anyio.sleep(0.1)
            async with transport.connect(user) as client:
                yield client

        yield connect

    with pytest.raises(AssertionError, match=r"presence_grace: reconnecting took .* larger"):
        await check_transport(factory, name="slow", presence_grace=0.05)
