"""The Socket.IO adapter's connections: admission, serving, and the close of each one.

`Sessions` holds the adapter's side of every admitted client (`Session`):

- admission: the payload limit before authentication, the client's credentials
  (``auth.token``, the handshake's query and headers), the relay's authentication
  and admission, each refusal as a Socket.IO connect error whose ``data`` is the
  wire's error fields;
- serving: the relay's connection for the client and its `Outlet` over a
  `SocketIOWire`, from the CONNECT packet until either side ends it;
- closing a client the relay closed: an ``error`` event that says why (if the client
  can act on it), engine.io's CLOSE, and an abort if the client has not taken them
  within the core's grace (`chatrelay._outlet.close_or_abort`). What aborts a client
  that upgraded from long-polling is its WebSocket's ASGI ``send``, which
  `track_upgrades` keeps by engine.io sid.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final
from urllib.parse import parse_qsl

import anyio
import attrs
import socketio
from anyio.abc import TaskGroup, TaskStatus

from .. import _outlet, codec
from .._auth import Credentials, Identity
from .._connection import Connection, Outbound
from .._errors import check_payload_size, close_error, error_payload, payload_size
from .._exceptions import InternalError, ProtocolError, Unavailable
from .._outlet import Outlet
from .._relay import Relay
from ._abort import abort_transport
from ._sio_guard import PacketGuard
from ._sio_wire import ASGISend, Frame, SocketIOWire, websocket_send

__all__ = ["TRANSPORT", "ASGIApp", "Session", "Sessions"]

_logger = logging.getLogger("chatrelay.socketio")

ASGIApp = Callable[
    [
        MutableMapping[str, Any],
        Callable[[], Awaitable[MutableMapping[str, Any]]],
        Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ],
    Awaitable[None],
]
"""An ASGI application: ``async (scope, receive, send) -> None``."""

TRANSPORT: Final = "socketio"
# How often a close that waits checks whether the client closed its WebSocket.
_CLOSE_CHECK: Final = 0.02


@attrs.define(eq=False)
class Session:
    """The adapter's side of one admitted Socket.IO connection."""

    sid: str
    eio_sid: str
    scope: anyio.CancelScope = attrs.Factory(anyio.CancelScope)
    # Set once python-socketio has queued the CONNECT packet: nothing may precede it.
    admitted: anyio.Event = attrs.Factory(anyio.Event)
    # python-socketio runs each inbound event in a task of its own; the lock hands
    # them to the relay one at a time, in arrival order (asyncio's locks are fair).
    lock: anyio.Lock = attrs.Factory(anyio.Lock)
    conn: Connection | None = None
    client_gone: bool = False
    # engine.io's socket for the client, and the ASGI ``send`` of its WebSocket when it
    # connected over WebSocket from the start (not when it upgraded from polling).
    socket: Any = None
    ws_send: ASGISend | None = None
    # The core's outbound engine for this connection, once admitted, and its wire.
    outlet: Outlet[Frame] | None = None
    wire: SocketIOWire | None = None


class Sessions:
    """The admitted clients of one adapter, by Socket.IO sid; see the module's docstring.

    Args:
        relay: The relay the adapter serves.
        server: The python-socketio ``AsyncServer``.
        namespace: The chat's namespace.
        guard: The server's `PacketGuard`, told when a client joins or leaves.
    """

    def __init__(self, relay: Relay, server: Any, namespace: str, guard: PacketGuard) -> None:
        self.relay = relay
        self.server = server
        self.namespace = namespace
        self.by_sid: dict[str, Session] = {}
        self.accepting = False
        self._guard = guard
        self._tg: TaskGroup | None = None
        self._cache_key = f"socketio:{namespace}"
        self._head = "2" if namespace == "/" else f"2{namespace},"
        # The ASGI ``send`` of each WebSocket that upgrades an engine.io session, by
        # its engine.io sid: what aborts the connection of a client that stopped reading.
        self._upgrade_sends: dict[str, ASGISend] = {}

    def start(self, tg: TaskGroup) -> None:
        """Admit clients from now on, each served by a task of ``tg``."""
        self._tg = tg
        self.accepting = True

    def track_upgrades(self, inner: ASGIApp, socketio_path: str) -> ASGIApp:
        """``inner``, keeping the ASGI ``send`` of each WebSocket that upgrades a session.

        While the relay drains, a new engine.io session (a request to the endpoint
        without a ``sid``) is refused with HTTP 503, before engine.io: the official
        client takes that for a transport error and retries with its backoff (a
        Socket.IO connect error would stop it for good).
        """
        upgrade_sends = self._upgrade_sends
        relay = self.relay
        prefix = "/" + socketio_path.strip("/") + "/"

        async def app(scope: Any, receive: Any, send: Any) -> None:
            if relay.draining and _new_session(scope, prefix):
                try:
                    relay.ensure_accepting()
                except ProtocolError as refusal:
                    await _refuse_new_session(scope, send, refusal)
                    return None
            sid = _upgrade_sid(scope)
            if sid is None:
                return await inner(scope, receive, send)
            upgrade_sends[sid] = send
            try:
                return await inner(scope, receive, send)
            finally:
                if upgrade_sends.get(sid) is send:
                    del upgrade_sends[sid]

        return app

    # --- admission ---------------------------------------------------------------------

    async def admit(self, sid: str, environ: dict[str, Any], auth: object) -> bool:
        """Admit a client's CONNECT; raises python-socketio's refusal (a connect error)."""
        try:
            return await self._admit(sid, environ, auth)
        except socketio.exceptions.ConnectionRefusedError:
            raise
        except Exception:
            _logger.exception("Socket.IO connect failed: sid=%s", sid)
            raise _refused(InternalError("the server failed to accept the connection")) from None

    async def _admit(self, sid: str, environ: dict[str, Any], auth: object) -> bool:
        if not self.accepting or self._tg is None:
            raise _unavailable()
        try:
            self.relay.ensure_accepting()
            # The payload limit holds before authentication too, as for an auth frame.
            limit = self.relay.config.limits.max_payload_bytes
            check_payload_size(payload_size(auth), limit, what="auth payload")
        except ProtocolError as exc:
            raise _refused(exc) from None
        token = auth.get("token") if isinstance(auth, dict) else None
        credentials = Credentials(
            token=token if isinstance(token, str) else None,
            query=_query(environ),
            headers=_headers(environ),
            transport=TRANSPORT,
        )
        try:
            identity = await self.relay.authenticate(credentials)
        except ProtocolError as exc:
            # Refused before the relay saw a connection: no presence, no rooms.
            raise _refused(exc) from None
        # The client may have left while it was being authenticated (or while the relay
        # took the connection in, below): python-socketio calls no disconnect handler
        # for a connection it has not accepted yet, so look.
        eio_sid = self.server.manager.eio_sid_from_sid(sid, self.namespace)
        if not self._client_alive(eio_sid):
            return False
        try:
            session: Session = await self._tg.start(self._serve, sid, eio_sid, identity)
        except ProtocolError as exc:
            # Refused by the relay's admission (too_many_connections), before it
            # became a connection: a connect error with the wire's error fields.
            raise _refused(exc) from None
        if not self.accepting or not self._client_alive(eio_sid):
            session.client_gone = True
            session.scope.cancel()
            raise _unavailable()
        session.socket = self.server.eio.sockets.get(eio_sid)
        session.ws_send = websocket_send(environ, session.socket)
        # From here python-socketio queues the CONNECT packet without yielding, so the
        # outlet, which starts after this, cannot send an event before it.
        session.admitted.set()
        self._guard.joined(eio_sid)
        return True

    def gone(self, sid: str) -> None:
        """The client of ``sid`` left the namespace: its connection leaves the relay."""
        session = self.by_sid.get(sid)
        if session is not None:
            session.client_gone = True
            session.scope.cancel()

    # --- one connection ----------------------------------------------------------------

    async def _serve(
        self,
        sid: str,
        eio_sid: str,
        identity: Identity,
        *,
        task_status: TaskStatus[Session],
    ) -> None:
        session = Session(sid, eio_sid)
        self.by_sid[sid] = session
        try:
            with session.scope:
                async with (
                    self.relay.connect(identity, transport=TRANSPORT) as conn,
                    conn.outgoing,
                    anyio.create_task_group() as tg,
                ):
                    session.conn = conn
                    closed = anyio.Event()
                    conn.on_close(closed.set)
                    task_status.started(session)
                    await session.admitted.wait()
                    session.wire = self._wire(session, conn)
                    session.outlet = Outlet(
                        conn, session.wire, pending_acks=self.relay.config.limits.pending_acks
                    )
                    session.outlet.start(tg)
                    if not conn.closed:
                        await closed.wait()
                    session.outlet.stop()
                    tg.cancel_scope.cancel()
        finally:
            del self.by_sid[sid]
            # In no namespace now, the client has the handshake timeout to join again.
            self._guard.left(eio_sid)
        # The relay closed the connection (outgoing ended), or the adapter is closing.
        if not session.client_gone:
            # Shielded: this runs when the adapter closes under cancellation too; it
            # waits for the client at most the core's CLOSE_GRACE.
            with anyio.CancelScope(shield=True):
                try:
                    await self._close_client(session, conn)
                except Exception:
                    _logger.exception("Socket.IO disconnect failed: sid=%s", sid)

    async def _close_client(self, session: Session, conn: Connection) -> None:
        """Close the client's engine.io connection, so that its client reconnects.

        Not a Socket.IO DISCONNECT, after which the official client stays away:
        an ``error`` event says why (for a reason the client can act on), then
        engine.io's CLOSE. A client that has not taken them within the grace (it
        stopped reading) has its connection aborted, so that it no longer holds the
        server's buffers; a long-polling client that is not polling then finds its
        session gone, and reconnects too.
        """
        eio = self.server.eio
        socket = eio.sockets.get(session.eio_sid)
        if socket is None or socket.closed or socket.closing:
            return
        reason = conn.close_reason or "closed"
        error = close_error(reason)
        wire = session.wire or self._wire(session, conn)
        wire.close_packets(None if error is None else Outbound("error", error))

        async def closed() -> None:
            await socket.queue.join()  # taken by the writer, or by a poll
            # Until the client closes its WebSocket: engine.io signals nothing then.
            while socket.upgraded and not socket.closed:  # noqa: ASYNC110
                await anyio.sleep(_CLOSE_CHECK)

        def abort() -> bool:
            send = session.ws_send or self._upgrade_sends.get(session.eio_sid)
            return send is not None and abort_transport(send)

        try:
            if await _outlet.close_or_abort(closed, abort):
                _logger.info(
                    "Socket.IO connection aborted: no answer to its close (%s) within %gs:"
                    " connection=%s",
                    reason,
                    _outlet.CLOSE_GRACE,
                    conn.id,
                )
        finally:
            await socket.close(wait=False, abort=True, reason=eio.reason.SERVER_DISCONNECT)
            eio.sockets.pop(session.eio_sid, None)

    def _wire(self, session: Session, conn: Connection) -> SocketIOWire:
        async def acknowledged(ack_id: int) -> None:
            item = session.outlet.acked(ack_id) if session.outlet is not None else None
            if item is None:
                return  # forgotten past the bound, or acked before
            try:
                await conn.acknowledge(item)
            except Exception:
                _logger.exception("Socket.IO ack failed: connection=%s", conn.id)

        return SocketIOWire(
            server=self.server,
            sid=session.sid,
            socket=session.socket,
            ws_send=session.ws_send,
            cache_key=self._cache_key,
            head=self._head,
            on_ack=acknowledged,
            closed=lambda: conn.closed,
        )

    def _client_alive(self, eio_sid: str) -> bool:
        socket = self.server.eio.sockets.get(eio_sid)
        return socket is not None and not socket.closed and not socket.closing


def _new_session(scope: Any, prefix: str) -> bool:
    """Whether ``scope`` asks the endpoint for a new engine.io session (no ``sid``)."""
    if scope.get("type") not in ("http", "websocket"):
        return False
    if not str(scope.get("path", "")).startswith(prefix):
        return False
    query: bytes = scope.get("query_string", b"")
    return all(name != "sid" for name, _ in parse_qsl(query.decode("latin-1")))


async def _refuse_new_session(scope: Any, send: Any, refusal: ProtocolError) -> None:
    """HTTP 503 with the wire's error fields (a WebSocket: before accepting)."""
    body = codec.dumps(error_payload(refusal)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    status = refusal.status
    if scope["type"] == "websocket":
        if "websocket.http.response" not in scope.get("extensions", {}):
            await send({"type": "websocket.close", "code": 1013})  # HTTP 403, no body
            return
        start = {"type": "websocket.http.response.start", "status": status, "headers": headers}
        await send(start)
        await send({"type": "websocket.http.response.body", "body": body})
        return
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _upgrade_sid(scope: Any) -> str | None:
    """The engine.io sid of a WebSocket request that upgrades a session, if it is one."""
    if scope.get("type") != "websocket":
        return None
    query: bytes = scope.get("query_string", b"")
    for name, value in parse_qsl(query.decode("latin-1")):
        if name == "sid":
            return value
    return None


def _unavailable() -> Exception:
    return _refused(
        Unavailable("the server is not serving now"),
        "the server is not serving this namespace now",
    )


def _refused(exc: ProtocolError, message: str | None = None) -> Exception:
    """A Socket.IO connect error whose ``data`` is the wire's error fields."""
    refusal: Exception = socketio.exceptions.ConnectionRefusedError(
        exc.message if message is None else message, error_payload(exc)
    )
    return refusal


def _query(environ: dict[str, Any]) -> dict[str, str]:
    query: dict[str, str] = {}
    for name, value in parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True):
        query.setdefault(name, value)
    return query


def _headers(environ: dict[str, Any]) -> dict[str, str]:
    return {
        name[5:].lower().replace("_", "-"): value
        for name, value in environ.items()
        if name.startswith("HTTP_") and isinstance(value, str)
    }
