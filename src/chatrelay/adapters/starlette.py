"""Serve a relay to plain WebSocket clients from a Starlette or FastAPI app.

The ``starlette`` extra (``pip install 'chatrelay[starlette]'``). Clients speak the
JSON text frames of the protocol's WebSocket binding; they share rooms, presence and
typing with the relay's clients on every other transport::

    from contextlib import asynccontextmanager

    from starlette.applications import Starlette

    from chatrelay import Relay
    from chatrelay.adapters.starlette import WebSocketAdapter

    relay = Relay()
    ws = WebSocketAdapter(relay, allowed_origins=["https://chat.example.com"])


    @asynccontextmanager
    async def lifespan(app):
        async with relay:
            yield


    app = Starlette(routes=[ws.route("/ws")], lifespan=lifespan)

The adapter runs wherever Starlette runs: on asyncio and on trio (through anyio).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from starlette.routing import WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from .._exceptions import ProtocolError
from .._public import publish
from .._relay import Relay
from ._origins import origin_policy
from ._wsadmission import TRANSPORT, admit, refuse
from ._wsclose import CloseCode, close_code, close_or_abort
from ._wssession import Session

__all__ = ["CloseCode", "WebSocketAdapter", "close_code"]


class WebSocketAdapter:
    """Serves a relay over plain WebSockets, as a Starlette route or ASGI app.

    Add `route` to a Starlette app (or call `serve` from a FastAPI
    ``@app.websocket`` endpoint). The relay must be running (``async with relay:``,
    in the app's lifespan) while clients connect.

    A client may offer the subprotocol ``chatrelay.v1`` (``Sec-WebSocket-Protocol``),
    which is then selected, or none; a handshake that offers only others is refused
    with HTTP 400 and the error fields as a JSON body (see the protocol's WebSocket
    binding).

    Args:
        relay: The relay to serve.
        allowed_origins: The web origins whose pages may connect, as
            ``scheme://host[:port]`` (``"https://chat.example.com"``); ``"*"`` for any
            ``http``/``https`` origin; ``"null"`` to admit sandboxed frames and
            ``file:`` pages, which nothing else admits. Checked before accepting,
            since CORS does not apply to WebSockets. Defaults to ``["*"]`` outside
            production mode; required in it. The same policy as the Socket.IO
            adapter's (see the protocol's "Origins").
        allow_missing_origin: Whether a handshake without an ``Origin`` header is
            accepted (default ``True``). Browsers always send one, so this admits
            non-browser clients (apps, CLI tools, servers), which could send any
            ``Origin`` they like anyway. Set it to ``False`` when only browsers
            connect.
        auth_timeout: Seconds a client that connected without credentials has to send
            its ``auth`` frame before it is closed with 1008 (default: the relay's
            ``Limits.auth_timeout``, 10).
        max_frame_bytes: The hard limit on a frame, in bytes: a larger frame closes
            the connection with 1009. Defaults to four times the relay's
            ``Limits.max_payload_bytes`` (frames between the two are answered with
            ``payload_too_large``). Give the server the same limit (uvicorn's
            ``ws_max_size``) so that it refuses such frames before buffering them.
        max_pending_acks: Events awaiting a client's ack, per connection, that the
            adapter remembers; past it the oldest is forgotten and its late ack
            ignored (default: the relay's ``Limits.pending_acks``).

    Raises:
        ValueError: If production mode lacks ``allowed_origins``, an origin is
            malformed, ``max_frame_bytes`` is below the relay's
            ``max_payload_bytes``, or a number is not positive.
    """

    def __init__(
        self,
        relay: Relay,
        *,
        allowed_origins: Iterable[str] | None = None,
        allow_missing_origin: bool = True,
        auth_timeout: float | None = None,
        max_frame_bytes: int | None = None,
        max_pending_acks: int | None = None,
    ) -> None:
        origins = origin_policy(
            allowed_origins,
            production=relay.config.production,
            allow_missing=allow_missing_origin,
        )
        payload_limit = relay.config.limits.max_payload_bytes
        if max_frame_bytes is None:
            max_frame_bytes = 4 * payload_limit
        if max_frame_bytes < payload_limit:
            raise ValueError(
                f"max_frame_bytes ({max_frame_bytes}) must be at least the relay's"
                f" max_payload_bytes ({payload_limit})"
            )
        if max_pending_acks is None:
            max_pending_acks = relay.config.limits.pending_acks
        if auth_timeout is None:
            auth_timeout = relay.config.limits.auth_timeout
        if auth_timeout <= 0 or max_pending_acks <= 0:
            raise ValueError("auth_timeout and max_pending_acks must be > 0")
        self.relay = relay
        self.origins = origins
        self.auth_timeout = auth_timeout
        self.max_frame_bytes = max_frame_bytes
        self.max_pending_acks = max_pending_acks

    def route(self, path: str = "/ws", *, name: str | None = "chatrelay") -> WebSocketRoute:
        """A Starlette route that serves this adapter at ``path``.

        Args:
            path: The route's path (default ``/ws``, the protocol's path).
            name: The route's name, for ``url_path_for``.

        Returns:
            The route, for ``Starlette(routes=[...])`` or ``app.router.routes``.
        """
        return WebSocketRoute(path, self, name=name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one WebSocket connection as an ASGI app."""
        await self._serve(WebSocket(scope, receive, send), send)

    async def serve(self, websocket: WebSocket) -> None:
        """Serve one WebSocket connection until either side closes it.

        Checks the origin and the handshake's credentials before accepting, then
        reads requests in this task. Events are sent from the relay's fan-out (on
        asyncio) or by a task that runs while some are queued (on trio, or behind a
        send that waits for a slow client).

        Args:
            websocket: The connection, not accepted yet.
        """
        await self._serve(websocket, websocket.send)

    async def _serve(self, websocket: WebSocket, send: Send) -> None:
        """`serve`, with the ASGI ``send`` that events go through once accepted."""
        # The handshake's headers and query are gone once it is admitted: an idle
        # connection keeps only what the session needs.
        identity = await admit(
            websocket,
            self.relay,
            self.origins,
            auth_timeout=self.auth_timeout,
            max_frame_bytes=self.max_frame_bytes,
        )
        if identity is None:
            return
        async with contextlib.AsyncExitStack() as stack:
            try:
                connection = await stack.enter_async_context(
                    self.relay.connect(identity, transport=TRANSPORT)
                )
            except ProtocolError as exc:
                # Refused by the relay's admission (too_many_connections).
                await refuse(websocket, exc)
                return
            session = Session(
                websocket,
                connection,
                send,
                max_frame_bytes=self.max_frame_bytes,
                max_pending_acks=self.max_pending_acks,
            )
            reason = await session.run()
            if reason is not None:
                # The relay (or the reader, through the relay) closed the connection.
                await close_or_abort(websocket, send, close_code(reason), reason)


publish(__name__, ["CloseCode", "close_code"])
