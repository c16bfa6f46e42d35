"""Each conversation's recent room events, numbered, so that a client can catch up.

A room event (``message:received``, ``message:status``) gets the next *offset* of its
conversation when it is recorded, and the conversation's *epoch*: together they are
its `Position`. An offset grows by exactly 1 per event of a conversation, whichever
node emitted it; the epoch changes only when the conversation's history was lost, so
offsets compare only within one epoch.

`History` is the port, which backplanes provide (`Backplane.history`): the memory
one here, `RedisHistory` for a cluster. `HistoryLog` is the in-memory store
without I/O: each call takes ``now``.

What is recorded is the event's payload without its position (``json``); the
position is stamped into it (`stamp`) when it is sent, live or replayed.
"""

from __future__ import annotations

import secrets
import time
from abc import ABC, abstractmethod
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from itertools import islice
from typing import ClassVar, Final

import attrs

from ._config import HistorySettings
from ._exceptions import BackplaneError
from ._types import ConversationId
from .events import Position

__all__ = [
    "History",
    "HistoryEntry",
    "HistoryLog",
    "HistoryRead",
    "MemoryHistory",
    "Unrecoverable",
    "new_epoch",
    "position_field",
    "stamp",
]


def new_epoch() -> str:
    """A new epoch: a short random string, unique for all practical purposes."""
    return secrets.token_hex(6)


def stamp(json: str, position: Position) -> str:
    """Add ``"position": {offset, epoch}`` to an event's JSON object (its last field).

    The epoch is made by this library (hex digits), the offset is an integer: neither
    needs escaping, so the text is spliced, not serialized again.
    """
    return f"{json[:-1]}{position_field(position)}}}"


def position_field(position: Position) -> str:
    """The text `stamp` puts before an event's closing brace."""
    return f',"position":{{"offset":{position.offset},"epoch":"{position.epoch}"}}'


@attrs.frozen
class HistoryEntry:
    """One recorded room event: its offset, its name, its payload without position."""

    offset: int
    event: str
    json: str


class Unrecoverable(str):
    """Why missed events cannot be recovered (a reason, for logs and metrics)."""

    __slots__ = ()


EPOCH_CHANGED: Final = Unrecoverable("epoch_changed")
TOO_MANY: Final = Unrecoverable("too_many")
TRIMMED: Final = Unrecoverable("trimmed")
UNAVAILABLE: Final = Unrecoverable("unavailable")


@attrs.frozen
class HistoryRead:
    """What a history holds after a position.

    Attributes:
        position: The conversation's current position.
        entries: Every event after the position asked for, in offset order; or the
            reason (`Unrecoverable`) why they cannot all be given, in which case
            none is.
    """

    position: Position
    entries: tuple[HistoryEntry, ...] | Unrecoverable


class History(ABC):
    """A store of each conversation's recent room events (the port).

    Implementations number events atomically per conversation across every node that
    shares them, and keep them within `HistorySettings`.
    """

    settings: HistorySettings

    local: ClassVar[bool] = False
    """Whether `append` records without waiting on I/O (so it cannot be cancelled
    half-way); the relay then skips shielding the send that follows it."""

    @abstractmethod
    async def position(self, conversation: ConversationId) -> Position:
        """The conversation's current position (offset 0 if nothing was recorded).

        Starts the conversation's epoch if it has none, so that a client that joined
        before anything was sent can still resume.
        """

    @abstractmethod
    async def append(self, conversation: ConversationId, event: str, json: str) -> Position:
        """Record an event (its payload without position) and return its position.

        Raises:
            BackplaneError: If it could not be recorded.
        """

    async def append_many(
        self, entries: Sequence[tuple[ConversationId, str, str]]
    ) -> list[Position | BackplaneError]:
        """Record several events (conversation, name, payload each), in this order.

        What a relay whose history is not `local` calls with every event emitted
        while the previous call was under way: an implementation that talks to a
        server should send them in one round trip. The events of one conversation
        get consecutive offsets in the order given (unless another node records
        meanwhile). This one appends them one by one.

        Returns:
            For each event, its position, or the error that kept it from being
            recorded (as `append` would have raised it).
        """
        out: list[Position | BackplaneError] = []
        for conversation, event, json in entries:
            try:
                out.append(await self.append(conversation, event, json))
            except BackplaneError as exc:
                out.append(exc)
        return out

    @abstractmethod
    async def read(self, conversation: ConversationId, after: Position, limit: int) -> HistoryRead:
        """The events after ``after``: all of them, or why not (at most ``limit``)."""


@attrs.define(eq=False)
class _Room:
    epoch: str
    offset: int = 0
    # The events kept, oldest first: the last one has `offset`, offsets being
    # consecutive. Strings only, in two deques, so that recording an event makes no
    # object the garbage collector tracks (a server with many rooms keeps thousands,
    # and each tracked one brings the next full collection nearer). HistoryEntry
    # objects are made only for a read.
    events: deque[str] = attrs.field(factory=deque)
    payloads: deque[str] = attrs.field(factory=deque)
    size: int = 0
    touched: float = 0.0


class HistoryLog:
    """Conversations' histories in memory, without I/O: each call takes ``now``.

    Args:
        settings: Sizes and times.
        epoch: Makes new epochs (random by default).
    """

    def __init__(self, settings: HistorySettings, *, epoch: Callable[[], str] = new_epoch) -> None:
        self.settings = settings
        self._new_epoch = epoch
        # Least recently written first, so expired histories are found at the front.
        self._rooms: OrderedDict[ConversationId, _Room] = OrderedDict()

    def __len__(self) -> int:
        return len(self._rooms)

    def clear(self) -> None:
        """Lose every history (as a Redis that was flushed): epochs change."""
        self._rooms.clear()

    def position(self, conversation: ConversationId, now: float) -> Position:
        """The current position, starting an epoch if needed."""
        room = self._room(conversation, now)
        return Position(offset=room.offset, epoch=room.epoch)

    def append(self, conversation: ConversationId, event: str, json: str, now: float) -> Position:
        """Record an event and return its position."""
        room = self._room(conversation, now)
        offset = room.offset = room.offset + 1
        payloads = room.payloads
        room.events.append(event)
        payloads.append(json)
        size = room.size = room.size + len(json)
        settings = self.settings
        if len(payloads) > settings.size or size > settings.max_bytes:
            while payloads and (len(payloads) > settings.size or room.size > settings.max_bytes):
                room.events.popleft()
                room.size -= len(payloads.popleft())
        room.touched = now
        self._rooms.move_to_end(conversation)
        return Position(offset, room.epoch)

    def read(
        self, conversation: ConversationId, after: Position, limit: int, now: float
    ) -> HistoryRead:
        """The events after ``after``, or why they cannot all be given."""
        room = self._room(conversation, now)
        current = Position(offset=room.offset, epoch=room.epoch)
        missed = room.offset - after.offset
        if after.epoch != room.epoch or missed < 0:
            return HistoryRead(current, EPOCH_CHANGED)
        if missed > limit:
            return HistoryRead(current, TOO_MANY)
        if missed == 0:
            return HistoryRead(current, ())
        events, payloads = room.events, room.payloads
        # The oldest kept event has offset room.offset - len(payloads) + 1.
        if missed > len(payloads):
            return HistoryRead(current, TRIMMED)
        start = len(payloads) - missed
        kept = zip(islice(events, start, None), islice(payloads, start, None), strict=True)
        read = tuple(
            HistoryEntry(after.offset + 1 + i, event, json) for i, (event, json) in enumerate(kept)
        )
        return HistoryRead(current, read)

    def _room(self, conversation: ConversationId, now: float) -> _Room:
        rooms = self._rooms
        if rooms and now - rooms[next(iter(rooms))].touched > self.settings.ttl:
            self._expire(now)
        room = rooms.get(conversation)
        if room is None:
            room = rooms[conversation] = _Room(epoch=self._new_epoch(), touched=now)
        return room

    def _expire(self, now: float) -> None:
        rooms, ttl = self._rooms, self.settings.ttl
        while rooms:
            conversation, oldest = next(iter(rooms.items()))
            if now - oldest.touched <= ttl:
                return
            del rooms[conversation]


class MemoryHistory(History):
    """The history of one process's relays (`LocalBackplane`, `MemoryBus`).

    Args:
        settings: Sizes and times.
        clock: The clock of its TTL (seconds); `time.monotonic` by default.
    """

    local = True

    def __init__(
        self, settings: HistorySettings, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self.log = HistoryLog(settings)
        self._clock = clock

    async def position(self, conversation: ConversationId) -> Position:
        """The conversation's current position."""
        return self.log.position(conversation, self._clock())

    async def append(self, conversation: ConversationId, event: str, json: str) -> Position:
        """Record an event and return its position."""
        return self.log.append(conversation, event, json, self._clock())

    async def read(self, conversation: ConversationId, after: Position, limit: int) -> HistoryRead:
        """The events after ``after``, or why not."""
        return self.log.read(conversation, after, limit, self._clock())
