"""Numbering room events in a shared history, many per round trip.

With a history in another process (Redis), numbering a room event costs a round
trip. An emitter that waited for it before anything was sent would pay that for
every event, and a burst of emits would queue one round trip behind the other.
Instead the relay hands its room events to a `Recorder`: one task numbers
everything handed to it meanwhile in one batch (`History.append_many`), then sends
each event, in the order they were emitted. Emitting returns once the event is
queued; the emitter waits only while the queue is full (backpressure).

A relay whose history is in its own process (`History.local`) numbers each event
on the spot instead, and needs no recorder.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

import anyio
import anyio.lowlevel
import attrs

from ._exceptions import BackplaneError
from ._history import History
from ._outbound import Outbound
from ._types import ConnectionId, ConversationId
from .events import Position

__all__ = ["Recorder", "Recording"]

logger = logging.getLogger("chatrelay")

QUEUE_LIMIT: Final = 4096
"""Room events queued at most; an emitter waits beyond."""
BATCH: Final = 256
"""Room events numbered in one round trip at most."""


@attrs.define(slots=True, eq=False)
class Recording:
    """A room event waiting for its number, and what goes with it.

    Attributes:
        conversation: Its room.
        item: The event, stamped in place once numbered.
        exclude: The connection not to send it to.
        payload: Its backplane payload (a shared backplane), made again once stamped.
        then: Called after it was sent, if anything has to follow it (say, the end
            of the sender's typing that a message ends).
    """

    conversation: ConversationId
    item: Outbound
    exclude: ConnectionId | None
    payload: bytes | None
    then: Callable[[], Awaitable[None]] | None = None


class Recorder:
    """Numbers room events in batches, then sends each (see the module's docstring).

    Args:
        history: Where events are numbered and kept.
        send: Sends one event with its position, or ``None`` if it could not be
            recorded (it goes out without one).
        limit: Events queued at most.
        batch: Events numbered in one call at most.
    """

    def __init__(
        self,
        history: History,
        send: Callable[[Recording, Position | None], Awaitable[None]],
        *,
        limit: int = QUEUE_LIMIT,
        batch: int = BATCH,
    ) -> None:
        self._history = history
        self._send = send
        self._limit = limit
        self._batch = batch
        self._queue: deque[Recording] = deque()
        self._busy = 0  # events taken from the queue, not sent yet
        self._queued = anyio.Event()
        self._space = anyio.Event()
        self._idle = anyio.Event()
        self._idle.set()

    def __len__(self) -> int:
        """Events queued or being numbered and sent."""
        return len(self._queue) + self._busy

    async def record(self, recording: Recording) -> None:
        """Queue a room event; wait first while the queue is full."""
        while len(self._queue) >= self._limit:
            if self._space.is_set():
                self._space = anyio.Event()
            await self._space.wait()
        self._queue.append(recording)
        if self._idle.is_set():
            self._idle = anyio.Event()
        self._queued.set()

    async def flush(self) -> None:
        """Return once every event queued so far was sent."""
        await self._idle.wait()

    async def run(self) -> None:
        """Number and send what is queued, batch after batch, until cancelled."""
        queue = self._queue
        while True:
            # Cancelled between batches only (a closing relay flushes first, bounded).
            await anyio.lowlevel.checkpoint()
            if not queue:
                self._idle.set()
                self._queued = anyio.Event()
                await self._queued.wait()
                continue
            batch = [queue.popleft() for _ in range(min(len(queue), self._batch))]
            self._busy = len(batch)
            self._space.set()
            # Once taken, a batch is sent whole, even while the relay is closing: no
            # node waits for a number that never comes.
            with anyio.CancelScope(shield=True):
                positions = await self._number(batch)
                for recording, position in zip(batch, positions, strict=True):
                    try:
                        await self._send(recording, position)
                    except Exception:
                        logger.exception(
                            "sending %s to %r failed",
                            recording.item.event,
                            recording.conversation,
                        )
                    self._busy -= 1

    async def _number(self, batch: Sequence[Recording]) -> list[Position | None]:
        entries = [(r.conversation, r.item.event, r.item.json) for r in batch]
        try:
            results = await self._history.append_many(entries)
        except Exception:
            logger.exception("numbering %d room events failed", len(entries))
            return [None] * len(batch)
        out: list[Position | None] = []
        for recording, result in zip(batch, results, strict=True):
            if isinstance(result, BackplaneError):
                logger.warning(
                    "%s of %r sent without a position: %s",
                    recording.item.event,
                    recording.conversation,
                    result,
                )
                out.append(None)
            else:
                out.append(result)
        return out
