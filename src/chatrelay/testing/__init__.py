"""Test helpers: an in-memory transport that runs the real code path.

`MemoryTransport` connects clients to a `Relay` inside the
test's process. Each frame is encoded to JSON text and decoded again, exactly as the
Socket.IO and WebSocket adapters do, so a payload that is not JSON-compatible fails
here as it would on the wire::

    async with Relay() as relay:
        transport = MemoryTransport(relay)
        async with transport.connect("alice") as alice, transport.connect("bob") as bob:
            await alice.request("conversation:join", {"conversationId": "c1"})
            await bob.request("conversation:join", {"conversationId": "c1"})
            await alice.emit("typing:start", {"conversationId": "c1"})
            event = await bob.receive("typing:start")
            assert event.data["userId"] == "alice"

`check_backplane` checks that a backplane keeps the contract of
`Backplane`, like trio's ``check_two_way_stream`` does for
streams, and `check_history` that a history keeps the contract of `History`
(numbering, reads, trimming); `check_transport` does the same for a transport (an
adapter and its clients): the behaviours every transport keeps, run through your test
client.
"""

from .._public import publish as _publish
from ._backplane import check_backplane
from ._clients import (
    Connect,
    PausableClient,
    TransportClient,
    TransportEvent,
    TransportFactory,
)
from ._history import check_history
from ._memory import MemoryClient, MemoryTransport, ReceivedEvent
from ._transport import BEHAVIOURS, TransportReport, check_transport

__all__ = [
    "BEHAVIOURS",
    "Connect",
    "MemoryClient",
    "MemoryTransport",
    "PausableClient",
    "ReceivedEvent",
    "TransportClient",
    "TransportEvent",
    "TransportFactory",
    "TransportReport",
    "check_backplane",
    "check_history",
    "check_transport",
]

_publish(__name__, __all__)
