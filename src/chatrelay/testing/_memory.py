"""The in-memory transport."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
import attrs
from anyio.abc import TaskGroup

from .._auth import Credentials
from .._connection import Connection, Outbound
from .._exceptions import CloseReason, ConnectionClosed
from .._outlet import Outlet
from .._relay import Relay
from .._types import UserId

__all__ = ["MemoryClient", "MemoryTransport", "ReceivedEvent"]


@attrs.frozen(kw_only=True)
class ReceivedEvent:
    """An event a `MemoryClient` received.

    Attributes:
        event: The wire event name.
        data: The payload, as decoded from the JSON frame.
        wants_ack: Whether the server asked for an ack (``message:received``).
    """

    event: str
    data: Any
    wants_ack: bool = False
    _item: Outbound | None = attrs.field(default=None, repr=False, eq=False, alias="item")
    _ack_id: int | None = attrs.field(default=None, repr=False, eq=False, alias="ack_id")


class MemoryClient:
    """A client connected through a `MemoryTransport`.

    Attributes:
        received: Every event received so far, in order.
        close_reason: Why the server closed the connection, once it did.
    """

    def __init__(self, connection: Connection, *, auto_ack: bool, pending_acks: int = 1024) -> None:
        self._conn = connection
        self._auto_ack = auto_ack
        self.received: list[ReceivedEvent] = []
        self._pending: list[ReceivedEvent] = []
        self._changed = anyio.Event()
        self._reading = anyio.Event()
        self._reading.set()
        self.close_reason: CloseReason | str | None = None
        # The core's outbound engine, as on every transport: events reach `received`
        # directly while the client reads, and wait on the connection's bounded queue
        # while it is paused.
        self._outlet = Outlet(connection, _Wire(self), pending_acks=pending_acks)

    @property
    def user_id(self) -> UserId:
        """The authenticated user of this client."""
        return self._conn.user_id

    @property
    def connection(self) -> Connection:
        """The relay's side of this client's connection."""
        return self._conn

    async def emit(self, event: str, data: object) -> None:
        """Send a request without waiting for anything but its handling.

        Raises:
            TypeError: If ``data`` is not JSON-serializable (as on a real wire).
            ConnectionClosed: If the server closed the connection.
        """
        await self.request(event, data)

    async def request(self, event: str, data: object) -> dict[str, Any]:
        """Send a request and return its ack, decoded from JSON.

        As on every transport, the ack comes after every event the server sent
        before it: those are in `received` when this returns. So while the client
        is paused (`pause`), the ack waits too.

        Raises:
            TypeError: If ``data`` is not JSON-serializable (as on a real wire).
            ConnectionClosed: If the server closed the connection.
        """
        frame = json.dumps(data, allow_nan=False)
        reply = await self._conn.handle(event, json.loads(frame), size=len(frame.encode()))
        decoded: dict[str, Any] = json.loads(json.dumps(reply, allow_nan=False))
        # The protocol's ordering rule, as on every transport: the ack comes after
        # every event handed to the connection before it (so not while paused).
        await self._outlet.flushed()
        return decoded

    async def receive(self, event: str | None = None, *, timeout: float = 5.0) -> ReceivedEvent:
        """Return the next event not returned yet (of the name ``event``, if given).

        Events of other names that arrive before it stay available to later calls.

        Raises:
            TimeoutError: If no such event arrives within ``timeout`` seconds.
            ConnectionClosed: If the connection closed before such an event arrived.
        """
        with anyio.fail_after(timeout):
            while True:
                for index, candidate in enumerate(self._pending):
                    if event is None or candidate.event == event:
                        del self._pending[index]
                        return candidate
                if self.close_reason is not None:
                    raise ConnectionClosed(self.close_reason)
                await self._changed.wait()

    def events(self, event: str | None = None) -> list[ReceivedEvent]:
        """Every event received so far (of the name ``event``, if given)."""
        return [e for e in self.received if event is None or e.event == event]

    async def ack(self, received: ReceivedEvent) -> None:
        """Acknowledge an event that asked for an ack, as a real client's callback does."""
        if received._item is None or not received.wants_ack:
            raise ValueError(f"{received.event} did not ask for an ack")
        # As a real transport does: an ack the relay no longer awaits (past
        # `Limits.pending_acks`, or acked before) is ignored.
        if received._ack_id is not None and self._outlet.acked(received._ack_id) is not None:
            await self._conn.acknowledge(received._item)

    def pause(self) -> None:
        """Stop reading from the connection, like a client on a stalled network."""
        self._reading = anyio.Event()

    def resume(self) -> None:
        """Read from the connection again."""
        self._reading.set()

    def _notify(self) -> None:
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    def _start(self, tg: TaskGroup) -> None:
        self._conn.on_close(self._closed)
        self._outlet.start(tg)
        if self._conn.closed:
            self._closed()

    def _closed(self) -> None:
        self.close_reason = self._conn.close_reason
        self._notify()

    def _record(self, frame: tuple[Outbound, int | None]) -> Awaitable[None] | None:
        item, ack_id = frame
        received = ReceivedEvent(
            event=item.event,
            # Through JSON text, as on a real wire: the client sees what a socket carries.
            data=json.loads(item.json),
            wants_ack=item.wants_ack,
            item=item,
            ack_id=ack_id,
        )
        self.received.append(received)
        self._pending.append(received)
        self._notify()
        if self._auto_ack and item.wants_ack:
            return self.ack(received)
        return None


class _Wire:
    """The memory transport's side of the outlet: events land in the client's list."""

    def __init__(self, client: MemoryClient) -> None:
        self._client = client

    def frame(self, item: Outbound, ack_id: int | None) -> tuple[Outbound, int | None]:
        return item, ack_id

    def ready(self) -> bool:
        return self._client._reading.is_set()

    def put(self, frame: tuple[Outbound, int | None]) -> Awaitable[None] | None:
        return self._client._record(frame)

    async def write(self, frame: tuple[Outbound, int | None]) -> None:
        await self._client._reading.wait()
        pending = self._client._record(frame)
        if pending is not None:
            await pending

    def gone(self, error: Exception) -> bool:
        return False

    def forget_ack(self, ack_id: int) -> None:
        pass


class MemoryTransport:
    """Connects in-process clients to a relay through its real request path.

    Args:
        relay: A running relay.
    """

    def __init__(self, relay: Relay) -> None:
        self.relay = relay

    @asynccontextmanager
    async def connect(
        self,
        user: UserId | None = None,
        *,
        token: str | None = None,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        auto_ack: bool = False,
    ) -> AsyncIterator[MemoryClient]:
        """Connect a client; leaving the block disconnects it.

        Args:
            user: A shortcut for the ``userId`` query parameter that the development
                authenticator reads.
            token: A bearer token for the relay's authenticator.
            query: Handshake query parameters.
            headers: Handshake headers.
            auto_ack: Acknowledge every event that asks for an ack as it arrives.

        Yields:
            The connected client.

        Raises:
            Unauthorized: If the relay's authenticator refuses the credentials.
        """
        params = dict(query or {})
        if user is not None:
            params["userId"] = user
        credentials = Credentials(
            token=token,
            query=params,
            headers={k.lower(): v for k, v in (headers or {}).items()},
            transport="memory",
        )
        identity = await self.relay.authenticate(credentials)
        async with self.relay.connect(identity, transport="memory") as connection:
            client = MemoryClient(
                connection,
                auto_ack=auto_ack,
                pending_acks=self.relay.config.limits.pending_acks,
            )
            async with anyio.create_task_group() as tg:
                client._start(tg)
                try:
                    yield client
                finally:
                    client._outlet.stop()
                    tg.cancel_scope.cancel()
