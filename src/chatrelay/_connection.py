"""One client connection as the relay sees it, and the events queued for it."""

from __future__ import annotations

import math
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import anyio
import attrs

from ._auth import Identity
from ._exceptions import CloseReason
from ._limits import TokenBucket
from ._outbound import Outbound
from ._outgoing import OutgoingStream
from ._types import ConnectionId, ConversationId, MessageId, UserId

if TYPE_CHECKING:
    from ._exceptions import ProtocolError

__all__ = ["Connected", "Connection", "ConnectionOwner", "Delivery", "Outbound"]

_T = TypeVar("_T")


@attrs.frozen(kw_only=True)
class Delivery:
    """A recipient acknowledged a ``message:received``: the message reached a device.

    Attributes:
        user_id: The recipient whose client acknowledged it.
        conversation_id: The conversation of the message.
        message_id: The message.
        connection_id: The connection that acknowledged it.
    """

    user_id: UserId
    conversation_id: ConversationId
    message_id: MessageId
    connection_id: ConnectionId


class ConnectionOwner(Protocol):
    """What a `Connection` asks of the relay that made it."""

    async def handle_request(
        self, conn: Connection, event: object, data: object, size: int | None
    ) -> dict[str, Any]:
        """Handle a request of ``conn``; return its ack."""

    def reject_request(self, conn: Connection, error: ProtocolError) -> dict[str, Any]:
        """Answer a request of ``conn`` that its adapter could not decode."""

    async def acknowledge(self, conn: Connection, item: Outbound) -> None:
        """``conn``'s client acknowledged ``item``."""

    def connection_closed(self, conn: Connection) -> None:
        """``conn`` closed (whoever closed it): forget it soon."""

    def slow_consumer(self, conn: Connection) -> None:
        """What waits for ``conn`` passed its bound: close it as a slow consumer."""


class Connection:
    """A client connection, made by `Relay.connect` and driven by an adapter.

    The adapter feeds each inbound request to `handle` and sends what
    `outgoing` yields to the client. When the relay closes the connection (a
    slow consumer, a shutdown), `outgoing` ends and `close_reason` says
    why (a `CloseReason`); the adapter then closes the transport, mapping the
    reason to its own close code.

    Attributes:
        id: The relay's id for this connection, unique in the cluster.
        identity: Who is connected.
        transport: The adapter's name.
    """

    __slots__ = (
        "_bucket",
        "_last_rate_error",
        "_max_bytes",
        "_max_items",
        "_on_close",
        "_outgoing",
        "_relay",
        "_sink",
        "close_reason",
        "id",
        "identity",
        "transport",
    )

    def __init__(
        self,
        relay: ConnectionOwner,
        connection_id: ConnectionId,
        identity: Identity,
        *,
        transport: str,
        max_bytes: int,
        max_items: float = math.inf,
        bucket: TokenBucket,
    ) -> None:
        self.id = connection_id
        self.identity = identity
        self.transport = transport
        self._relay = relay
        # The queue is made on first use: an idle connection whose adapter takes its
        # events directly never needs one (it is most of a connection's memory).
        self._max_bytes = max_bytes
        self._max_items = max_items
        self._outgoing: OutgoingStream | None = None
        self._bucket = bucket
        self._last_rate_error = -math.inf
        self._sink: Callable[[Outbound], bool] | None = None
        self._on_close: Callable[[], None] | None = None
        self.close_reason: CloseReason | str | None = None

    @property
    def outgoing(self) -> OutgoingStream:
        """The events to send to the client, in order; it ends when the connection closes.

        Adapters that take events through `deliver_directly` read here only what
        their sink refused.
        """
        if self._outgoing is None:
            return self._make_queue()
        return self._outgoing

    @property
    def queued(self) -> int:
        """How many events wait on `outgoing` (no queue is made to answer)."""
        if self._outgoing is None:
            return 0
        return self._outgoing.queued

    @property
    def queued_total(self) -> int:
        """How many events ever waited on `outgoing` (no queue is made to answer)."""
        if self._outgoing is None:
            return 0
        return self._outgoing.put_count

    def _make_queue(self) -> OutgoingStream:
        outgoing = OutgoingStream(max_bytes=self._max_bytes, max_items=self._max_items)
        if self.close_reason is not None:
            outgoing.end()
        self._outgoing = outgoing
        return outgoing

    @property
    def user_id(self) -> UserId:
        """The authenticated user of this connection."""
        return self.identity.user_id

    @property
    def closed(self) -> bool:
        """Whether the relay closed this connection (or the adapter left it)."""
        return self.close_reason is not None

    async def handle(
        self, event: object, data: object, *, size: int | None = None
    ) -> dict[str, Any]:
        """Handle one request of the client.

        A request that fails is answered with an ``error`` event on `outgoing`;
        the returned ack then reads ``{"ok": false, "error": {…}}``. Nothing is raised
        for a bad request, so one client's mistake never ends its connection.

        Args:
            event: The event name, as received.
            data: The payload, as decoded from the wire (JSON-compatible).
            size: The payload's size in bytes on the wire, if the adapter knows it;
                otherwise the relay measures it.

        Returns:
            The ack payload, to send if the client asked for an ack.

        Raises:
            ConnectionClosed: If the connection was closed.
        """
        return await self._relay.handle_request(self, event, data, size)

    async def acknowledge(self, item: Outbound) -> None:
        """Report that the client acknowledged ``item`` (an event that wanted an ack)."""
        await self._relay.acknowledge(self, item)

    def reject(self, error: ProtocolError) -> dict[str, Any]:
        """Answer a request that the adapter could not decode, as `handle` would.

        For what only the adapter can judge (a frame that is not JSON, a binary
        frame): the request counts against the rate limit and the statistics, and
        ``error`` is queued on `outgoing` like any failed request's.

        Args:
            error: Why the request was refused, such as an
                `InvalidPayload`.

        Returns:
            The ack payload ``{"ok": false, "error": {…}}``, to send if the client
            asked for an ack.
        """
        return self._relay.reject_request(self, error)

    def deliver_directly(self, sink: Callable[[Outbound], bool] | None) -> None:
        """Let the adapter take events as they are sent, before they are queued.

        A fan-out then hands each recipient's event to ``sink``, which passes it to
        the transport without waiting (no task wakes per recipient) and returns
        ``True``; or returns ``False``, and the event goes to `outgoing` as
        usual, with its bound and slow-consumer policy. To keep events in order,
        the sink must refuse while events it refused are still on their way (queued
        on `outgoing`, or taken from it and not yet sent).

        Args:
            sink: ``sink(item) -> bool``, called in the sender's task; it must not
                raise. ``None`` stops direct delivery.
        """
        self._sink = sink

    def on_close(self, callback: Callable[[], None] | None) -> None:
        """Have ``callback()`` called when the connection closes, whoever closes it.

        For an adapter that does not wait on `outgoing` (it takes events through
        `deliver_directly`): it learns this way that the relay closed the
        connection (a slow consumer, a shutdown) and should close the transport.
        Called once, in the task that closes the connection; it must not raise or
        block. If the connection is closed already, it is not called: check
        `closed` after setting it.

        Args:
            callback: What to call; ``None`` forgets the one set before.
        """
        self._on_close = callback

    def close(self, reason: CloseReason | str) -> None:
        """Close the connection from the server side; `outgoing` ends.

        The relay forgets the connection (rooms, presence, typing) promptly, even if
        the adapter is slow to notice. The first reason stands.

        Args:
            reason: Why: a `CloseReason`, or an application's own text (a
                text equal to a `CloseReason` becomes that reason).
        """
        if self.close_reason is None:
            self.close_reason = CloseReason.parse(reason)
            if self._outgoing is not None:
                self._outgoing.end()
            self._relay.connection_closed(self)
            callback = self._on_close
            if callback is not None:
                self._on_close = None
                callback()

    def _close_queue(self) -> None:
        # The adapter is done with the connection: later events fail fast.
        if self._outgoing is not None:
            self._outgoing.close()

    def _push(self, item: Outbound) -> None:
        if self.close_reason is not None:
            return
        sink = self._sink
        if sink is not None and sink(item):
            return
        outgoing = self._outgoing
        if outgoing is None:
            outgoing = self._make_queue()
        try:
            if not outgoing.put(item):
                self._relay.slow_consumer(self)
        except anyio.ClosedResourceError:
            # The adapter stopped reading: the client is going away.
            self.close(CloseReason.CLIENT_DISCONNECTED)

    def __repr__(self) -> str:
        return f"<Connection {self.id} user={self.user_id!r} transport={self.transport!r}>"


class _Opener(Protocol):
    """The relay's side of `Connected`."""

    async def _open(self, identity: Identity, transport: str) -> Connection: ...

    async def _release(self, conn: Connection) -> None: ...


class Connected:
    """What `Relay.connect` returns: one object per connection, a small one.

    Entering opens the connection (``relay._open``), leaving releases it
    (``relay._release``), whatever happened in the block.
    """

    __slots__ = ("_conn", "_identity", "_relay", "_transport")

    def __init__(self, relay: _Opener, identity: Identity, transport: str) -> None:
        self._relay = relay
        self._identity = identity
        self._transport = transport
        self._conn: Connection | None = None

    async def __aenter__(self) -> Connection:
        self._conn = await self._relay._open(self._identity, self._transport)
        return self._conn

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._conn is not None
        await self._relay._release(self._conn)
