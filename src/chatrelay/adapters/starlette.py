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
import enum
import logging
from collections.abc import Iterable, Mapping
from typing import Final

import anyio
from starlette.responses import Response
from starlette.routing import WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from .. import codec
from .._auth import Credentials, Identity
from .._errors import error_payload
from .._exceptions import CloseReason, ProtocolError, Unauthorized, UnsupportedSubprotocol
from .._relay import Relay
from ._origins import origin_policy
from ._wsframes import error_frame, select_subprotocol
from ._wshandshake import AuthHandshake, Closing, Step
from ._wssession import Session, close_or_abort, frame_size, truncate
from ._wssession import close as _close

__all__ = ["CloseCode", "WebSocketAdapter", "close_code"]

_logger = logging.getLogger("chatrelay.websocket")

_TRANSPORT: Final = "websocket"


class CloseCode(enum.IntEnum):
    """The close codes the adapter sends (RFC 6455, section 7.4, and the IANA registry)."""

    NORMAL_CLOSURE = 1000
    """The server closed for a reason without a code of its own."""
    GOING_AWAY = 1001
    """The server is shutting down (``server_shutdown``): reconnect, to another server."""
    POLICY_VIOLATION = 1008
    """Refused: a foreign ``Origin``, refused credentials, or no ``auth`` frame in time.
    Retrying the same request fails the same way."""
    MESSAGE_TOO_BIG = 1009
    """A frame was larger than the hard limit (``max_frame_bytes``)."""
    INTERNAL_ERROR = 1011
    """The server failed (an authenticator raised); details are in the server log."""
    TRY_AGAIN_LATER = 1013
    """The client did not read its events fast enough (``slow_consumer``): reconnect
    after a pause, and fetch what was missed from the application's API."""


_CLOSE_CODES: Final[Mapping[CloseReason, CloseCode]] = {
    CloseReason.SERVER_SHUTDOWN: CloseCode.GOING_AWAY,
    CloseReason.SLOW_CONSUMER: CloseCode.TRY_AGAIN_LATER,
    CloseReason.MESSAGE_TOO_BIG: CloseCode.MESSAGE_TOO_BIG,
    CloseReason.AUTH_TIMEOUT: CloseCode.POLICY_VIOLATION,
    CloseReason.ORIGIN_NOT_ALLOWED: CloseCode.POLICY_VIOLATION,
}


def close_code(reason: CloseReason | str) -> CloseCode:
    """The close code for a reason the server closes a connection with.

    Args:
        reason: A `chatrelay.exceptions.CloseReason` (a
            `chatrelay.lowlevel.Connection.close_reason`), such as
            ``CloseReason.SLOW_CONSUMER``; its text is the close frame's reason.

    Returns:
        ``GOING_AWAY`` (1001) for ``server_shutdown``, ``TRY_AGAIN_LATER`` (1013) for
        ``slow_consumer``, ``MESSAGE_TOO_BIG`` (1009) for ``message_too_big``,
        ``POLICY_VIOLATION`` (1008) for ``auth_timeout`` and ``origin_not_allowed``,
        and ``NORMAL_CLOSURE`` (1000) for any other reason (``client_disconnected``,
        an application's own).
    """
    parsed = CloseReason.parse(reason)
    if isinstance(parsed, CloseReason):
        return _CLOSE_CODES.get(parsed, CloseCode.NORMAL_CLOSURE)
    return CloseCode.NORMAL_CLOSURE


def _refusal_code(error: ProtocolError) -> CloseCode:
    if error.status >= 500:
        return CloseCode.INTERNAL_ERROR
    return CloseCode.POLICY_VIOLATION


def _refusal_reason(error: ProtocolError) -> str:
    return f"{error.code}: {error.message}"


def _bearer(header: str | None) -> str | None:
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


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
        identity = await self._admit(websocket)
        if identity is None:
            return
        async with contextlib.AsyncExitStack() as stack:
            try:
                connection = await stack.enter_async_context(
                    self.relay.connect(identity, transport=_TRANSPORT)
                )
            except ProtocolError as exc:
                # Refused by the relay's admission (too_many_connections): say why, as
                # a refused auth frame does, then close with 1008 and the reason.
                with contextlib.suppress(WebSocketDisconnect, OSError):
                    await websocket.send_text(error_frame(exc))
                await _close(websocket, _refusal_code(exc), _refusal_reason(exc))
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

    async def _admit(self, websocket: WebSocket) -> Identity | None:
        """Check the origin and authenticate; the identity, or ``None`` if refused."""
        origin = websocket.headers.get("origin")
        if not self.origins.allows(origin):
            _logger.info("websocket refused: origin %r is not allowed", origin)
            reason = CloseReason.ORIGIN_NOT_ALLOWED
            await websocket.close(close_code(reason), reason.value)
            return None
        try:
            subprotocol = select_subprotocol(websocket.scope.get("subprotocols") or [])
        except ValueError as exc:
            _logger.info("websocket refused: %s", exc)
            await _deny(websocket, UnsupportedSubprotocol(str(exc)))
            return None
        token = _bearer(websocket.headers.get("authorization"))
        if token is None:
            token = websocket.query_params.get("token") or None
        # The token travels in Credentials.token, never logged; keep it out of query.
        query = {k: v for k, v in websocket.query_params.items() if k != "token"}
        headers = dict(websocket.headers.items())
        identity: Identity | None = None
        if token is not None or not self.relay.config.production:
            try:
                identity = await self.relay.authenticate(self._credentials(token, query, headers))
            except ProtocolError as exc:
                # Without a token (development mode), the client may still send an
                # auth frame; a token that was presented and refused ends it here.
                if token is not None or not isinstance(exc, Unauthorized):
                    await websocket.close(_refusal_code(exc), truncate(_refusal_reason(exc)))
                    return None
        await websocket.accept(subprotocol=subprotocol)
        if identity is None:
            try:
                identity = await self._authenticate_by_frame(websocket, query, headers)
            except WebSocketDisconnect:
                return None  # the client left while being answered
        return identity

    def _credentials(
        self, token: str | None, query: Mapping[str, str], headers: Mapping[str, str]
    ) -> Credentials:
        return Credentials(token=token, query=query, headers=headers, transport=_TRANSPORT)

    async def _authenticate_by_frame(
        self, websocket: WebSocket, query: Mapping[str, str], headers: Mapping[str, str]
    ) -> Identity | None:
        """Drive the first-frame authentication (`AuthHandshake`) until it is over."""
        limits = self.relay.config.limits
        handshake = AuthHandshake(
            now=anyio.current_time(),
            timeout=self.auth_timeout,
            max_payload_bytes=limits.max_payload_bytes,
            max_frame_bytes=self.max_frame_bytes,
        )
        with anyio.move_on_at(handshake.deadline):
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return None
                size = frame_size(message)
                step = handshake.receive(message.get("text"), size, anyio.current_time())
                if step.token is not None:
                    credentials = self._credentials(step.token, query, headers)
                    try:
                        identity = await self.relay.authenticate(credentials)
                    except ProtocolError as exc:
                        step = handshake.refused(exc)
                    else:
                        await _send_all(websocket, handshake.authenticated(identity.user_id))
                        return identity
                await _send_all(websocket, step)
                if step.close is not None:
                    if step.close.reason is CloseReason.MESSAGE_TOO_BIG:
                        _logger.info("websocket closed: a %d-byte frame before auth", size)
                    elif step.close.reason is CloseReason.AUTH_TIMEOUT:
                        _logger.info(
                            "websocket closed: no auth frame within %gs", self.auth_timeout
                        )
                    await _close_for(websocket, step.close)
                    return None
        _logger.info("websocket closed: no auth frame within %gs", self.auth_timeout)
        await _close_for(websocket, handshake.timed_out(anyio.current_time()).close)
        return None


async def _send_all(websocket: WebSocket, step: Step) -> None:
    for text in step.send:
        await websocket.send_text(text)


async def _close_for(websocket: WebSocket, closing: Closing | None) -> None:
    """Close the socket as the handshake says: a reason's code, or a refusal's."""
    assert closing is not None
    if closing.error is not None:
        error = closing.error
        await _close(websocket, _refusal_code(error), truncate(_refusal_reason(error)))
    else:
        assert closing.reason is not None
        await _close(websocket, close_code(closing.reason), closing.reason.value)


async def _deny(websocket: WebSocket, error: ProtocolError) -> None:
    """Refuse a handshake with an HTTP error whose body is the wire's error fields.

    Servers without the ASGI denial response extension (uvicorn and hypercorn have
    it) refuse with what a close before accepting gives: HTTP 403, without a body.
    """
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        body = codec.dumps(error_payload(error))
        response = Response(body, status_code=error.status, media_type="application/json")
        await websocket.send_denial_response(response)
    else:
        await websocket.close(CloseCode.POLICY_VIOLATION, truncate(_refusal_reason(error)))
