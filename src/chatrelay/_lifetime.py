"""When each connection's credentials expire: a warning before, a close after (sans-I/O).

A connection authenticated with credentials that expire (a JWT's ``exp``) is told
``auth:expiring`` ``warning`` seconds before, and closed with ``token_expired``
``grace`` seconds after, unless it refreshed them (``auth:refresh``), which starts
over with the new expiry. Every call takes ``now`` (the relay's clock); `expire`
returns what is due.
"""

from __future__ import annotations

import heapq
import itertools
from typing import Literal

import attrs

from ._types import ConnectionId

__all__ = ["Due", "Lifetimes"]


@attrs.frozen
class Due:
    """A connection's warning or close that is due.

    Attributes:
        connection: The connection.
        kind: ``"expiring"`` (tell it ``auth:expiring``) or ``"expired"`` (close it).
        expires_in: Seconds until its credentials expire (negative once they have).
    """

    connection: ConnectionId
    kind: Literal["expiring", "expired"]
    expires_in: float


class Lifetimes:
    """The credentials' expiry of each connection that has one.

    Args:
        warning: Seconds before the expiry that the warning is due.
        grace: Seconds after the expiry that the close is due.
    """

    def __init__(self, *, warning: float, grace: float) -> None:
        self.warning = warning
        self.grace = grace
        self._expiry: dict[ConnectionId, tuple[float, int]] = {}
        self._heap: list[tuple[float, int, ConnectionId, Literal["expiring", "expired"]]] = []
        self._generations = itertools.count()

    def __len__(self) -> int:
        return len(self._expiry)

    def track(self, connection: ConnectionId, expires_in: float | None, now: float) -> None:
        """Start (or start over) the connection's clock; ``None``: its credentials never expire."""
        if expires_in is None:
            self._expiry.pop(connection, None)
            return
        expiry = now + expires_in
        generation = next(self._generations)
        self._expiry[connection] = (expiry, generation)
        heapq.heappush(self._heap, (expiry - self.warning, generation, connection, "expiring"))
        heapq.heappush(self._heap, (expiry + self.grace, generation, connection, "expired"))

    def forget(self, connection: ConnectionId) -> None:
        """The connection closed."""
        self._expiry.pop(connection, None)

    def expires_in(self, connection: ConnectionId, now: float) -> float | None:
        """Seconds until the connection's credentials expire, if they do."""
        tracked = self._expiry.get(connection)
        return None if tracked is None else tracked[0] - now

    def next_deadline(self) -> float | None:
        """When `expire` next has something to do, if ever."""
        heap = self._heap
        while heap:
            deadline, generation, connection, _ = heap[0]
            if self._current(connection, generation):
                return deadline
            heapq.heappop(heap)  # refreshed or closed since
        return None

    def expire(self, now: float) -> list[Due]:
        """What is due by ``now``: warnings, then closes, oldest first."""
        due: list[Due] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, generation, connection, kind = heapq.heappop(heap)
            if not self._current(connection, generation):
                continue
            expiry = self._expiry[connection][0]
            due.append(Due(connection, kind, expiry - now))
            if kind == "expired":
                del self._expiry[connection]
        return due

    def _current(self, connection: ConnectionId, generation: int) -> bool:
        tracked = self._expiry.get(connection)
        return tracked is not None and tracked[1] == generation
