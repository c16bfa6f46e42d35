"""The Socket.IO binding's side of a connection's `Outlet`, and what it knows of engine.io.

This is the one module that reaches into python-engineio's and python-socketio's
internals for writing (``tests/unit/test_outlet.py`` pins the versions it was written
for, and checks each internal it uses):

- an engine.io socket's ``queue`` (an ``asyncio.Queue`` that its writer task, or a
  long-polling GET, takes packets from) and whether that writer waits on it
  (``queue._getters``), its ``closed`` / ``closing`` / ``last_ping`` flags;
- the ASGI ``send`` of a client that connected over WebSocket from the start (in
  the connect handler's environ, ``asgi.send``), on which an event is written
  directly while engine.io's writer is idle, rather than through engine.io's queue,
  writer task and timer per packet;
- python-socketio's manager's ack callbacks (``manager.callbacks``), so that it
  routes a client's ACK packet to the outlet as it routes its own.

A broadcast is encoded once (`encoded`): the Socket.IO text of the event around
the payload's JSON, shared by every recipient; a recipient asked for an ack gets
its id spliced in.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, Final

import anyio
import attrs
import engineio

from .. import codec
from .._outbound import Outbound
from . import _eager

__all__ = ["Encoded", "SocketIOWire", "encoded", "websocket_send"]

ASGISend = Callable[[dict[str, Any]], Coroutine[Any, Any, None]]

# Engine.IO packets waiting for one client before the outlet stops handing it more.
# Engine.IO's own queue is unbounded; stopping here lets the relay's bounded queue
# fill instead, so its slow-consumer policy applies to Socket.IO clients too. A
# long-polling client takes at most this many packets per round trip.
SEND_BUFFER: Final = 64
# How often a write that waits for engine.io's queue to drain checks the client.
_DRAIN_CHECK: Final = 0.1
# What a write raises when the client is gone: engine.io's reader sees it too.
_GONE: Final = (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError)


@attrs.frozen
class Encoded:
    """One event as Socket.IO text, shared by all recipients: ``head[id]body``."""

    head: str
    body: str
    packet: Any  # the engine.io packet of head + body, for recipients without an ack
    text: str  # that packet as engine.io writes it on a WebSocket: "4" + head + body


def encoded(item: Outbound, head: str) -> Encoded:
    """The event as python-socketio's ``Packet.encode()`` writes an EVENT, built once.

    Around the payload's JSON that the relay serialized once; the engine.io packet
    is then shared by every recipient, as python-socketio's own broadcasts share theirs.
    """
    body = f"[{codec.dumps(item.event)},{item.json}]"
    packet = engineio.packet.Packet(engineio.packet.MESSAGE, head + body)
    return Encoded(head, body, packet, packet.encode())


@attrs.frozen
class Frame:
    """An event for one recipient: the shared encoding, and its ack id if it has one."""

    encoded: Encoded
    ack_id: int | None

    def packet(self) -> Any:
        if self.ack_id is None:
            return self.encoded.packet
        text = f"{self.encoded.head}{self.ack_id}{self.encoded.body}"
        return engineio.packet.Packet(engineio.packet.MESSAGE, text)

    def text(self) -> str:
        if self.ack_id is None:
            return self.encoded.text
        return f"4{self.encoded.head}{self.ack_id}{self.encoded.body}"


class SocketIOWire:
    """Writes one client's events: directly on its WebSocket, or through engine.io.

    Args:
        server: The python-socketio ``AsyncServer``.
        sid: The client's Socket.IO sid in the namespace.
        socket: Its engine.io socket.
        ws_send: The ASGI ``send`` of its WebSocket, if it connected over one from
            the start (see `websocket_send`).
        cache_key: Names the adapter's encoding in `Outbound.cached`.
        head: ``"2/namespace,"``: the start of an EVENT packet of the namespace.
        on_ack: Called with an ack id when the client acks that event.
        closed: Tells whether the connection closed (a waiting write gives up).
    """

    def __init__(
        self,
        *,
        server: Any,
        sid: str,
        socket: Any,
        ws_send: ASGISend | None,
        cache_key: str,
        head: str,
        on_ack: Callable[[int], Awaitable[None]],
        closed: Callable[[], bool],
    ) -> None:
        self._server = server
        self._sid = sid
        self._socket = socket
        self._ws_send = ws_send
        self._cache_key = cache_key
        self._head = head
        self._on_ack = on_ack
        self._closed = closed
        self._ping_timeout: float = server.eio.ping_timeout

    def frame(self, item: Outbound, ack_id: int | None) -> Frame:
        encoding = item.cached(self._cache_key, self._encode)
        if ack_id is not None:
            # python-socketio's manager routes the client's ACK packet to this callback,
            # as for its own emits; the ids are the outlet's, one sequence per client.
            callbacks = self._server.manager.callbacks.setdefault(
                self._sid, {0: itertools.count(1)}
            )
            callbacks[ack_id] = _AckCallback(self._on_ack, ack_id)
        return Frame(encoding, ack_id)

    def _encode(self, item: Outbound) -> Encoded:
        return encoded(item, self._head)

    def ready(self) -> bool:
        socket = self._socket
        last_ping = socket.last_ping
        return (
            not socket.closed
            and not socket.closing
            # What engine.io's send() checks: past it, a send closes the socket.
            and not (last_ping and time.time() - last_ping > self._ping_timeout)
            and socket.queue.qsize() < SEND_BUFFER
        )

    def put(self, frame: Frame) -> Awaitable[None] | None:
        queue = self._socket.queue
        if self._ws_send is not None and queue.qsize() == 0 and _waits_on(queue):
            # engine.io's writer is idle: write as it would, without waking it (a task,
            # a queue and a timer per packet). Eagerly, as asyncio's eager tasks do.
            message = {"type": "websocket.send", "bytes": None, "text": frame.text()}
            started = _eager.start(self._ws_send(message))
            return None if started is None else _eager.finish(started)
        queue.put_nowait(frame.packet())
        return None

    async def write(self, frame: Frame) -> None:
        queue = self._socket.queue
        while queue.qsize() >= SEND_BUFFER:
            if self._closed():
                return
            with anyio.move_on_after(_DRAIN_CHECK):
                await queue.join()
        if not self._closed():
            await self._server.eio.send_packet(self._socket.sid, frame.packet())

    def gone(self, error: Exception) -> bool:
        return isinstance(error, _GONE)

    def forget_ack(self, ack_id: int) -> None:
        self._server.manager.callbacks.get(self._sid, {}).pop(ack_id, None)

    def close_packets(self, error: Outbound | None) -> None:
        """Queue the ``error`` event that says why (if any), then engine.io's CLOSE."""
        if error is not None:
            self._socket.queue.put_nowait(self.frame(error, None).packet())
        self._socket.queue.put_nowait(engineio.packet.Packet(engineio.packet.CLOSE))


class _AckCallback:
    """What python-socketio calls with a client's ack of one event."""

    __slots__ = ("_ack_id", "_on_ack")

    def __init__(self, on_ack: Callable[[int], Awaitable[None]], ack_id: int) -> None:
        self._on_ack = on_ack
        self._ack_id = ack_id

    def __call__(self, *args: Any) -> Awaitable[None]:
        return self._on_ack(self._ack_id)


def websocket_send(environ: dict[str, Any], socket: Any) -> ASGISend | None:
    """The ASGI ``send`` that engine.io's writer uses for this client, if it is a WebSocket.

    Only for a client that connected over WebSocket from the start: then the connect
    handler's environ is the WebSocket's (python-socketio's ASGI mode puts the ASGI
    callables in it). A client that upgraded from long-polling has the environ of a
    polling request, and keeps engine.io's queue.
    """
    scope = environ.get("asgi.scope")
    send = environ.get("asgi.send")
    if (
        isinstance(scope, dict)
        and scope.get("type") == "websocket"
        # Started with send(None) by the direct path: a coroutine function is needed.
        and inspect.iscoroutinefunction(send)
        and socket is not None
        and getattr(socket, "upgraded", False)
        and not getattr(socket, "upgrading", True)
        and isinstance(getattr(socket, "queue", None), asyncio.Queue)
    ):
        send_: ASGISend = send
        return send_
    return None


def _waits_on(queue: asyncio.Queue[Any]) -> bool:
    """Whether a task (engine.io's writer) waits on the queue: it has sent all it took.

    The writer takes what is queued, writes it, then waits on the queue again; in
    between (or when it has exited) nobody waits, and events must queue behind.
    """
    getters: Iterable[asyncio.Future[None]] = getattr(queue, "_getters", ())
    return any(not getter.done() for getter in getters)
