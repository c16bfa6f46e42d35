"""What the Socket.IO adapter checks before python-socketio sees a client's packets.

python-socketio decodes a client's packets and dispatches them without judging them:
a packet it cannot decode raises in engine.io's reader, which logs a traceback and
keeps the connection, packet after packet; a binary event whose attachments never
come makes it take every later packet for an attachment. `PacketGuard` stands
between engine.io and python-socketio on one server and, as the reference server does:

- closes the engine.io connection of a client that has not joined a namespace within
  the handshake timeout (the reference server's ``connectTimeout``);
- refuses a ``CONNECT`` to a namespace that nobody serves, with a connect error;
- closes the connection that sends a malformed packet (after an ``error`` event, when
  the client is on the chat's namespace): an undecodable engine.io or Socket.IO
  packet, an event that is not ``[name, …]``, an ack without an id, a binary packet
  whose placeholders do not match its attachments, text where an attachment is due.

Well-formed events go on to python-socketio, and from there to the relay, which
answers a bad request with an ``error`` event (`chatrelay.Connection.handle`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

import anyio
import attrs
import engineio
from anyio.abc import TaskGroup

from .. import codec
from .._errors import error_payload
from .._exceptions import InvalidPayload, UnknownNamespace
from ._sio_log import QuietLibraryLog
from ._sio_packets import (
    BINARY_ACK,
    BINARY_EVENT,
    CONNECT,
    checked_socket,
    checked_websocket,
    close_transport,
    packet_problem,
)

# QuietLibraryLog is `_sio_log`'s, named here too for those who imported it from here.
__all__ = ["PacketGuard", "QuietLibraryLog"]

_logger = logging.getLogger("chatrelay.socketio")

Handler = Callable[..., Awaitable[Any]]


class _Answered:
    """A packet the guard answered itself: python-socketio does not see it."""


_ANSWERED: Final = _Answered()


@attrs.define(eq=False)
class _Peer:
    """The guard's state for one engine.io connection."""

    # Cancelled once the client joined a namespace, or left.
    deadline: anyio.CancelScope | None = None
    # Binary attachments that python-socketio waits for, from the last binary packet.
    attachments: int = 0
    closing: bool = False


class PacketGuard:
    """Checks one python-socketio server's inbound packets; see the module's docstring.

    Args:
        server: The python-socketio ``AsyncServer``.
        namespace: The chat's namespace: a malformed packet from a client on it is
            answered with an ``error`` event before the close.
        handshake_timeout: Seconds a client has to join a namespace after opening its
            engine.io connection (or after leaving the last one).
    """

    def __init__(self, server: Any, *, namespace: str, handshake_timeout: float) -> None:
        self._server = server
        self._namespace = namespace
        self.handshake_timeout = handshake_timeout
        self._peers: dict[str, _Peer] = {}
        self._tg: TaskGroup | None = None
        handlers = server.eio.handlers
        self._eio_connect: Handler = handlers["connect"]
        self._eio_message: Handler = handlers["message"]
        self._eio_disconnect: Handler = handlers["disconnect"]
        server.eio.on("connect", self._on_eio_connect)
        server.eio.on("message", self._on_eio_message)
        server.eio.on("disconnect", self._on_eio_disconnect)
        # Engine.io's reader decodes each WebSocket message outside any error handling:
        # a message it cannot decode ends the connection with a traceback. Check first.
        eio = server.eio
        websocket = eio._async["websocket"]
        eio._async = {**eio._async, "websocket": checked_websocket(websocket)}

    def start(self, tg: TaskGroup) -> None:
        """Run the handshake deadlines in ``tg`` from now on."""
        self._tg = tg

    def stop(self) -> None:
        """Cancel every deadline, and start none from now on."""
        self._tg = None
        for peer in self._peers.values():
            if peer.deadline is not None:
                peer.deadline.cancel()

    def joined(self, eio_sid: str) -> None:
        """The client of ``eio_sid`` was admitted to a namespace: no deadline."""
        peer = self._peers.get(eio_sid)
        if peer is not None and peer.deadline is not None:
            peer.deadline.cancel()
            peer.deadline = None

    def left(self, eio_sid: str) -> None:
        """The client left a namespace: the handshake timeout runs again.

        Unless the client is in a namespace when it runs out, it is closed.
        """
        self._arm(eio_sid)

    @property
    def pending(self) -> int:
        """Engine.io connections the guard keeps state for."""
        return len(self._peers)

    # --- engine.io's handlers ----------------------------------------------------------

    async def _on_eio_connect(self, eio_sid: str, environ: dict[str, Any]) -> Any:
        self._peers[eio_sid] = _Peer()
        socket = self._server.eio.sockets.get(eio_sid)
        if socket is not None:
            # Engine.io's socket class, with two fixes (see checked_socket).
            socket.__class__ = checked_socket(type(socket))
        result = await self._eio_connect(eio_sid, environ)
        if result is None or result is True:
            self._arm(eio_sid)
        else:
            self._forget(eio_sid)
        return result

    async def _on_eio_disconnect(self, eio_sid: str, *args: Any) -> Any:
        self._forget(eio_sid)
        return await self._eio_disconnect(eio_sid, *args)

    async def _on_eio_message(self, eio_sid: str, data: str | bytes) -> None:
        socket = self._server.eio.sockets.get(eio_sid)
        if socket is None or socket.closed or socket.closing:
            return  # what a closed connection still had in flight
        # (A connection the server had before the adapter attached has no peer yet.)
        peer = self._peers.setdefault(eio_sid, _Peer())
        if peer.closing:
            return
        problem = self._problem(eio_sid, peer, data)
        if problem is _ANSWERED:
            return
        if isinstance(problem, str):
            await self._close_malformed(eio_sid, peer, problem)
            return
        try:
            await self._eio_message(eio_sid, data)
        except Exception:
            # The packet was checked: this is python-socketio failing on it. Once.
            _logger.exception("Socket.IO packet failed: eio_sid=%s", eio_sid)
            await self._close_malformed(eio_sid, peer, "the server failed to read a packet")

    # --- checks --------------------------------------------------------------------------

    def _problem(self, eio_sid: str, peer: _Peer, data: str | bytes) -> str | _Answered | None:
        """Why the packet is malformed; `_ANSWERED` if the guard answered it; else ``None``."""
        if not isinstance(data, str):
            if peer.attachments == 0:
                return "a binary message that no packet announced"
            peer.attachments -= 1
            return None
        if peer.attachments:
            return "a text packet where a binary attachment was due"
        try:
            packet = self._server.packet_class(encoded_packet=data)
        except (ValueError, TypeError, IndexError, RecursionError):
            return "an undecodable packet"
        namespace = packet.namespace or "/"
        problem = packet_problem(packet, namespace=namespace)
        if problem is not None:
            return problem
        kind = packet.packet_type
        if kind == CONNECT and not self._serves(namespace):
            return self._refuse_namespace(eio_sid, namespace)
        if kind in (BINARY_EVENT, BINARY_ACK):
            if self._server.manager.sid_from_eio_sid(eio_sid, namespace) is None:
                return "a binary packet for a namespace the client is not in"
            peer.attachments = packet.attachment_count
        return None

    def _refuse_namespace(self, eio_sid: str, namespace: str) -> _Answered:
        _logger.info("Socket.IO connect refused: no namespace %r", namespace)
        refusal = UnknownNamespace(f"the server has no namespace {namespace!r}")
        data = {"message": "Invalid namespace", "data": error_payload(refusal)}
        head = "4" if namespace == "/" else f"4{namespace},"
        self._queue(eio_sid, head + codec.dumps(data))
        return _ANSWERED

    def _serves(self, namespace: str) -> bool:
        server = self._server
        return any(
            name in server.handlers or name in server.namespace_handlers
            for name in (namespace, "*")
        )

    # --- closing --------------------------------------------------------------------------

    def _queue(self, eio_sid: str, text: str) -> None:
        socket = self._server.eio.sockets.get(eio_sid)
        if socket is not None and not socket.closed and not socket.closing:
            socket.queue.put_nowait(engineio.packet.Packet(engineio.packet.MESSAGE, text))

    async def _close_malformed(self, eio_sid: str, peer: _Peer, problem: str) -> None:
        peer.closing = True
        _logger.info("Socket.IO connection closed: malformed packet (%s)", problem)
        if self._server.manager.is_connected(
            self._server.manager.sid_from_eio_sid(eio_sid, self._namespace), self._namespace
        ):
            error = error_payload(InvalidPayload(f"malformed Socket.IO packet: {problem}; closing"))
            head = "2" if self._namespace == "/" else f"2{self._namespace},"
            self._queue(eio_sid, head + codec.dumps(["error", error]))
        await close_transport(self._server.eio, eio_sid)

    def _arm(self, eio_sid: str) -> None:
        peer = self._peers.get(eio_sid)
        tg = self._tg
        if peer is None or tg is None:
            return
        if peer.deadline is not None:
            peer.deadline.cancel()
        peer.deadline = anyio.CancelScope(deadline=anyio.current_time() + self.handshake_timeout)
        tg.start_soon(self._expire, eio_sid, peer.deadline)

    async def _expire(self, eio_sid: str, scope: anyio.CancelScope) -> None:
        with scope:
            await anyio.sleep_forever()
        peer = self._peers.get(eio_sid)
        # Who cancels the scope (joined, left, forgotten, stopped) unsets or replaces it.
        if peer is not None and peer.deadline is scope and self._tg is not None:
            peer.deadline = None
            if not self._admitted_anywhere(eio_sid):
                _logger.info(
                    "Socket.IO connection closed: no namespace joined within %gs",
                    self.handshake_timeout,
                )
                peer.closing = True
                try:
                    await close_transport(self._server.eio, eio_sid)
                except Exception:
                    # Runs in the adapter's task group: never take it down.
                    _logger.exception("Socket.IO close failed: eio_sid=%s", eio_sid)

    def _admitted_anywhere(self, eio_sid: str) -> bool:
        manager = self._server.manager
        for namespace in list(manager.get_namespaces()):
            sid = manager.sid_from_eio_sid(eio_sid, namespace)
            if sid is not None and manager.is_connected(sid, namespace):
                return True
        return False

    def _forget(self, eio_sid: str) -> None:
        peer = self._peers.pop(eio_sid, None)
        if peer is not None and peer.deadline is not None:
            peer.deadline.cancel()
