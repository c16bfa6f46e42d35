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
from collections.abc import Sequence
from contextlib import AsyncExitStack
from typing import Any, Final

import anyio
import engineio
import sniffio
import socketio

from .. import _outlet
from .._errors import failed_ack
from .._exceptions import ConnectionClosed, InternalError
from .._relay import Relay
from .._resource import AsyncResource
from ._origins import origin_policy
from ._sio_guard import PacketGuard
from ._sio_log import QuietLibraryLog
from ._sio_session import ASGIApp, Sessions

__all__ = ["ASGIApp", "SocketIOAdapter"]

_logger = logging.getLogger("chatrelay.socketio")

# Engine.IO packets python-engineio decodes from one long-polling POST; it refuses a
# POST with more, whole (its default is 16), and clients batch what they send while a
# POST is under way: an ack for each of up to SEND_BUFFER (64) events of one poll, plus
# requests. Requests past the relay's rate limit are refused one by one, cheaply.
_MAX_DECODE_PACKETS: Final = 1024


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
                # tokens; their errors, a traceback per bad packet (see _sio_log).
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
        self._stack: AsyncExitStack | None = None
        payload = engineio.payload.Payload
        payload.max_decode_packets = max(payload.max_decode_packets, _MAX_DECODE_PACKETS)
        server.register_namespace(_Dispatch(self, namespace))
        self._guard = PacketGuard(server, namespace=namespace, handshake_timeout=auth_timeout)
        # Admission, serving and closing of each client; the adapter only translates.
        self._host = Sessions(relay, server, namespace, self._guard)
        self._sessions = self._host.by_sid

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
        return self._host.track_upgrades(inner, socketio_path)

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
            tg = await stack.enter_async_context(anyio.create_task_group())
            self._stack = stack.pop_all()
        self._guard.start(tg)
        self._host.start(tg)

    async def aclose(self) -> None:
        """Disconnect every client of the namespace and stop serving it.

        Leaving ``async with`` calls it; call it yourself only from the task that
        entered the adapter. New connects are refused from then on (status 503,
        code ``unavailable``).
        """
        if self._stack is None or not self._host.accepting:
            return
        self._host.accepting = False
        self._guard.stop()
        # Each connection leaves the relay, then its task disconnects the client.
        for session in list(self._sessions.values()):
            session.scope.cancel()
        # The task group was entered in start(): leave it outside any new scope.
        await self._stack.aclose()
        if self._owns_server:
            # engine.io's shutdown waits for each client to take its CLOSE packet: a
            # client that stopped reading (or polling) would hold it forever.
            with anyio.move_on_after(_outlet.CLOSE_GRACE, shield=True):
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
        return await self._host.admit(sid, environ, auth)

    async def _on_disconnect(self, sid: str, *args: Any) -> Any:
        if self.server.manager.is_connected(sid, self.namespace):
            # A connected client sent an event named "disconnect": not a disconnect.
            return await self._on_event("disconnect", sid, *args)
        self._host.gone(sid)
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
