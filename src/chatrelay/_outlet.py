"""One outbound engine for every transport: order and flow of a connection's events.

An `Outlet` decides, for each event the relay hands a connection, whether it goes
to the client at once (the direct path: written in the sender's task, with no task
woken per recipient) or waits on the connection's bounded `OutgoingStream`, and
then writes what waits, in order, from a task that runs only while something does.
It keeps the connection's pending acks (one bound, `Limits.pending_acks`), finishes
a write that had to wait before any later one, and holds the ordering rule: a
request's ack goes out after every event handed to the connection before it.

A transport supplies a `Wire`: how to frame an event for its wire (the body is
encoded once per broadcast, in `Outbound.cached`), whether it can take a frame now,
how to hand one over now, and how to write one waiting as long as needed. Nothing
else: the rules above are the same on every transport, the in-memory one included.

The end of a connection the server closed is one rule too (`close_or_abort`): the
client has `CLOSE_GRACE` seconds to take its last events and answer the close, then
its connection is aborted.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Final, Generic, Protocol, TypeVar

import anyio
from anyio.abc import TaskGroup

from ._connection import Connection
from ._outbound import Outbound

__all__ = ["CLOSE_GRACE", "Outlet", "Wire", "close_or_abort"]

_logger = logging.getLogger("chatrelay")

F = TypeVar("F")

CLOSE_GRACE: Final = 1.5
"""Seconds a client that the server closed has to take its last events and answer."""

# How often a wait for the writes checks whether the connection closed meanwhile.
_CLOSED_CHECK: Final = 0.1


class Wire(Protocol[F]):
    """What a transport supplies to an `Outlet`, for one connection."""

    def frame(self, item: Outbound, ack_id: int | None) -> F:
        """The event as the wire carries it; ``ack_id`` if the client must ack it."""

    def ready(self) -> bool:
        """Whether `put` can take a frame now (the direct path)."""

    def put(self, frame: F) -> Awaitable[None] | None:
        """Hand a frame over without waiting; called only right after `ready`.

        Returns ``None`` once it is handed over, or an awaitable that finishes a
        write that had to wait: the outlet awaits it in a task before writing
        anything else.
        """

    async def write(self, frame: F) -> None:
        """Hand a frame over, waiting as long as the transport needs."""

    def gone(self, error: Exception) -> bool:
        """Whether an error of `put` or `write` means that the client is gone."""

    def forget_ack(self, ack_id: int) -> None:
        """The outlet no longer awaits the ack ``ack_id`` (past the bound)."""


class Outlet(Generic[F]):
    """Takes a connection's events to its client through a `Wire`.

    Args:
        conn: The connection.
        wire: The transport's side.
        pending_acks: How many events awaiting the client's ack are remembered.
        on_gone: Called (at most once) when a write finds the client gone.
    """

    def __init__(
        self,
        conn: Connection,
        wire: Wire[F],
        *,
        pending_acks: int,
        on_gone: Callable[[], None] = lambda: None,
    ) -> None:
        self._conn = conn
        self._wire = wire
        self._limit = pending_acks
        self._on_gone = on_gone
        self._ids = itertools.count(1)
        self._pending: dict[int, Outbound] = {}
        self._tg: TaskGroup | None = None
        self._busy = False  # a write is under way: the wire takes one at a time
        self._draining = False  # a task writes what waits on `outgoing`
        self._forwarded = 0  # events written from `outgoing`
        self._changed: anyio.Event | None = None
        self._failed_once = False
        self._gone = False

    def start(self, tg: TaskGroup) -> None:
        """Take events directly from now on; ``tg`` runs the tasks it may need."""
        self._tg = tg
        self._conn.deliver_directly(self.deliver)
        if self._conn.queued:
            self._drain_soon()  # queued before the direct path was in place

    def stop(self) -> None:
        """Take no more events directly (they queue on ``outgoing``)."""
        self._conn.deliver_directly(None)
        self._notify()

    # --- the direct path ---------------------------------------------------------------

    def deliver(self, item: Outbound) -> bool:
        """Send ``item`` now if nothing waits and the wire can take it; else refuse it.

        The relay calls it during a fan-out, in the sender's task; a refused event
        goes to ``outgoing`` (its bound and slow-consumer policy apply), and a task
        writes it after what waits before it.
        """
        wire = self._wire
        if self._busy or self._draining or not wire.ready():
            self._drain_soon()
            return False
        try:
            # The usual event asks for no ack: its frame is the one all recipients share.
            frame = wire.frame(item, None) if item._ack is None else self._frame(item)
            pending = wire.put(frame)
        except Exception as error:
            self._failed(error, item)
            return True
        if pending is not None:
            assert self._tg is not None
            self._busy = True
            self._tg.start_soon(self._finish, pending, item)
        return True

    async def _finish(self, pending: Awaitable[None], item: Outbound) -> None:
        try:
            await pending
        except Exception as error:
            self._failed(error, item)
        finally:
            self._idle()

    # --- the queue path ----------------------------------------------------------------

    def _drain_soon(self) -> None:
        if not self._draining and self._tg is not None:
            self._draining = True
            self._tg.start_soon(self._drain)

    async def _drain(self) -> None:
        """Write what waits on ``outgoing``, in order, then end: the direct path resumes."""
        outgoing = self._conn.outgoing
        try:
            while not self._conn.closed and not self._gone:
                item = outgoing.receive_nowait()  # no checkpoint per queued event
                try:
                    frame = self._frame(item)
                except Exception as error:
                    self._failed(error, item)
                else:
                    await self._write(frame, item)
                finally:
                    self._forwarded += 1
                    self._notify()
        except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
            pass  # all written (or closed)
        finally:
            self._draining = False
            self._notify()

    async def _write(self, frame: F, item: Outbound | None) -> None:
        while self._busy:
            await self._wait()
        self._busy = True
        try:
            await self._wire.write(frame)
        except Exception as error:
            self._failed(error, item)
        finally:
            self._idle()

    # --- the ordering rule --------------------------------------------------------------

    async def flushed(self) -> None:
        """Return once every event handed to the connection so far is written.

        Call it before answering a request: the ack then comes after them.
        """
        conn = self._conn
        target = conn.queued_total
        while (self._forwarded < target or self._busy) and not conn.closed and not self._gone:
            if not self._draining:
                self._drain_soon()
            with anyio.move_on_after(_CLOSED_CHECK):
                await self._wait()

    async def reply(self, frame: F) -> None:
        """Write a request's ack (a frame of the transport's), after what came before it."""
        await self.flushed()
        if not self._gone:
            await self._write(frame, None)

    # --- acks ------------------------------------------------------------------------------

    def acked(self, ack_id: int) -> Outbound | None:
        """The event the client acknowledged with ``ack_id``, if it is still awaited."""
        return self._pending.pop(ack_id, None)

    def _frame(self, item: Outbound) -> F:
        if not item.wants_ack:
            return self._wire.frame(item, None)
        ack_id = next(self._ids)
        self._pending[ack_id] = item
        if len(self._pending) > self._limit:
            oldest = next(iter(self._pending))
            del self._pending[oldest]
            self._wire.forget_ack(oldest)
        return self._wire.frame(item, ack_id)

    # --- failures ----------------------------------------------------------------------

    def _failed(self, error: Exception, item: Outbound | None) -> None:
        if self._wire.gone(error):
            if not self._gone:
                self._gone = True
                _logger.debug("client gone: connection=%s", self._conn.id, exc_info=error)
                self._on_gone()
            return
        # Not the client's doing (every frame is valid JSON text): the connection
        # stays, this event is lost. Logged at ERROR once per connection, so that a
        # bug cannot flood the log; its ack is no longer awaited.
        if not self._failed_once:
            self._failed_once = True
            _logger.error(
                "%s send failed (the connection stays; later failures of it are not"
                " logged): connection=%s user=%s",
                self._conn.transport,
                self._conn.id,
                self._conn.user_id,
                exc_info=error,
            )
        if item is not None and item.wants_ack:
            for ack_id in [k for k, v in self._pending.items() if v is item]:
                del self._pending[ack_id]
                self._wire.forget_ack(ack_id)

    # --- waiting ---------------------------------------------------------------------------

    def _idle(self) -> None:
        self._busy = False
        self._notify()

    def _notify(self) -> None:
        changed, self._changed = self._changed, None
        if changed is not None:
            changed.set()

    async def _wait(self) -> None:
        if self._changed is None:
            self._changed = anyio.Event()
        await self._changed.wait()


async def close_or_abort(close: Callable[[], Awaitable[object]], abort: Callable[[], bool]) -> bool:
    """Close a client's connection politely; abort it if that is not over in time.

    A client that stopped reading (a slow consumer) cannot read a close that waits
    behind what it did not read, and would keep its connection, and the server's
    buffers, for as long as it likes: if ``close`` has not returned within
    `CLOSE_GRACE` seconds, ``abort`` ends the connection.

    Args:
        close: The transport's close; returns once the client took it and answered.
        abort: Aborts the connection; whether it could (some servers do not tell).

    Returns:
        Whether the connection was aborted.
    """
    with anyio.move_on_after(CLOSE_GRACE):
        await close()
        return False
    return abort()
