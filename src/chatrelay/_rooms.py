"""Room membership: which connection is in which conversation's room (sans-I/O)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from typing import TypeVar

import attrs

from ._types import ConnectionId, ConversationId, UserId

__all__ = ["RoomRegistry", "RoomStatistics"]

K = TypeVar("K")
V = TypeVar("V")


@attrs.frozen(kw_only=True)
class RoomStatistics:
    """A snapshot of a `RoomRegistry`.

    Attributes:
        rooms: Rooms with at least one connection.
        memberships: (connection, room) pairs.
    """

    rooms: int
    memberships: int


class RoomRegistry:
    """Which connections are in which rooms, and so which users are members of each.

    A plain synchronous object: no I/O, no clock. Every method runs in time
    proportional to its answer. A room exists while it has a connection; a user is a
    member of a room while at least one of its connections is in it.
    """

    def __init__(self) -> None:
        self._connections: dict[ConversationId, dict[ConnectionId, UserId]] = {}
        self._rooms_of: dict[ConnectionId, set[ConversationId]] = {}
        self._members: dict[ConversationId, Counter[UserId]] = {}
        self._user_rooms: dict[UserId, Counter[ConversationId]] = {}

    def join(self, connection: ConnectionId, user: UserId, conversation: ConversationId) -> bool:
        """Put ``connection`` (of ``user``) in the room of ``conversation``.

        Returns:
            ``True`` if the connection was not in that room yet.
        """
        conns = self._connections.setdefault(conversation, {})
        if connection in conns:
            return False
        conns[connection] = user
        self._rooms_of.setdefault(connection, set()).add(conversation)
        self._members.setdefault(conversation, Counter())[user] += 1
        self._user_rooms.setdefault(user, Counter())[conversation] += 1
        return True

    def leave(self, connection: ConnectionId, conversation: ConversationId) -> bool:
        """Take ``connection`` out of the room of ``conversation``.

        Returns:
            ``True`` if the connection was in that room.
        """
        conns = self._connections.get(conversation)
        if conns is None or connection not in conns:
            return False
        user = conns.pop(connection)
        if not conns:
            del self._connections[conversation]
        rooms = self._rooms_of[connection]
        rooms.discard(conversation)
        if not rooms:
            del self._rooms_of[connection]
        _decrement(self._members, conversation, user)
        _decrement(self._user_rooms, user, conversation)
        return True

    def disconnect(self, connection: ConnectionId) -> frozenset[ConversationId]:
        """Take ``connection`` out of every room.

        Returns:
            The rooms it was in.
        """
        rooms = frozenset(self._rooms_of.get(connection, ()))
        for conversation in rooms:
            self.leave(connection, conversation)
        return rooms

    def connections(self, conversation: ConversationId) -> Collection[ConnectionId]:
        """The connections in a room (a live read-only view; copy it to keep it)."""
        return self._connections.get(conversation, {}).keys()

    def rooms_of(self, connection: ConnectionId) -> frozenset[ConversationId]:
        """The rooms ``connection`` is in."""
        return frozenset(self._rooms_of.get(connection, ()))

    def is_in(self, connection: ConnectionId, conversation: ConversationId) -> bool:
        """Tell whether ``connection`` is in the room of ``conversation``."""
        return connection in self._connections.get(conversation, {})

    def members(self, conversation: ConversationId) -> frozenset[UserId]:
        """The users with at least one connection in the room."""
        return frozenset(self._members.get(conversation, ()))

    def is_member(self, user: UserId, conversation: ConversationId) -> bool:
        """Tell whether ``user`` has a connection in the room of ``conversation``."""
        return user in self._members.get(conversation, ())

    def rooms_of_user(self, user: UserId) -> frozenset[ConversationId]:
        """The rooms in which ``user`` has at least one connection."""
        return frozenset(self._user_rooms.get(user, ()))

    def rooms(self) -> frozenset[ConversationId]:
        """Every room with at least one connection."""
        return frozenset(self._connections)

    def statistics(self) -> RoomStatistics:
        """Return counts that describe the registry now."""
        return RoomStatistics(
            rooms=len(self._connections),
            memberships=sum(len(rooms) for rooms in self._rooms_of.values()),
        )


def _decrement(table: dict[K, Counter[V]], key: K, value: V) -> None:
    counter = table[key]
    counter[value] -= 1
    if counter[value] <= 0:
        del counter[value]
        if not counter:
            del table[key]
