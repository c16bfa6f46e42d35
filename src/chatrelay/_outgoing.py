"""The events waiting to be sent to one connection: a queue bounded in bytes.

A connection's adapter sends what it can at once; what it cannot send waits here,
in order. The bound is on the size of what waits (as Centrifugo bounds its client
queues), not on the number of events: a burst of many small events (a conversation
marked read, the replay after a backplane outage) fits, while a client that stopped
reading is caught as soon as what waits for it outgrows the bound.

The queue also counts what went in and what came out, so that an adapter can tell
when everything queued before a given moment has been taken (`put_count`,
`taken_count`): the ordering rule "no ack overtakes an earlier event" is built on it.
"""

from __future__ import annotations

import math
from collections import deque

import anyio
from anyio.abc import ObjectReceiveStream
from anyio.lowlevel import checkpoint

from ._outbound import Outbound

__all__ = ["OutgoingStream"]


class OutgoingStream(ObjectReceiveStream["Outbound"]):
    """The events queued for one connection, as its adapter reads them.

    It ends (``EndOfStream``) when the connection has closed and every event queued
    before was taken. Made by the connection; adapters only read it.

    Attributes:
        max_bytes: The most (approximate) bytes that may wait; see `Outbound.size`.
        max_items: The most events that may wait (``math.inf`` for no count bound).
    """

    __slots__ = (
        "_bytes",
        "_ended",
        "_items",
        "_reader_closed",
        "_waiter",
        "max_bytes",
        "max_items",
        "put_count",
        "taken_count",
    )

    def __init__(self, *, max_bytes: float, max_items: float = math.inf) -> None:
        self.max_bytes = max_bytes
        self.max_items = max_items
        self._items: deque[Outbound] = deque()
        self._bytes = 0
        self._ended = False  # no more events will come: the connection closed
        self._reader_closed = False  # the adapter is done reading
        self._waiter: anyio.Event | None = None
        self.put_count = 0
        """Events ever queued here."""
        self.taken_count = 0
        """Events ever taken from here by the adapter."""

    @property
    def queued(self) -> int:
        """How many events wait."""
        return len(self._items)

    @property
    def queued_bytes(self) -> int:
        """The approximate size of what waits, in bytes."""
        return self._bytes

    def put(self, item: Outbound) -> bool:
        """Queue ``item``; ``False`` (nothing queued) if it would pass a bound.

        Raises:
            anyio.ClosedResourceError: If the adapter stopped reading.
        """
        if self._reader_closed:
            raise anyio.ClosedResourceError
        size = item.size
        if len(self._items) >= self.max_items or self._bytes + size > self.max_bytes:
            return False
        self._items.append(item)
        self._bytes += size
        self.put_count += 1
        self._wake()
        return True

    def end(self) -> None:
        """No more events will come; the reader gets what waits, then ``EndOfStream``."""
        self._ended = True
        self._wake()

    def receive_nowait(self) -> Outbound:
        """Take the next event without waiting.

        Raises:
            anyio.WouldBlock: If none waits (yet).
            anyio.EndOfStream: If none waits and the connection closed.
            anyio.ClosedResourceError: If this stream was closed.
        """
        if self._reader_closed:
            raise anyio.ClosedResourceError
        if self._items:
            item = self._items.popleft()
            self._bytes -= item.size
            self.taken_count += 1
            return item
        if self._ended:
            raise anyio.EndOfStream
        raise anyio.WouldBlock

    async def receive(self) -> Outbound:
        """Take the next event, waiting for one.

        Raises:
            anyio.EndOfStream: If none waits and the connection closed.
            anyio.ClosedResourceError: If this stream was closed.
        """
        await checkpoint()
        while True:
            try:
                return self.receive_nowait()
            except anyio.WouldBlock:
                if self._waiter is None:
                    self._waiter = anyio.Event()
                await self._waiter.wait()

    def close(self) -> None:
        """Stop reading: what waits is dropped, and the connection queues nothing more."""
        self._reader_closed = True
        self._items.clear()
        self._bytes = 0
        self._wake()

    async def aclose(self) -> None:
        """Stop reading (see `close`)."""
        self.close()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            waiter.set()
