"""One authenticated WebSocket connection of the Starlette adapter, and its sends.

`Session` reads the client's frames in the connection's ASGI task and sends the
relay's events from the fan-out (the direct path) or from a task while some are
queued. The handshake and authentication are `_wsadmission`'s, the close codes
`_wsclose`'s.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Final

import anyio
from anyio.abc import TaskGroup
from starlette.types import Message, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from .._connection import Connection, Outbound
from .._exceptions import ConnectionClosed, InvalidPayload
from .._outlet import Outlet
from . import _eager
from ._wsframes import (
    ACK_EVENT,
    AUTH_EVENT,
    FRAME_CACHE_KEY,
    ack_frame,
    binary_error,
    event_frame,
    parse_frame,
    text_frame,
)

__all__ = ["Session", "frame_size"]

_logger = logging.getLogger("chatrelay.websocket")

# What a send raises when the client is gone (the server's, Starlette's, anyio's): the
# session ends quietly. Anything else is a bug somewhere, logged (see Session._failed).
_GONE: Final = (
    OSError,
    WebSocketDisconnect,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
)


def _on_asyncio() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False  # trio
    return True


def frame_size(message: Message) -> int:
    """The size of a received frame, in bytes."""
    text = message.get("text")
    if text is not None:
        return len(text.encode())
    data = message.get("bytes")
    return len(data) if data is not None else 0


class _Wire:
    """The WebSocket binding's side of a connection's `Outlet`: JSON text frames."""

    __slots__ = ("_asgi_send", "_eager", "_ws")

    def __init__(self, websocket: WebSocket, send: Send) -> None:
        self._ws = websocket
        # Events go out as ASGI messages: the socket is accepted and stays so while the
        # session runs, so Starlette's state checks have nothing to add per event.
        self._asgi_send = send
        # asyncio: the direct path sends eagerly. trio: every event goes through the
        # queue (a trio send cannot be started outside a task).
        self._eager = _on_asyncio()

    def frame(self, item: Outbound, ack_id: int | None) -> str:
        if ack_id is None:
            return item.cached(FRAME_CACHE_KEY, text_frame)
        return event_frame(item, str(ack_id))

    def ready(self) -> bool:
        return self._eager

    def put(self, frame: str) -> Awaitable[None] | None:
        # Runs the send as asyncio's eager tasks do: it usually completes without
        # waiting (the server buffers the frame); one that waits, the outlet finishes.
        started = _eager.start(self._asgi_send({"type": "websocket.send", "text": frame}))
        return None if started is None else _eager.finish(started)

    async def write(self, frame: str) -> None:
        await self._ws.send_text(frame)

    def gone(self, error: Exception) -> bool:
        return isinstance(error, _GONE)

    def forget_ack(self, ack_id: int) -> None:
        pass  # the outlet was the only one to remember it


class Session:
    """One authenticated connection, served by the task that reads it.

    The reader runs in the connection's own (ASGI) task; events go out through the
    connection's `Outlet` (the core's outbound engine), from the relay's fan-out
    when the client keeps up. A second task runs only while there is something to
    wait for: a send that had to wait for the client, or events queued behind it. An
    idle connection therefore holds one task and no queue, which is most of what a
    connection costs.
    """

    __slots__ = ("_conn", "_max_frame_bytes", "_outlet", "_tg", "_ws")

    def __init__(
        self,
        websocket: WebSocket,
        conn: Connection,
        send: Send,
        *,
        max_frame_bytes: int,
        max_pending_acks: int,
    ) -> None:
        self._max_frame_bytes = max_frame_bytes
        self._ws = websocket
        self._conn = conn
        self._tg: TaskGroup | None = None
        self._outlet = Outlet(
            conn, _Wire(websocket, send), pending_acks=max_pending_acks, on_gone=self._end
        )

    async def run(self) -> str | None:
        """Serve the connection until either side ends it; return the relay's close reason."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            conn = self._conn
            conn.on_close(tg.cancel_scope.cancel)
            self._outlet.start(tg)
            if conn.closed:
                tg.cancel_scope.cancel()
            try:
                await self._read()
            finally:
                self._outlet.stop()
                conn.on_close(None)
            tg.cancel_scope.cancel()
        # The relay (or the reader, through the relay) closed the connection if this
        # is not None: the adapter closes the socket with its close code.
        return self._conn.close_reason

    def _end(self) -> None:
        """End the session: the client is gone."""
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    async def _read(self) -> None:
        """Hand the client's frames to the connection until the client leaves."""
        try:
            while True:
                message = await self._ws.receive()
                if message["type"] == "websocket.disconnect":
                    return
                if not await self._receive(message):
                    return  # the connection is closing; run() closes the socket
        except WebSocketDisconnect:
            pass  # an ack could not be sent: the client is gone
        except ConnectionClosed:
            pass  # the relay closed the connection; run() closes the socket

    async def _receive(self, message: Message) -> bool:
        size = frame_size(message)
        if size > self._max_frame_bytes:
            _logger.info(
                "websocket closed: a %d-byte frame from connection=%s user=%s",
                size,
                self._conn.id,
                self._conn.user_id,
            )
            self._conn.close("message_too_big")
            return False
        text = message.get("text")
        if text is None:
            self._conn.reject(binary_error())
            return True
        frame = parse_frame(text)
        if frame.error is not None:
            reply = self._conn.reject(frame.error)
        elif frame.event == ACK_EVENT:
            item = self._outlet.acked(_server_id(frame.id))
            if item is not None:
                await self._conn.acknowledge(item)
            return True
        elif frame.event == AUTH_EVENT:
            reply = self._conn.reject(InvalidPayload("already authenticated", event=AUTH_EVENT))
        else:
            reply = await self._conn.handle(frame.event, frame.data, size=size)
        if isinstance(frame.id, int):
            await self._outlet.reply(ack_frame(frame.id, reply))
        return True


def _server_id(value: object) -> int:
    """The id of an ack frame, as the server issued it (``"7"``); 0 if it is none of them."""
    if isinstance(value, str) and value.isdecimal() and not value.startswith("0"):
        return int(value)
    return 0
