"""Serve a relay over Socket.IO, for the official ``socket.io-client`` (``socketio`` extra).

Built on python-socketio's ``AsyncServer``; the clients connect to the namespace
``/messages`` (configurable) as they always did::

    relay = Relay(authenticator=JWTAuthenticator(key, algorithms=["RS256"]), ...)
    adapter = SocketIOAdapter(relay, allowed_origins=["https://chat.example"])
    app = adapter.asgi_app(other_asgi_app=my_starlette_app)  # serve with uvicorn

    # in the app's lifespan:
    async with relay, adapter:
        yield

python-socketio runs on asyncio only, and so does this adapter: entering it under
trio raises `RuntimeError`.

chatrelay owns room membership and fan-out: the adapter never puts sockets in
python-socketio rooms nor emits through its client manager, so a python-socketio
Redis manager would not spread chatrelay's events (use a chatrelay backplane), and
cannot send them twice either.

A broadcast is encoded once. To a client that connected over WebSocket from the
start (``transports: ["websocket"]``), each event is written on the WebSocket in the
broadcasting task while engine.io's writer for it is idle, rather than through
engine.io's queue and writer task, whose timer and task per packet dominate the cost
of a broadcast when there are many connections; order is kept either way. Clients
that upgraded from long-polling go through engine.io's queue.
"""

from __future__ import annotations

import logging
from collections.abc import (
    Awaitable,
    Callable,
    MutableMapping,
    Sequence,
)
from contextlib import AsyncExitStack
from typing import Any, Final
from urllib.parse import parse_qsl

import anyio
import attrs
import engineio
import sniffio
import socketio
from anyio.abc import TaskGroup, TaskStatus

from .._auth import Credentials, Identity
from .._connection import Connection, Outbound
from .._errors import (
    check_payload_size,
    close_error,
    error_payload,
    failed_ack,
    payload_size,
)
from .._exceptions import ConnectionClosed, InternalError, ProtocolError, Unavailable
from .._outlet import Outlet
from .._relay import Relay
from .._resource import AsyncResource
from ._abort import abort_transport
from ._origins import origin_policy
from ._sio_guard import PacketGuard, QuietLibraryLog
from ._sio_wire import ASGISend, Frame, SocketIOWire, websocket_send

__all__ = ["ASGIApp", "SocketIOAdapter"]

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

_TRANSPORT: Final = "socketio"
# Engine.IO packets python-engineio decodes from one long-polling POST; it refuses a
# POST with more, whole (its default is 16), and clients batch what they send while a
# POST is under way: an ack for each of up to SEND_BUFFER (64) events of one poll, plus
# requests. Requests past the relay's rate limit are refused one by one, cheaply.
_MAX_DECODE_PACKETS: Final = 1024
# Seconds a client that the relay closed has to take its last packets (the ``error``
# event that says why, engine.io's CLOSE) before its connection is aborted.
_CLOSE_GRACE: Final = 1.5
_CLOSE_CHECK: Final = 0.02


@attrs.define(eq=False)
class _Session:
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


class _Dispatch(socketio.AsyncNamespace):  # type: ignore[misc]
    """Hands every event of the namespace to the adapter, whatever its name.

    (A catch-all handler, ``server.on("*")``, would get an event named ``"*"``
    without its name, and the adapter would take its payload for the client's sid.)
    """

    def __init__(self, adapter: SocketIOAdapter, namespace: str) -> None:
        super().__init__(namespace)
        self._adapter = adapter

    async def trigger_event(self, event: Any, *args: Any) -> Any:
        if event == "connect":
            return await self._adapter._on_connect(*args)
        if event == "disconnect":
            return await self._adapter._on_disconnect(*args)
        return await self._adapter._on_event(event, *args)


class SocketIOAdapter(AsyncResource):
    """Attaches a relay to a python-socketio ``AsyncServer``.

    Each client that connects to the namespace is authenticated by the relay
    (``auth.token``, or the ``userId`` query parameter in development mode) and
    becomes a `Connection`; its events go to the relay, and the
    relay's events go back to it, each encoded once per broadcast.

    Use it as an async context manager, inside the relay's; it owns one task per
    connection. Leaving it disconnects the clients it serves.

    Args:
        relay: The relay to serve.
        server: A python-socketio ``AsyncServer`` of your own to attach to; by
            default the adapter makes one (ASGI mode), which `asgi_app`
            serves.
        namespace: The Socket.IO namespace of the chat (default ``/messages``).
        allowed_origins: The web origins whose pages may connect, checked on every
            handshake that carries an ``Origin`` header, as the WebSocket adapter
            checks them: ``scheme://host[:port]`` origins
            (``["https://chat.example"]``), ``"*"`` for any ``http``/``https``
            origin, ``"null"`` to admit sandboxed frames and ``file:`` pages.
            Defaults to ``["*"]`` outside production mode; required in it. Clients
            that send no ``Origin`` (native apps, scripts) are not checked:
            authentication is what stops them. Only for the server the adapter
            makes; configure your own server's ``cors_allowed_origins`` yourself.
        auth_timeout: Seconds a client has, from opening its engine.io connection, to
            join a namespace (be authenticated); past it the connection is closed, as
            is one left in no namespace for that long. Default: the relay's
            ``Limits.auth_timeout`` (10).

    A client's packets are checked before python-socketio handles them (see
    ``docs/topics/limits.md``): a malformed one closes its connection, a ``CONNECT``
    to a namespace no handler serves is refused. On a ``server`` of your own this
    holds for all its namespaces, and a client is closed only if it joined none of
    them in time; its loggers stay as you set them (the adapter's own server logs
    python-socketio's and engine.io's errors once, then at most one line per 10 s).

    Attributes:
        relay: The relay it serves.
        namespace: The Socket.IO namespace it serves.

    Raises:
        ValueError: If ``namespace`` does not start with ``/``, if production mode
            lacks ``allowed_origins`` (for the server the adapter makes) or an origin
            is malformed, if both ``server`` and ``allowed_origins`` are given, or if
            ``server`` accepts connections before authenticating them
            (``always_connect=True``).
        TypeError: If ``server`` is not a python-socketio ``AsyncServer``.
    """

    def __init__(
        self,
        relay: Relay,
        *,
        server: Any = None,
        namespace: str = "/messages",
        allowed_origins: str | Sequence[str] | None = None,
        auth_timeout: float | None = None,
    ) -> None:
        if not namespace.startswith("/"):
            raise ValueError(f"a Socket.IO namespace starts with '/', not {namespace!r}")
        if auth_timeout is None:
            auth_timeout = relay.config.limits.auth_timeout
        if auth_timeout <= 0:
            raise ValueError(f"auth_timeout must be > 0, got {auth_timeout!r}")
        self._owns_server = server is None
        if server is None:
            if isinstance(allowed_origins, str):
                allowed_origins = [allowed_origins]  # python-socketio's one-origin form
            # The decision is the policy's (the WebSocket adapter's too); python-socketio
            # asks it for each handshake's Origin and does the CORS mechanics.
            origins = origin_policy(allowed_origins, production=relay.config.production)
            server = socketio.AsyncServer(
                async_mode="asgi",
                cors_allowed_origins=origins.allows,
                # Their INFO logs would add noise per event, and packet logs show
                # tokens; their errors, a traceback per bad packet (see _sio_guard).
                logger=QuietLibraryLog("chatrelay.socketio.library"),
                engineio_logger=QuietLibraryLog("chatrelay.socketio.library"),
                # Only the chat's namespace: python-socketio accepts "/" by default.
                namespaces=[namespace],
            )
        elif allowed_origins is not None:
            raise ValueError(
                "allowed_origins applies to the server the adapter makes; set"
                " cors_allowed_origins on your own server instead"
            )
        elif not (isinstance(server, socketio.AsyncServer) and server.is_asyncio_based()):
            raise TypeError(f"expected a socketio.AsyncServer, got {server!r}")
        elif server.always_connect:
            # It would accept before authentication, and refuse with a disconnect.
            raise ValueError("the adapter needs a server made with always_connect=False")
        self.relay = relay
        self.server: Any = server
        """The python-socketio ``AsyncServer`` the adapter is attached to."""
        self.namespace = namespace
        self._cache_key = f"socketio:{namespace}"
        self._head = "2" if namespace == "/" else f"2{namespace},"
        self._sessions: dict[str, _Session] = {}
        self._stack: AsyncExitStack | None = None
        self._tg: TaskGroup | None = None
        self._accepting = False
        # The ASGI ``send`` of each WebSocket that upgrades an engine.io session, by
        # its engine.io sid: what aborts the connection of a client that stopped reading.
        self._upgrade_sends: dict[str, ASGISend] = {}
        payload = engineio.payload.Payload
        payload.max_decode_packets = max(payload.max_decode_packets, _MAX_DECODE_PACKETS)
        server.register_namespace(_Dispatch(self, namespace))
        self._guard = PacketGuard(server, namespace=namespace, handshake_timeout=auth_timeout)

    def asgi_app(
        self, other_asgi_app: ASGIApp | None = None, *, socketio_path: str = "socket.io"
    ) -> ASGIApp:
        """Return an ASGI application that serves the Socket.IO endpoint.

        Args:
            other_asgi_app: Your own application (Starlette, FastAPI…), which gets
                every request outside ``socketio_path``, and the lifespan events.
            socketio_path: Where the Socket.IO endpoint is (``/socket.io/``, the
                clients' default).

        Returns:
            The application to run with an ASGI server such as uvicorn.
        """
        inner: ASGIApp = socketio.ASGIApp(
            self.server, other_asgi_app=other_asgi_app, socketio_path=socketio_path
        )
        upgrade_sends = self._upgrade_sends

        async def app(scope: Any, receive: Any, send: Any) -> None:
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

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Start serving the namespace; prefer ``async with``.

        Raises:
            RuntimeError: If the adapter was started before, or not on asyncio.
        """
        library = sniffio.current_async_library()
        if library != "asyncio":
            raise RuntimeError(
                f"the Socket.IO adapter runs on asyncio only (python-socketio is"
                f" asyncio-only), not on {library}"
            )
        if self._stack is not None:
            raise RuntimeError("a SocketIOAdapter can be entered only once")
        async with AsyncExitStack() as stack:
            self._tg = await stack.enter_async_context(anyio.create_task_group())
            self._stack = stack.pop_all()
        self._guard.start(self._tg)
        self._accepting = True

    async def aclose(self) -> None:
        """Disconnect every client of the namespace and stop serving it.

        Leaving ``async with`` calls it; call it yourself only from the task that
        entered the adapter. New connects are refused from then on (status 503,
        code ``unavailable``).
        """
        if self._stack is None or not self._accepting:
            return
        self._accepting = False
        self._guard.stop()
        # Each connection leaves the relay, then its task disconnects the client.
        for session in list(self._sessions.values()):
            session.scope.cancel()
        # The task group was entered in start(): leave it outside any new scope.
        await self._stack.aclose()
        if self._owns_server:
            # engine.io's shutdown waits for each client to take its CLOSE packet: a
            # client that stopped reading (or polling) would hold it forever.
            with anyio.move_on_after(_CLOSE_GRACE, shield=True):
                await self.server.shutdown()
            self.server.eio.sockets.clear()

    # --- python-socketio handlers ----------------------------------------------------
    # None of them lets an exception through to python-socketio: a failure is logged
    # once here (or by the relay) and answered on the wire.

    async def _on_connect(self, sid: str, *args: Any) -> Any:
        if sid in self._sessions:
            # An admitted client sent an event named "connect": not a handshake.
            return await self._on_event("connect", sid, *args)
        environ: dict[str, Any] = args[0] if args else {}
        auth = args[1] if len(args) > 1 else None
        try:
            return await self._admit(sid, environ, auth)
        except socketio.exceptions.ConnectionRefusedError:
            raise
        except Exception:
            _logger.exception("Socket.IO connect failed: sid=%s", sid)
            raise _refused(InternalError("the server failed to accept the connection")) from None

    async def _admit(self, sid: str, environ: dict[str, Any], auth: object) -> bool:
        if not self._accepting or self._tg is None:
            raise _unavailable()
        try:
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
            transport=_TRANSPORT,
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
            session: _Session = await self._tg.start(self._serve, sid, eio_sid, identity)
        except ProtocolError as exc:
            # Refused by the relay's admission (too_many_connections), before it
            # became a connection: a connect error with the wire's error fields.
            raise _refused(exc) from None
        if not self._accepting or not self._client_alive(eio_sid):
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

    async def _on_disconnect(self, sid: str, *args: Any) -> Any:
        if self.server.manager.is_connected(sid, self.namespace):
            # A connected client sent an event named "disconnect": not a disconnect.
            return await self._on_event("disconnect", sid, *args)
        session = self._sessions.get(sid)
        if session is not None:
            session.client_gone = True
            session.scope.cancel()
        return None

    async def _on_event(self, event: Any, sid: str, *args: Any) -> dict[str, Any] | None:
        session = self._sessions.get(sid)
        conn = session.conn if session is not None else None
        if session is None or conn is None:
            return None
        # A request has one argument, its payload; anything else fails validation.
        data = args[0] if len(args) == 1 else list(args) if args else None
        try:
            async with session.lock:
                # size=None: python-socketio hands over decoded arguments, so the
                # relay measures the JSON of the payload itself.
                reply = await conn.handle(event, data)
                # python-socketio queues the ack on engine.io when this returns: what
                # the relay handed the connection before must be with engine.io first.
                if session.outlet is not None:
                    await session.outlet.flushed()
                return reply
        except ConnectionClosed:
            return None  # the relay closed it; the client is being disconnected
        except Exception:
            _logger.exception("Socket.IO event failed: event=%s connection=%s", event, conn.id)
            name = event if isinstance(event, str) else None
            return failed_ack(InternalError("the server failed", event=name))

    # --- one connection ----------------------------------------------------------------

    async def _serve(
        self,
        sid: str,
        eio_sid: str,
        identity: Identity,
        *,
        task_status: TaskStatus[_Session],
    ) -> None:
        session = _Session(sid, eio_sid)
        self._sessions[sid] = session
        try:
            with session.scope:
                async with (
                    self.relay.connect(identity, transport=_TRANSPORT) as conn,
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
            del self._sessions[sid]
            # In no namespace now, the client has the handshake timeout to join again.
            self._guard.left(eio_sid)
        # The relay closed the connection (outgoing ended), or the adapter is closing.
        if not session.client_gone:
            # Shielded: this runs when the adapter closes under cancellation too; it
            # waits for the client at most _CLOSE_GRACE seconds.
            with anyio.CancelScope(shield=True):
                try:
                    await self._close_client(session, conn)
                except Exception:
                    _logger.exception("Socket.IO disconnect failed: sid=%s", sid)

    async def _close_client(self, session: _Session, conn: Connection) -> None:
        """Close the client's engine.io connection, so that its client reconnects.

        Not a Socket.IO DISCONNECT, after which the official client stays away:
        an ``error`` event says why (for a reason the client can act on), then
        engine.io's CLOSE. A client that has not taken them within _CLOSE_GRACE (it
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
        try:
            with anyio.move_on_after(_CLOSE_GRACE):
                await socket.queue.join()  # taken by the writer, or by a poll
                # Until the client closes its WebSocket: engine.io signals nothing then.
                while socket.upgraded and not socket.closed:  # noqa: ASYNC110
                    await anyio.sleep(_CLOSE_CHECK)
                return
            send = session.ws_send or self._upgrade_sends.get(session.eio_sid)
            if send is not None and abort_transport(send):
                _logger.info(
                    "Socket.IO connection aborted: no answer to its close (%s) within %gs:"
                    " connection=%s",
                    reason,
                    _CLOSE_GRACE,
                    conn.id,
                )
        finally:
            await socket.close(wait=False, abort=True, reason=eio.reason.SERVER_DISCONNECT)
            eio.sockets.pop(session.eio_sid, None)

    def _wire(self, session: _Session, conn: Connection) -> SocketIOWire:
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
