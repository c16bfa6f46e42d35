"""How the WebSocket binding closes a connection: its close codes, and a bounded close.

`CloseCode` and `close_code` are `chatrelay.adapters.starlette`'s public names
(it re-exports them); the reason a connection closed is the core's `CloseReason`,
and this module only maps it to a code. `close_or_abort` closes a client the relay
closed, within the core's grace (`chatrelay._outlet.close_or_abort`).
"""

from __future__ import annotations

import contextlib
import enum
import logging
from collections.abc import Mapping
from typing import Final

import anyio
from starlette.types import Send
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from .. import _outlet
from .._exceptions import CloseReason, ProtocolError
from ._abort import abort_transport

__all__ = [
    "CloseCode",
    "close",
    "close_code",
    "close_or_abort",
    "refusal_code",
    "refusal_reason",
    "truncate",
]

_logger = logging.getLogger("chatrelay.websocket")

_CLOSE_TIMEOUT: Final = 5.0
_MAX_REASON_BYTES: Final = 123  # what a close frame has room for


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
    SERVICE_RESTART = 1012
    """The server is draining before a restart (``server_restart``): reconnect, to
    another server."""
    TOKEN_EXPIRED = 4001
    """The credentials expired and were not refreshed (``token_expired``): reconnect
    with new ones."""
    TRY_AGAIN_LATER = 1013
    """The client did not read its events fast enough (``slow_consumer``): reconnect
    after a pause, and fetch what was missed from the application's API."""


_CLOSE_CODES: Final[Mapping[CloseReason, CloseCode]] = {
    CloseReason.SERVER_SHUTDOWN: CloseCode.GOING_AWAY,
    CloseReason.SERVER_RESTART: CloseCode.SERVICE_RESTART,
    CloseReason.TOKEN_EXPIRED: CloseCode.TOKEN_EXPIRED,
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
        ``GOING_AWAY`` (1001) for ``server_shutdown``, ``SERVICE_RESTART`` (1012) for
        ``server_restart`` (a drain), ``TRY_AGAIN_LATER`` (1013) for
        ``slow_consumer``, ``MESSAGE_TOO_BIG`` (1009) for ``message_too_big``,
        ``POLICY_VIOLATION`` (1008) for ``auth_timeout`` and ``origin_not_allowed``,
        and ``NORMAL_CLOSURE`` (1000) for any other reason (``client_disconnected``,
        an application's own).
    """
    parsed = CloseReason.parse(reason)
    if isinstance(parsed, CloseReason):
        return _CLOSE_CODES.get(parsed, CloseCode.NORMAL_CLOSURE)
    return CloseCode.NORMAL_CLOSURE


def refusal_code(error: ProtocolError) -> CloseCode:
    """The close code of a refused handshake: the server failed (1011), or refused (1008)."""
    if error.status >= 500:
        return CloseCode.INTERNAL_ERROR
    return CloseCode.POLICY_VIOLATION


def refusal_reason(error: ProtocolError) -> str:
    """The close frame's reason for a refusal: ``"code: message"``."""
    return f"{error.code}: {error.message}"


def truncate(reason: str) -> str:
    """``reason``, cut to what a close frame can carry (123 bytes of UTF-8)."""
    encoded = reason.encode()
    if len(encoded) <= _MAX_REASON_BYTES:
        return reason
    return encoded[:_MAX_REASON_BYTES].decode(errors="ignore")


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

    The close is over when the client answered it; past the core's grace
    (`chatrelay._outlet.CLOSE_GRACE`) the connection is aborted.
    """

    async def closed() -> None:
        await close(websocket, code, reason)
        # Any failure to receive means the same here: the client is gone.
        with contextlib.suppress(Exception):
            while (await websocket.receive())["type"] != "websocket.disconnect":
                pass  # frames the client sent before it saw the close

    if await _outlet.close_or_abort(closed, lambda: abort_transport(send)):
        _logger.info(
            "websocket aborted: no answer to its close (%s) within %gs",
            reason,
            _outlet.CLOSE_GRACE,
        )
