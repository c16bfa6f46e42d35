"""The exception classes of chatrelay; `chatrelay.exceptions` is their public home.

Its docstring draws the tree: every error raised on purpose derives from
`ChatRelayError`, and those a client caused carry the wire ``error`` event's fields.
"""

from __future__ import annotations

import enum
from typing import ClassVar

__all__ = [
    "BackplaneError",
    "ChatRelayError",
    "CloseReason",
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
    "Unavailable",
    "UnknownEvent",
    "UnknownNamespace",
    "UnsupportedSubprotocol",
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


class UnsupportedSubprotocol(ProtocolError):
    """A WebSocket handshake offered only subprotocols this binding does not speak."""

    status = 400
    code = "unsupported_subprotocol"


class Unauthorized(ProtocolError):
    """The connection could not be authenticated."""

    status = 401
    code = "unauthorized"


class Forbidden(ProtocolError):
    """The authenticated user may not do this (join that room, speak for another user)."""

    status = 403
    code = "forbidden"


class UnknownNamespace(ProtocolError):
    """A Socket.IO ``CONNECT`` to a namespace that no handler serves."""

    status = 404
    code = "unknown_namespace"


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


class CloseReason(enum.StrEnum):
    """Why the server closed (or refused) a connection: the reasons the wire carries.

    A `str` enum: a reason compares equal to its text (``CloseReason.SLOW_CONSUMER ==
    "slow_consumer"``), and that text is what the wire says (a WebSocket close frame's
    reason, the ``code`` of the Socket.IO ``error`` event that says why). Adapters only
    map a reason to their own close codes.
    """

    SLOW_CONSUMER = "slow_consumer"
    """The client did not read its events fast enough (`Limits.outgoing_bytes`)."""
    SERVER_SHUTDOWN = "server_shutdown"
    """The relay is shutting down."""
    CLIENT_DISCONNECTED = "client_disconnected"
    """The client went away (or its adapter stopped reading it)."""
    MESSAGE_TOO_BIG = "message_too_big"
    """The client sent a frame above the transport's hard size limit."""
    AUTH_TIMEOUT = "auth_timeout"
    """The client did not authenticate within `Limits.auth_timeout`."""
    ORIGIN_NOT_ALLOWED = "origin_not_allowed"
    """The handshake came from a web origin that is not allowed (before accepting)."""
    SERVER_RESTART = "server_restart"
    """The server is draining before a restart (`Relay.drain`): reconnect, elsewhere."""
    TOKEN_EXPIRED = "token_expired"
    """The credentials expired and were not refreshed (``auth:refresh``) in time."""
    DISCONNECTED = "disconnected"
    """The application ended the user's connections (`Relay.disconnect_user`)."""

    @classmethod
    def parse(cls, reason: CloseReason | str) -> CloseReason | str:
        """``reason`` as a `CloseReason` when it is one; an application's own text as is."""
        try:
            return cls(reason)
        except ValueError:
            return reason


class Unavailable(ProtocolError):
    """The server is not serving now (it is starting or shutting down): retry later."""

    status = 503
    code = "unavailable"


def draining_refusal() -> Unavailable:
    """How a draining relay refuses a new connection (HTTP 503 / a connect error)."""
    return Unavailable("the server is restarting; connect to another one")


class ConnectionClosed(ChatRelayError):
    """The connection was closed, by either side.

    Attributes:
        reason: Why the connection closed: a `CloseReason` (such as
            ``CloseReason.SLOW_CONSUMER``, equal to ``"slow_consumer"``), or the text
            an application closed it with.
    """

    def __init__(self, reason: CloseReason | str) -> None:
        reason = CloseReason.parse(reason)
        super().__init__(str(reason))
        self.reason = reason


class BackplaneError(ChatRelayError):
    """The backplane refused a publish (too large, closed) or is unreachable."""
