"""Bounded waits for state that no event announces (another node's view, a counter)."""

from __future__ import annotations

from collections.abc import Callable

import anyio


async def eventually(predicate: Callable[[], bool], *, within: float = 5.0) -> None:
    """Wait until ``predicate()`` holds, checking every 10 ms; fail after ``within`` s."""
    with anyio.fail_after(within):
        # Polling, with a bound: nothing signals a change of what is polled here.
        while not predicate():  # noqa: ASYNC110
            await anyio.sleep(0.01)
