"""Catching a client up on the room events it missed, when it joins with a position.

A join with ``position`` goes: *catch-up starts* (the room's live events for this
connection are set aside from now on), the connection joins the room (this node may
subscribe to it), the history after the client's position is read (where this node
just opened the room, that read also tells where the room stands), then the missed
events and the set-aside live ones are handed to the connection merged by offset,
each once, and only then is the ack sent (``recovered: true``). If the history
cannot give every missed event (another epoch, trimmed, expired, more than
``recovery_limit``), none is replayed (``recovered: false``) and the set-aside live
events follow as they would have.

Reads are shared: clients resuming one room from one position at the same time cost
one read of the history.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import anyio
import attrs

from ._connection import Connection
from ._exceptions import BackplaneError
from ._history import UNAVAILABLE, History, HistoryEntry, HistoryRead, Unrecoverable, stamp
from ._hub import Effect, Hub
from ._outbound import Outbound, _AckFromPayload
from ._statistics import Counters
from ._types import ConnectionId, ConversationId
from .events import Position

__all__ = ["Joined", "Recovery"]

logger = logging.getLogger("chatrelay")

_Key = tuple[ConversationId, str, int]


@attrs.define(eq=False)
class _Read:
    done: anyio.Event = attrs.field(factory=anyio.Event)
    result: HistoryRead | None = None


@attrs.define(eq=False)
class Joined:
    """The outcome of a join, for its ack.

    Attributes:
        position: Where the room stands for this connection (its last event handed
            to it), or ``None`` without history.
        recovered: With a position asked for: whether every missed event was handed.
    """

    position: Position | None = None
    recovered: bool | None = None


class Recovery:
    """Joins with catch-up, and the live events set aside meanwhile.

    Args:
        hub: The relay's rules and state.
        history: The history, or ``None`` when it is off.
        limit: At most this many events are recovered in one join.
        carry_out: Does what the hub asks.
        clock: The relay's clock for deadlines.
        counters: The relay's counters (recoveries by outcome).
    """

    def __init__(
        self,
        *,
        hub: Hub,
        history: History | None,
        limit: int,
        carry_out: Callable[[list[Effect]], Awaitable[None]],
        clock: Callable[[], float],
        counters: Counters,
    ) -> None:
        self._hub = hub
        self._history = history
        self._limit = limit
        self._carry_out = carry_out
        self._clock = clock
        self._counters = counters
        # room -> connection -> live events set aside while it catches up.
        self.catching: dict[ConversationId, dict[ConnectionId, list[Outbound]]] = {}
        self._reads: dict[_Key, _Read] = {}
        self.reads = 0

    async def join(
        self,
        conn: Connection,
        conversation: ConversationId,
        asked: Position | None,
        enter: Callable[[], Awaitable[None]],
    ) -> Joined:
        """Join through ``enter`` (the hub's join, carried out), catching up from ``asked``."""
        if self._history is None:
            await enter()
            return Joined()
        if asked is None:
            await enter()
            await self._baseline(conversation)
            return Joined(position=self._hub.sequencer.position(conversation))
        room = self.catching.setdefault(conversation, {})
        aside: list[Outbound] = []
        room[conn.id] = aside
        try:
            await enter()
            if self._hub.sequencer.pending(conversation):
                outcome = await self._opening(conversation, asked)
            else:
                current = self._hub.sequencer.position(conversation)
                outcome = await self._missed(conversation, asked, current)
            current = self._hub.sequencer.position(conversation)
            if isinstance(outcome, Unrecoverable):
                self._counters.recoveries_failed += 1
                logger.info(
                    "recovery refused (%s): connection=%s conversation=%s position=%s/%s",
                    outcome,
                    conn.id,
                    conversation,
                    asked.offset,
                    asked.epoch,
                )
                items = aside
                recovered = False
            else:
                self._counters.recoveries += 1
                assert current is not None  # else the outcome is UNAVAILABLE
                items = _merge(outcome, aside, asked.offset, current.epoch)
                recovered = True
        finally:
            del room[conn.id]
            if not room:
                del self.catching[conversation]
        for item in items:
            conn._push(item)
        return Joined(position=self._hub.sequencer.position(conversation), recovered=recovered)

    def rejoin(self, conversation: ConversationId, asked: Position | None) -> Joined:
        """A join of a room the connection is in: it got every event since it joined."""
        if self._history is None:
            return Joined()
        position = self._hub.sequencer.position(conversation)
        if asked is None:
            return Joined(position=position)
        live = position is not None and asked.epoch == position.epoch
        return Joined(position=position, recovered=live)

    async def _baseline(self, conversation: ConversationId) -> None:
        """Tell the hub where a room stands, if this node just opened it."""
        if not self._hub.sequencer.pending(conversation):
            return
        assert self._history is not None
        position: Position | None
        try:
            position = await self._history.position(conversation)
        except BackplaneError as exc:
            logger.warning("cannot read the position of %r: %s", conversation, exc)
            position = None
        await self._carry_out(self._hub.baseline(conversation, position, self._clock()))

    async def _opening(
        self, conversation: ConversationId, asked: Position
    ) -> list[HistoryEntry] | Unrecoverable:
        """The missed events, where this node just opened the room.

        One read, which also tells where the room stands (its baseline), instead of
        a read of the position and then one of the events.
        """
        read = await self._read(conversation, asked)
        position = None if read is None else read.position
        await self._carry_out(self._hub.baseline(conversation, position, self._clock()))
        current = self._hub.sequencer.position(conversation)
        if read is None or current is None:
            return UNAVAILABLE
        if isinstance(read.entries, Unrecoverable):
            return read.entries
        return [e for e in read.entries if e.offset <= current.offset]

    async def _missed(
        self, conversation: ConversationId, asked: Position, current: Position | None
    ) -> list[HistoryEntry] | Unrecoverable:
        """The events after ``asked`` up to ``current``, or why they cannot be given."""
        if current is None:
            return UNAVAILABLE
        if asked.epoch != current.epoch:
            return Unrecoverable("epoch_changed")
        if asked.offset >= current.offset:
            return []  # nothing missed (or the client is ahead of this node: it gets them live)
        if current.offset - asked.offset > self._limit:
            return Unrecoverable("too_many")
        read = await self._read(conversation, asked)
        if read is None:
            return UNAVAILABLE
        if isinstance(read.entries, Unrecoverable):
            return read.entries
        return [e for e in read.entries if e.offset <= current.offset]

    async def _read(self, conversation: ConversationId, after: Position) -> HistoryRead | None:
        """Read the history after ``after``; concurrent asks for the same one share it."""
        key = (conversation, after.epoch, after.offset)
        pending = self._reads.get(key)
        if pending is not None:
            await pending.done.wait()
            return pending.result
        pending = self._reads[key] = _Read()
        try:
            assert self._history is not None
            self.reads += 1
            pending.result = await self._history.read(conversation, after, self._limit)
        except BackplaneError as exc:
            logger.warning("cannot read the history of %r: %s", conversation, exc)
        finally:
            del self._reads[key]
            pending.done.set()
        return pending.result


def _merge(
    entries: list[HistoryEntry], aside: list[Outbound], after: int, epoch: str
) -> list[Outbound]:
    """The missed events then the live ones set aside, by offset, each once."""
    out = [replayed(entry, epoch) for entry in entries if entry.offset > after]
    last = entries[-1].offset if entries else after
    for item in aside:
        position = item.position
        if position is None or position.offset > last:
            out.append(item)
            if position is not None:
                last = position.offset
    return out


def replayed(entry: HistoryEntry, epoch: str) -> Outbound:
    """A recorded event, as it was sent live (position included), sent as recorded."""
    position = Position(entry.offset, epoch)
    item = Outbound(entry.event, None, json=stamp(entry.json, position), position=position)
    if entry.event == "message:received":
        item._ack = _AckFromPayload(item)  # its recipients' acks reach on_delivered
    return item
