"""The memory history: the contract (`check_history`), its TTL on a fake clock, `stamp`.

Broken histories fail the check, so that passing it means something.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import anyio.lowlevel
import pytest

from chatrelay import ConversationId, HistorySettings
from chatrelay._history import EPOCH_CHANGED, stamp
from chatrelay._nodes import AckFields, RoomEvent, encode, stamp_room_event
from chatrelay._types import ConnectionId, NodeId
from chatrelay.abc import HistoryRead
from chatrelay.backplanes import HistoryLog, MemoryHistory
from chatrelay.events import Position
from chatrelay.exceptions import BackplaneError
from chatrelay.testing import check_history

C1, C2 = ConversationId("c1"), ConversationId("c2")


class FakeClock:
    """Seconds that pass only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- the contract ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_memory_history_passes_the_check() -> None:
    await check_history(MemoryHistory)


class Racy(MemoryHistory):
    """Reads the last offset, then writes: two appenders in between get the same one."""

    async def append(self, conversation: ConversationId, event: str, json: str) -> Position:
        before = await self.position(conversation)
        await anyio.lowlevel.checkpoint()
        position = await super().append(conversation, event, json)
        return Position(before.offset + 1, position.epoch)


class Forgetful(MemoryHistory):
    """Starts a new epoch each time it is asked where an empty conversation stands."""

    async def position(self, conversation: ConversationId) -> Position:
        current = await super().position(conversation)
        if current.offset == 0:
            self.log.clear()
        return current


class Mangling(MemoryHistory):
    """Gives payloads back re-encoded (ASCII escapes): equal as JSON, not as text."""

    async def read(self, conversation: ConversationId, after: Position, limit: int) -> HistoryRead:
        read = await super().read(conversation, after, limit)
        if isinstance(read.entries, str):
            return read
        entries = tuple(
            type(e)(e.offset, e.event, json.dumps(json.loads(e.json))) for e in read.entries
        )
        return HistoryRead(read.position, entries)


class EpochBlind(MemoryHistory):
    """Reads by offset whatever the epoch asked for."""

    async def read(self, conversation: ConversationId, after: Position, limit: int) -> HistoryRead:
        current = await self.position(conversation)
        return await super().read(conversation, Position(after.offset, current.epoch), limit)


class Holey(MemoryHistory):
    """Replays what it still has when older events were trimmed: a hole."""

    async def read(self, conversation: ConversationId, after: Position, limit: int) -> HistoryRead:
        read = await super().read(conversation, after, limit)
        offset = after.offset
        while read.entries == "trimmed":
            offset += 1
            read = await super().read(conversation, Position(offset, after.epoch), limit)
        return read


class Backwards(MemoryHistory):
    """Records a batch last event first."""

    async def append_many(
        self, entries: Sequence[tuple[ConversationId, str, str]]
    ) -> list[Position | BackplaneError]:
        return (await super().append_many(entries[::-1]))[::-1]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("kind", "complaint"),
    [
        (Racy, "did not get the offsets 1 to 200 once each"),
        (Forgetful, "position changed"),
        (Mangling, "byte for byte"),
        (EpochBlind, "with another epoch"),
        (Holey, "after a trimmed event"),
        (Backwards, "in the order given"),
    ],
)
async def test_broken_histories_fail_the_check(kind: type[MemoryHistory], complaint: str) -> None:
    with pytest.raises(AssertionError, match=complaint):
        await check_history(kind, timeout=1.0)


# --- the TTL, on a fake clock -----------------------------------------------------------


def test_a_history_lasts_its_ttl_after_the_last_event() -> None:
    log = HistoryLog(HistorySettings(ttl=60))
    first = log.append(C1, "message:received", '{"n":1}', now=0.0)
    log.append(C1, "message:received", '{"n":2}', now=30.0)
    assert log.position(C1, now=90.0) == Position(2, first.epoch)  # exactly the TTL: kept
    read = log.read(C1, Position(0, first.epoch), 10, now=90.0)
    assert [e.offset for e in read.entries if not isinstance(e, str)] == [1, 2]
    gone = log.read(C1, Position(2, first.epoch), 10, now=90.5)
    assert gone.entries == EPOCH_CHANGED
    assert gone.position.offset == 0
    assert gone.position.epoch != first.epoch


def test_reading_a_position_does_not_extend_the_ttl() -> None:
    log = HistoryLog(HistorySettings(ttl=60))
    start = log.position(C1, now=0.0)
    assert log.position(C1, now=50.0) == start
    assert log.read(C1, start, 10, now=55.0).entries == ()
    later = log.position(C1, now=60.5)
    assert later.offset == 0
    assert later.epoch != start.epoch


def test_only_the_histories_past_their_ttl_go() -> None:
    log = HistoryLog(HistorySettings(ttl=60))
    old = log.append(C1, "message:received", '{"n":1}', now=0.0)
    recent = log.append(C2, "message:received", '{"n":1}', now=30.0)
    assert len(log) == 2
    assert log.position(C2, now=70.0) == recent
    assert len(log) == 1  # c1 expired on the way
    assert log.position(C1, now=70.0).epoch != old.epoch


def test_a_cleared_log_starts_new_epochs() -> None:
    log = HistoryLog(HistorySettings())
    before = log.append(C1, "message:received", '{"n":1}', now=0.0)
    log.clear()
    after = log.append(C1, "message:received", '{"n":1}', now=0.0)
    assert after.offset == 1
    assert after.epoch != before.epoch


@pytest.mark.anyio
async def test_memory_history_runs_its_ttl_on_the_clock_given() -> None:
    clock = FakeClock()
    history = MemoryHistory(HistorySettings(ttl=5), clock=clock)
    first = await history.append(C1, "message:received", '{"n":1}')
    clock.now += 5
    assert await history.position(C1) == first
    clock.now += 0.001
    read = await history.read(C1, first, 10)
    assert read.entries == EPOCH_CHANGED
    assert read.position.epoch != first.epoch


# --- stamp --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        {
            "conversationId": "c1",
            "message": {"id": "m1", "content": {"text": "h\u00e9 \U0001f44b"}},
        },
        {"conversationId": 'c"1}', "messageId": "m1", "status": "read"},
        {"nested": {"position": "not this one"}, "list": [1, {"a": "}"}]},
    ],
    ids=["message", "quotes-and-braces", "nested"],
)
def test_stamp_adds_the_position_as_the_last_field(payload: dict[str, object]) -> None:
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    position = Position(123456789012, "a1b2c3d4e5f6")
    stamped = stamp(text, position)
    data = json.loads(stamped)
    assert data == {**payload, "position": {"offset": 123456789012, "epoch": "a1b2c3d4e5f6"}}
    assert list(data)[-1] == "position"
    assert stamped.startswith(text[:-1])


@pytest.mark.parametrize(
    "ack", [None, AckFields(conversation_id="c1", message_id="m1", sender_id="a")]
)
@pytest.mark.parametrize("exclude", [None, "conn-1"])
def test_a_room_events_envelope_is_stamped_as_if_encoded_stamped(
    ack: AckFields | None, exclude: str | None
) -> None:
    text = json.dumps({"conversationId": 'c"1}', "t": "h\u00e9 }"}, ensure_ascii=False)
    position = Position(42, "a1b2c3d4e5f6")

    def envelope(payload: str) -> bytes:
        event = RoomEvent(
            conversation_id=ConversationId("c1"),
            event="message:received",
            json=payload,
            exclude=ConnectionId(exclude) if exclude else None,
            ack=ack,
        )
        return encode(NodeId("node-1"), event)

    assert stamp_room_event(envelope(text), position) == envelope(stamp(text, position))
