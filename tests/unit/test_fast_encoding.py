"""The emitter's fast encoding paths give what the general (cattrs) path gives, to the byte.

``Relay.message_status`` and ``Relay.message_received`` encode their event without
building it (`codec._status_changed`, `codec._message_received`), `codec.dumps` and
`codec.format_timestamp` skip work for the common cases, and `codec.encode` looks its
hook up once. Each test here holds a fast path against the path it replaced: the same
payload, the same JSON text, the same exception for bad input.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatrelay import HistorySettings, Identity, Relay, RelayConfig, _json, codec
from chatrelay.backplanes import MemoryBus
from chatrelay.events import (
    Message,
    MessageReceived,
    MessageStatus,
    MessageStatusChanged,
    Sender,
)
from chatrelay.events import _coerce_status as _status
from chatrelay.lowlevel import Outbound
from test_codec import (
    MESSAGE_FIELDS,
    aware_datetimes,
    ids,
    json_values,
    messages,
    senders,
    server_events,
)

NO_POSITIONS = RelayConfig(history=HistorySettings(size=0))
WHEN = datetime(2026, 1, 2, 3, 4, 5, 6000, tzinfo=UTC)


def reference_dumps(value: object) -> str:
    """``codec.dumps`` by the general path: ``json.dumps`` with the protocol's options.

    Lone surrogates, which ``json.dumps`` writes raw with ``ensure_ascii=False`` and
    UTF-8 cannot encode, become ``\\uXXXX`` escapes, one character at a time.
    """
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return "".join(f"\\u{ord(c):04x}" if "\ud800" <= c <= "\udfff" else c for c in text)


# Strings as any client or application may send them: lone surrogates (high, low, at
# either end), line and paragraph separators, NUL, astral characters.
odd_chars = (
    st.characters()
    | st.characters(categories=["Cs"])
    | st.sampled_from(["\u2028", "\u2029", "\x00", "\U0001f600", "\ud83d", "\ude00"])
)
# (st.text() would leave the surrogates out whatever its alphabet says.)
odd_text = st.lists(odd_chars, max_size=10).map("".join)
odd_json = st.recursive(
    st.none() | st.booleans() | st.integers() | odd_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(odd_text, inner, max_size=3),
    max_leaves=8,
)
odd_messages = st.builds(
    Message,
    id=odd_text,
    conversation_id=odd_text,
    sender_id=odd_text,
    type=odd_text,
    content=st.dictionaries(odd_text, odd_json, max_size=3),
    status=st.sampled_from(MessageStatus),
    created_at=aware_datetimes,
    extra=st.dictionaries(odd_text.filter(lambda k: k not in MESSAGE_FIELDS), odd_json, max_size=2),
)
odd_senders = st.builds(
    Sender, id=odd_text, name=st.none() | odd_text, avatar_url=st.none() | odd_text
)


def reference_timestamp(value: datetime) -> str:
    """``codec.format_timestamp`` as it was, before its fast path for UTC."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("timestamps must be timezone-aware")
    value = value.astimezone(UTC)
    timespec = "milliseconds" if value.microsecond % 1000 == 0 else "microseconds"
    return value.replace(tzinfo=None).isoformat(timespec=timespec) + "Z"


def general_status(
    conversation_id: Any, message_id: Any, status: MessageStatus, user_id: Any, at: datetime
) -> dict[str, Any]:
    event = MessageStatusChanged(
        conversation_id=conversation_id,
        message_id=message_id,
        status=status,
        user_id=user_id,
        updated_at=at,
    )
    return codec._converter.unstructure(event)  # type: ignore[no-any-return]


def general_received(message: Message, sender: Sender | None) -> dict[str, Any]:
    event = MessageReceived(
        conversation_id=message.conversation_id,
        message=message,
        sender=sender if sender is not None else Sender(id=message.sender_id),
    )
    return codec._converter.unstructure(event)  # type: ignore[no-any-return]


def outcome(call: Callable[[], object]) -> tuple[object, object]:
    """What ``call()`` returned, or the type and text of what it raised."""
    try:
        return "returned", call()
    except Exception as exc:
        return type(exc), str(exc)


def raised(call: Callable[[], object]) -> tuple[type[BaseException], str]:
    with pytest.raises(Exception) as info:  # noqa: PT011 - compared with the other path
        call()
    return type(info.value), str(info.value)


# --- timestamps and JSON text ------------------------------------------------------------


@settings(max_examples=300)
@given(aware_datetimes)
def test_format_timestamp_matches_the_general_formula(value: datetime) -> None:
    assert codec.format_timestamp(value) == reference_timestamp(value)


@given(st.datetimes(timezones=st.just(UTC)))
def test_format_timestamp_fast_path_covers_the_whole_utc_range(value: datetime) -> None:
    assert codec.format_timestamp(value) == reference_timestamp(value)


def test_format_timestamp_of_a_datetime_subclass_takes_the_general_path() -> None:
    class Stamp(datetime):
        def isoformat(self, sep: str = "T", timespec: str = "auto") -> str:
            return f"stamp:{timespec}"

    value = Stamp(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert codec.format_timestamp(value) == reference_timestamp(value) == "stamp:millisecondsZ"


def test_format_timestamp_still_refuses_naive_values() -> None:
    assert raised(lambda: codec.format_timestamp(datetime(2026, 1, 2))) == (
        ValueError,
        "timestamps must be timezone-aware",
    )


@settings(max_examples=300)
@given(json_values)
def test_dumps_matches_json_dumps(value: object) -> None:
    assert codec.dumps(value) == reference_dumps(value)


@given(st.text())
def test_dumps_of_a_string_matches_json_dumps(value: str) -> None:
    assert codec.dumps(value) == reference_dumps(value)


# --- lone surrogates and other odd strings ----------------------------------------------


def decodes_as(value: object) -> object:
    """What a client decodes from any correct JSON text of ``value`` (pairs merge)."""
    return json.loads(json.dumps(value))


@settings(max_examples=300)
@given(odd_json)
def test_dumps_escapes_lone_surrogates_and_nothing_else(value: object) -> None:
    text = codec.dumps(value)
    assert text == reference_dumps(value)
    text.encode()  # valid UTF-8, always
    assert json.loads(text) == decodes_as(value)


@given(odd_text)
def test_dumps_of_an_odd_string(value: str) -> None:
    text = codec.dumps(value)
    assert text == reference_dumps(value)
    assert json.loads(text.encode()) == decodes_as(value)


@given(odd_json)
def test_dumps_of_odd_strings_without_the_c_encoder(value: object) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_json, "_make_encoder", None)
        assert codec.dumps(value) == reference_dumps(value)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("\ud800", '"\\ud800"'),
        ("\udfff", '"\\udfff"'),
        ("a\ud83d", '"a\\ud83d"'),
        ("\udc00 then text", '"\\udc00 then text"'),
        ("é\ud800😀", '"é\\ud800😀"'),
        ({"\ud800": ["\u2028\x00"]}, '{"\\ud800":["\u2028\\u0000"]}'),
    ],
)
def test_dumps_writes_lone_surrogates_as_escapes(value: object, text: str) -> None:
    assert codec.dumps(value) == text


@settings(max_examples=200)
@given(odd_text, odd_text, st.sampled_from(MessageStatus), odd_text, aware_datetimes)
def test_status_changed_with_odd_strings_matches_the_general_path(
    conversation_id: str, message_id: str, status: MessageStatus, user_id: str, at: datetime
) -> None:
    data, text = codec._status_changed(conversation_id, message_id, status, user_id, at)
    general = general_status(conversation_id, message_id, status, user_id, at)
    assert data == general
    assert text == reference_dumps(general)
    assert text is not None
    text.encode()


@settings(max_examples=200)
@given(odd_messages, st.none() | odd_senders)
def test_message_received_with_odd_strings_matches_the_general_path(
    message: Message, sender: Sender | None
) -> None:
    data = codec._message_received(message, sender)
    general = general_received(message, sender)
    assert data == general
    item = Outbound("message:received", data)
    assert item.json == reference_dumps(general)
    assert json.loads(item.json.encode()) == decodes_as(general)


@given(st.tuples(odd_text, st.characters(categories=["Cs"]), odd_text).map("".join))
def test_has_lone_surrogate_finds_them(value: str) -> None:
    assert codec.has_lone_surrogate(value)
    assert codec.has_lone_surrogate({"a": [1, {value: None}]})
    assert codec.has_lone_surrogate([None, value])


@given(st.text())
def test_has_lone_surrogate_passes_text(value: str) -> None:
    assert not codec.has_lone_surrogate(value)
    assert not codec.has_lone_surrogate({value: [value, 1, None]})


@pytest.mark.parametrize(
    "value",
    [
        math.nan,
        {"x": [math.inf]},
        [-math.inf],
        {"x": object()},
        {1.5: "a float key", True: 1, None: 2, 3: 4},
        {(1, 2): "a tuple key"},
        {"when": WHEN},
        b"bytes",
        (1, "tuple"),
        MessageStatus.READ,
    ],
)
def test_dumps_treats_odd_values_as_json_dumps_does(value: object) -> None:
    assert outcome(lambda: codec.dumps(value)) == outcome(lambda: reference_dumps(value))


def test_dumps_refuses_circular_values_and_then_works_again() -> None:
    looped: list[object] = [1]
    looped.append({"again": looped})
    assert raised(lambda: codec.dumps(looped)) == raised(lambda: reference_dumps(looped))
    # Nothing of the failed call is remembered: the same objects serialize once unlooped.
    inner = looped[1]
    looped.pop()
    assert codec.dumps([looped, inner, looped]) == reference_dumps([looped, inner, looped])


def test_dumps_keeps_subclasses_of_str_as_json_dumps_does() -> None:
    class Name(str):
        __slots__ = ()

    assert codec.dumps(Name("a\u2028")) == reference_dumps(Name("a\u2028"))
    assert codec.dumps({Name("k"): Name("v")}) == reference_dumps({Name("k"): Name("v")})


@settings(max_examples=200)
@given(server_events)
def test_encode_matches_the_converter(event: Any) -> None:
    encoded = codec.encode(event)
    assert encoded == codec._converter.unstructure(event)
    assert codec.dumps(encoded) == reference_dumps(codec._converter.unstructure(event))


# --- message:status --------------------------------------------------------------------


@settings(max_examples=300)
@given(ids, ids, st.sampled_from(MessageStatus), ids, aware_datetimes)
def test_status_changed_matches_the_general_path(
    conversation_id: str, message_id: str, status: MessageStatus, user_id: str, at: datetime
) -> None:
    data, text = codec._status_changed(conversation_id, message_id, status, user_id, at)
    general = general_status(conversation_id, message_id, status, user_id, at)
    assert data == general
    assert list(data) == list(general)
    assert text == reference_dumps(general)


@given(
    st.integers() | st.none() | ids,
    st.integers() | ids,
    st.sampled_from(MessageStatus),
    st.integers() | ids,
    aware_datetimes,
)
def test_status_changed_with_ids_that_are_not_strings(
    conversation_id: Any, message_id: Any, status: MessageStatus, user_id: Any, at: datetime
) -> None:
    data, text = codec._status_changed(conversation_id, message_id, status, user_id, at)
    assert data == general_status(conversation_id, message_id, status, user_id, at)
    assert text is None or text == reference_dumps(data)


def test_status_changed_refuses_a_naive_timestamp_as_before() -> None:
    naive = datetime(2026, 1, 2)
    fast = raised(lambda: codec._status_changed("c1", "m1", MessageStatus.READ, "bob", naive))
    assert fast == raised(lambda: general_status("c1", "m1", MessageStatus.READ, "bob", naive))


@pytest.mark.parametrize("status", ["sent", "delivered", "read", *MessageStatus])
def test_status_accepts_names_and_members(status: MessageStatus | str) -> None:
    assert _status(status) is MessageStatus(status)


def test_status_accepts_a_str_subclass_as_before() -> None:
    class Text(str):
        __slots__ = ()

    assert _status(Text("read")) is MessageStatus.READ


@pytest.mark.parametrize("status", ["seen", "READ", "", 1, None, ["read"]])
def test_status_refuses_unknown_values(status: Any) -> None:
    assert raised(lambda: _status(status)) == (
        ValueError,
        f"unknown message status {status!r}; expected one of sent, delivered, read",
    )


# --- message:received ------------------------------------------------------------------


@settings(max_examples=300)
@given(messages, st.none() | senders)
def test_message_received_matches_the_general_path(message: Message, sender: Sender | None) -> None:
    data = codec._message_received(message, sender)
    general = general_received(message, sender)
    assert data == general
    # Same keys in the same order (extra fields after the known ones): the same text.
    assert codec.dumps(data) == reference_dumps(general)


def test_message_received_copies_the_content() -> None:
    content = {"text": "hi"}
    message = Message(
        id="m1",
        conversation_id="c1",
        sender_id="alice",
        type="text",
        content=content,
        status=MessageStatus.SENT,
        created_at=WHEN,
    )
    data = codec._message_received(message, None)
    content["text"] = "changed"
    assert data["message"]["content"] == {"text": "hi"}


def _message(**changes: Any) -> Message:
    fields: dict[str, Any] = {
        "id": "m1",
        "conversation_id": "c1",
        "sender_id": "alice",
        "type": "text",
        "content": {"text": "hi"},
        "status": MessageStatus.SENT,
        "created_at": WHEN,
    }
    fields.update(changes)
    return Message(**fields)


class _Status(str):
    __slots__ = ()


@pytest.mark.parametrize(
    ("message", "sender"),
    [
        (_message(created_at=datetime(2026, 1, 2)), None),
        (_message(extra={"senderId": "mallory"}), None),
        (_message(extra={"createdAt": 1, "id": 2}, created_at=datetime(2026, 1, 2)), None),
        (_message(status="sent"), None),
        (_message(content=5), None),
        (_message(content=[("text", "hi")]), None),
        (_message(extra=None), None),
        (_message(extra=[("x", 1)]), None),
        (_message(), Sender(id="alice", name=MessageStatus.READ)),  # type: ignore[arg-type]
        (_message(), Sender(id="alice", avatar_url=_Status("x"))),
        (_message(created_at=datetime(2026, 1, 2)), Sender(id="a", name=1)),  # type: ignore[arg-type]
    ],
)
def test_message_received_unusual_inputs_behave_as_before(
    message: Message, sender: Sender | None
) -> None:
    def fast() -> object:
        return codec._message_received(message, sender)

    def general() -> object:
        return general_received(message, sender)

    try:
        expected = general()
    except Exception:
        assert raised(fast) == raised(general)
    else:
        got = fast()
        assert got == expected
        assert outcome(lambda: codec.dumps(got)) == outcome(lambda: reference_dumps(expected))


# --- through the relay -----------------------------------------------------------------


@asynccontextmanager
async def listening(relay: Relay, conversation: str, users: list[str]) -> AsyncIterator[list[Any]]:
    """Connections of ``users`` in ``conversation`` whose events land in a list."""
    got: list[tuple[str, Outbound]] = []
    async with relay:
        opened = []
        for user in users:
            context = relay.connect(Identity(user_id=user), transport="test")
            conn = await context.__aenter__()
            opened.append(context)

            def sink(item: Outbound, user: str = user) -> bool:
                got.append((user, item))
                return True

            conn.deliver_directly(sink)
            relay._hub.rooms.join(conn.id, conn.user_id, conversation)
        try:
            yield got
        finally:
            for context in reversed(opened):
                await context.__aexit__(None, None, None)


async def _quiet(user_id: str) -> tuple[str, ...]:
    return ()


@pytest.mark.anyio
@pytest.mark.parametrize("shared", [False, True])
async def test_relay_message_status_sends_the_same_frame(shared: bool) -> None:
    backplane = MemoryBus().backplane() if shared else None
    # Positions off: the payloads are compared with the converter's, which has none.
    relay = Relay(presence_audience=_quiet, backplane=backplane, config=NO_POSITIONS)
    async with listening(relay, "c1", ["alice", "bob"]) as got:
        await relay.message_status("c1", "m1", "read", user_id="bob", updated_at=WHEN)
        await relay.message_status("c1", "m2", MessageStatus.DELIVERED, user_id="bob")
        await relay.message_status(
            "c1",
            "m3",
            "sent",
            user_id="bob",
            updated_at=WHEN,
            exclude=next(iter(relay._connections)),
        )
    assert [user for user, _ in got] == ["alice", "bob", "alice", "bob", "bob"]
    first = got[0][1]
    reference = Outbound(
        "message:status",
        general_status("c1", "m1", MessageStatus.READ, "bob", WHEN),
    )
    assert (first.event, first.json) == (reference.event, reference.json)
    assert first.json == (
        '{"conversationId":"c1","messageId":"m1",'
        '"status":"read","userId":"bob","updatedAt":"2026-01-02T03:04:05.006Z"}'
    )
    second = got[2][1]
    assert second.data["status"] == "delivered"
    assert second.json == reference_dumps(second.data)


@pytest.mark.anyio
async def test_relay_message_status_refuses_bad_input_before_sending() -> None:
    relay = Relay(presence_audience=_quiet)
    async with listening(relay, "c1", ["alice"]) as got:
        with pytest.raises(ValueError, match="unknown message status 'seen'"):
            await relay.message_status("c1", "m1", "seen", user_id="bob")
        with pytest.raises(ValueError, match="timestamps must be timezone-aware"):
            await relay.message_status(
                "c1", "m1", "read", user_id="bob", updated_at=datetime(2026, 1, 2)
            )
        with pytest.raises(ValueError, match="timestamps must be timezone-aware"):
            await relay.message_received(_message(created_at=datetime(2026, 1, 2)))
        with pytest.raises(ValueError, match="repeats known fields"):
            await relay.message_received(_message(extra={"type": "x"}))
    assert got == []


@pytest.mark.anyio
@pytest.mark.parametrize("shared", [False, True])
async def test_relay_message_received_sends_the_same_frame(shared: bool) -> None:
    backplane = MemoryBus().backplane() if shared else None
    # Positions off: the payloads are compared with the converter's, which has none.
    relay = Relay(presence_audience=_quiet, backplane=backplane, config=NO_POSITIONS)
    message = _message(extra={"replyTo": "m0"})
    sender = Sender(id="alice", name="Alice")
    async with listening(relay, "c1", ["alice", "bob"]) as got:
        await relay.message_received(message, sender=sender)
        await relay.message_received(
            _message(id="m2", created_at=WHEN.astimezone(timezone(timedelta(hours=2))))
        )
    assert [user for user, _ in got] == ["alice", "bob", "alice", "bob"]
    item = got[0][1]
    assert item.wants_ack
    assert item.json == Outbound("message:received", general_received(message, sender)).json
    assert got[2][1].data["message"]["createdAt"] == "2026-01-02T03:04:05.006Z"
    assert got[2][1].data["sender"] == {"id": "alice"}


@given(json_values)
def test_dumps_without_the_c_encoder_matches_json_dumps(value: object) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_json, "_make_encoder", None)
        assert codec.dumps(value) == reference_dumps(value)
