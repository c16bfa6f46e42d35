"""The Redis backplane's reader: one blocking read over every stream the node follows."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final, cast

import anyio
import redis.asyncio as aioredis

from .._backplane import BackplaneEvent, BackplaneGap, BackplaneHealth, BackplaneMessage
from .._types import NodeId
from ._inbox import Inbox, parse_entry_id
from ._redis_common import FAILURES, Backoff, Delivery, Stream, ensure_token, resolve

__all__ = ["Reader"]

logger = logging.getLogger("chatrelay.redis")

_READ_COUNT: Final = 512

_Reply = list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]]


class Reader:
    """Reads the streams of a node's subscriptions and hands on what to deliver.

    One ``XREAD BLOCK`` names every stream the node follows, from the last id it
    read on each, plus the node's wake-up stream (a subscription appends to it, so
    that the read starts again with the new stream). After a disconnection it checks
    where each stream stands, then resumes where it stopped.

    Args:
        client: The Redis client.
        streams: The node's subscriptions by topic (shared with the backplane).
        wake: The node's wake-up stream.
        inbox: Drops repeats and spots losses.
        emit: Hands an event or a delivery to ``messages()`` (may wait).
        node_id: This node's id, for logs.
        token_key: The key of the instance token.
        instance: The token of the instance at start.
        block: Seconds one read waits before it is issued again.
        max_backoff: The longest wait between two attempts.
        on_new_instance: Called when Redis turns out to be a new instance.
        on_back: Called when Redis is reachable again.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        streams: dict[str, Stream],
        wake: Stream,
        inbox: Inbox,
        emit: Callable[[BackplaneEvent | Delivery], Awaitable[None]],
        node_id: str,
        token_key: str,
        instance: str,
        block: float,
        max_backoff: float,
        on_new_instance: Callable[[], None],
        on_back: Callable[[], None],
    ) -> None:
        self.client = client
        self.streams = streams
        self.wake = wake
        self.inbox = inbox
        self.emit = emit
        self.node_id = node_id
        self.token_key = token_key
        self.block = block
        self.max_backoff = max_backoff
        self.on_new_instance = on_new_instance
        self.on_back = on_back
        self.healthy = True
        self.lost = 0
        self.duplicates = 0
        self.reconnects = 0
        self._instance = instance

    async def run(self) -> None:
        """Read until cancelled, reconnecting with capped backoff."""
        backoff = Backoff(self.max_backoff)
        down_since: float | None = None
        while True:
            try:
                await self._reconnect()
                if down_since is not None:
                    self.reconnects += 1
                    logger.warning(
                        "node %s reads from Redis again after %.1f s",
                        self.node_id,
                        anyio.current_time() - down_since,
                    )
                    down_since = None
                    self.healthy = True
                    self.on_back()
                    await self.emit(BackplaneHealth(healthy=True))
                backoff.reset()
                while True:
                    await self._read_once()
            except Exception as exc:
                if not isinstance(exc, FAILURES):
                    logger.exception("node %s: unexpected error reading from Redis", self.node_id)
                if down_since is None:
                    down_since = anyio.current_time()
                    logger.warning("node %s cannot read from Redis: %s", self.node_id, exc)
                    self.healthy = False
                    await self.emit(BackplaneHealth(healthy=False))
                await anyio.sleep(backoff.next())

    async def _reconnect(self) -> None:
        """Check where every stream stands after (re)connecting, and start new ones.

        A Redis that restarted without persistence is empty, and a new stream's ids
        may sort before the position a reader had on the old one (another clock):
        then everything in the stream is new to this node and it reads from the
        start. Repeats are dropped by sequence number, not by position.
        """
        token = await ensure_token(self.client, self.token_key)
        streams = [*self.streams.values(), self.wake]
        if token != self._instance:
            logger.warning("node %s: Redis is a new instance (restarted empty?)", self.node_id)
            for stream in streams:
                since = stream.since
                if since is not None and token != since.instance and token not in since.later:
                    since.later.append(token)
            self._instance = token
            self.on_new_instance()  # the writer replays what the old one may have lost
        pending = [s for s in streams if s.since is None and s is not self.wake]
        started = [s for s in streams if s.since is not None or s is self.wake]
        pipe = self.client.pipeline(transaction=False)
        for stream in started:
            pipe.xrevrange(stream.key, count=1)
        lasts = await pipe.execute()
        for stream, raw in zip(started, lasts, strict=True):
            last = raw[0][0].decode() if raw else None
            if last is None:
                stream.position = "0-0"  # gone (expired, or a new instance): all is new
            elif parse_entry_id(last) < parse_entry_id(stream.position):
                # Behind this node's position: a new instance (all is new), or the
                # same one restored from an older snapshot (resume from its end).
                stream.position = "0-0" if stream.instance != token else last
            stream.instance = token
        await self._start_pending(pending)

    async def _start_pending(self, pending: list[Stream]) -> None:
        """Start subscriptions that could not start when they were made."""
        if not pending:
            return
        await resolve(self.client, self.token_key, pending)
        for stream in pending:
            if stream.missed:
                # Subscribed while Redis was unreachable: what others published on the
                # topic meanwhile may have been flushed before this point.
                stream.missed = False
                self.lost += 1
                await self.emit(BackplaneGap(topic=stream.topic))

    async def _read_once(self) -> None:
        await self._start_pending([s for s in self.streams.values() if s.since is None])
        wanted = [s for s in self.streams.values() if s.since is not None]
        request: dict[Any, Any] = {s.key: s.position for s in wanted}
        request[self.wake.key] = self.wake.position
        reply = cast(
            "_Reply | None",
            await self.client.xread(request, count=_READ_COUNT, block=int(self.block * 1000)),
        )
        if not reply:
            return
        by_key = {s.key: s for s in wanted}
        entries: list[tuple[tuple[int, int], str, Stream, dict[bytes, bytes]]] = []
        for raw_key, items in reply:
            key = raw_key.decode()
            if key == self.wake.key:
                self.wake.position = items[-1][0].decode()
                continue
            stream = by_key.get(key)
            if stream is None:
                continue
            for raw_id, fields in items:
                entry_id = raw_id.decode()
                entries.append((parse_entry_id(entry_id), entry_id, stream, fields))
        # One Redis numbers every stream with one clock: sorting by id restores the
        # order in which entries of different streams were appended.
        entries.sort(key=lambda entry: entry[0])
        for _, entry_id, stream, fields in entries:
            if self.streams.get(stream.topic) is stream:
                stream.position = entry_id
                await self._accept(stream, entry_id, fields)

    async def _accept(self, stream: Stream, entry_id: str, fields: dict[bytes, bytes]) -> None:
        assert stream.since is not None
        try:
            accepted = self.inbox.accept(stream.topic, fields, stream.since)
        except ValueError:
            logger.warning("ignoring a foreign entry %s in %s", entry_id, stream.key)
            return
        if accepted.duplicate:
            self.duplicates += 1
            return
        if accepted.lost:
            self.lost += accepted.lost
            logger.warning(
                "%d entries from %s on %s were lost", accepted.lost, accepted.node, stream.topic
            )
            await self.emit(
                BackplaneGap(topic=stream.topic, node=NodeId(accepted.node), lost=accepted.lost)
            )
        if accepted.payload is not None:
            message = BackplaneMessage(topic=stream.topic, payload=accepted.payload)
            await self.emit(Delivery(stream, message))
