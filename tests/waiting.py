"""The one bounded wait, for state that no event announces (another node's view, a counter)."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import anyio.lowlevel

YIELDS = 100
"""How many times the wait only yields before it starts to sleep between checks."""


async def eventually(predicate: Callable[[], bool], *, within: float = 5.0) -> None:
    """Wait until ``predicate()`` holds; fail after ``within`` seconds.

    State changed in this process (another relay's view after a backplane message)
    usually holds after a few turns of the event loop, so the first checks only yield
    and see it at once. After that the wait checks every 10 ms, for state that another
    process or a socket changes, without keeping a core busy.
    """
    with anyio.fail_after(within):
        for _ in range(YIELDS):
            if predicate():
                return
            await anyio.lowlevel.checkpoint()
        # Polling, with a bound: nothing signals a change of what is polled here.
        while not predicate():  # noqa: ASYNC110
            await anyio.sleep(0.01)
