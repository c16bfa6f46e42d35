"""The WebSocket binding's first-frame authentication, without I/O.

A client that connected without credentials in its handshake (a browser cannot set
headers) authenticates with its first frame, ``{"event": "auth", "data": {"token":
…}}``, within the auth timeout; until then it can do nothing else. `AuthHandshake`
holds those rules and nothing else: the adapter feeds it each frame with its size and
the time, and does what each `Step` says (send these frames, check this token, close
with this reason). Checking the token is the relay's (it may await the application's
authenticator), so the adapter reports the answer back with `authenticated` or
`refused`. Its tests start no event loop.
"""

from __future__ import annotations

import enum
from typing import Final

import attrs

from .._errors import check_payload_size, failed_ack
from .._exceptions import CloseReason, ProtocolError, Unauthorized
from ._wsframes import AUTH_EVENT, ack_frame, binary_error, error_frame, parse_auth, parse_frame

__all__ = ["AuthHandshake", "Closing", "HandshakeState", "Step"]

_AUTHENTICATE_FIRST: Final = "authenticate first: send an 'auth' frame with your token"


class HandshakeState(enum.Enum):
    """Where an `AuthHandshake` is."""

    WAITING = "waiting"
    """Waiting for the ``auth`` frame."""
    CHECKING = "checking"
    """The adapter is checking a token (`Step.token`); no frame is read meanwhile."""
    AUTHENTICATED = "authenticated"
    """Done: the connection is authenticated."""
    CLOSED = "closed"
    """Done: the connection is to be closed (`Step.close`)."""


@attrs.frozen
class Closing:
    """Close the socket, and why: a `CloseReason`, or the error that refused the client.

    The adapter maps either to its close code and close reason (a refusal's reason is
    ``"<code>: <message>"``).
    """

    reason: CloseReason | None = None
    error: ProtocolError | None = None


@attrs.frozen
class Step:
    """What the adapter does after feeding the handshake something.

    Attributes:
        send: Text frames to send, in order (errors, failed acks, the ``auth`` ack).
        token: A token to check (then call `AuthHandshake.authenticated` or
            `AuthHandshake.refused`).
        close: Close the socket after sending `send`.
    """

    send: tuple[str, ...] = ()
    token: str | None = None
    close: Closing | None = None


class AuthHandshake:
    """The first-frame authentication of one WebSocket connection (see the module).

    Args:
        now: The time the connection was accepted (any monotonic clock).
        timeout: Seconds the client has to authenticate (`Limits.auth_timeout`).
        max_payload_bytes: The payload limit (`Limits.max_payload_bytes`): a larger
            ``auth`` frame is answered with ``payload_too_large``.
        max_frame_bytes: The hard limit: a larger frame closes the connection
            (``message_too_big``).

    Attributes:
        deadline: When the client's time to authenticate runs out; from then on,
            call `timed_out`.
        state: Where the handshake is.
    """

    def __init__(
        self, *, now: float, timeout: float, max_payload_bytes: int, max_frame_bytes: int
    ) -> None:
        self.deadline = now + timeout
        self.state = HandshakeState.WAITING
        self._max_payload_bytes = max_payload_bytes
        self._max_frame_bytes = max_frame_bytes
        self._frame_id: int | None = None

    def receive(self, text: str | None, size: int, now: float) -> Step:
        """Take one frame of the client.

        Args:
            text: The frame's text; ``None`` for a binary frame.
            size: The frame's size in bytes.
            now: The time it arrived.

        Raises:
            RuntimeError: If the handshake is not waiting for a frame.
        """
        if self.state is not HandshakeState.WAITING:
            raise RuntimeError(f"the handshake takes no frame while {self.state.value}")
        if now >= self.deadline:
            return self.timed_out(now)
        if size > self._max_frame_bytes:
            return self._close(Closing(reason=CloseReason.MESSAGE_TOO_BIG))
        frame_id: int | None = None
        try:
            if text is None:
                raise binary_error()
            frame = parse_frame(text)
            frame_id = frame.id if isinstance(frame.id, int) else None
            if frame.error is not None:
                raise frame.error
            if frame.event != AUTH_EVENT:
                raise Unauthorized(_AUTHENTICATE_FIRST, event=frame.event)
            try:
                check_payload_size(size, self._max_payload_bytes, what="frame")
            except ProtocolError as exc:
                raise exc.for_event(AUTH_EVENT) from None
            token = parse_auth(frame)
        except ProtocolError as exc:
            return Step(send=_answer(exc, frame_id))
        self.state = HandshakeState.CHECKING
        self._frame_id = frame_id
        return Step(token=token)

    def authenticated(self, user_id: str) -> Step:
        """The token of the ``auth`` frame was good: the ack, if the frame asked for one."""
        self._checking()
        self.state = HandshakeState.AUTHENTICATED
        if self._frame_id is None:
            return Step()
        return Step(send=(ack_frame(self._frame_id, {"ok": True, "userId": user_id}),))

    def refused(self, error: ProtocolError) -> Step:
        """The token was refused: say why, then close."""
        self._checking()
        error = error.for_event(AUTH_EVENT)
        step = self._close(Closing(error=error))
        return Step(send=_answer(error, self._frame_id), close=step.close)

    def timed_out(self, now: float) -> Step:
        """The time to authenticate ran out (``now`` is past `deadline`): close."""
        if self.state in (HandshakeState.AUTHENTICATED, HandshakeState.CLOSED):
            raise RuntimeError(f"the handshake is over ({self.state.value})")
        return self._close(Closing(reason=CloseReason.AUTH_TIMEOUT))

    def _checking(self) -> None:
        if self.state is not HandshakeState.CHECKING:
            raise RuntimeError(f"no token is being checked ({self.state.value})")

    def _close(self, closing: Closing) -> Step:
        self.state = HandshakeState.CLOSED
        return Step(close=closing)


def _answer(error: ProtocolError, frame_id: int | None) -> tuple[str, ...]:
    """The ``error`` event, and the failed ack when the frame asked for one."""
    if frame_id is None:
        return (error_frame(error),)
    return error_frame(error), ack_frame(frame_id, failed_ack(error))
