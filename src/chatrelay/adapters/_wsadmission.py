"""Admitting a WebSocket client: origin, subprotocol, credentials, the first frame.

`admit` runs before the relay has a connection for the client: it checks the
``Origin`` against the adapter's policy, selects the subprotocol, authenticates the
handshake's credentials (a bearer token, or ``?token=``) and, if there were none,
drives the first-frame authentication (`AuthHandshake`, sans-I/O) until it is over.
Every refusal is closed with the binding's close codes (`_wsclose`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from typing import Final

import anyio
from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketDisconnect

from .. import codec
from .._auth import Credentials, Identity
from .._errors import error_payload
from .._exceptions import (
    CloseReason,
    ProtocolError,
    Unauthorized,
    UnsupportedSubprotocol,
)
from .._relay import Relay
from ._origins import OriginPolicy
from ._wsclose import CloseCode, close, close_code, refusal_code, refusal_reason, truncate
from ._wsframes import error_frame, select_subprotocol
from ._wshandshake import AuthHandshake, Closing, Step
from ._wssession import frame_size

__all__ = ["TRANSPORT", "admit", "refuse"]

_logger = logging.getLogger("chatrelay.websocket")

TRANSPORT: Final = "websocket"


async def admit(
    websocket: WebSocket,
    relay: Relay,
    origins: OriginPolicy,
    *,
    auth_timeout: float,
    max_frame_bytes: int,
) -> Identity | None:
    """Check the origin and authenticate; the identity, or ``None`` if refused."""
    try:
        relay.ensure_accepting()
    except ProtocolError as exc:
        _logger.info("websocket refused: %s", exc.message)
        await _deny(websocket, exc)
        return None
    origin = websocket.headers.get("origin")
    if not origins.allows(origin):
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
    if token is not None or not relay.config.production:
        try:
            identity = await relay.authenticate(_credentials(token, query, headers))
        except ProtocolError as exc:
            # Without a token (development mode), the client may still send an
            # auth frame; a token that was presented and refused ends it here.
            if token is not None or not isinstance(exc, Unauthorized):
                await websocket.close(refusal_code(exc), truncate(refusal_reason(exc)))
                return None
    await websocket.accept(subprotocol=subprotocol)
    if identity is None:
        handshake = AuthHandshake(
            now=anyio.current_time(),
            timeout=auth_timeout,
            max_payload_bytes=relay.config.limits.max_payload_bytes,
            max_frame_bytes=max_frame_bytes,
        )
        try:
            identity = await _authenticate_by_frame(
                websocket, relay, handshake, auth_timeout, query, headers
            )
        except WebSocketDisconnect:
            return None  # the client left while being answered
    return identity


async def refuse(websocket: WebSocket, error: ProtocolError) -> None:
    """Refuse an accepted client that the relay did not admit (``too_many_connections``).

    Says why, as a refused auth frame does, then closes with the refusal's code.
    """
    with contextlib.suppress(WebSocketDisconnect, OSError):
        await websocket.send_text(error_frame(error))
    await close(websocket, refusal_code(error), refusal_reason(error))


def _bearer(header: str | None) -> str | None:
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def _credentials(
    token: str | None, query: Mapping[str, str], headers: Mapping[str, str]
) -> Credentials:
    return Credentials(token=token, query=query, headers=headers, transport=TRANSPORT)


async def _authenticate_by_frame(
    websocket: WebSocket,
    relay: Relay,
    handshake: AuthHandshake,
    auth_timeout: float,
    query: Mapping[str, str],
    headers: Mapping[str, str],
) -> Identity | None:
    """Drive the first-frame authentication (`AuthHandshake`) until it is over."""
    with anyio.move_on_at(handshake.deadline):
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return None
            size = frame_size(message)
            step = handshake.receive(message.get("text"), size, anyio.current_time())
            if step.token is not None:
                try:
                    identity = await relay.authenticate(_credentials(step.token, query, headers))
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
                    _logger.info("websocket closed: no auth frame within %gs", auth_timeout)
                await _close_for(websocket, step.close)
                return None
    _logger.info("websocket closed: no auth frame within %gs", auth_timeout)
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
        await close(websocket, refusal_code(error), truncate(refusal_reason(error)))
    else:
        assert closing.reason is not None
        await close(websocket, close_code(closing.reason), closing.reason.value)


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
        await websocket.close(CloseCode.POLICY_VIOLATION, truncate(refusal_reason(error)))
