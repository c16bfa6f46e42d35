"""The wire rules about failures, each in one place, for every transport.

- `error_event` / `error_payload` / `failed_ack`: from a `ProtocolError` to the wire's
  ``error`` event ``{status, code, message, event?}`` and to the failed ack
  ``{ok: false, error: {…}}``. Whoever answers a request (the relay, an adapter that
  refuses a frame before there is a connection) builds them here.
- `close_error`: the ``error`` event that tells a client why the server closed it,
  for a `CloseReason` the client can act on (a binding without close codes, Socket.IO,
  sends it before closing).
- `check_payload_size` (with `payload_size`, which measures what an adapter could
  not): the payload limit, the same before authentication (a WebSocket ``auth``
  frame, a Socket.IO ``CONNECT``'s auth data) and after it (every request, on every
  transport).

Nothing here does I/O; adapters only put the results on their wire.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from . import codec
from ._exceptions import CloseReason, InvalidPayload, PayloadTooLarge, ProtocolError
from .events import ErrorEvent, ErrorReply

__all__ = [
    "CLOSE_ERRORS",
    "check_payload_size",
    "close_error",
    "error_event",
    "error_payload",
    "failed_ack",
    "payload_size",
]


def error_event(exc: ProtocolError) -> ErrorEvent:
    """The ``error`` event that answers a request that failed with ``exc``."""
    return ErrorEvent(status=exc.status, code=exc.code, message=exc.message, event=exc.event)


def error_payload(exc: ProtocolError) -> dict[str, Any]:
    """`error_event` as the wire's JSON object (camelCase, no ``event`` when it is unset)."""
    return codec.encode(error_event(exc))


def failed_ack(exc: ProtocolError) -> dict[str, Any]:
    """The ack of a request that failed with ``exc``: ``{"ok": false, "error": {…}}``."""
    return codec.encode(ErrorReply(error=error_event(exc)))


CLOSE_ERRORS: Final[Mapping[CloseReason, tuple[int, str]]] = {
    CloseReason.SLOW_CONSUMER: (
        503,
        "the client did not read its events fast enough; reconnecting",
    ),
    CloseReason.SERVER_SHUTDOWN: (503, "the server is shutting down; reconnect"),
    CloseReason.SERVER_RESTART: (503, "the server is restarting; reconnect"),
    CloseReason.DISCONNECTED: (401, "the server ended this user's connections"),
    CloseReason.TOKEN_EXPIRED: (401, "the credentials expired; reconnect with new ones"),
}
"""The reasons a client is told about before it is closed: (status, message)."""


def close_error(reason: CloseReason | str) -> dict[str, Any] | None:
    """The ``error`` event that tells a client why it was closed, if it can act on it.

    Its ``code`` is the reason (``{status: 503, code: "slow_consumer", message}``).

    Args:
        reason: A `chatrelay.Connection.close_reason`.

    Returns:
        The payload, or ``None`` for a reason the client is not told about (it left
        itself, or an application's own reason).
    """
    parsed = CloseReason.parse(reason)
    if not isinstance(parsed, CloseReason):
        return None
    known = CLOSE_ERRORS.get(parsed)
    if known is None:
        return None
    status, message = known
    return codec.encode(ErrorEvent(status=status, code=parsed.value, message=message))


def check_payload_size(size: int, limit: int, *, what: str = "payload") -> None:
    """The payload limit (`Limits.max_payload_bytes`), before and after authentication.

    Args:
        size: The payload's size on the wire, in bytes.
        limit: The limit, in bytes.
        what: What is measured, for the message (``"payload"``, ``"frame"``).

    Raises:
        PayloadTooLarge: If ``size`` is above ``limit``.
    """
    if size > limit:
        raise PayloadTooLarge(f"{what} of {size} bytes exceeds the limit of {limit}")


def payload_size(data: object) -> int:
    """The size of ``data`` as UTF-8 JSON, for a payload whose wire size is unknown.

    Raises:
        InvalidPayload: If ``data`` is not JSON-compatible.
    """
    try:
        return len(codec.dumps(data).encode())
    except (TypeError, ValueError):
        raise InvalidPayload("payload is not JSON-compatible") from None
