"""A backplane over Redis Streams, for relays in several processes (``chatrelay[redis]``).

Each topic is a Redis stream. A node appends what it publishes (``XADD``, trimmed to
about ``stream_maxlen`` entries, the key expiring ``stream_ttl`` after its last
entry) and reads every stream it subscribed to on one connection (``XREAD BLOCK``
from the last id it read). Unlike pub/sub, a stream keeps what was published while a
reader was away, so a reader that reconnects resumes where it stopped.

While Redis is unreachable, publishing does not wait and does not fail: entries wait
in a bounded buffer and are sent in order when Redis is back. Every entry carries the
publishing node's sequence number, so a reader delivers each one once even when it is
sent twice; a gap in the numbers is reported as a
`BackplaneGap`, never dropped silently. The documentation's
topic "Delivery guarantees and presence across servers" says what is promised.

``redis.asyncio`` runs on asyncio only: `RedisBackplane.start` raises
`RuntimeError` under trio.

Example::

    from chatrelay import Relay
    from chatrelay.backplanes.redis import RedisBackplane

    async with Relay(backplane=RedisBackplane("redis://127.0.0.1:6379/0")) as relay:
        ...
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Final

import anyio
import redis.asyncio as aioredis
from anyio.abc import TaskGroup
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from .._backplane import Backplane, BackplaneEvent, BackplaneStatistics
from .._config import HistorySettings
from .._exceptions import BackplaneError
from .._history import History
from .._types import NodeId
from ._inbox import Inbox
from ._outbox import Outbox
from ._redis_common import FAILURES, Delivery, Stream, display, ensure_token, resolve
from ._redis_history import RedisHistory
from ._redis_reader import Reader
from ._redis_writer import Writer

__all__ = ["RedisBackplane"]

_logger = logging.getLogger("chatrelay.redis")

_CHANNEL_SIZE: Final = 1024


class RedisBackplane(Backplane):
    """Connects relays in several processes through one Redis server (5.0 or later).

    Args:
        url: The Redis URL, such as ``"redis://127.0.0.1:6379/0"`` (``rediss://`` for
            TLS; a password goes in the URL).
        prefix: Put in front of every key, to share a Redis database between
            clusters.
        node_id: This node's id; by default a new one per process start.
        max_payload_bytes: The largest payload `publish` accepts (default 1 MiB).
        buffer_limit: Entries held while Redis is unreachable (default 10,000);
            beyond it, new entries are dropped, counted and reported to receivers.
        buffer_bytes: Payload bytes held while Redis is unreachable (default 64 MiB).
        replay_window: Seconds during which a sent entry is kept to be sent again if
            Redis restarts empty before every reader got it (default 5).
        stream_maxlen: About how many entries each stream keeps (default 10,000):
            how far a reader that was away can catch up.
        stream_ttl: Seconds a stream lives after its last entry (default 3600).
        block: Seconds one read waits for entries before it is issued again
            (default 2).
        wake_ttl: Seconds the node's one key of its own (a one-entry stream that
            wakes its reader when it subscribes) outlives its last subscription
            (default 10); a node killed with SIGKILL leaves nothing behind after it.
        max_backoff: The longest wait between two reconnection attempts (default 1 s).
        operation_timeout: Seconds an operation may take before Redis counts as
            unreachable (default 3).
        close_timeout: Seconds `aclose` waits for buffered entries to be sent
            (default 2).
        max_connections: Connections to Redis this node opens at most (default 32).
            Operations beyond wait for one to be free (up to ``operation_timeout``),
            so that a burst (hundreds of clients resuming at once after a restart)
            waits its turn instead of failing, and Redis sees a bounded number of
            clients per node.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "",
        node_id: NodeId | None = None,
        max_payload_bytes: int = 1 << 20,
        buffer_limit: int = 10_000,
        buffer_bytes: int = 64 << 20,
        replay_window: float = 5.0,
        stream_maxlen: int = 10_000,
        stream_ttl: float = 3600.0,
        block: float = 2.0,
        wake_ttl: float = 10.0,
        max_backoff: float = 1.0,
        operation_timeout: float = 3.0,
        close_timeout: float = 2.0,
        max_connections: int = 32,
    ) -> None:
        super().__init__(node_id=node_id, max_payload_bytes=max_payload_bytes)
        if min(stream_maxlen, stream_ttl, block, wake_ttl, max_backoff) <= 0:
            raise ValueError(
                "stream_maxlen, stream_ttl, block, wake_ttl and max_backoff must be > 0"
            )
        if max_connections < 2:
            raise ValueError("max_connections must be 2 or more (the reader holds one)")
        self.url = url
        self.prefix = prefix
        self.stream_maxlen = stream_maxlen
        self.stream_ttl = stream_ttl
        self.block = block
        self.wake_ttl = wake_ttl
        self.max_backoff = max_backoff
        self.operation_timeout = operation_timeout
        self.close_timeout = close_timeout
        self.max_connections = max_connections
        self._token_key = f"{prefix}chatrelay:_instance"
        self._wake = Stream(topic="", key=f"{prefix}chatrelay:_wake:{self.node_id}")
        self._outbox = Outbox(
            limit=buffer_limit, max_bytes=buffer_bytes, replay_window=replay_window
        )
        self._inbox = Inbox()
        self._streams: dict[str, Stream] = {}
        self._send, self._receive = anyio.create_memory_object_stream[BackplaneEvent | Delivery](
            _CHANNEL_SIZE
        )
        self._client: aioredis.Redis | None = None
        self._reader: Reader | None = None
        self._wake_wanted = anyio.Event()
        self._writer: Writer | None = None
        self._stack: AsyncExitStack | None = None
        self._started = False
        self._closed = False
        self._iterating = False
        self._delivered = 0

    # --- lifecycle -------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        """Whether Redis is reachable for both reading and writing."""
        reader, writer = self._reader, self._writer
        return (
            self._started
            and not self._closed
            and reader is not None
            and reader.healthy
            and writer is not None
            and writer.healthy
        )

    async def start(self) -> None:
        """Connect to Redis and start reading and writing in background tasks.

        Call `aclose` from the same task (``async with`` does).

        Raises:
            RuntimeError: If the event loop is not asyncio's (``redis.asyncio`` does
                not run on trio), or the backplane was started before.
            BackplaneError: If Redis cannot be reached now.
        """
        if self._started or self._closed:
            raise RuntimeError("a RedisBackplane can be started only once")
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            self._close_channel()
            raise RuntimeError(
                "RedisBackplane needs asyncio: redis.asyncio does not run on trio or"
                " other event loops"
            ) from None
        # Operations beyond max_connections wait for a free connection rather than
        # fail: redis-py's default pool refuses them at once (MaxConnectionsError).
        pool = aioredis.BlockingConnectionPool.from_url(
            self.url,
            max_connections=self.max_connections,
            timeout=self.operation_timeout,
            socket_connect_timeout=self.operation_timeout,
            socket_timeout=self.block + self.operation_timeout,
            # Our own loops retry, with backoff and buffering; a hidden retry inside
            # redis-py would only delay the moment we notice.
            retry=Retry(NoBackoff(), 0),
        )
        client = aioredis.Redis.from_pool(pool)  # closing the client closes the pool
        try:
            with anyio.fail_after(self.operation_timeout):
                token = await ensure_token(client, self._token_key)
        except FAILURES as exc:
            await client.aclose()
            self._close_channel()
            raise BackplaneError(f"cannot reach Redis at {display(self.url)}: {exc}") from exc
        self._client = client
        writer = self._writer = Writer(
            client,
            self._outbox,
            node_id=self.node_id,
            prefix=self.prefix,
            token_key=self._token_key,
            instance=token,
            stream_maxlen=self.stream_maxlen,
            stream_ttl=self.stream_ttl,
            max_backoff=self.max_backoff,
        )
        reader = self._reader = Reader(
            client,
            streams=self._streams,
            wake=self._wake,
            inbox=self._inbox,
            emit=self._emit,
            node_id=self.node_id,
            token_key=self._token_key,
            instance=token,
            block=self.block,
            max_backoff=self.max_backoff,
            on_new_instance=writer.check_instance,
            on_back=writer.retry_now,
        )
        async with AsyncExitStack() as stack:
            tg: TaskGroup = await stack.enter_async_context(anyio.create_task_group())
            tg.start_soon(reader.run)
            tg.start_soon(writer.run)
            tg.start_soon(self._wake_reader)
            stack.callback(tg.cancel_scope.cancel)
            self._stack = stack.pop_all()
        self._started = True
        _logger.info("node %s connected to Redis at %s", self.node_id, display(self.url))

    async def aclose(self) -> None:
        """Send what is buffered (within ``close_timeout``), disconnect; `messages` ends."""
        if self._closed:
            return
        self._closed = True
        stack, self._stack = self._stack, None
        try:
            if stack is not None:
                with anyio.CancelScope(shield=True):
                    if self._writer is not None:
                        with anyio.move_on_after(self.close_timeout):
                            await self._writer.drain()
                    if len(self._outbox):
                        _logger.warning(
                            "node %s closes with %d entries not sent",
                            self.node_id,
                            len(self._outbox),
                        )
                    await self._forget_wake_key()
                # The task group was entered in start(): leave it outside any new scope.
                await stack.aclose()
        finally:
            self._close_channel()
            if self._client is not None:
                with anyio.CancelScope(shield=True):
                    await self._client.aclose()

    def _close_channel(self) -> None:
        """End `messages`; a backplane that failed to start is closed too."""
        self._closed = True
        self._send.close()
        if not self._iterating:
            self._receive.close()  # nobody will: messages() was never iterated

    async def _forget_wake_key(self) -> None:
        if self._client is None:
            return
        # If this fails, the key expires by itself.
        with anyio.move_on_after(self.operation_timeout), contextlib.suppress(*FAILURES):
            await self._client.delete(self._wake.key)

    # --- the port ----------------------------------------------------------------------

    async def publish(self, topic: str, payload: bytes) -> None:
        """Queue ``payload`` for ``topic``; it is sent in order, soon or when Redis is back.

        Raises:
            BackplaneError: If the payload is too large or the backplane is not running.
        """
        if self._closed or self._writer is None:
            raise BackplaneError("the backplane is not running")
        if len(payload) > self.max_payload_bytes:
            raise BackplaneError(
                f"payload of {len(payload)} bytes exceeds the backplane limit of"
                f" {self.max_payload_bytes}"
            )
        if not self._outbox.add(topic, payload):
            _logger.debug("buffer full: dropped an entry for %s", topic)
        self._writer.wake()

    async def subscribe(self, topic: str) -> None:
        """Receive what is published on ``topic`` from now on.

        If Redis is unreachable, the subscription begins when it is back, and a
        `BackplaneGap` says that what was published meanwhile
        may be missing.
        """
        if self._closed or topic in self._streams:
            return
        stream = Stream(topic=topic, key=self.prefix + topic)
        self._streams[topic] = stream
        if self._client is None or self._reader is None:
            return  # not started: the reader's first pass starts it
        if not self._reader.healthy:
            stream.missed = True
            return
        try:
            with anyio.fail_after(self.operation_timeout):
                await resolve(self._client, self._token_key, [stream])
        except FAILURES:
            if stream.since is None:
                stream.missed = True
            return
        # Only now can the reader include it: have it woken up to do so. Not waited
        # for: the stream is read from where it was resolved, whenever the reader
        # gets to it, and subscriptions made meanwhile share one wake-up.
        self._wake_wanted.set()

    async def _wake_reader(self) -> None:
        """Wake the reader (blocked in XREAD) each time subscriptions were added."""
        assert self._client is not None
        while True:
            await self._wake_wanted.wait()
            self._wake_wanted = anyio.Event()
            try:
                with anyio.fail_after(self.operation_timeout):
                    pipe = self._client.pipeline(transaction=False)
                    pipe.xadd(self._wake.key, {b"w": b"1"}, maxlen=1, approximate=False)
                    pipe.pexpire(self._wake.key, max(1, int(self.wake_ttl * 1000)))
                    await pipe.execute()
            except FAILURES as exc:
                # The reader takes the new streams in at its next pass anyway (within
                # ``block`` seconds).
                _logger.debug("node %s could not wake its reader: %s", self.node_id, exc)

    async def unsubscribe(self, topic: str) -> None:
        """Stop receiving ``topic``; nothing more of it is delivered."""
        self._streams.pop(topic, None)
        self._inbox.forget(topic)

    async def messages(self) -> AsyncIterator[BackplaneEvent]:
        """Iterate over messages, gaps and health changes until the backplane closes."""
        self._iterating = True
        async with self._receive:
            async for item in self._receive:
                if isinstance(item, Delivery):
                    if self._streams.get(item.stream.topic) is not item.stream:
                        continue  # unsubscribed since it was read
                    self._delivered += 1
                    yield item.message
                else:
                    yield item

    def history(self, settings: HistorySettings) -> History:
        """The history in this Redis, which every relay with the same prefix shares.

        Each conversation's events are numbered and kept by Lua scripts on the server
        (see the topic "Missed events and recovery"). A relay asks for it when it is
        made, before the backplane starts: its operations use the connection once
        there is one, and raise `BackplaneError` before `start`, after `aclose`, and
        while Redis is unreachable: at once while the backplane knows it is down,
        else after at most ``operation_timeout`` seconds.
        """

        def client() -> aioredis.Redis:
            if self._client is None or self._closed:
                raise BackplaneError("the backplane is not running")
            return self._client

        return RedisHistory(
            settings,
            client,
            prefix=self.prefix,
            operation_timeout=self.operation_timeout,
            healthy=lambda: self.healthy,
        )

    def statistics(self) -> BackplaneStatistics:
        """Return counters of this backplane, and whether Redis is reachable now."""
        outbox = self._outbox.statistics
        reader = self._reader
        return BackplaneStatistics(
            healthy=self.healthy,
            published=outbox.published,
            delivered=self._delivered,
            buffered=len(self._outbox),
            dropped=outbox.dropped,
            lost=reader.lost if reader is not None else 0,
            duplicates=reader.duplicates if reader is not None else 0,
            reconnects=reader.reconnects if reader is not None else 0,
        )

    async def _emit(self, item: BackplaneEvent | Delivery) -> None:
        """Hand ``item`` to `messages`, waiting while its consumer catches up."""
        # If it is broken or closed, nobody iterates messages() any more.
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            await self._send.send(item)
