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

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

import anyio
import attrs
import engineio
from anyio.abc import TaskGroup

from .. import codec
from .._errors import error_payload
from .._exceptions import InvalidPayload, UnknownNamespace

__all__ = [
    "MAX_ATTACHMENTS",
    "MAX_DEPTH",
    "PacketGuard",
    "QuietLibraryLog",
    "close_transport",
    "packet_problem",
]

_logger = logging.getLogger("chatrelay.socketio")

# How deep a packet's JSON may nest. chatrelay's requests nest three levels; python-
# socketio and the relay walk a payload recursively, and must never meet Python's
# recursion limit on a client's behalf.
MAX_DEPTH: Final = 32

# Binary attachments one packet may announce. chatrelay's requests are JSON and
# carry none; the bound keeps a client from having the server wait for billions.
MAX_ATTACHMENTS: Final = 10

_CONNECT, _DISCONNECT, _EVENT, _ACK, _CONNECT_ERROR, _BINARY_EVENT, _BINARY_ACK = range(7)

Handler = Callable[..., Awaitable[Any]]


class _Answered:
    """A packet the guard answered itself: python-socketio does not see it."""


_ANSWERED: Final = _Answered()


def _is_event_name(value: object) -> bool:
    # The reference parser takes a string or a number as an event's name.
    return isinstance(value, str | int | float) and not isinstance(value, bool)


def _too_deep(value: object, depth: int = 0) -> bool:
    if isinstance(value, list | dict):
        if depth >= MAX_DEPTH:
            return True
        items = value.values() if isinstance(value, dict) else value
        return any(_too_deep(item, depth + 1) for item in items)
    return False


def _placeholders_fit(value: object, attachments: int, depth: int = 0) -> bool:
    """Whether every ``{"_placeholder": true, "num": n}`` in ``value`` names an attachment."""
    if isinstance(value, list):
        return all(_placeholders_fit(item, attachments, depth + 1) for item in value)
    if isinstance(value, dict):
        if value.get("_placeholder"):
            num = value.get("num")
            return type(num) is int and 0 <= num < attachments
        return all(_placeholders_fit(item, attachments, depth + 1) for item in value.values())
    return True


def packet_problem(packet: Any, *, namespace: str) -> str | None:
    """What makes a decoded Socket.IO packet malformed, or ``None`` if it is not.

    The rules are the reference parser's (socket.io-parser's ``isPayloadValid``),
    plus python-socketio's needs: JSON nests at most `MAX_DEPTH` levels, a binary
    packet announces 1 to `MAX_ATTACHMENTS`
    attachments, each of its placeholders names one of them.

    Args:
        packet: A python-socketio ``Packet`` decoded from the client's text.
        namespace: The packet's namespace (``/`` when it names none).
    """
    kind = packet.packet_type
    data = packet.data
    if _too_deep(data):
        return f"JSON nested deeper than {MAX_DEPTH} levels"
    if kind == _CONNECT:
        return None if data is None or isinstance(data, dict) else "CONNECT data is not an object"
    if kind == _DISCONNECT:
        return None
    if kind in (_EVENT, _BINARY_EVENT):
        if not isinstance(data, list) or not data or not _is_event_name(data[0]):
            return "an event is not a list that starts with its name"
    elif kind in (_ACK, _BINARY_ACK):
        if not isinstance(data, list) or packet.id is None:
            return "an ack is not a list with an id"
    else:
        return f"packet type {kind!r} is not one a client sends"
    if kind in (_BINARY_EVENT, _BINARY_ACK):
        count = packet.attachment_count
        if not 1 <= count <= MAX_ATTACHMENTS:
            return f"a binary packet announces {count} attachments"
        if not _placeholders_fit(data, count):
            return "a binary placeholder names no attachment"
    return None


async def close_transport(eio: Any, eio_sid: str) -> None:
    """Close a client's engine.io connection for real, without waiting for the client.

    Engine.io's ``disconnect`` waits until the client has taken what is queued for
    it. Here the ``CLOSE`` packet is queued, then the end of the queue: engine.io's
    writer sends ``CLOSE`` and closes the WebSocket (a long-polling client gets
    ``CLOSE`` on its poll, then 400 for the session). The disconnect handlers run
    (python-socketio's, then the adapter's) as for any close.
    """
    socket = eio.sockets.get(eio_sid)
    if socket is None:
        return
    if not socket.closed and not socket.closing:
        await socket.close(wait=False, abort=False, reason=eio.reason.SERVER_DISCONNECT)
    socket.queue.put_nowait(None)  # ends the writer, or the next poll after CLOSE
    eio.sockets.pop(eio_sid, None)


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
        eio._async = {**eio._async, "websocket": _checked_websocket(websocket)}

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
            # Engine.io's socket class, with two fixes (see _checked_socket).
            socket.__class__ = _checked_socket(type(socket))
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
        if kind == _CONNECT and not self._serves(namespace):
            return self._refuse_namespace(eio_sid, namespace)
        if kind in (_BINARY_EVENT, _BINARY_ACK):
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


def _checked_websocket(base: type[Any]) -> type[Any]:
    """Engine.io's ASGI WebSocket class, whose ``wait`` ends the connection on garbage.

    Engine.io's reader decodes what ``wait`` returns outside its error handling; a
    message that is not an engine.io packet (empty, an unknown type) is taken here
    for the end of the connection, which engine.io then closes as usual.
    """

    class CheckedWebSocket(base):  # type: ignore[misc]
        async def wait(self) -> Any:
            data = await super().wait()
            if isinstance(data, str) and not _is_engineio_packet(data):
                _logger.info("Socket.IO connection closed: malformed engine.io packet")
                return None
            return data

    return CheckedWebSocket


_CHECKED_SOCKETS: dict[type[Any], type[Any]] = {}


def _checked_socket(base: type[Any]) -> type[Any]:
    """Engine.io's socket class, with two fixes.

    - A long-polling POST that does not decode closes the session (engine.io logs a
      traceback and keeps it).
    - A closed socket lets go at once: its ping task is cancelled, and a poll that
      waits is answered. Engine.io starts one per
      ping interval and keeps no handle on it: it sleeps 25 s holding the socket,
      so under churn every socket closed in the last 25 s stayed in memory, with
      its queue and its request's environ (27 MiB after 10,000 cycles). A client
      that closed its long-polling session had its last poll wait as long.
    """
    if getattr(base, "_chatrelay_checked", False):
        return base
    checked = _CHECKED_SOCKETS.get(base)
    if checked is None:

        class CheckedSocket(base):  # type: ignore[misc]
            _chatrelay_checked = True
            _chatrelay_ping: asyncio.Task[None] | None = None
            last_ping: float | None  # engine.io's

            def schedule_ping(self) -> None:
                # engine.io's, keeping the task.
                if self.last_ping:
                    self.last_ping = None
                    self._chatrelay_ping = self.server.start_background_task(self._send_ping)

            async def close(self, *args: Any, **kwargs: Any) -> None:
                ping, self._chatrelay_ping = self._chatrelay_ping, None
                if ping is not None and ping is not asyncio.current_task():
                    ping.cancel()
                await super().close(*args, **kwargs)
                if self.closed:
                    # Ends a long-polling GET that waits (else up to ping interval +
                    # timeout, holding the socket), or the WebSocket's writer.
                    self.queue.put_nowait(None)

            async def handle_post_request(self, environ: dict[str, Any]) -> None:
                try:
                    await super().handle_post_request(environ)
                except engineio.exceptions.ContentTooLongError:
                    raise  # engine.io answers 400 and closes, as it should
                except Exception:
                    # Undecodable, or a packet type a client does not send. Closed
                    # here: engine.io would log a traceback, or wait for the client.
                    _logger.info("Socket.IO connection closed: malformed engine.io payload")
                    await close_transport(self.server, self.sid)

        checked = _CHECKED_SOCKETS[base] = CheckedSocket
    return checked


def _is_engineio_packet(text: str) -> bool:
    if not text:
        return False
    if text[0] == "b":
        try:
            engineio.packet.Packet(encoded_packet=text)
        except ValueError:
            return False
        return True
    return text[0] in "0123456"


_MAX_KEYS: Final = 256


class QuietLibraryLog(logging.LoggerAdapter[logging.Logger]):
    """The logger the adapter gives python-socketio and engine.io for its own server.

    Their per-packet INFO and WARNING lines (which show tokens) are dropped; an error
    is logged with its traceback the first time its message is seen, then as one
    line at most every `interval` seconds, with a count of those left out. So no
    client can have a traceback logged per packet.
    """

    def __init__(self, name: str, *, interval: float = 10.0) -> None:
        super().__init__(logging.getLogger(name), {})
        self.interval = interval
        self._seen: dict[str, tuple[float, int]] = {}

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if level < logging.ERROR:
            return
        key = str(msg)
        if key not in self._seen and len(self._seen) >= _MAX_KEYS:
            key = ""  # past so many kinds of message, all others share one budget
        now = time.monotonic()
        last = self._seen.get(key)
        if last is None:
            self._seen[key] = (now, 0)
            self.logger.log(level, msg, *args, **kwargs)
            return
        stamp, skipped = last
        if now - stamp < self.interval:
            self._seen[key] = (stamp, skipped + 1)
            return
        kwargs.pop("exc_info", None)
        self._seen[key] = (now, 0)
        suffix = f" ({skipped} more since the last)" if skipped else ""
        self.logger.log(level, f"{msg}{suffix}", *args, **kwargs)

    def isEnabledFor(self, level: int) -> bool:
        return level >= logging.ERROR and self.logger.isEnabledFor(level)
