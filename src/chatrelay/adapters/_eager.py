"""Eager sends: start an asyncio send in the caller's task, finish it in another if it waits.

The adapters' direct paths send a broadcast's event to each recipient from the
relay's fan-out, as sequential ``send`` calls would, with no task woken per
recipient. A send usually completes at once (the server buffers the frame); one that
has to wait for its client is handed to a task, which `finish` drives to its end.
This is what asyncio's eager tasks do, without a task object per send.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Generator
from typing import Any, TypeAlias

__all__ = ["Started", "finish", "start"]

Started: TypeAlias = tuple[Generator[Any, None, object], object]
"""A send that had to wait: its ``__await__()`` iterator and what it yielded."""


def start(send: Awaitable[object]) -> Started | None:
    """Run ``send`` until it completes or has to wait.

    Returns:
        ``None`` if it completed; otherwise what `finish` needs to complete it.

    Raises:
        Exception: Whatever the send raised before it had to wait (the client is gone).
    """
    steps = send.__await__()
    try:
        waiting_on = steps.send(None)
    except StopIteration:
        return None
    except BaseException:
        steps.close()
        raise
    return steps, waiting_on


async def finish(started: Started) -> None:
    """Drive, in this task, a send that `start` began, until it returns.

    ``waiting_on`` is what it yielded: the future it waits for (``None`` for a bare
    yield). This does for it what an asyncio task does: wait until the future is
    done, then resume the send, which reads the future's result (or error) itself.

    Raises:
        Exception: Whatever the send raised (the client is gone).
    """
    steps, waiting_on = started
    try:
        while True:
            if waiting_on is None:
                await asyncio.sleep(0)
            elif asyncio.isfuture(waiting_on):
                await asyncio.wait([waiting_on])
            else:
                raise RuntimeError(f"a send yielded {waiting_on!r}, not an asyncio future")
            waiting_on = steps.send(None)
    except StopIteration:
        return
    finally:
        steps.close()  # a no-op once it returned; otherwise it is abandoned
