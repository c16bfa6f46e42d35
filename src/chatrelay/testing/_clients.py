"""What `check_transport` asks of a transport's test clients."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, runtime_checkable

from .._relay import Relay
from .._types import UserId

__all__ = [
    "Connect",
    "PausableClient",
    "TransportClient",
    "TransportEvent",
    "TransportFactory",
]


class TransportEvent(Protocol):
    """An event a client received: its wire name and its decoded payload."""

    @property
    def event(self) -> str: ...

    @property
    def data(self) -> Any: ...


class TransportClient(Protocol):
    """What `check_transport` asks of one connected client.

    `MemoryClient` is one; a transport's test client usually needs a
    small wrapper.
    """

    @property
    def received(self) -> Sequence[TransportEvent]:
        """Every event received so far, in the order of arrival (acks excluded)."""
        ...

    async def request(self, event: str, data: Any) -> dict[str, Any]:
        """Send a request that asks for an ack; return the ack, decoded.

        Every event the server sent before the ack is in `received` when this
        returns.

        Raises:
            ConnectionClosed: If the connection closed first.
        """
        ...

    async def receive(self, event: str, *, timeout: float) -> TransportEvent:
        """Return the next event of that name not returned yet (others stay).

        Raises:
            TimeoutError: If none arrives within ``timeout`` seconds.
            ConnectionClosed: If the connection closed before one arrived.
        """
        ...

    async def ack(self, received: Any) -> None:
        """Acknowledge an event (one `receive` returned) that asked for an ack."""
        ...


@runtime_checkable
class PausableClient(Protocol):
    """A client that can stop reading from its connection, and start again.

    Only such clients let `check_transport` check that a slow consumer is closed;
    for the others it says so in its report.
    """

    def pause(self) -> None:
        """Stop reading, like a client on a stalled network."""
        ...

    def resume(self) -> None:
        """Read again."""
        ...


Connect = Callable[[UserId], AbstractAsyncContextManager[TransportClient]]
"""``connect(user_id)``: a context that connects a client as that user, and
disconnects it on leaving."""

TransportFactory = Callable[[Relay], AbstractAsyncContextManager[Connect]]
"""``factory(relay)``: a context that serves a running relay and yields a `Connect`."""
