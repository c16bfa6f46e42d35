"""The exception classes; `chatrelay.exceptions` is their public home."""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "BackplaneError",
    "ChatRelayError",
    "ConnectionClosed",
    "Forbidden",
    "InternalError",
    "InvalidPayload",
    "NotInConversation",
    "PayloadTooLarge",
    "ProtocolError",
    "RateLimited",
    "TooManyConnections",
    "Unauthorized",
    "UnknownEvent",
]


class ChatRelayError(Exception):
    """The root of every exception chatrelay raises on purpose."""


class ProtocolError(ChatRelayError, ValueError):
    """A client request failed; maps one to one onto the wire ``error`` event.

    Attributes:
        status: An HTTP-like status (400, 401, 403, 404, 409, 413, 429, 500).
        code: A stable snake_case code, such as ``"invalid_payload"``.
        message: A sentence for humans.
        event: The name of the client event that caused the error, if any.
    """

    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"

    def __init__(self, message: str, *, event: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.event = event

    def for_event(self, event: str | None) -> ProtocolError:
        """Return this error with `event` set (when it was not set yet)."""
        if self.event is None:
            self.event = event
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, event={self.event!r})"


class InvalidPayload(ProtocolError):
    """The payload of a request is not what the event takes."""

    status = 400
    code = "invalid_payload"


class UnknownEvent(ProtocolError):
    """The client sent an event name that the protocol does not have."""

    status = 400
    code = "unknown_event"


class Unauthorized(ProtocolError):
    """The connection could not be authenticated."""

    status = 401
    code = "unauthorized"


class Forbidden(ProtocolError):
    """The authenticated user may not do this (join that room, speak for another user)."""

    status = 403
    code = "forbidden"


class NotInConversation(ProtocolError):
    """The request needs the connection to have joined the conversation first."""

    status = 409
    code = "not_in_conversation"


class PayloadTooLarge(ProtocolError):
    """The request is larger than the configured maximum."""

    status = 413
    code = "payload_too_large"


class RateLimited(ProtocolError):
    """The connection sent more requests than its rate limit allows."""

    status = 429
    code = "rate_limited"


class TooManyConnections(ProtocolError):
    """The user has as many connections as `Limits.max_connections_per_user` allows.

    Raised by `Relay.connect`, before the connection exists: the new one is refused,
    the user's others stay. Adapters refuse the handshake with it (a Socket.IO
    connect error, a WebSocket ``error`` frame and close 1008).
    """

    status = 429
    code = "too_many_connections"


class InternalError(ProtocolError):
    """The server failed while handling a request; details stay in the server log."""

    status = 500
    code = "internal_error"


class ConnectionClosed(ChatRelayError):
    """The connection was closed, by either side.

    Attributes:
        reason: Why the connection closed, such as ``"slow_consumer"``.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BackplaneError(ChatRelayError):
    """The backplane refused a publish (too large, closed) or is unreachable."""
