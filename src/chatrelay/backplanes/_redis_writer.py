"""The Redis backplane's writer: sends the outbox in order, through outages and restarts."""

from __future__ import annotations

import logging
from typing import Final

import anyio
import redis.asyncio as aioredis
from redis.exceptions import OutOfMemoryError, ReadOnlyError, ResponseError

from ._outbox import Outbox
from ._redis_common import FAILURES, Backoff, ensure_token

__all__ = ["Writer"]

logger = logging.getLogger("chatrelay.redis")

# Appends a batch of entries only if the server is still the instance the writer
# knows (its token key holds the expected value); otherwise returns nil, and the
# writer finds out that Redis restarted before anything reached the new instance.
# KEYS: token key, then the streams. ARGV: token, maxlen, ttl (ms), entry count, then
# per entry: index of its stream in KEYS, number of field arguments, the fields.
_APPEND: Final = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return false end
local maxlen, ttl, i = ARGV[2], ARGV[3], 5
local ids = {}
for e = 1, tonumber(ARGV[4]) do
  local key = KEYS[tonumber(ARGV[i])]
  local n = tonumber(ARGV[i + 1])
  ids[e] = redis.call('XADD', key, 'MAXLEN', '~', maxlen, '*', unpack(ARGV, i + 2, i + 1 + n))
  i = i + 2 + n
end
for k = 2, #KEYS do redis.call('PEXPIRE', KEYS[k], ttl) end
return ids
"""

_BATCH_ENTRIES: Final = 256
_BATCH_BYTES: Final = 4 << 20
_TRANSIENT_REPLIES: Final = frozenset(
    {"BUSY", "LOADING", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "NOREPLICAS"}
)


class Writer:
    """Sends what an `Outbox` holds, oldest first.

    While Redis is unreachable it keeps the entries and retries with capped backoff.
    When the instance it wrote to is gone (restarted empty: its token changed), it
    first sends again what that instance took recently, then the rest.

    Args:
        client: The Redis client.
        outbox: What to send.
        node_id: This node's id, written in every entry.
        prefix: Put in front of every stream key.
        token_key: The key of the instance token.
        instance: The token of the instance at start.
        stream_maxlen: About how many entries each stream keeps.
        stream_ttl: Seconds a stream lives after its last entry.
        max_backoff: The longest wait between two attempts.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        outbox: Outbox,
        *,
        node_id: str,
        prefix: str,
        token_key: str,
        instance: str,
        stream_maxlen: int,
        stream_ttl: float,
        max_backoff: float,
    ) -> None:
        self.client = client
        self.outbox = outbox
        self.node_id = node_id
        self.prefix = prefix
        self.token_key = token_key
        self.stream_maxlen = stream_maxlen
        self.stream_ttl = stream_ttl
        self.max_backoff = max_backoff
        self.healthy = True
        self._instance = instance
        self._check_instance = False
        self._append = client.register_script(_APPEND)
        self._wakeup = anyio.Event()
        self._idle = anyio.Event()
        self._retry_now = anyio.Event()

    def wake(self) -> None:
        """Something was queued: send it."""
        if self._idle.is_set():
            self._idle = anyio.Event()
        self._wakeup.set()

    def check_instance(self) -> None:
        """Redis may be a new instance: check before sending anything more."""
        self._check_instance = True
        self._wakeup.set()

    def retry_now(self) -> None:
        """Redis is reachable again: stop waiting between attempts."""
        self._retry_now.set()

    async def drain(self) -> None:
        """Return once the outbox is empty, or as soon as Redis is unreachable."""
        while len(self.outbox) and self.healthy:
            await self._idle.wait()

    async def run(self) -> None:
        """Send entries as they are queued, until cancelled."""
        backoff = Backoff(self.max_backoff)
        down_since: float | None = None
        while True:
            if not len(self.outbox) and not self._check_instance:
                self._idle.set()
                self._wakeup = anyio.Event()
                await self._wakeup.wait()
                continue
            try:
                await self._write_once()
            except Exception as exc:
                if isinstance(exc, ResponseError) and not _transient(exc):
                    self._refused(exc)
                    continue
                if not isinstance(exc, FAILURES):
                    logger.exception("node %s: unexpected error writing to Redis", self.node_id)
                self._check_instance = True
                if down_since is None:
                    down_since = anyio.current_time()
                    self.healthy = False
                    logger.warning(
                        "node %s cannot write to Redis (%s); buffering up to %d entries",
                        self.node_id,
                        exc,
                        self.outbox.limit,
                    )
                self._retry_now = anyio.Event()
                with anyio.move_on_after(backoff.next()):
                    await self._retry_now.wait()
            else:
                if down_since is not None:
                    logger.warning(
                        "node %s writes to Redis again after %.1f s",
                        self.node_id,
                        anyio.current_time() - down_since,
                    )
                    down_since = None
                    self.healthy = True
                backoff.reset()

    async def _write_once(self) -> None:
        if self._check_instance:
            current = await ensure_token(self.client, self.token_key)
            if current != self._instance:
                count = self.outbox.restarted(self._instance, anyio.current_time())
                logger.warning("Redis restarted: sending %d recent entries again", count)
            self._instance = current
            self._check_instance = False
        batch = self.outbox.batch(_BATCH_ENTRIES, _BATCH_BYTES)
        if not batch:
            return
        keys: dict[str, int] = {self.token_key: 1}
        args: list[bytes | str | int] = [
            self._instance,
            self.stream_maxlen,
            int(self.stream_ttl * 1000),
            len(batch),
        ]
        for entry in batch:
            index = keys.setdefault(self.prefix + entry.topic, len(keys) + 1)
            fields = entry.fields(self.node_id)
            args += [index, len(fields), *fields]
        ids = await self._append(keys=list(keys), args=args)
        if ids is None:
            self._check_instance = True  # a new instance: replay first, then send
            return
        self.outbox.sent(
            len(batch),
            instance=self._instance,
            entry_ids=[bytes(i).decode() for i in ids],
            now=anyio.current_time(),
        )

    def _refused(self, exc: ResponseError) -> None:
        """Redis refused a batch for good (say, a key of another type): drop its head.

        The rest is sent again; receivers learn of the dropped entry from the gap in
        sequence numbers.
        """
        batch = self.outbox.batch(1, _BATCH_BYTES)
        topic = batch[0].topic if batch else "?"
        logger.error("Redis refused an entry for %s (%s); dropping it", topic, exc)
        self.outbox.drop_front(1)


def _transient(exc: ResponseError) -> bool:
    """Whether Redis refused for now (out of memory, loading, a replica), not for good."""
    if isinstance(exc, OutOfMemoryError | ReadOnlyError):
        return True
    return str(exc).split(" ", 1)[0] in _TRANSIENT_REPLIES
