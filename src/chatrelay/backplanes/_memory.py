"""In-process backplanes."""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator, Callable

import anyio
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._backplane import Backplane, BackplaneEvent, BackplaneMessage, BackplaneStatistics
from .._config import HistorySettings
from .._exceptions import BackplaneError
from .._history import History, MemoryHistory
from .._types import NodeId

__all__ = ["LocalBackplane", "MemoryBackplane", "MemoryBus"]


class LocalBackplane(Backplane):
    """The backplane of a relay that is alone: nothing to publish, nothing to receive."""

    shared = False

    def __init__(self, *, node_id: NodeId | None = None) -> None:
        super().__init__(node_id=node_id)
        self._closed = anyio.Event()

    async def aclose(self) -> None:
        """Close; `messages` ends."""
        self._closed.set()

    async def publish(self, topic: str, payload: bytes) -> None:
        """Do nothing: there is no other node (size and state are still checked).

        Raises:
            BackplaneError: If the payload is too large or the backplane is closed.
        """
        _check(self, payload, closed=self._closed.is_set())

    async def subscribe(self, topic: str) -> None:
        """Do nothing."""

    async def unsubscribe(self, topic: str) -> None:
        """Do nothing."""

    async def messages(self) -> AsyncIterator[BackplaneEvent]:
        """Wait until closed; no message ever arrives."""
        await self._closed.wait()
        return
        yield  # pragma: no cover - makes this an async generator


@attrs.define
class _BusStatistics:
    published: int = 0
    delivered: int = 0


class MemoryBus:
    """A publish/subscribe bus in one process; each relay gets its own backplane on it.

    Example::

        bus = MemoryBus()
        async with Relay(backplane=bus.backplane()) as a, Relay(backplane=bus.backplane()) as b:
            ...  # a and b behave as two servers of one cluster

    Args:
        clock: The clock of the shared history's TTL (seconds); `time.monotonic` by
            default. Tests pass a fake one to let minutes pass at once.
    """

    def __init__(self, *, clock: Callable[[], float] | None = None) -> None:
        self._members: list[MemoryBackplane] = []
        self.statistics = _BusStatistics()
        self._clock = clock
        self._history: MemoryHistory | None = None

    def history(self, settings: HistorySettings) -> MemoryHistory:
        """The history every relay on this bus shares (made with the first settings)."""
        if self._history is None:
            if self._clock is None:
                self._history = MemoryHistory(settings)
            else:
                self._history = MemoryHistory(settings, clock=self._clock)
        return self._history

    def lose_history(self) -> None:
        """Forget every conversation's history, as a flushed Redis would: epochs change."""
        if self._history is not None:
            self._history.log.clear()

    def backplane(
        self, *, node_id: NodeId | None = None, max_payload_bytes: int = 1 << 20
    ) -> MemoryBackplane:
        """Make a backplane attached to this bus, for one relay."""
        return MemoryBackplane(self, node_id=node_id, max_payload_bytes=max_payload_bytes)

    def _attach(self, member: MemoryBackplane) -> None:
        self._members.append(member)

    def _detach(self, member: MemoryBackplane) -> None:
        if member in self._members:
            self._members.remove(member)

    def _publish(self, topic: str, payload: bytes) -> None:
        self.statistics.published += 1
        for member in list(self._members):
            if topic in member.topics:
                member._deliver(BackplaneMessage(topic=topic, payload=payload))
                self.statistics.delivered += 1


class MemoryBackplane(Backplane):
    """One relay's backplane on a `MemoryBus`."""

    def __init__(
        self, bus: MemoryBus, *, node_id: NodeId | None = None, max_payload_bytes: int = 1 << 20
    ) -> None:
        super().__init__(node_id=node_id, max_payload_bytes=max_payload_bytes)
        self._bus = bus
        self.topics: set[str] = set()
        self._send: MemoryObjectSendStream[BackplaneEvent]
        self._receive: MemoryObjectReceiveStream[BackplaneEvent]
        self._send, self._receive = anyio.create_memory_object_stream[BackplaneEvent](math.inf)
        self._started = False
        self._closed = False
        self._published = 0
        self._delivered = 0
        self._iterating = False

    async def start(self) -> None:
        """Attach to the bus."""
        if self._closed:
            raise RuntimeError("a closed backplane cannot be started again")
        if not self._started:
            self._started = True
            self._bus._attach(self)

    async def aclose(self) -> None:
        """Detach from the bus; `messages` ends."""
        self._closed = True
        self._bus._detach(self)
        self._send.close()
        if not self._iterating:
            self._receive.close()  # nobody will: messages() was never iterated

    async def publish(self, topic: str, payload: bytes) -> None:
        """Deliver ``payload`` to every backplane on the bus subscribed to ``topic``.

        Raises:
            BackplaneError: If the payload is too large or the backplane is closed.
        """
        _check(self, payload, closed=self._closed or not self._started)
        self._published += 1
        self._bus._publish(topic, payload)

    async def subscribe(self, topic: str) -> None:
        """Start receiving ``topic``."""
        self.topics.add(topic)

    async def unsubscribe(self, topic: str) -> None:
        """Stop receiving ``topic``."""
        self.topics.discard(topic)

    async def messages(self) -> AsyncIterator[BackplaneEvent]:
        """Iterate over delivered messages until closed."""
        if self._closed and not self._iterating:
            return  # closed before anyone listened: aclose() closed the stream already
        self._iterating = True
        async with self._receive:
            async for message in self._receive:
                if isinstance(message, BackplaneMessage):
                    self._delivered += 1
                yield message

    def history(self, settings: HistorySettings) -> History:
        """The bus's history, shared by every relay on it."""
        return self._bus.history(settings)

    def statistics(self) -> BackplaneStatistics:
        """Return what this backplane published and delivered; it is always healthy."""
        return BackplaneStatistics(published=self._published, delivered=self._delivered)

    def _deliver(self, message: BackplaneEvent) -> None:
        # Broken or closed: this node stopped listening (it is shutting down), like a
        # dropped socket.
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            self._send.send_nowait(message)


def _check(backplane: Backplane, payload: bytes, *, closed: bool) -> None:
    if closed:
        raise BackplaneError("the backplane is closed")
    if len(payload) > backplane.max_payload_bytes:
        raise BackplaneError(
            f"payload of {len(payload)} bytes exceeds the backplane limit of"
            f" {backplane.max_payload_bytes}"
        )
