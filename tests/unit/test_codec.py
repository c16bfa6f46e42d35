"""Tests of the wire codec: round trips for every event, and the strictness of decoding."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any, TypeVar, cast

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatrelay import codec
from chatrelay.events import (
    ClientRequest,
    ErrorEvent,
    ErrorReply,
    JoinConversation,
    JoinReply,
    LeaveConversation,
    LeaveReply,
    Message,
    MessageReceived,
    MessageStatus,
    MessageStatusChanged,
    OkReply,
    Reply,
    Sender,
    ServerEvent,
    TypingIndicator,
    TypingStart,
    TypingStop,
    TypingUser,
    UserOffline,
    UserOnline,
    is_forward,
)
from chatrelay.exceptions import (
    BackplaneError,
    ChatRelayError,
    ConnectionClosed,
    Forbidden,
    InternalError,
    InvalidPayload,
    NotInConversation,
    PayloadTooLarge,
    ProtocolError,
    RateLimited,
    Unauthorized,
    UnknownEvent,
)

T = TypeVar("T")

# --- strategies ------------------------------------------------------------------------

ids = st.text(max_size=12)
optional_ids = st.none() | ids
statuses = st.sampled_from(MessageStatus)

# Offsets strictly inside (-24 h, 24 h), down to the microsecond, plus plain UTC.
offsets = st.timedeltas(
    min_value=-timedelta(hours=23, minutes=59, seconds=59),
    max_value=timedelta(hours=23, minutes=59, seconds=59),
)
zones = st.just(UTC) | st.builds(timezone, offsets)
# One day away from datetime.min / datetime.max so that any offset converts to UTC.
aware_datetimes = st.datetimes(
    min_value=datetime(1, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=zones,
)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=4)

MESSAGE_FIELDS = frozenset(
    {"id", "conversationId", "senderId", "type", "content", "status", "createdAt"}
)
extras = st.dictionaries(
    st.text(max_size=10).filter(lambda k: k not in MESSAGE_FIELDS), json_values, max_size=3
)

messages = st.builds(
    Message,
    id=ids,
    conversation_id=ids,
    sender_id=ids,
    type=ids,
    content=json_objects,
    status=statuses,
    created_at=aware_datetimes,
    extra=extras,
)
senders = st.builds(Sender, id=ids, name=optional_ids, avatar_url=optional_ids)
error_events = st.builds(
    ErrorEvent, status=st.integers(), code=ids, message=st.text(), event=optional_ids
)

client_requests: st.SearchStrategy[ClientRequest] = st.one_of(
    st.builds(JoinConversation, conversation_id=ids, since=st.none() | aware_datetimes),
    st.builds(LeaveConversation, conversation_id=ids),
    st.builds(
        TypingStart,
        conversation_id=ids,
        user_id=optional_ids,
        is_typing=st.sampled_from([None, True]),
    ),
    st.builds(
        TypingStop,
        conversation_id=ids,
        user_id=optional_ids,
        is_typing=st.sampled_from([None, False]),
    ),
)

server_events: st.SearchStrategy[ServerEvent] = st.one_of(
    st.builds(MessageReceived, conversation_id=ids, message=messages, sender=senders),
    st.builds(
        MessageStatusChanged,
        conversation_id=ids,
        message_id=ids,
        status=statuses,
        user_id=ids,
        updated_at=aware_datetimes,
    ),
    st.builds(
        TypingIndicator,
        conversation_id=ids,
        user_id=ids,
        is_typing=st.booleans(),
        user=st.none() | st.builds(TypingUser, id=ids, name=optional_ids),
    ),
    st.builds(UserOnline, user_id=ids),
    st.builds(UserOffline, user_id=ids, last_seen=aware_datetimes),
    error_events,
)

replies: st.SearchStrategy[Reply] = st.one_of(
    st.builds(JoinReply, conversation_id=ids, members=st.lists(ids), typing=st.lists(ids)),
    st.builds(LeaveReply, conversation_id=ids),
    st.builds(OkReply),
    st.builds(ErrorReply, error=error_events),
)

REQUEST_NAMES = {cls: name for name, cls in codec.CLIENT_EVENTS.items()}


# --- helpers ---------------------------------------------------------------------------


def datetimes_in(value: object) -> list[datetime]:
    """Every datetime inside an attrs instance, depth first, in field order."""
    found: list[datetime] = []
    if isinstance(value, datetime):
        found.append(value)
    elif attrs.has(type(value)):
        for field in attrs.fields(cast("type[attrs.AttrsInstance]", type(value))):
            found.extend(datetimes_in(getattr(value, field.name)))
    return found


def check_round_trip(original: object, decoded: object, payload: dict[str, Any]) -> None:
    assert type(decoded) is type(original)
    assert decoded == original
    # Timestamps come back in UTC, the same instant to the microsecond.
    before, after = datetimes_in(original), datetimes_in(decoded)
    assert len(before) == len(after)
    for sent, received in zip(before, after, strict=True):
        assert received.tzinfo is UTC
        assert received.replace(tzinfo=None) == sent.astimezone(UTC).replace(tzinfo=None)
    # The payload is plain JSON, unchanged by a trip through text.
    assert json.loads(codec.dumps(payload)) == payload


def invalid(call: Callable[[], object]) -> InvalidPayload:
    with pytest.raises(InvalidPayload) as info:
        call()
    return info.value


def request_error(event: str, data: object) -> InvalidPayload:
    return invalid(lambda: codec.decode_request(event, data))


def structure(data: object, cls: type[T]) -> T:
    return codec.make_converter().structure(data, cls)


STAMP = "2024-05-01T12:30:00.000Z"
WHEN = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)


def message_payload(**changes: object) -> dict[str, object]:
    payload: dict[str, object] = {
        "id": "m1",
        "conversationId": "c1",
        "senderId": "u1",
        "type": "text",
        "content": {"text": "hi"},
        "status": "sent",
        "createdAt": STAMP,
    }
    payload.update(changes)
    return payload


def received_payload(**message_changes: object) -> dict[str, object]:
    return {
        "conversationId": "c1",
        "message": message_payload(**message_changes),
        "sender": {"id": "u1"},
    }


# --- round trips -----------------------------------------------------------------------


@settings(max_examples=150)
@given(client_requests)
def test_client_request_round_trip(request: ClientRequest) -> None:
    payload = codec.encode(request)
    decoded = codec.decode_request(REQUEST_NAMES[type(request)], payload)
    check_round_trip(request, decoded, payload)


@settings(max_examples=150)
@given(server_events)
def test_server_event_round_trip(event: ServerEvent) -> None:
    payload = codec.encode(event)
    name = codec.event_name(event)
    decoded = codec.decode_server_event(name, payload)
    check_round_trip(event, decoded, payload)
    assert codec.event_name(decoded) == name


@settings(max_examples=100)
@given(replies)
def test_reply_round_trip(reply: Reply) -> None:
    payload = codec.encode(reply)
    decoded = codec.decode_reply(payload, type(reply))
    check_round_trip(reply, decoded, payload)


@given(messages)
def test_message_extra_sits_next_to_known_fields(message: Message) -> None:
    event = MessageReceived(conversation_id="c", message=message, sender=Sender(id="s"))
    wire = codec.encode(event)["message"]
    assert set(wire) == MESSAGE_FIELDS | set(message.extra)
    for key, value in message.extra.items():
        assert wire[key] == value


@given(aware_datetimes)
def test_timestamp_round_trip(value: datetime) -> None:
    text = codec.format_timestamp(value)
    assert text.endswith("Z")
    parsed = codec.parse_timestamp(text)
    assert parsed.tzinfo is UTC
    assert parsed == value
    assert parsed.replace(tzinfo=None) == value.astimezone(UTC).replace(tzinfo=None)


# --- encoding --------------------------------------------------------------------------


def test_encode_uses_camel_case_keys() -> None:
    event = MessageReceived(
        conversation_id="c1",
        message=Message(
            id="m1",
            conversation_id="c1",
            sender_id="u1",
            type="text",
            content={"text": "hi"},
            status=MessageStatus.SENT,
            created_at=WHEN,
        ),
        sender=Sender(id="u1", name="Ann", avatar_url="https://x/a.png"),
    )
    assert codec.encode(event) == {
        "conversationId": "c1",
        "message": message_payload(),
        "sender": {"id": "u1", "name": "Ann", "avatarUrl": "https://x/a.png"},
    }
    changed = MessageStatusChanged(
        conversation_id="c1",
        message_id="m1",
        status=MessageStatus.READ,
        user_id="u2",
        updated_at=WHEN,
    )
    assert codec.encode(changed) == {
        "conversationId": "c1",
        "messageId": "m1",
        "status": "read",
        "userId": "u2",
        "updatedAt": STAMP,
    }
    assert codec.encode(UserOffline(user_id="u", last_seen=WHEN)) == {
        "userId": "u",
        "lastSeen": STAMP,
    }
    reply = JoinReply(conversation_id="c", members=["a"], typing=["b"])
    assert codec.encode(reply) == {
        "ok": True,
        "conversationId": "c",
        "members": ["a"],
        "typing": ["b"],
    }


def test_encode_omits_none_optional_fields() -> None:
    assert codec.encode(JoinConversation(conversation_id="c")) == {"conversationId": "c"}
    assert codec.encode(TypingStart(conversation_id="c")) == {"conversationId": "c"}
    assert codec.encode(TypingStop(conversation_id="c", is_typing=False)) == {
        "conversationId": "c",
        "isTyping": False,
    }
    assert codec.encode(UserOnline(user_id="u")) == {"userId": "u"}
    indicator = TypingIndicator(conversation_id="c", user_id="u", is_typing=False)
    assert codec.encode(indicator) == {"conversationId": "c", "userId": "u", "isTyping": False}
    with_user = attrs.evolve(indicator, user=TypingUser(id="u"))
    assert codec.encode(with_user)["user"] == {"id": "u"}
    error = ErrorEvent(status=400, code="x", message="m")
    assert codec.encode(error) == {"status": 400, "code": "x", "message": "m"}
    assert codec.encode(ErrorReply(error=error)) == {
        "ok": False,
        "error": {"status": 400, "code": "x", "message": "m"},
    }
    assert codec.encode(OkReply()) == {"ok": True}
    assert codec.encode(LeaveReply(conversation_id="c")) == {"ok": True, "conversationId": "c"}


def test_encode_refuses_extra_that_repeats_a_known_field() -> None:
    message = Message(
        id="m",
        conversation_id="c",
        sender_id="u",
        type="text",
        content={},
        status=MessageStatus.SENT,
        created_at=WHEN,
        extra={"senderId": "someone else", "fine": 1},
    )
    event = MessageReceived(conversation_id="c", message=message, sender=Sender(id="u"))
    with pytest.raises(ValueError, match="senderId") as info:
        codec.encode(event)
    assert not isinstance(info.value, ProtocolError)


def test_encode_refuses_naive_timestamp() -> None:
    naive = datetime(2024, 1, 1)
    with pytest.raises(ValueError, match="timezone-aware"):
        codec.encode(JoinConversation(conversation_id="c", since=naive))


def test_event_name() -> None:
    start = TypingIndicator(conversation_id="c", user_id="u", is_typing=True)
    assert codec.event_name(start) == "typing:start"
    assert codec.event_name(attrs.evolve(start, is_typing=False)) == "typing:stop"
    assert codec.event_name(UserOnline(user_id="u")) == "user:online"
    assert codec.event_name(UserOffline(user_id="u", last_seen=WHEN)) == "user:offline"
    assert codec.event_name(ErrorEvent(status=1, code="c", message="m")) == "error"
    changed = MessageStatusChanged(
        conversation_id="c", message_id="m", status=MessageStatus.SENT, user_id="u", updated_at=WHEN
    )
    assert codec.event_name(changed) == "message:status"


def test_dumps_is_compact_and_keeps_unicode() -> None:
    assert codec.dumps({"a": [1, "é"]}) == '{"a":[1,"é"]}'


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_dumps_refuses_nan_and_infinities(value: float) -> None:
    with pytest.raises(ValueError, match="JSON"):
        codec.dumps({"x": [value]})


# --- timestamps --------------------------------------------------------------------------


def test_format_timestamp() -> None:
    plus_two = timezone(timedelta(hours=2))
    assert codec.format_timestamp(datetime(2024, 1, 1, 2, tzinfo=plus_two)) == (
        "2024-01-01T00:00:00.000Z"
    )
    assert codec.format_timestamp(datetime(2024, 1, 1, 0, 0, 0, 5000, tzinfo=UTC)) == (
        "2024-01-01T00:00:00.005Z"
    )
    assert codec.format_timestamp(datetime(2024, 1, 1, 0, 0, 0, 5001, tzinfo=UTC)) == (
        "2024-01-01T00:00:00.005001Z"
    )


class _NoOffset(tzinfo):
    """A tzinfo that knows no offset: such a datetime is naive too."""

    def utcoffset(self, dt: datetime | None) -> timedelta | None:
        return None

    def dst(self, dt: datetime | None) -> timedelta | None:
        return None

    def tzname(self, dt: datetime | None) -> str | None:
        return None


def test_format_timestamp_refuses_naive() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        codec.format_timestamp(datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        codec.format_timestamp(datetime(2024, 1, 1, tzinfo=_NoOffset()))


def test_parse_timestamp() -> None:
    assert codec.parse_timestamp("2024-05-01T14:30:00+02:00") == WHEN
    assert codec.parse_timestamp("2024-05-01T14:30:00+02:00").tzinfo is UTC
    assert codec.parse_timestamp(STAMP) == WHEN


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("2024-05-01T12:30:00", "no UTC offset"),
        ("2024-05-01", "no UTC offset"),
        ("yesterday", "not an ISO 8601 timestamp"),
        (1714566600, "got int"),
        (None, "got NoneType"),
    ],
)
def test_parse_timestamp_refuses(value: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        codec.parse_timestamp(value)


# --- decoding: refusals -------------------------------------------------------------------


def test_unknown_key_is_invalid_payload() -> None:
    error = request_error("conversation:leave", {"conversationId": "c", "extra": 1})
    assert error.status == 400
    assert error.code == "invalid_payload"
    assert error.event == "conversation:leave"
    assert "unknown field(s) extra @ $" in error.message


def test_snake_case_key_is_unknown() -> None:
    error = request_error("conversation:join", {"conversation_id": "c"})
    assert "unknown field(s) conversation_id" in error.message
    assert "required field missing @ $.conversationId" in error.message


def test_unknown_key_in_nested_object() -> None:
    data = {"conversationId": "c", "userId": "u", "isTyping": True, "user": {"id": "u", "x": 1}}
    error = invalid(lambda: codec.decode_server_event("typing:start", data))
    assert "unknown field(s) x @ $.user" in error.message
    assert error.event == "typing:start"


def test_unknown_key_in_reply() -> None:
    error = invalid(lambda: codec.decode_reply({"ok": True, "extra": 1}, OkReply))
    assert error.event is None
    assert error.code == "invalid_payload"


@pytest.mark.parametrize(
    ("event", "data", "path"),
    [
        ("conversation:join", {"conversationId": 5}, "$.conversationId"),
        ("conversation:join", {"conversationId": None}, "$.conversationId"),
        ("conversation:join", {"conversationId": ["c"]}, "$.conversationId"),
        ("conversation:join", {"conversationId": "c", "since": 0}, "$.since"),
        ("conversation:leave", {"conversationId": 1.5}, "$.conversationId"),
        ("typing:start", {"conversationId": "c", "userId": 7}, "$.userId"),
        ("typing:start", {"conversationId": "c", "isTyping": 1}, "$.isTyping"),
        ("typing:start", {"conversationId": "c", "isTyping": "true"}, "$.isTyping"),
        ("typing:start", {"conversationId": "c", "isTyping": False}, "$.isTyping"),
        ("typing:stop", {"conversationId": "c", "isTyping": True}, "$.isTyping"),
        ("typing:stop", {"conversationId": "c", "isTyping": 0}, "$.isTyping"),
        ("typing:stop", {"conversationId": "c", "isTyping": "false"}, "$.isTyping"),
    ],
)
def test_wrong_types_refused(event: str, data: dict[str, object], path: str) -> None:
    error = request_error(event, data)
    assert error.message.endswith(f" @ {path}")
    assert error.event == event


def test_wrong_type_messages() -> None:
    message = request_error("conversation:leave", {"conversationId": 5}).message
    assert message == "invalid payload: expected a string, got a number @ $.conversationId"
    stop = request_error("typing:stop", {"conversationId": "c", "isTyping": True}).message
    assert stop == "invalid payload: expected one of [false], got true @ $.isTyping"


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ({"status": True, "code": "c", "message": "m"}, "$.status"),
        ({"status": 400.0, "code": "c", "message": "m"}, "$.status"),
        ({"status": "400", "code": "c", "message": "m"}, "$.status"),
        ({"status": 400, "code": 1, "message": "m"}, "$.code"),
        ({"status": 400, "code": "c", "message": "m", "event": False}, "$.event"),
    ],
)
def test_wrong_types_in_error_event(data: dict[str, object], path: str) -> None:
    error = invalid(lambda: codec.decode_server_event("error", data))
    assert error.message.endswith(f" @ {path}")


@pytest.mark.parametrize(
    ("changes", "path"),
    [
        ({"senderId": 1}, "$.message.senderId"),
        ({"createdAt": "2024-05-01T12:30:00"}, "$.message.createdAt"),
        ({"content": ["not", "an", "object"]}, "$.message.content"),
        ({"content": "text"}, "$.message.content"),
        ({"status": "lost"}, "$.message.status"),
        ({"status": 2}, "$.message.status"),
    ],
)
def test_wrong_types_in_message(changes: dict[str, object], path: str) -> None:
    payload = received_payload(**changes)
    error = invalid(lambda: codec.decode_server_event("message:received", payload))
    assert error.message.endswith(f" @ {path}")
    assert error.event == "message:received"


def test_message_must_be_an_object() -> None:
    payload = {"conversationId": "c", "message": ["m"], "sender": {"id": "u"}}
    error = invalid(lambda: codec.decode_server_event("message:received", payload))
    assert error.message == "invalid payload: expected an object, got an array @ $.message"


def test_nested_wire_paths_are_camel_case() -> None:
    payload = received_payload()
    payload["sender"] = {"id": "u", "avatarUrl": 3}
    error = invalid(lambda: codec.decode_server_event("message:received", payload))
    assert error.message.endswith(" @ $.sender.avatarUrl")
    missing = received_payload()
    assert isinstance(missing["message"], dict)
    del missing["message"]["createdAt"]
    error = invalid(lambda: codec.decode_server_event("message:received", missing))
    assert error.message == "invalid payload: required field missing @ $.message.createdAt"


def test_error_message_quotes_the_value_as_sent() -> None:
    error = request_error("conversation:join", {"conversationId": "c", "since": "a.snake_case"})
    assert "'a.snake_case'" in error.message
    assert error.message.endswith(" @ $.since")


def test_several_errors_are_all_reported() -> None:
    error = request_error("typing:start", {"conversationId": 1, "userId": 2})
    assert "$.conversationId" in error.message
    assert "$.userId" in error.message
    assert "; " in error.message


@pytest.mark.parametrize(
    ("data", "kind"),
    [([], "an array"), ("c", "a string"), (None, "null"), (3, "a number"), (True, "a boolean")],
)
def test_non_object_payload_refused(data: object, kind: str) -> None:
    for event in codec.CLIENT_EVENTS:
        error = request_error(event, data)
        assert error.message == f"invalid payload: expected an object, got {kind}"
        assert error.event == event


def test_non_object_payload_refused_for_server_events_and_replies() -> None:
    error = invalid(lambda: codec.decode_server_event("user:online", ["u"]))
    assert error.event == "user:online"
    error = invalid(lambda: codec.decode_reply(None, OkReply))
    assert error.message == "invalid payload: expected an object, got null"
    error = invalid(lambda: codec.decode_reply(("a",), OkReply))
    assert error.message == "invalid payload: expected an object, got tuple"


def test_naive_timestamp_refused() -> None:
    error = request_error("conversation:join", {"conversationId": "c", "since": "2024-01-01T00:00"})
    assert "no UTC offset" in error.message
    assert error.message.endswith(" @ $.since")
    data = {"userId": "u", "lastSeen": "2024-01-01T00:00:00"}
    error = invalid(lambda: codec.decode_server_event("user:offline", data))
    assert error.message.endswith(" @ $.lastSeen")


def test_timestamp_outside_utc_range_refused() -> None:
    data = {"conversationId": "c", "since": "0001-01-01T00:00:00+01:00"}
    error = request_error("conversation:join", data)
    assert error.message.endswith(" @ $.since")


def test_valid_requests_decode() -> None:
    assert codec.decode_request(
        "conversation:join", {"conversationId": "c", "since": "2024-05-01T14:30:00+02:00"}
    ) == JoinConversation(conversation_id="c", since=WHEN)
    assert codec.decode_request(
        "conversation:join", {"conversationId": "c", "since": None}
    ) == JoinConversation(conversation_id="c")
    assert codec.decode_request("typing:start", {"conversationId": "c", "isTyping": True}) == (
        TypingStart(conversation_id="c", is_typing=True)
    )
    assert codec.decode_request(
        "typing:stop", {"conversationId": "c", "userId": "u", "isTyping": False}
    ) == TypingStop(conversation_id="c", user_id="u", is_typing=False)


def test_typing_indicator_must_match_its_event_name() -> None:
    start = {"conversationId": "c", "userId": "u", "isTyping": True}
    stop = {**start, "isTyping": False}
    assert codec.decode_server_event("typing:start", start) == TypingIndicator(
        conversation_id="c", user_id="u", is_typing=True
    )
    assert codec.decode_server_event("typing:stop", stop) == TypingIndicator(
        conversation_id="c", user_id="u", is_typing=False
    )
    error = invalid(lambda: codec.decode_server_event("typing:start", stop))
    assert error.event == "typing:start"
    assert error.message.endswith(" @ $.isTyping")
    error = invalid(lambda: codec.decode_server_event("typing:stop", start))
    assert error.event == "typing:stop"
    assert error.message.endswith(" @ $.isTyping")


def test_message_extra_decodes_unknown_message_keys() -> None:
    payload = received_payload(replyTo="m0", conversation_id="snake is not known", extra=[1])
    decoded = codec.decode_server_event("message:received", payload)
    assert isinstance(decoded, MessageReceived)
    assert decoded.message.extra == {
        "replyTo": "m0",
        "conversation_id": "snake is not known",
        "extra": [1],
    }
    assert decoded.message.conversation_id == "c1"
    plain = codec.decode_server_event("message:received", received_payload())
    assert isinstance(plain, MessageReceived)
    assert plain.message.extra == {}


def test_message_content_keys_must_be_strings() -> None:
    payload = received_payload(content={1: "x"})
    error = invalid(lambda: codec.decode_server_event("message:received", payload))
    assert error.message == "invalid payload: expected an object, got an object @ $.message.content"


@pytest.mark.parametrize(
    ("members", "match"),
    [
        ("ab", "expected an array, got a string @ $.members"),
        ({"a": 1}, "expected an array, got an object @ $.members"),
        (("a",), "expected an array, got tuple @ $.members"),
        (None, "expected an array, got null @ $.members"),
        ([1], "expected a string, got a number @ $.members[0]"),
    ],
)
def test_reply_lists_are_strict(members: object, match: str) -> None:
    data = {"ok": True, "conversationId": "c", "members": members, "typing": []}
    error = invalid(lambda: codec.decode_reply(data, JoinReply))
    assert error.message == f"invalid payload: {match}"


@pytest.mark.parametrize(
    ("data", "cls"),
    [
        ({"ok": False, "conversationId": "c", "members": [], "typing": []}, JoinReply),
        ({"ok": 1}, OkReply),
        ({"ok": "true"}, OkReply),
        ({"ok": True, "error": {"status": 400, "code": "c", "message": "m"}}, ErrorReply),
        ({"ok": False}, ErrorReply),
        ({"ok": True, "conversationId": 1}, LeaveReply),
    ],
)
def test_bad_replies_refused(data: dict[str, object], cls: type[object]) -> None:
    error = invalid(lambda: codec.decode_reply(data, cls))
    assert error.event is None


def test_reply_ok_defaults_when_absent() -> None:
    assert codec.decode_reply({}, OkReply) == OkReply()
    data = {"error": {"status": 403, "code": "forbidden", "message": "no"}}
    assert codec.decode_reply(data, ErrorReply) == ErrorReply(
        error=ErrorEvent(status=403, code="forbidden", message="no")
    )


@pytest.mark.parametrize("event", ["nope", "", "message:received", "error", "ack", "auth"])
def test_unknown_request_event(event: str) -> None:
    with pytest.raises(UnknownEvent) as info:
        codec.decode_request(event, {"conversationId": "c"})
    assert info.value.status == 400
    assert info.value.code == "unknown_event"
    assert info.value.event == event


@pytest.mark.parametrize("event", [None, 5, ["typing:start"], {"e": 1}, b"typing:start"])
def test_non_str_request_event(event: object) -> None:
    with pytest.raises(UnknownEvent) as info:
        codec.decode_request(event, {"conversationId": "c"})
    assert info.value.code == "unknown_event"
    assert info.value.event is None


@pytest.mark.parametrize("event", ["nope", "conversation:join", None, ["error"], 3])
def test_unknown_server_event(event: object) -> None:
    with pytest.raises(UnknownEvent) as info:
        codec.decode_server_event(event, {})
    assert info.value.code == "unknown_event"
    assert info.value.event == (event if isinstance(event, str) else None)


# --- the converter itself ------------------------------------------------------------------


def test_make_converter_is_strict_about_primitives() -> None:
    assert structure(1, float) == 1
    assert structure(1.5, float) == 1.5
    assert structure(3, int) == 3
    assert structure(True, bool) is True
    assert structure("s", str) == "s"
    for value, cls in [(True, float), ("1", float), (True, int), (1.0, int), (1, bool), (1, str)]:
        with pytest.raises(ValueError, match="expected"):
            structure(value, cls)


def test_make_converter_makes_independent_converters() -> None:
    first, second = codec.make_converter(), codec.make_converter()
    assert first is not second
    assert first.unstructure(UserOnline(user_id="u")) == {"userId": "u"}


# --- events ------------------------------------------------------------------------------


ORDER = [MessageStatus.SENT, MessageStatus.DELIVERED, MessageStatus.READ]


def test_status_values_and_rank() -> None:
    assert [s.value for s in ORDER] == ["sent", "delivered", "read"]
    assert [s.rank for s in ORDER] == [0, 1, 2]
    assert sorted([ORDER[2], ORDER[0], ORDER[1]]) == ORDER
    assert max(MessageStatus) is MessageStatus.READ


@pytest.mark.parametrize("a", ORDER)
@pytest.mark.parametrize("b", ORDER)
def test_status_ordering(a: MessageStatus, b: MessageStatus) -> None:
    i, j = ORDER.index(a), ORDER.index(b)
    assert (a < b) == (i < j)
    assert (a <= b) == (i <= j)
    assert (a > b) == (i > j)
    assert (a >= b) == (i >= j)
    assert (a == b) == (i == j)
    assert is_forward(a, b) == (j > i)


def test_is_forward_truth_table() -> None:
    forward = {(c, n) for c in ORDER for n in ORDER if is_forward(c, n)}
    assert forward == {
        (MessageStatus.SENT, MessageStatus.DELIVERED),
        (MessageStatus.SENT, MessageStatus.READ),
        (MessageStatus.DELIVERED, MessageStatus.READ),
    }


@pytest.mark.parametrize("other", [0, "sent", None])
def test_status_does_not_compare_with_other_types(other: object) -> None:
    status = MessageStatus.SENT
    with pytest.raises(TypeError):
        assert status < other
    with pytest.raises(TypeError):
        assert status <= other
    with pytest.raises(TypeError):
        assert status > other
    with pytest.raises(TypeError):
        assert status >= other
    assert status != other


@pytest.mark.parametrize("value", ["unknown", "SENT", "Read", ""])
def test_unknown_status_refused(value: str) -> None:
    with pytest.raises(ValueError, match="is not a valid MessageStatus"):
        MessageStatus(value)
    data = {
        "conversationId": "c",
        "messageId": "m",
        "status": value,
        "userId": "u",
        "updatedAt": STAMP,
    }
    error = invalid(lambda: codec.decode_server_event("message:status", data))
    assert "unknown message status" in error.message
    assert error.message.endswith(" @ $.status")


def test_events_are_frozen_and_keyword_only() -> None:
    online = UserOnline(user_id="u")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        online.user_id = "v"  # type: ignore[misc]
    with pytest.raises(TypeError):
        UserOnline("u")  # type: ignore[call-arg]
    assert (
        Message(
            id="m",
            conversation_id="c",
            sender_id="u",
            type="t",
            content={},
            status=MessageStatus.SENT,
            created_at=WHEN,
        ).extra
        == {}
    )


# --- exceptions ----------------------------------------------------------------------------

PROTOCOL_ERRORS = [
    (InvalidPayload, 400, "invalid_payload"),
    (UnknownEvent, 400, "unknown_event"),
    (Unauthorized, 401, "unauthorized"),
    (Forbidden, 403, "forbidden"),
    (NotInConversation, 409, "not_in_conversation"),
    (PayloadTooLarge, 413, "payload_too_large"),
    (RateLimited, 429, "rate_limited"),
    (InternalError, 500, "internal_error"),
]


@pytest.mark.parametrize(("cls", "status", "code"), PROTOCOL_ERRORS)
def test_protocol_errors(cls: type[ProtocolError], status: int, code: str) -> None:
    error = cls("it failed", event="typing:start")
    assert isinstance(error, ProtocolError)
    assert isinstance(error, ChatRelayError)
    assert isinstance(error, ValueError)
    assert (error.status, error.code) == (status, code)
    assert (cls.status, cls.code) == (status, code)
    assert error.message == "it failed"
    assert str(error) == "it failed"
    assert error.event == "typing:start"
    assert repr(error) == f"{cls.__name__}('it failed', event='typing:start')"


def test_protocol_error_base() -> None:
    error = ProtocolError("bad")
    assert (error.status, error.code, error.event) == (400, "bad_request", None)
    assert repr(error) == "ProtocolError('bad', event=None)"


def test_for_event_sets_the_event_only_once() -> None:
    error = Forbidden("no")
    assert error.for_event("typing:start") is error
    assert error.event == "typing:start"
    assert error.for_event("conversation:join") is error
    assert error.event == "typing:start"
    assert Forbidden("no").for_event(None).event is None


def test_connection_closed_and_backplane_error() -> None:
    closed = ConnectionClosed("slow_consumer")
    assert closed.reason == "slow_consumer"
    assert str(closed) == "slow_consumer"
    assert isinstance(closed, ChatRelayError)
    assert not isinstance(closed, ProtocolError)
    assert isinstance(BackplaneError("down"), ChatRelayError)
    assert not isinstance(BackplaneError("down"), ValueError)
