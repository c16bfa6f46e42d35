"""Finding a deaf backplane: a subscription that is alive but receives nothing.

A Redis client can keep a connection that looks healthy while its subscription no
longer delivers (a known failure of pub/sub clients behind proxies and failovers);
such a server keeps serving half a chat. Every node already publishes a heartbeat
on the control topic, which every node reads, itself included. `EchoProbe` watches
for the node's own heartbeats coming back: while the backplane says it is connected,
no echo for two heartbeat intervals means deaf. Sans-I/O: each call takes ``now``.
"""

from __future__ import annotations

__all__ = ["EchoProbe"]


class EchoProbe:
    """Whether a node hears its own heartbeats (see the module's docstring).

    Args:
        interval: Seconds between two heartbeats.
        misses: Intervals without an echo that make the node deaf (default 2).
    """

    def __init__(self, interval: float, *, misses: int = 2) -> None:
        self.interval = interval
        self.misses = misses
        self._heard: float | None = None  # not listening yet
        self._connected = True

    def heard(self, now: float) -> None:
        """One of the node's own messages came back (or the node starts listening)."""
        self._heard = now

    def connection(self, connected: bool, now: float) -> None:
        """The backplane lost or regained its connection (then it is down, not deaf)."""
        self._connected = connected
        if connected:
            self._heard = now  # its echo gets the whole allowance again

    def deaf(self, now: float) -> bool:
        """Whether the backplane is connected but has not echoed for too long."""
        heard = self._heard
        return heard is not None and self._connected and now - heard > self.misses * self.interval
