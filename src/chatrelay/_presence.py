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

    It remembers when users went offline (`last_seen`) for a bounded time and number
    of users, so that a server that sees a million distinct users in a month does not
    keep a million entries: a user offline for longer than ``last_seen_ttl``, or pushed
    out by ``last_seen_limit`` users who went offline after it, is forgotten, and
    `last_seen` answers ``None`` for it as for a user never seen. (The ``lastSeen``
    of a ``user:offline`` event does not depend on it: it is the time of the
    disconnect itself.)

    Args:
        grace: Seconds a user stays online after its last connection closed.
        last_seen_ttl: Seconds a user's last-seen time is remembered after it went
            offline (default one hour).
        last_seen_limit: The most users whose last-seen time is remembered; past it
            the one offline the longest is forgotten first (default 10,000).
    """

    def __init__(
        self, *, grace: float, last_seen_ttl: float = 3600.0, last_seen_limit: int = 10_000
    ) -> None:
        if grace < 0:
            raise ValueError("grace must be >= 0")
        if last_seen_ttl < 0 or last_seen_limit < 0:
            raise ValueError("last_seen_ttl and last_seen_limit must be >= 0")
        self.grace = grace
        self.last_seen_ttl = last_seen_ttl
        self.last_seen_limit = last_seen_limit
        self._connections: dict[UserId, set[ConnectionId]] = {}
        # user -> (deadline, last seen) while inside the grace period
        self._leaving: dict[UserId, tuple[float, float]] = {}
        self._deadlines: list[tuple[float, UserId]] = []
        # user -> when it went offline, oldest first (users go offline in time order)
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
            self._last_seen.pop(user, None)  # to the end: the newest
            self._last_seen[user] = leaving[1]
            changes.append(PresenceChanged(user_id=user, online=False, at=leaving[1]))
        if changes:
            self._forget(now)
        return changes

    def _forget(self, now: float) -> None:
        """Forget the last-seen times beyond the bounds, oldest first."""
        seen = self._last_seen
        while len(seen) > self.last_seen_limit:
            del seen[next(iter(seen))]
        horizon = now - self.last_seen_ttl
        while seen:
            oldest = next(iter(seen))
            if seen[oldest] >= horizon:
                break
            del seen[oldest]

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

        ``None`` for a user that is online, was never seen, or was forgotten (see the
        class: offline for longer than ``last_seen_ttl`` when `expire` last ran, or
        one of more than ``last_seen_limit`` users).
        """
        if self.is_online(user):
            return None
        return self._last_seen.get(user)
