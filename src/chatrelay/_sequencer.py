"""Room events in offset order on one node, and the gaps between them spotted: sans-I/O.

Two servers that emit in the same room at once record offsets 7 and 8, but their
events may reach a third server as 8, then 7. A `Sequencer` hands each room's events
to the node's connections in offset order: it holds an event that came early until the
ones before it arrive, for at most ``window`` seconds; after that the missing ones
count as lost (the room is told ``sync:required``) and the held ones go out.

A room is *opened* when its first local member joins. Until the node knows where the
room stands (its *baseline*, read from the history after the node subscribed to the
room), its events are held; then those at or before the baseline are dropped: the
joining client's ack says it has them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Generic, NamedTuple, TypeVar

import attrs

from ._types import ConversationId
from .events import Position

__all__ = ["Released", "Sequencer", "position_of"]

T = TypeVar("T")


@attrs.define(eq=False)
class _Room(Generic[T]):
    position: Position | None = None  # the last event released
    pending: bool = True  # waiting for the baseline
    held: dict[int, tuple[Position, T]] = attrs.field(factory=dict)
    hole_since: float | None = None


class Released(NamedTuple, Generic[T]):
    """What to hand to a room's connections now, in this order.

    Attributes:
        items: The events, in offset order.
        lost: Whether events were lost before them (tell the room ``sync:required``).
    """

    items: list[T]
    lost: bool = False


class Sequencer(Generic[T]):
    """Orders each room's events by offset (see the module's docstring).

    Args:
        window: Seconds an early event is held for the ones before it.
    """

    def __init__(self, window: float) -> None:
        self.window = window
        self._rooms: dict[ConversationId, _Room[T]] = {}
        # The rooms with a hole open, and since when: what `next_deadline` looks at.
        self._holes: dict[ConversationId, float] = {}

    def open(self, room: ConversationId) -> None:
        """The node's first member of ``room`` joined: hold its events until `baseline`."""
        self._rooms.setdefault(room, _Room())

    def close(self, room: ConversationId) -> None:
        """The node's last member of ``room`` left."""
        self._rooms.pop(room, None)
        self._holes.pop(room, None)

    def pending(self, room: ConversationId) -> bool:
        """Whether ``room`` waits for its baseline."""
        state = self._rooms.get(room)
        return state is not None and state.pending

    def position(self, room: ConversationId) -> Position | None:
        """The position of the last event of ``room`` released (or its baseline)."""
        state = self._rooms.get(room)
        return None if state is None else state.position

    def baseline(self, room: ConversationId, position: Position | None, now: float) -> Released[T]:
        """Where ``room`` stands; ``None`` if it could not be read (the first event says)."""
        state = self._rooms.get(room)
        if state is None or not state.pending:
            return Released([])
        state.pending = False
        state.position = position
        held, state.held = state.held, {}
        out: list[T] = []
        lost = False
        for offset in sorted(held):
            pos, item = held[offset]
            released = self.offer(room, pos, item, now)
            out += released.items
            lost = lost or released.lost
        return Released(out, lost)

    def in_order(self, room: ConversationId, position: Position) -> bool:
        """Take an event that can go out at once (the next one, nothing held); else no-op.

        The fast path of `offer`: ``True`` means release it now (its position was
        recorded); ``False`` means call `offer`.
        """
        state = self._rooms.get(room)
        if state is None:
            return True
        current = state.position
        if (
            state.pending
            or state.held
            or current is None
            or current.epoch != position.epoch
            or position.offset != current.offset + 1
        ):
            return False
        state.position = position
        return True

    def offer(self, room: ConversationId, position: Position, item: T, now: float) -> Released[T]:
        """An event of ``room`` arrived: what can be released now."""
        state = self._rooms.get(room)
        if state is None:
            return Released([item])  # no local member: nobody to order it for
        if state.pending:
            state.held[position.offset] = (position, item)
            return Released([])
        current = state.position
        if current is None or current.epoch != position.epoch:
            # The first event after a baseline that could not be read, or the history
            # was lost and numbering started again: take it as it is. Live delivery
            # lost nothing by it (the backplane reports its own losses); only the
            # clients' positions of the old epoch can no longer be recovered from.
            state.held = {o: h for o, h in state.held.items() if h[0].epoch == position.epoch}
            current = state.position = Position(position.offset - 1, position.epoch)
        if position.offset <= current.offset:
            return Released([])  # already released: a repeat
        if position.offset > current.offset + 1:
            state.held[position.offset] = (position, item)
            if state.hole_since is None:
                state.hole_since = self._holes[room] = now
            return Released([])
        out = [item]
        state.position = position
        if state.held:
            self._release_next(room, state, out)
        return Released(out)

    @property
    def holding(self) -> bool:
        """Whether some room holds events behind a hole."""
        return bool(self._holes)

    def next_deadline(self) -> float | None:
        """When a hole runs out of time, if one is open."""
        holes = self._holes
        return min(holes.values()) + self.window if holes else None

    def expire(self, now: float) -> list[tuple[ConversationId, Released[T]]]:
        """Give up on the holes open for ``window`` seconds: release what follows them."""
        out: list[tuple[ConversationId, Released[T]]] = []
        for room, since in list(self._holes.items()):
            if now - since < self.window:
                continue
            state = self._rooms[room]
            if not state.held:
                state.hole_since = None
                del self._holes[room]
                continue
            items: list[T] = []
            first = min(state.held)
            state.position = Position(first - 1, state.held[first][0].epoch)
            self._release_next(room, state, items)
            out.append((room, Released(items, lost=True)))
            if state.held:
                # The next hole gets a window of its own.
                state.hole_since = self._holes[room] = now
        return out

    def _release_next(self, room: ConversationId, state: _Room[T], out: list[T]) -> None:
        held = state.held
        assert state.position is not None
        offset = state.position.offset
        while held:
            following = held.pop(offset + 1, None)
            if following is None:
                break
            offset += 1
            state.position, item = following
            out.append(item)
        if not held:
            state.hole_since = None
            self._holes.pop(room, None)


def position_of(data: Mapping[str, Any]) -> Position | None:
    """The position stamped on a room event's payload, if it holds a sane one."""
    raw = data.get("position")
    if not isinstance(raw, dict):
        return None
    offset, epoch = raw.get("offset"), raw.get("epoch")
    if type(offset) is not int or offset < 1 or not isinstance(epoch, str) or not epoch:
        return None
    return Position(offset, epoch)
