"""The WebSocket binding's framing and origin rules, without a server."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatrelay import Limits, Relay, RelayConfig
from chatrelay.adapters._origins import OriginPolicy, normalize_origin
from chatrelay.adapters._wsframes import (
    ClientFrame,
    ack_frame,
    error_frame,
    event_frame,
    failed_reply,
    parse_auth,
    parse_frame,
)
from chatrelay.adapters.starlette import CloseCode, WebSocketAdapter, close_code
from chatrelay.exceptions import InvalidPayload, Unauthorized
from chatrelay.lowlevel import Outbound
from chatrelay.testing import MemoryTransport

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=10,
)

# --- parse_frame ------------------------------------------------------------------------


def test_request_frame() -> None:
    frame = parse_frame('{"event": "typing:start", "data": {"conversationId": "c"}, "id": 3}')
    assert frame == ClientFrame(event="typing:start", data={"conversationId": "c"}, id=3)


def test_ack_frame_takes_the_servers_string_id_and_needs_no_data() -> None:
    assert parse_frame('{"event": "ack", "id": "12"}') == ClientFrame(event="ack", id="12")


@pytest.mark.parametrize(
    ("text", "message", "frame_id"),
    [
        ("{", "the frame is not valid JSON", None),
        ('{"event": "a", "data": Infinity}', "the frame is not valid JSON", None),
        ("[]", "the frame must be a JSON object", None),
        ('{"data": {}}', "the frame has no 'event'", None),
        ('{"event": null, "data": {}}', "the frame has no 'event'", None),
        ('{"event": ["a"], "data": {}, "id": 2}', "the frame's 'event' must be a string", 2),
        ('{"event": "a"}', "the frame has no 'data'", None),
        ('{"event": "a", "data": {}, "id": 1, "x": 0}', "unknown frame fields: 'x'", 1),
        ('{"event": "a", "data": {}, "id": -0.0}', "the frame's id must be an integer", None),
        ('{"event": "a", "data": {}, "id": null}', "the frame's id must be an integer", None),
        ('{"event": "ack", "id": 4}', "the id of an ack must be the server's string id", None),
        ('{"event": "a", "data": "\\udfff", "id": 5}', "unpaired surrogate escape", 5),
    ],
)
def test_bad_frames(text: str, message: str, frame_id: int | None) -> None:
    frame = parse_frame(text)
    assert isinstance(frame.error, InvalidPayload)
    assert message in frame.error.message
    assert frame.id == frame_id


def test_frame_error_names_the_event() -> None:
    frame = parse_frame('{"event": "typing:start", "data": {}, "id": "x"}')
    assert frame.error is not None
    assert frame.error.event == "typing:start"


def test_surrogate_pairs_are_fine() -> None:
    frame = parse_frame('{"event": "a", "data": "\\ud83d\\ude00"}')
    assert frame.error is None
    assert frame.data == "\N{GRINNING FACE}"


@given(JSON)
def test_any_json_value_is_judged_without_raising(value: Any) -> None:
    frame = parse_frame(json.dumps(value))
    assert (frame.error is None) == (
        isinstance(value, dict)
        and set(value) <= {"event", "data", "id"}
        and isinstance(value.get("event"), str)
        and ("data" in value or value["event"] == "ack")
        and (
            "id" not in value
            or (
                isinstance(value["id"], str)
                if value["event"] == "ack"
                else type(value["id"]) is int
            )
        )
    )


@given(st.text())
def test_any_text_is_judged_without_raising(text: str) -> None:
    assert isinstance(parse_frame(text), ClientFrame)


def test_parse_auth() -> None:
    assert parse_auth(ClientFrame(event="auth", data={"token": "t"})) == "t"
    for data in [None, {}, {"token": ""}, {"token": 1}, {"token": "t", "x": 1}, ["t"]]:
        with pytest.raises(InvalidPayload):
            parse_auth(ClientFrame(event="auth", data=data))


# --- server frames ----------------------------------------------------------------------


@given(st.text(), st.dictionaries(st.text(), JSON, max_size=4), st.integers(min_value=0))
def test_event_frame_splices_the_ack_id_into_the_shared_frame(
    event: str, data: dict[str, Any], number: int
) -> None:
    item = Outbound(event, data)
    shared = event_frame(item)
    assert shared is event_frame(item)  # built once, then shared by every recipient
    assert json.loads(shared) == {"event": event, "data": json.loads(item.json)}
    with_id = json.loads(event_frame(item, str(number)))
    assert with_id == {"event": event, "id": str(number), "data": json.loads(item.json)}
    assert list(with_id) == ["event", "id", "data"]


def test_ack_and_error_frames() -> None:
    assert json.loads(ack_frame(3, {"ok": True})) == {"event": "ack", "id": 3, "data": {"ok": True}}
    error = Unauthorized("no", event="auth")
    data = {"status": 401, "code": "unauthorized", "message": "no", "event": "auth"}
    assert json.loads(error_frame(error)) == {"event": "error", "data": data}
    assert failed_reply(error) == {"ok": False, "error": data}


# --- origins ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("origin", "normalized"),
    [
        ("https://Chat.Example.com", "https://chat.example.com"),
        ("https://chat.example.com:443", "https://chat.example.com"),
        ("http://localhost:80", "http://localhost"),
        ("http://localhost:5173", "http://localhost:5173"),
        ("http://[::1]:8000", "http://[::1]:8000"),
        ("https://chat.example.com/", None),
        ("https://chat.example.com/app", None),
        ("https://chat.example.com?", None),
        ("https://user@chat.example.com", None),
        ("https://chat.example.com:99999", None),
        ("ftp://chat.example.com", None),
        ("chat.example.com", None),
        ("null", None),
        ("", None),
    ],
)
def test_normalize_origin(origin: str, normalized: str | None) -> None:
    assert normalize_origin(origin) == normalized


def test_origin_policy() -> None:
    policy = OriginPolicy(["https://chat.example.com", "http://localhost:5173"])
    assert policy.allows("https://chat.example.com")
    assert policy.allows("https://chat.example.com:443")
    assert policy.allows("http://localhost:5173")
    assert policy.allows(None)
    assert not policy.allows("http://chat.example.com")
    assert not policy.allows("http://localhost:5174")
    assert not policy.allows("null")
    assert not policy.allows("https://chat.example.com.evil.example")
    assert not policy.allows("garbage")


def test_origin_policy_any_and_null() -> None:
    anything = OriginPolicy(None)
    assert anything.allows("https://any.example")
    assert not anything.allows("null")  # only when listed
    assert not anything.allows("garbage")
    assert OriginPolicy(["*", "null"]).allows("null")
    assert not OriginPolicy(["*"], allow_missing=False).allows(None)


@pytest.mark.parametrize("entry", ["https://chat.example.com/", "chat.example.com", ""])
def test_origin_policy_refuses_malformed_entries(entry: str) -> None:
    with pytest.raises(ValueError, match="is not an origin"):
        OriginPolicy([entry])


def test_origin_policy_refuses_a_lone_string() -> None:
    with pytest.raises(TypeError):
        OriginPolicy("https://chat.example.com")


# --- the adapter's settings -------------------------------------------------------------


def test_close_codes() -> None:
    codes = {
        reason: int(close_code(reason))
        for reason in ["server_shutdown", "slow_consumer", "message_too_big", "anything else"]
    }
    assert codes == {
        "server_shutdown": 1001,
        "slow_consumer": 1013,
        "message_too_big": 1009,
        "anything else": 1000,
    }
    assert close_code("slow_consumer") is CloseCode.TRY_AGAIN_LATER


def test_adapter_settings() -> None:
    relay = Relay(config=RelayConfig(limits=Limits(max_payload_bytes=1000)))
    assert WebSocketAdapter(relay).max_frame_bytes == 4000
    with pytest.raises(ValueError, match="max_frame_bytes"):
        WebSocketAdapter(relay, max_frame_bytes=999)
    with pytest.raises(ValueError, match="must be > 0"):
        WebSocketAdapter(relay, auth_timeout=0)


def test_production_mode_needs_allowed_origins() -> None:
    from chatrelay import allow_all
    from ws_support import TokenAuthenticator

    relay = Relay(
        config=RelayConfig(production=True),
        authenticator=TokenAuthenticator(),
        authorize_join=allow_all,
    )
    with pytest.raises(ValueError, match="allowed_origins"):
        WebSocketAdapter(relay)
    assert WebSocketAdapter(relay, allowed_origins=["*"]).origins.allow_any_web


# --- Connection.reject: what only the adapter can judge goes through the core -----------


@pytest.mark.anyio
async def test_reject_answers_like_a_failed_request_and_counts() -> None:
    config = RelayConfig(limits=Limits(burst=1, rate=0.001))
    async with Relay(config=config) as relay, MemoryTransport(relay).connect("alice") as alice:
        reply = alice.connection.reject(InvalidPayload("the frame is not valid JSON"))
        error = {"status": 400, "code": "invalid_payload", "message": "the frame is not valid JSON"}
        assert reply == {"ok": False, "error": error}
        assert (await alice.receive("error")).data == error
        # Garbage counts against the rate limit like any request.
        again = alice.connection.reject(InvalidPayload("again", event="x"))
        assert again["error"]["code"] == "rate_limited"
        assert again["error"]["event"] == "x"
        assert relay.statistics().failed_requests == 2
        assert relay.statistics().rate_limited == 1


def test_public_names_are_listed_and_documented() -> None:
    import chatrelay.adapters.starlette as module

    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and getattr(value, "__module__", None) == module.__name__
    }
    assert module.__all__ == sorted(public)
    assert all(getattr(module, name).__doc__ for name in module.__all__)
