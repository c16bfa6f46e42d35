"""One authenticated WebSocket connection of the Starlette adapter, and its sends.

`Session` reads the client's frames in the connection's ASGI task and sends the
relay's events from the fan-out (the direct path) or from a task while some are
queued. The handshake, authentication and close codes are `starlette`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from typing import Final

import anyio
from anyio.abc import TaskGroup
from starlette.types import Message, Send
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from .._connection import Connection, Outbound
from .._exceptions import ConnectionClosed, InvalidPayload
from . import _eager
from ._abort import abort_transport
from ._wsframes import (
    ACK_EVENT,
    AUTH_EVENT,
    ack_frame,
    binary_error,
    event_frame,
    parse_frame,
)

__all__ = ["Session", "binary_error", "close", "close_or_abort", "frame_size", "truncate"]

_logger = logging.getLogger("chatrelay.websocket")

_CLOSE_TIMEOUT: Final = 5.0
# Seconds a client closed by the relay has to answer the close before it is aborted.
_CLOSE_GRACE: Final = 1.5
_MAX_REASON_BYTES: Final = 123  # what a close frame has room for
# What a send raises when the client is gone (the server's, Starlette's, anyio's): the
# session ends quietly. Anything else is a bug somewhere, logged (see Session._failed).
_GONE: Final = (
    OSError,
    WebSocketDisconnect,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
)


def truncate(reason: str) -> str:
    """``reason``, cut to what a close frame can carry (123 bytes of UTF-8)."""
    encoded = reason.encode()
    if len(encoded) <= _MAX_REASON_BYTES:
        return reason
    return encoded[:_MAX_REASON_BYTES].decode(errors="ignore")


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


async def close(websocket: WebSocket, code: int, reason: str) -> None:
    """Close the socket if it is still open, waiting a bounded time for a slow peer."""
    if (
        websocket.application_state is not WebSocketState.CONNECTED
        or websocket.client_state is not WebSocketState.CONNECTED
    ):
        return
    with anyio.move_on_after(_CLOSE_TIMEOUT), contextlib.suppress(WebSocketDisconnect):
        await websocket.close(code, truncate(reason))


async def close_or_abort(websocket: WebSocket, send: Send, code: int, reason: str) -> None:
    """Close the socket with the relay's reason; abort it if the client does not answer.

    A client that stopped reading (a slow consumer) cannot read a close frame that
    waits behind what it did not read, and would keep the connection and the
    server's buffers: if the closing handshake is not over within `_CLOSE_GRACE`
    seconds, the connection is aborted.
    """
    with anyio.move_on_after(_CLOSE_GRACE):
        await close(websocket, code, reason)
        # Any failure to receive means the same here: the client is gone.
        with contextlib.suppress(Exception):
            while (await websocket.receive())["type"] != "websocket.disconnect":
                pass  # frames the client sent before it saw the close
        return
    if abort_transport(send):
        _logger.info(
            "websocket aborted: no answer to its close (%s) within %gs", reason, _CLOSE_GRACE
        )


class Session:
    """One authenticated connection, served by the task that reads it.

    The reader runs in the connection's own (ASGI) task; events come from the
    relay's fan-out through `_deliver`, in the sender's task. A second task runs
    only while there is something to wait for: a send that had to wait for the
    client, or events queued behind it. An idle connection therefore holds one task
    and no queue, which is most of what a connection costs.
    """

    __slots__ = (
        "_asgi_send",
        "_busy",
        "_conn",
        "_drained",
        "_draining",
        "_eager",
        "_failed_once",
        "_idle",
        "_ids",
        "_max_frame_bytes",
        "_max_pending_acks",
        "_pending",
        "_tg",
        "_ws",
    )

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
        self._max_pending_acks = max_pending_acks
        self._ws = websocket
        # Events go out as ASGI messages: the socket is accepted and stays so while the
        # session runs, so Starlette's state checks have nothing to add per event.
        self._asgi_send = send
        self._conn = conn
        self._ids = itertools.count(1)
        # Events that asked for an ack, by the id this connection sent them with.
        self._pending: dict[str, Outbound] = {}
        # A send is under way (the reader's ack, the drainer's event, or a direct send
        # that had to wait): the socket takes one frame at a time.
        self._busy = False
        # Made by whoever waits for the send under way; set when it ends.
        self._idle: anyio.Event | None = None
        # A drain task is running (or about to): events queue behind it, in order.
        self._draining = False
        # Made by a reply that waits for the drain task; set when that task ends.
        self._drained: anyio.Event | None = None
        # asyncio: the direct path sends eagerly. trio: every event goes through the
        # queue (a trio send cannot be started outside a task).
        self._eager = _on_asyncio()
        self._tg: TaskGroup | None = None
        # A send failed otherwise than by the client leaving: logged once per connection.
        self._failed_once = False

    async def run(self) -> str | None:
        """Serve the connection until either side ends it; return the relay's close reason."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            conn = self._conn
            conn.on_close(tg.cancel_scope.cancel)
            conn.deliver_directly(self._deliver)
            if conn.closed:
                tg.cancel_scope.cancel()
            elif conn.queued:
                self._drain_soon()  # sent before the direct path was in place
            try:
                await self._read()
            finally:
                conn.deliver_directly(None)
                conn.on_close(None)
            tg.cancel_scope.cancel()
        # The relay (or the reader, through the relay) closed the connection if this
        # is not None: the adapter closes the socket with its close code.
        return self._conn.close_reason

    def _end(self) -> None:
        """End the session: the client is gone."""
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    async def _send(self, text: str, item: Outbound | None = None) -> None:
        # The reader (acks), the drainer (events) and the direct path share the socket.
        while self._busy:
            if self._idle is None:
                self._idle = anyio.Event()
            await self._idle.wait()
        self._busy = True
        try:
            await self._ws.send_text(text)
        except _GONE:
            raise
        except Exception:
            self._failed(item)
        finally:
            self._sent()

    def _failed(self, item: Outbound | None) -> None:
        """A send raised something other than "the client is gone": log it, carry on.

        It is not the client's doing (every frame is valid UTF-8 JSON), so the
        connection stays; only this frame is lost. Logged at ERROR once per
        connection, with the traceback, so a bug cannot flood the log; an event that
        asked for an ack is forgotten, as it never reached the client.
        """
        if not self._failed_once:
            self._failed_once = True
            _logger.exception(
                "websocket send failed (the connection stays; later failures of it are"
                " not logged): connection=%s user=%s",
                self._conn.id,
                self._conn.user_id,
            )
        if item is not None and item.wants_ack:
            for ack_id in [k for k, v in self._pending.items() if v is item]:
                del self._pending[ack_id]

    def _sent(self) -> None:
        self._busy = False
        idle = self._idle
        if idle is not None:
            self._idle = None
            idle.set()

    def _deliver(self, item: Outbound) -> bool:
        """The direct path: send an event from the relay's fan-out, in the sender's task.

        A broadcast then costs what sequential ``send_text`` calls cost, with no task
        woken per recipient. The send runs eagerly, as asyncio's eager tasks do: it
        usually completes without waiting (the server buffers the frame). If it has
        to wait for this client, a task of the session finishes it, and later events
        queue behind it on ``outgoing``, where the relay's bound and slow-consumer
        policy apply; so a slow client never holds up the others.
        """
        if not self._eager or self._busy or self._draining:
            self._drain_soon()
            return False
        try:
            started = _eager.start(
                self._asgi_send({"type": "websocket.send", "text": self._encode(item)})
            )
        except _GONE:
            # The client is gone: end the session, as a failed send of the drainer does.
            _logger.debug("direct send failed: connection=%s", self._conn.id, exc_info=True)
            self._end()
            return True
        except Exception:
            self._failed(item)
            return True
        if started is not None:
            assert self._tg is not None
            self._busy = True
            self._tg.start_soon(self._finish, started, item)
        return True

    async def _finish(self, started: _eager.Started, item: Outbound) -> None:
        """Run to its end a send that `_deliver` started and that had to wait."""
        try:
            await _eager.finish(started)
        except _GONE:
            self._end()
        except Exception:
            self._failed(item)
        finally:
            self._sent()

    def _drain_soon(self) -> None:
        """Make sure a task sends what is (about to be) queued on ``outgoing``."""
        if not self._draining and self._tg is not None:
            self._draining = True
            self._tg.start_soon(self._drain)

    async def _drain(self) -> None:
        """Send the queued events, in order, then end: the direct path takes over."""
        outgoing = self._conn.outgoing
        try:
            while not self._conn.closed:
                # What is queued already is sent without a checkpoint per event.
                item = outgoing.receive_nowait()
                await self._send(self._encode(item), item)
        except (anyio.WouldBlock, anyio.EndOfStream):
            pass  # all sent (or closed); the direct path takes over from here
        except WebSocketDisconnect:
            self._end()
        finally:
            self._draining = False
            drained, self._drained = self._drained, None
            if drained is not None:
                drained.set()

    async def _reply(self, text: str) -> None:
        """Send an ack once every event handed to the connection before it is sent.

        The protocol's ordering rule: an ack never overtakes an earlier event, also
        when events wait on ``outgoing`` behind a client that reads slowly.
        """
        conn = self._conn
        while (self._draining or conn.queued) and not conn.closed:
            if not self._draining:
                self._drain_soon()
            if self._drained is None:
                self._drained = anyio.Event()
            await self._drained.wait()
        await self._send(text)

    def _encode(self, item: Outbound) -> str:
        if not item.wants_ack:
            return item.frame()
        ack_id = str(next(self._ids))
        self._pending[ack_id] = item
        if len(self._pending) > self._max_pending_acks:
            del self._pending[next(iter(self._pending))]
        return event_frame(item, ack_id)

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
            item = self._pending.pop(frame.id, None) if isinstance(frame.id, str) else None
            if item is not None:
                await self._conn.acknowledge(item)
            return True
        elif frame.event == AUTH_EVENT:
            reply = self._conn.reject(InvalidPayload("already authenticated", event=AUTH_EVENT))
        else:
            reply = await self._conn.handle(frame.event, frame.data, size=size)
        if isinstance(frame.id, int):
            await self._reply(ack_frame(frame.id, reply))
        return True
