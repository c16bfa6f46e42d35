"""Presence: who is online, with a grace period so a page reload does not flap (sans-I/O)."""

from __future__ import annotations

import heapq

import attrs

from ._types import ConnectionId, UserId

__all__ = ["PresenceChanged", "PresenceTracker"]


@attrs.frozen(kw_only=True)
class PresenceChanged:
    """A user came online or went offline.

    Attributes:
        user_id: The user.
        online: ``True`` for online, ``False`` for offline.
        at: When it happened, on the clock of the caller's ``now``. For an offline
            change this is the user's last-seen time: when its last connection closed,
            not when the grace period ran out.
    """

    user_id: UserId
    online: bool
    at: float


class PresenceTracker:
    """Tracks users' connections; online on the first, offline after the last plus a grace.

    A user is online while it has a connection, and for ``grace`` seconds after its last
    connection closed; a connection opened inside that grace period continues the same
    online spell and reports nothing. Nothing here reads a clock: every method that
    depends on time takes ``now``, and `next_deadline` tells the caller when to
    call `expire`.

    Args:
        grace: Seconds a user stays online after its last connection closed.
    """

    def __init__(self, *, grace: float) -> None:
        if grace < 0:
            raise ValueError("grace must be >= 0")
        self.grace = grace
        self._connections: dict[UserId, set[ConnectionId]] = {}
        # user -> (deadline, last seen) while inside the grace period
        self._leaving: dict[UserId, tuple[float, float]] = {}
        self._deadlines: list[tuple[float, UserId]] = []
        self._last_seen: dict[UserId, float] = {}

    def connect(self, user: UserId, connection: ConnectionId, now: float) -> PresenceChanged | None:
        """Record a new connection of ``user``.

        Returns:
            An online change if the user was offline; ``None`` if it was already
            online or inside its grace period.

        Raises:
            ValueError: If ``connection`` is already recorded.
        """
        conns = self._connections.setdefault(user, set())
        if connection in conns:
            raise ValueError(f"connection {connection!r} is already connected")
        conns.add(connection)
        if len(conns) > 1:
            return None
        if self._leaving.pop(user, None) is not None:
            return None
        return PresenceChanged(user_id=user, online=True, at=now)

    def disconnect(self, user: UserId, connection: ConnectionId, now: float) -> None:
        """Record that a connection of ``user`` closed; the last one starts the grace period.

        Raises:
            ValueError: If ``connection`` is not a connection of ``user``.
        """
        conns = self._connections.get(user)
        if conns is None or connection not in conns:
            raise ValueError(f"connection {connection!r} of {user!r} is not connected")
        conns.remove(connection)
        if conns:
            return
        del self._connections[user]
        deadline = now + self.grace
        self._leaving[user] = (deadline, now)
        heapq.heappush(self._deadlines, (deadline, user))

    def expire(self, now: float) -> list[PresenceChanged]:
        """End the grace periods that ran out by ``now``.

        Returns:
            One offline change per user whose grace period ended, oldest first.
        """
        changes: list[PresenceChanged] = []
        while self._deadlines and self._deadlines[0][0] <= now:
            deadline, user = heapq.heappop(self._deadlines)
            leaving = self._leaving.get(user)
            if leaving is None or leaving[0] != deadline:
                continue  # reconnected, or a later disconnect set a new deadline
            del self._leaving[user]
            self._last_seen[user] = leaving[1]
            changes.append(PresenceChanged(user_id=user, online=False, at=leaving[1]))
        return changes

    def next_deadline(self) -> float | None:
        """When `expire` next has something to do, or ``None``."""
        while self._deadlines:
            deadline, user = self._deadlines[0]
            leaving = self._leaving.get(user)
            if leaving is not None and leaving[0] == deadline:
                return deadline
            heapq.heappop(self._deadlines)  # stale entry
        return None

    def is_online(self, user: UserId) -> bool:
        """Tell whether ``user`` is online: connected, or inside its grace period."""
        return user in self._connections or user in self._leaving

    def is_connected(self, user: UserId) -> bool:
        """Tell whether ``user`` has a live connection (grace period not counted)."""
        return user in self._connections

    def online_users(self) -> frozenset[UserId]:
        """Every user that is online."""
        return frozenset(self._connections).union(self._leaving)

    def connection_count(self, user: UserId) -> int:
        """How many live connections ``user`` has."""
        conns = self._connections.get(user)
        return 0 if conns is None else len(conns)

    def connections(self, user: UserId) -> frozenset[ConnectionId]:
        """The live connections of ``user``."""
        return frozenset(self._connections.get(user, ()))

    def last_seen(self, user: UserId) -> float | None:
        """When ``user`` was last seen, if it went offline since this tracker started.

        ``None`` for a user that is online or was never seen.
        """
        if self.is_online(user):
            return None
        return self._last_seen.get(user)
