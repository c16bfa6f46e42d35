"""A conformance check for histories (`History`), reusable by any implementation."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable

import anyio

from .._config import HistorySettings
from .._history import History, HistoryEntry, HistoryRead
from .._types import ConversationId
from ..events import Position

__all__ = ["check_history"]

_APPENDERS = 4
_APPENDS_EACH = 50


def _require(condition: bool, message: str) -> None:
    # Not `assert`: the check must hold under `python -O` too.
    if not condition:
        raise AssertionError(message)


def _conversation(label: str) -> ConversationId:
    # Random names, so that a shared server can be used.
    return ConversationId(f"check-history-{label}-{secrets.token_hex(4)}")


def _payload(n: int, text: str = 'h\u00e9llo \U0001f44b "q" \\ \n') -> str:
    """A room event's JSON as the relay records it: an object, not ASCII-only."""
    return json.dumps({"n": n, "text": text}, ensure_ascii=False, separators=(",", ":"))


def _offsets(read: HistoryRead) -> list[int] | str:
    entries = read.entries
    return str(entries) if isinstance(entries, str) else [e.offset for e in entries]


class _Checker:
    def __init__(self, make_history: Callable[[HistorySettings], History], timeout: float) -> None:
        self.make_history = make_history
        self.timeout = timeout

    async def numbering(self) -> None:
        history = self.make_history(HistorySettings())
        room = _conversation("numbering")
        with anyio.fail_after(self.timeout):
            start = await history.position(room)
            again = await history.position(room)
        _require(start.offset == 0, f"an empty conversation is at offset {start.offset}, not 0")
        _require(
            bool(start.epoch) and again == start,
            f"an empty conversation's position changed from {start} to {again}",
        )
        sent = [("message:received", _payload(n)) for n in (1, 2)]
        sent.append(("message:status", _payload(3, "\u00e9t\u00e9 \u2192 read")))
        with anyio.fail_after(self.timeout):
            positions = [await history.append(room, event, text) for event, text in sent]
        expected = [Position(n, start.epoch) for n in (1, 2, 3)]
        _require(
            positions == expected, f"appends got {positions}, expected {expected} (same epoch)"
        )
        last = expected[-1]
        for after in range(4):
            with anyio.fail_after(self.timeout):
                read = await history.read(room, Position(after, start.epoch), 100)
            _require(read.position == last, f"read reports {read.position}, expected {last}")
            want = [HistoryEntry(n, *sent[n - 1]) for n in range(after + 1, 4)]
            _require(
                read.entries == tuple(want),
                f"read after offset {after} gave {read.entries!r}, expected exactly {want!r}:"
                " the rest, in order, each payload byte for byte (a position is stamped"
                " into it)",
            )
        with anyio.fail_after(self.timeout):
            other = await history.read(room, Position(2, "another-epoch"), 100)
            ahead = await history.read(room, Position(9, start.epoch), 100)
            many = await history.read(room, Position(0, start.epoch), 2)
            enough = await history.read(room, Position(0, start.epoch), 3)
        _require(
            other.entries == "epoch_changed" and other.position == last,
            f"a read with another epoch gave {_offsets(other)}, not epoch_changed",
        )
        _require(
            ahead.entries == "epoch_changed",
            f"a read after an offset the history never had gave {_offsets(ahead)},"
            " not epoch_changed",
        )
        _require(
            many.entries == "too_many",
            f"3 missed with a limit of 2 gave {_offsets(many)}, not too_many",
        )
        _require(_offsets(enough) == [1, 2, 3], "3 missed with a limit of 3 were not all given")

    async def independence(self) -> None:
        history = self.make_history(HistorySettings())
        first, second = _conversation("caf\u00e9-{x}"), _conversation("other")
        with anyio.fail_after(self.timeout):
            await history.append(first, "message:received", _payload(1))
            await history.append(first, "message:received", _payload(2))
            position = await history.append(second, "message:received", _payload(1))
            read = await history.read(second, Position(0, position.epoch), 10)
            current = await history.position(first)
        _require(
            position.offset == 1 and current.offset == 2 and _offsets(read) == [1],
            "two conversations are not numbered and kept apart",
        )

    async def trimming(self) -> None:
        # By count: 8 events, 5 kept.
        history = self.make_history(HistorySettings(size=5))
        room = _conversation("size")
        with anyio.fail_after(self.timeout):
            for n in range(1, 9):
                last = await history.append(room, "message:received", _payload(n))
            kept = await history.read(room, Position(3, last.epoch), 100)
            trimmed = await history.read(room, Position(2, last.epoch), 100)
        _require(_offsets(kept) == [4, 5, 6, 7, 8], f"size=5 kept {_offsets(kept)}")
        _require(
            trimmed.entries == "trimmed",
            f"a read after a trimmed event gave {_offsets(trimmed)}, not trimmed",
        )
        # By bytes: ASCII payloads of 20 bytes, 50 bytes kept: the last two.
        history = self.make_history(HistorySettings(max_bytes=50))
        room = _conversation("bytes")
        with anyio.fail_after(self.timeout):
            for n in range(1, 5):
                last = await history.append(room, "message:received", f'{{"n":{n},"x":"{n:08}"}}')
            kept = await history.read(room, Position(2, last.epoch), 100)
            trimmed = await history.read(room, Position(1, last.epoch), 100)
            big = await history.append(room, "message:received", f'{{"x":"{"y" * 60}"}}')
            after_big = await history.read(room, Position(4, big.epoch), 100)
        _require(_offsets(kept) == [3, 4], f"max_bytes=50 kept {_offsets(kept)}, not [3, 4]")
        _require(trimmed.entries == "trimmed", f"past max_bytes gave {_offsets(trimmed)}")
        _require(
            big.offset == 5 and after_big.entries == "trimmed",
            f"an event above max_bytes was kept (or misnumbered): {big}, {_offsets(after_big)}",
        )

    async def concurrency(self) -> None:
        history = self.make_history(HistorySettings())
        room = _conversation("concurrent")
        got: list[tuple[Position, str]] = []

        async def appender(task: int) -> None:
            for n in range(_APPENDS_EACH):
                text = _payload(task * 1000 + n)
                got.append((await history.append(room, "message:received", text), text))

        total = _APPENDERS * _APPENDS_EACH
        with anyio.fail_after(self.timeout):
            async with anyio.create_task_group() as tg:
                for task in range(_APPENDERS):
                    tg.start_soon(appender, task)
        offsets = sorted(position.offset for position, _ in got)
        _require(
            offsets == list(range(1, total + 1)),
            f"{_APPENDERS} tasks appending at once did not get the offsets 1 to {total} once"
            f" each: {len(set(offsets))} distinct offsets, up to {offsets[-1]}",
        )
        epochs = {position.epoch for position, _ in got}
        _require(len(epochs) == 1, f"concurrent appends got several epochs: {epochs}")
        with anyio.fail_after(self.timeout):
            read = await history.read(room, Position(0, epochs.pop()), total)
        entries = read.entries
        recorded = sorted((position.offset, text) for position, text in got)
        _require(
            not isinstance(entries, str) and [(e.offset, e.json) for e in entries] == recorded,
            "the history does not hold each concurrent event at the offset its append returned",
        )

    async def batches(self) -> None:
        history = self.make_history(HistorySettings())
        first, second = _conversation("batch-a"), _conversation("batch-b")
        with anyio.fail_after(self.timeout):
            start = await history.append(first, "message:received", _payload(0))
            results = await history.append_many(
                [
                    (first, "message:received", _payload(1)),
                    (second, "message:received", _payload(1)),
                    (first, "message:status", _payload(2)),
                ]
            )
            empty = await history.append_many([])
        _require(empty == [], f"an empty batch gave {empty!r}")
        _require(
            all(isinstance(r, Position) for r in results),
            f"a batch was not recorded: {results!r}",
        )
        positions = [r for r in results if isinstance(r, Position)]
        _require(
            [p.offset for p in positions] == [2, 1, 3]
            and positions[0].epoch == positions[2].epoch == start.epoch,
            f"a batch after offset 1 of one conversation got {positions}, expected offsets"
            " 2, 1 (another conversation), 3, in the order given",
        )
        with anyio.fail_after(self.timeout):
            read = await history.read(first, start, 10)
        entries = read.entries
        _require(
            not isinstance(entries, str)
            and [(e.offset, e.event, e.json) for e in entries]
            == [(2, "message:received", _payload(1)), (3, "message:status", _payload(2))],
            f"a batch's events are not kept at the offsets it returned: {_offsets(read)}",
        )


async def check_history(
    make_history: Callable[[HistorySettings], History], *, timeout: float = 5.0
) -> None:
    """Check that the histories ``make_history`` makes keep the contract of `History`.

    ``make_history`` is called with the settings each part of the check needs and
    must return a history that keeps them (a class such as `MemoryHistory` will
    do, or a started backplane's ``history`` method if it makes a new one each
    time). The check uses conversations of its own (random names, so a shared
    server can be used), bounds every step by ``timeout`` seconds, and verifies that:

    - an empty conversation is at offset 0, and its epoch stays the same;
    - appends are numbered 1, 2, 3 in that epoch;
    - a read after each offset gives exactly the events after it, in order, each
      payload byte for byte as appended (non-ASCII included), so that a position can
      be stamped into it;
    - a read with another epoch, or after an offset never reached, is
      ``epoch_changed``; more missed than the limit is ``too_many``;
    - past ``size`` events or ``max_bytes`` bytes of payload the oldest go, and a
      read that would need one of them is ``trimmed``, never a replay with a hole;
    - two conversations are numbered apart;
    - 4 tasks appending 50 events each at once get the offsets 1 to 200, each once,
      and each event is recorded at the offset its append returned;
    - a batch (`History.append_many`) numbers its events in the order given, per
      conversation, and keeps each at the offset returned.

    Raises:
        AssertionError: Naming the first rule broken.
    """
    checker = _Checker(make_history, timeout)
    await checker.numbering()
    await checker.independence()
    await checker.trimming()
    await checker.concurrency()
    await checker.batches()
