"""What makes a client's Socket.IO or engine.io packet malformed, and engine.io's fixes.

The checks `PacketGuard` (`_sio_guard`) runs on every packet before python-socketio
sees it: `packet_problem` for a decoded Socket.IO packet, and engine.io's own classes,
fixed so that a message or a long-polling payload that does not decode ends its
connection rather than logging a traceback (`checked_websocket`, `checked_socket`).
`close_transport` closes a client's engine.io connection without waiting for it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final

import engineio

__all__ = [
    "ACK",
    "BINARY_ACK",
    "BINARY_EVENT",
    "CONNECT",
    "MAX_ATTACHMENTS",
    "MAX_DEPTH",
    "checked_socket",
    "checked_websocket",
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

CONNECT, _DISCONNECT, _EVENT, ACK, _CONNECT_ERROR, BINARY_EVENT, BINARY_ACK = range(7)


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
    if kind == CONNECT:
        return None if data is None or isinstance(data, dict) else "CONNECT data is not an object"
    if kind == _DISCONNECT:
        return None
    if kind in (_EVENT, BINARY_EVENT):
        if not isinstance(data, list) or not data or not _is_event_name(data[0]):
            return "an event is not a list that starts with its name"
    elif kind in (ACK, BINARY_ACK):
        if not isinstance(data, list) or packet.id is None:
            return "an ack is not a list with an id"
    else:
        return f"packet type {kind!r} is not one a client sends"
    if kind in (BINARY_EVENT, BINARY_ACK):
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


def checked_websocket(base: type[Any]) -> type[Any]:
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


def checked_socket(base: type[Any]) -> type[Any]:
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
