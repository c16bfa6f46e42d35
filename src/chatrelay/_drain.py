"""Draining a relay before it goes away: its connections told, then closed, spread out.

A server that restarts on purpose (SIGTERM in a rolling deploy) should not drop every
client at once: they would all come back at once, to the other servers. `drain`
tells each connection ``server:draining {reconnectAfterMs}`` with a slot of its own
in the window, then closes the connections slot by slot, in batches: so they
reconnect spread over the window. Meanwhile the relay refuses new connections
(`Relay.draining`), and holds back ``user:offline`` for the users it closes for
the window on top of the presence grace, so that those who come back elsewhere
within it never appear to leave.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

import anyio

from . import codec
from ._connection import Connection
from ._exceptions import CloseReason
from ._outbound import Outbound
from .events import ServerDraining

__all__ = ["drain", "slots"]

# Connections whose slots fall within this many seconds are closed together.
_TICK: Final = 0.05


def slots(count: int, window: float, start: float) -> list[float]:
    """When each of ``count`` connections closes: at the ends of ``count`` equal slots.

    The first closes one slot after ``start`` (time for every connection to write its
    ``server:draining``), the last at the window's end.
    """
    return [start + window * (i + 1) / count for i in range(count)]


async def drain(
    connections: Sequence[Connection],
    *,
    window: float,
    reason: CloseReason | str,
    clock: Callable[[], float],
) -> None:
    """Tell each connection its slot, then close them slot by slot (in batches)."""
    start = clock()
    due = slots(len(connections), window, start)
    for conn, at in zip(connections, due, strict=True):
        event = ServerDraining(reconnect_after_ms=round((at - start) * 1000))
        conn._push(Outbound(codec.event_name(event), codec.encode(event)))
    i = 0
    while i < len(connections):
        delay = due[i] - clock()
        if delay > 0:
            await anyio.sleep(delay)
        now = clock()
        while i < len(connections) and due[i] <= now + _TICK:
            connections[i].close(reason)
            i += 1
