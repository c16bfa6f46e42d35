"""Per-connection rate limiting and the per-user connection cap (sans-I/O)."""

from __future__ import annotations

from ._exceptions import TooManyConnections
from ._types import UserId

__all__ = ["TokenBucket", "check_connection_cap"]


def check_connection_cap(user: UserId, connections: int, limit: int | None) -> None:
    """Admit a new connection of ``user``, who holds ``connections`` already, or refuse it.

    Raises:
        TooManyConnections: If ``limit`` is not ``None`` and ``connections`` reached it.
    """
    if limit is not None and connections >= limit:
        raise TooManyConnections(
            f"too many connections: {user!r} already has {connections} on this server"
            f" (the limit is {limit}); close one, such as an unused tab, and retry"
        )


class TokenBucket:
    """A token bucket: ``rate`` tokens a second, holding at most ``burst``.

    Args:
        rate: Tokens added per second.
        burst: The most tokens the bucket holds; also how many it starts with.
        now: The time the bucket starts at.
    """

    __slots__ = ("_stamp", "_tokens", "burst", "rate")

    def __init__(self, *, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._stamp = now

    def take(self, now: float, tokens: float = 1.0) -> bool:
        """Take ``tokens`` if the bucket has them at ``now``.

        Returns:
            ``True`` if they were taken; ``False`` if the caller is over its rate.
        """
        elapsed = max(0.0, now - self._stamp)
        self._stamp = max(self._stamp, now)
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
        if self._tokens >= tokens:
            self._tokens -= tokens
            return True
        return False
