"""The WebSocket binding's first-frame authentication, sans-I/O: no event loop here."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chatrelay.adapters._wshandshake import AuthHandshake, Closing, HandshakeState, Step
from chatrelay.exceptions import CloseReason, Forbidden, InternalError, Unauthorized

PAYLOAD_LIMIT = 100
FRAME_LIMIT = 400


def handshake(now: float = 0.0, timeout: float = 10.0) -> AuthHandshake:
    return AuthHandshake(
        now=now, timeout=timeout, max_payload_bytes=PAYLOAD_LIMIT, max_frame_bytes=FRAME_LIMIT
    )


def frame(value: Any) -> tuple[str, int]:
    text = json.dumps(value)
    return text, len(text.encode())


def sent(step: Step) -> list[dict[str, Any]]:
    return [json.loads(text) for text in step.send]


def error(status: int, code: str, event: str | None = None) -> dict[str, Any]:
    """The fields of an error payload, without its message."""
    fields: dict[str, Any] = {"status": status, "code": code}
    if event is not None:
        fields["event"] = event
    return fields


def without_message(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k != "message"}


def test_an_auth_frame_asks_for_its_token_then_is_acknowledged() -> None:
    shake = handshake()
    step = shake.receive(*frame({"event": "auth", "data": {"token": "t0k"}, "id": 1}), now=1.0)
    assert step == Step(token="t0k")
    assert shake.state is HandshakeState.CHECKING
    done = shake.authenticated("alice")
    assert sent(done) == [{"event": "ack", "id": 1, "data": {"ok": True, "userId": "alice"}}]
    assert done.close is None
    assert shake.state.value == "authenticated"


def test_an_auth_frame_without_id_gets_no_ack() -> None:
    shake = handshake()
    assert shake.receive(*frame({"event": "auth", "data": {"token": "t"}}), now=0.0).token == "t"
    assert shake.authenticated("alice") == Step()


def test_a_refused_token_is_answered_then_closed() -> None:
    shake = handshake()
    shake.receive(*frame({"event": "auth", "data": {"token": "bad"}, "id": 7}), now=0.0)
    step = shake.refused(Unauthorized("token expired"))
    event, ack = sent(step)
    assert event["event"] == "error"
    assert event["data"] == {
        "status": 401,
        "code": "unauthorized",
        "message": "token expired",
        "event": "auth",
    }
    assert ack == {"event": "ack", "id": 7, "data": {"ok": False, "error": event["data"]}}
    assert step.close is not None
    assert step.close.reason is None
    assert isinstance(step.close.error, Unauthorized)
    assert shake.state is HandshakeState.CLOSED


def test_a_server_failure_closes_with_the_error() -> None:
    shake = handshake()
    shake.receive(*frame({"event": "auth", "data": {"token": "t"}}), now=0.0)
    step = shake.refused(InternalError("the authenticator failed"))
    assert [e["data"]["code"] for e in sent(step)] == ["internal_error"]
    assert step.close is not None
    assert step.close.reason is None
    assert isinstance(step.close.error, InternalError)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"event": "conversation:join", "data": {"conversationId": "c1"}, "id": 2},
         error(401, "unauthorized", "conversation:join")),
        ({"event": "auth", "data": {"token": ""}, "id": 2}, error(400, "invalid_payload", "auth")),
        ({"event": "auth", "data": {"token": "t", "x": 1}, "id": 2},
         error(400, "invalid_payload", "auth")),
        ({"event": "auth", "id": 2}, error(400, "invalid_payload", "auth")),
        ({"event": "auth", "data": {"token": "t"}, "id": 2, "extra": 1},
         error(400, "invalid_payload", "auth")),
        ({"event": "auth", "data": {"token": "x" * 150}, "id": 2},
         error(413, "payload_too_large", "auth")),
    ],
)  # fmt: skip
def test_anything_but_a_good_auth_frame_is_answered_and_the_handshake_waits(
    value: dict[str, Any], expected: dict[str, Any]
) -> None:
    shake = handshake()
    step = shake.receive(*frame(value), now=0.0)
    assert step.token is None
    assert step.close is None
    event, ack = sent(step)
    assert event["event"] == "error"
    assert without_message(event["data"]) == expected
    assert ack == {"event": "ack", "id": 2, "data": {"ok": False, "error": event["data"]}}
    assert shake.state is HandshakeState.WAITING
    # The client may try again.
    assert shake.receive(*frame({"event": "auth", "data": {"token": "t"}}), now=1.0).token == "t"


def test_the_payload_limit_is_the_relays() -> None:
    step = handshake().receive(*frame({"event": "auth", "data": {"token": "x" * 150}}), now=0.0)
    (event,) = sent(step)
    assert event["data"]["message"].startswith("frame of 190 bytes exceeds the limit of 100")


def test_frames_that_are_not_json_objects_have_no_ack() -> None:
    shake = handshake()
    for text in ["not json", "[1, 2]"]:
        step = shake.receive(text, len(text), now=0.0)
        (event,) = sent(step)
        assert without_message(event["data"]) == error(400, "invalid_payload")
    (event,) = sent(shake.receive(None, 10, now=0.0))  # a binary frame
    assert "binary frames are not supported" in event["data"]["message"]
    assert shake.state is HandshakeState.WAITING


def test_a_frame_above_the_hard_limit_closes_without_an_answer() -> None:
    shake = handshake()
    step = shake.receive("x" * (FRAME_LIMIT + 1), FRAME_LIMIT + 1, now=0.0)
    assert step == Step(close=Closing(reason=CloseReason.MESSAGE_TOO_BIG))
    assert shake.state is HandshakeState.CLOSED
    with pytest.raises(RuntimeError):
        shake.receive("{}", 2, now=0.0)


def test_the_deadline_is_the_auth_timeout_from_now() -> None:
    shake = handshake(now=100.0, timeout=10.0)
    assert shake.deadline == 110.0
    assert shake.timed_out(110.0) == Step(close=Closing(reason=CloseReason.AUTH_TIMEOUT))
    assert shake.state is HandshakeState.CLOSED


def test_a_frame_after_the_deadline_is_a_timeout() -> None:
    shake = handshake(now=0.0, timeout=5.0)
    step = shake.receive(*frame({"event": "auth", "data": {"token": "t"}}), now=5.0)
    assert step == Step(close=Closing(reason=CloseReason.AUTH_TIMEOUT))


def test_calls_out_of_turn_are_refused() -> None:
    shake = handshake()
    with pytest.raises(RuntimeError):
        shake.authenticated("alice")
    with pytest.raises(RuntimeError):
        shake.refused(Forbidden("no"))
    shake.receive(*frame({"event": "auth", "data": {"token": "t"}}), now=0.0)
    with pytest.raises(RuntimeError):
        shake.receive(*frame({"event": "auth", "data": {"token": "t"}}), now=0.0)
    shake.authenticated("alice")
    with pytest.raises(RuntimeError):
        shake.timed_out(100.0)
