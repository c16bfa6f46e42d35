"""The wire rules about failures, each in one place: the ``error`` payload, close reasons.

Sans-I/O: no event loop here.
"""

from __future__ import annotations

import pytest

from chatrelay._errors import CLOSE_ERRORS, error_event
from chatrelay.adapters.starlette import CloseCode, close_code
from chatrelay.events import ErrorEvent
from chatrelay.exceptions import (
    CloseReason,
    ConnectionClosed,
    Forbidden,
    InternalError,
    InvalidPayload,
    NotInConversation,
    PayloadTooLarge,
    ProtocolError,
    RateLimited,
    TooManyConnections,
    Unauthorized,
    Unavailable,
    UnknownEvent,
    UnknownNamespace,
    UnsupportedSubprotocol,
)
from chatrelay.lowlevel import (
    check_payload_size,
    close_error,
    error_payload,
    failed_ack,
    payload_size,
)

ALL_ERRORS: list[tuple[type[ProtocolError], int, str]] = [
    (InvalidPayload, 400, "invalid_payload"),
    (UnknownEvent, 400, "unknown_event"),
    (UnsupportedSubprotocol, 400, "unsupported_subprotocol"),
    (Unauthorized, 401, "unauthorized"),
    (Forbidden, 403, "forbidden"),
    (UnknownNamespace, 404, "unknown_namespace"),
    (NotInConversation, 409, "not_in_conversation"),
    (PayloadTooLarge, 413, "payload_too_large"),
    (RateLimited, 429, "rate_limited"),
    (TooManyConnections, 429, "too_many_connections"),
    (InternalError, 500, "internal_error"),
    (Unavailable, 503, "unavailable"),
]


# --- one function from an exception to the error payload -------------------------------


@pytest.mark.parametrize(("cls", "status", "code"), ALL_ERRORS)
def test_error_event_carries_the_exceptions_fields(
    cls: type[ProtocolError], status: int, code: str
) -> None:
    error = cls("it failed", event="typing:start")
    assert error_event(error) == ErrorEvent(
        status=status, code=code, message="it failed", event="typing:start"
    )
    assert error_payload(error) == {
        "status": status,
        "code": code,
        "message": "it failed",
        "event": "typing:start",
    }


def test_an_error_without_event_has_no_event_field() -> None:
    assert error_payload(Unauthorized("who are you")) == {
        "status": 401,
        "code": "unauthorized",
        "message": "who are you",
    }


def test_failed_ack_wraps_the_same_fields() -> None:
    error = Forbidden("not yours", event="conversation:join")
    assert failed_ack(error) == {"ok": False, "error": error_payload(error)}
    assert failed_ack(InvalidPayload("bad")) == {
        "ok": False,
        "error": {"status": 400, "code": "invalid_payload", "message": "bad"},
    }


# --- the payload limit, before and after authentication --------------------------------


def test_check_payload_size() -> None:
    check_payload_size(100, 100)
    with pytest.raises(PayloadTooLarge, match="payload of 101 bytes exceeds the limit of 100"):
        check_payload_size(101, 100)
    with pytest.raises(PayloadTooLarge, match=r"^frame of 101 bytes"):
        check_payload_size(101, 100, what="frame")


def test_payload_size_measures_compact_utf8_json() -> None:
    assert payload_size({"token": "é"}) == len('{"token":"é"}'.encode())
    assert payload_size(None) == 4
    with pytest.raises(InvalidPayload, match="not JSON-compatible"):
        payload_size({"x": object()})


# --- close reasons ----------------------------------------------------------------------


def test_close_reasons_are_their_wire_text() -> None:
    assert {reason.value for reason in CloseReason} == {
        "slow_consumer",
        "server_shutdown",
        "client_disconnected",
        "message_too_big",
        "auth_timeout",
        "origin_not_allowed",
        "server_restart",
        "token_expired",
        "disconnected",
    }
    for reason in CloseReason:
        assert reason == reason.value
        assert str(reason) == reason.value
        assert f"{reason}" == reason.value
    assert CloseReason.parse("slow_consumer") is CloseReason.SLOW_CONSUMER
    assert CloseReason.parse("kicked") == "kicked"


def test_connection_closed_carries_a_close_reason() -> None:
    closed = ConnectionClosed(CloseReason.SLOW_CONSUMER)
    assert closed.reason is CloseReason.SLOW_CONSUMER
    assert str(closed) == "slow_consumer"
    # Text equal to a reason becomes the reason; an application's own text stays.
    assert ConnectionClosed("server_shutdown").reason is CloseReason.SERVER_SHUTDOWN
    assert ConnectionClosed("kicked").reason == "kicked"
    assert str(ConnectionClosed("kicked")) == "kicked"


def test_the_reasons_a_client_is_told_about_before_it_is_closed() -> None:
    """What the Socket.IO binding sends as an ``error`` event before closing."""
    told = {reason: close_error(reason) for reason in CloseReason}
    assert told == {
        CloseReason.SLOW_CONSUMER: {
            "status": 503,
            "code": "slow_consumer",
            "message": "the client did not read its events fast enough; reconnecting",
        },
        CloseReason.SERVER_SHUTDOWN: {
            "status": 503,
            "code": "server_shutdown",
            "message": "the server is shutting down; reconnect",
        },
        CloseReason.SERVER_RESTART: {
            "status": 503,
            "code": "server_restart",
            "message": "the server is restarting; reconnect",
        },
        CloseReason.DISCONNECTED: {
            "status": 401,
            "code": "disconnected",
            "message": "the server ended this user's connections",
        },
        CloseReason.TOKEN_EXPIRED: {
            "status": 401,
            "code": "token_expired",
            "message": "the credentials expired; reconnect with new ones",
        },
        CloseReason.CLIENT_DISCONNECTED: None,
        CloseReason.MESSAGE_TOO_BIG: None,
        CloseReason.AUTH_TIMEOUT: None,
        CloseReason.ORIGIN_NOT_ALLOWED: None,
    }
    assert set(CLOSE_ERRORS) == {r for r, error in told.items() if error is not None}
    assert close_error("slow_consumer") == told[CloseReason.SLOW_CONSUMER]
    assert close_error("kicked") is None


def test_every_close_reason_has_a_websocket_close_code() -> None:
    assert {reason: close_code(reason) for reason in CloseReason} == {
        CloseReason.SLOW_CONSUMER: CloseCode.TRY_AGAIN_LATER,
        CloseReason.SERVER_SHUTDOWN: CloseCode.GOING_AWAY,
        CloseReason.CLIENT_DISCONNECTED: CloseCode.NORMAL_CLOSURE,
        CloseReason.DISCONNECTED: CloseCode.NORMAL_CLOSURE,
        CloseReason.SERVER_RESTART: CloseCode.SERVICE_RESTART,
        CloseReason.TOKEN_EXPIRED: CloseCode.TOKEN_EXPIRED,
        CloseReason.MESSAGE_TOO_BIG: CloseCode.MESSAGE_TOO_BIG,
        CloseReason.AUTH_TIMEOUT: CloseCode.POLICY_VIOLATION,
        CloseReason.ORIGIN_NOT_ALLOWED: CloseCode.POLICY_VIOLATION,
    }
    assert close_code("kicked") is CloseCode.NORMAL_CLOSURE
