"""Each conversation's recent room events in Redis, numbered for every relay at once.

Every operation is one Lua script, so that numbering, recording, trimming and expiry
happen atomically on the server, whichever node calls it. See `RedisHistory`.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Sequence
from typing import Any, Final

import anyio
import attrs
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from .._config import HistorySettings
from .._exceptions import BackplaneError
from .._history import History, HistoryEntry, HistoryRead, Unrecoverable
from .._types import ConversationId
from ..events import Position
from ._redis_common import FAILURES

__all__ = ["RedisHistory"]

_EPOCH_CHANGED: Final = Unrecoverable("epoch_changed")
_TRIMMED: Final = Unrecoverable("trimmed")
_SEPARATOR: Final = "\x1e"
_REASONS: Final = {r: r for r in (_EPOCH_CHANGED, Unrecoverable("too_many"), _TRIMMED)}

# KEYS: meta (a hash: epoch, offset, bytes), log (a stream: one entry per event, its id
# "<offset>-0", its fields e = event name, j = payload). ARGV[1]: an epoch to start if
# there is none; ARGV[2]: the TTL in ms; ARGV[3]: "1" to forget the history first.
_PRELUDE: Final = """
local meta, log = KEYS[1], KEYS[2]
if ARGV[3] == '1' then
  redis.call('DEL', meta, log)
end
local epoch = redis.call('HGET', meta, 'epoch')
local created = false
if not epoch then
  -- Never recorded, expired, flushed or forgotten: a new epoch, and no old entries.
  redis.call('DEL', log)
  epoch = ARGV[1]
  redis.call('HSET', meta, 'epoch', epoch, 'offset', 0, 'bytes', 0)
  created = true
end
local offset = tonumber(redis.call('HGET', meta, 'offset'))
"""

# The TTL runs from the last event: only a history made here gets one.
_POSITION: Final = """
if created then redis.call('PEXPIRE', meta, ARGV[2]) end
return {offset, epoch}
"""

# ARGV[4]: entries kept; ARGV[5]: payload bytes kept; ARGV[6]: how many events;
# ARGV[7]: the name and payload of each, each followed by \x1e (no JSON text holds
# that character raw, and names are ours): one argument, which the client packs
# without copying, where two per event would cost it a copy of its buffer each.
# They get consecutive offsets; returns the first one.
_APPEND: Final = """
if redis.call('EXISTS', log) == 0 then redis.call('HSET', meta, 'bytes', 0) end
local first, added, packed, at = offset + 1, 0, ARGV[7], 1
for _ = 1, tonumber(ARGV[6]) do
  local name_end = string.find(packed, '\\30', at, true)
  local json_end = string.find(packed, '\\30', name_end + 1, true)
  local name = string.sub(packed, at, name_end - 1)
  local json = string.sub(packed, name_end + 1, json_end - 1)
  offset = offset + 1
  added = added + string.len(json)
  redis.call('XADD', log, string.format('%d-0', offset), 'e', name, 'j', json)
  at = json_end + 1
end
redis.call('HSET', meta, 'offset', offset)
local bytes = redis.call('HINCRBY', meta, 'bytes', added)
local size, max_bytes = tonumber(ARGV[4]), tonumber(ARGV[5])
local length = redis.call('XLEN', log)
local drop, start = 0, '-'
while length - drop > 0 and (length - drop > size or bytes > max_bytes) do
  local batch = redis.call('XRANGE', log, start, '+', 'COUNT', math.max(length - drop - size, 8))
  if #batch == 0 then break end
  for _, entry in ipairs(batch) do
    if length - drop == 0 or (length - drop <= size and bytes <= max_bytes) then break end
    bytes = bytes - string.len(entry[2][4])
    drop = drop + 1
    start = string.format('%d', tonumber(string.match(entry[1], '^%d+')) + 1)
  end
end
if drop > 0 then
  redis.call('XTRIM', log, 'MAXLEN', length - drop)
  redis.call('HSET', meta, 'bytes', bytes)
end
redis.call('PEXPIRE', meta, ARGV[2])
redis.call('PEXPIRE', log, ARGV[2])
return {first, epoch}
"""

# ARGV[4]: the epoch asked for; ARGV[5]: the offset after which; ARGV[6]: the limit.
# The entries come back packed into one string, name and payload of each in turn,
# separated by \x1e (no JSON text holds that character raw, and names are ours): one
# reply element instead of six per entry, which the client would parse one by one.
_READ: Final = """
if created then redis.call('PEXPIRE', meta, ARGV[2]) end
local after, limit = tonumber(ARGV[5]), tonumber(ARGV[6])
local missed = offset - after
if epoch ~= ARGV[4] or missed < 0 then return {offset, epoch, 'epoch_changed'} end
if missed > limit then return {offset, epoch, 'too_many'} end
if missed == 0 then return {offset, epoch, '', '', 0, ''} end
local first = redis.call('XRANGE', log, '-', '+', 'COUNT', 1)
if #first == 0 or tonumber(string.match(first[1][1], '^%d+')) > after + 1 then
  return {offset, epoch, 'trimmed'}
end
local entries = redis.call('XRANGE', log, string.format('%d', after + 1), '+', 'COUNT', missed)
local parts = {}
for i, entry in ipairs(entries) do
  parts[2 * i - 1] = entry[2][2]
  parts[2 * i] = entry[2][4]
end
local start = entries[1] and entries[1][1] or ''
return {offset, epoch, '', start, #entries, table.concat(parts, '\\30')}
"""


@attrs.frozen
class _Script:
    text: str
    sha: str

    @classmethod
    def of(cls, body: str) -> _Script:
        text = _PRELUDE + body
        return cls(text, hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest())

    async def __call__(
        self, client: aioredis.Redis, keys: Sequence[str], args: Sequence[Any]
    ) -> Any:
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:  # not loaded yet, or the server's script cache was flushed
            return await client.eval(self.text, len(keys), *keys, *args)


_SCRIPTS: Final = {
    "position": _Script.of(_POSITION),
    "append": _Script.of(_APPEND),
    "read": _Script.of(_READ),
}


class RedisHistory(History):
    """The history that every relay on one Redis shares (`RedisBackplane.history`).

    A conversation has two keys that share one hash tag (its id in braces), so that
    a Redis Cluster keeps them on one slot: ``{prefix}chatrelay:history:{<id>}:meta``,
    a hash of the epoch, the last offset and the payload bytes kept, and ``...:log``,
    a stream whose entry ids are the offsets (``<offset>-0``). Each operation is one
    Lua script, so offsets grow by exactly 1 per event across every node, and a
    history that is missing (never used, expired, flushed) starts a new epoch at
    offset 0 inside the same script: old entries never mix with new offsets.

    Bounds: at most ``settings.size`` entries and ``settings.max_bytes`` bytes of
    payload (UTF-8) are kept per conversation, both exactly, the oldest going first
    (Redis's own overhead per entry, some tens of bytes, is not counted). Both keys
    expire ``settings.ttl`` after the last event; reading a position does not extend
    it.

    Outages: if recording an event fails (Redis unreachable, a timeout), the event
    goes out without a position and is missing from the history, or, after a timeout,
    may be in it after all. This history remembers the conversation, and its next
    operation that reaches Redis first deletes the conversation's keys, in the same
    script: the epoch changes, and a client resuming across the failure gets
    ``recovered: false`` rather than a replay with a hole. What is remembered lives
    in this process (one entry per conversation whose recording failed, until its
    next operation): another node may still replay across the hole until this one
    touches the conversation again, and a process that restarts meanwhile forgets.

    Args:
        settings: Sizes and times.
        client: Returns the Redis client; called for each operation, so the history
            can be made before its backplane connects. Raises `BackplaneError` when
            there is none.
        prefix: Put in front of every key (the backplane's).
        operation_timeout: Seconds an operation may take before it fails.
        healthy: Whether Redis is known to be reachable (the backplane's view); while
            it is not, operations fail at once instead of waiting
            ``operation_timeout``, so that emitting never stalls on a dead Redis (an
            append that fails so is remembered like any failed append).
    """

    def __init__(
        self,
        settings: HistorySettings,
        client: Callable[[], aioredis.Redis],
        *,
        prefix: str = "",
        operation_timeout: float = 3.0,
        healthy: Callable[[], bool] | None = None,
    ) -> None:
        self.settings = settings
        self.prefix = prefix
        self.operation_timeout = operation_timeout
        self._client = client
        self._healthy = healthy
        self._ttl_ms = max(1, round(settings.ttl * 1000))
        # Conversations whose recording failed -> the number of that failure.
        self._failed: dict[ConversationId, int] = {}
        self._failures = 0

    def keys(self, conversation: ConversationId) -> tuple[str, str]:
        """The conversation's two keys: its meta hash and its log stream.

        Both carry the same hash tag whatever the id holds; only an empty id leaves the
        tag empty, which a Redis Cluster would hash as the whole name.
        """
        base = f"{self.prefix}chatrelay:history:{{{conversation}}}"
        return f"{base}:meta", f"{base}:log"

    async def position(self, conversation: ConversationId) -> Position:
        """The conversation's current position, starting its epoch if it has none.

        Raises:
            BackplaneError: If Redis cannot be reached or does not answer in time.
        """
        reply = await self._run("read the position of", "position", conversation)
        return _position(reply)

    async def append(self, conversation: ConversationId, event: str, json: str) -> Position:
        """Record an event (its payload without position) and return its position.

        Raises:
            BackplaneError: If it could not be recorded; the conversation's history is
                then forgotten at its next operation (see the class).
        """
        settings = self.settings
        try:
            reply = await self._run(
                "record an event of",
                "append",
                conversation,
                settings.size,
                settings.max_bytes,
                1,
                f"{event}{_SEPARATOR}{json}{_SEPARATOR}",
            )
        except BackplaneError:
            self._failures += 1
            self._failed[conversation] = self._failures
            raise
        return _position(reply)

    async def append_many(
        self, entries: Sequence[tuple[ConversationId, str, str]]
    ) -> list[Position | BackplaneError]:
        """Record several events in one round trip.

        The events of each conversation go to one script run (consecutive offsets,
        in the order given), the runs of all conversations in one pipeline, so that
        a Redis Cluster can run each on the node that holds its conversation. If
        the round trip fails, none counts as recorded (see the class on outages).
        """
        if not entries:
            return []
        groups: dict[ConversationId, list[int]] = {}
        for index, (conversation, _, _) in enumerate(entries):
            groups.setdefault(conversation, []).append(index)
        replies: list[Any]
        try:
            client = self._client()
            if self._healthy is not None and not self._healthy():
                raise BackplaneError("cannot record events: Redis is unreachable")  # noqa: TRY301
            with anyio.fail_after(self.operation_timeout):
                replies = await self._append_groups(client, entries, list(groups.items()))
        except BackplaneError as exc:
            replies = [exc] * len(groups)
        except FAILURES as exc:
            cause = str(exc) or type(exc).__name__
            failure = BackplaneError(f"cannot record {len(entries)} events in Redis: {cause}")
            replies = [failure] * len(groups)
        out: dict[int, Position | BackplaneError] = {}
        for (conversation, indexes), reply in zip(groups.items(), replies, strict=True):
            if isinstance(reply, Exception):
                self._failures += 1
                self._failed[conversation] = self._failures
                if not isinstance(reply, BackplaneError):
                    reply = BackplaneError(f"cannot record an event of {conversation!r}: {reply}")
                out.update((index, reply) for index in indexes)
            else:
                first = _position(reply)
                out.update(
                    (index, Position(first.offset + n, first.epoch))
                    for n, index in enumerate(indexes)
                )
        return [out[index] for index in range(len(entries))]

    async def _append_groups(
        self,
        client: aioredis.Redis,
        entries: Sequence[tuple[ConversationId, str, str]],
        groups: list[tuple[ConversationId, list[int]]],
    ) -> list[Any]:
        """One pipeline: the append script once per conversation, with all its events."""
        script, settings = _SCRIPTS["append"], self.settings
        failed = self._failed
        before = {c: n for c, _ in groups if (n := failed.get(c)) is not None}
        pipe = client.pipeline(transaction=False)
        for conversation, indexes in groups:
            forget = 1 if conversation in before else 0
            args: list[Any] = [
                secrets.token_hex(6),
                self._ttl_ms,
                forget,
                settings.size,
                settings.max_bytes,
                len(indexes),
                "".join(f"{entries[i][1]}{_SEPARATOR}{entries[i][2]}{_SEPARATOR}" for i in indexes),
            ]
            pipe.evalsha(script.sha, 2, *self.keys(conversation), *args)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        unknown = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
        if unknown:
            # A Redis without the script (restarted, or its cache flushed): from the
            # first that failed, Redis ran none of them. Load it, then send those again.
            await client.script_load(script.text)
            first = unknown[0]
            replies[first:] = await self._append_groups(client, entries, groups[first:])
        for (conversation, _), reply in zip(groups, replies, strict=True):
            number = before.get(conversation)
            # Forgotten now, unless recording failed again meanwhile.
            if (
                number is not None
                and not isinstance(reply, Exception)
                and failed.get(conversation) == number
            ):
                del failed[conversation]
        return replies

    async def read(self, conversation: ConversationId, after: Position, limit: int) -> HistoryRead:
        """The events after ``after``: all of them, or why not (at most ``limit``).

        Raises:
            BackplaneError: If Redis cannot be reached or does not answer in time.
        """
        reply = await self._run(
            "read the history of", "read", conversation, after.epoch, after.offset, limit
        )
        current = _position(reply)
        reason = reply[2].decode()
        if reason:
            return HistoryRead(current, _REASONS[Unrecoverable(reason)])
        entries = _entries(after.offset, reply[3], int(reply[4]), reply[5])
        if entries is None or len(entries) != current.offset - after.offset:
            return HistoryRead(current, _TRIMMED)  # never a replay with a hole
        return HistoryRead(current, entries)

    async def _run(self, doing: str, name: str, conversation: ConversationId, *args: Any) -> Any:
        """Run one script on the conversation's keys; forget them first after a failure."""
        failed = self._failed.get(conversation)
        forget = 0 if failed is None else 1
        argv = (secrets.token_hex(6), self._ttl_ms, forget, *args)
        client = self._client()  # raises BackplaneError when not running
        if self._healthy is not None and not self._healthy():
            raise BackplaneError(f"cannot {doing} {conversation!r}: Redis is unreachable")
        try:
            with anyio.fail_after(self.operation_timeout):
                reply = await _SCRIPTS[name](client, self.keys(conversation), argv)
        except FAILURES as exc:
            cause = str(exc) or type(exc).__name__
            raise BackplaneError(f"cannot {doing} {conversation!r} in Redis: {cause}") from exc
        if failed is not None and self._failed.get(conversation) == failed:
            del self._failed[conversation]  # unless recording failed again meanwhile
        return reply


def _position(reply: list[Any]) -> Position:
    return Position(offset=int(reply[0]), epoch=bytes(reply[1]).decode())


def _entries(
    after: int, start: bytes, count: int, packed: bytes
) -> tuple[HistoryEntry, ...] | None:
    """The entries a read packed (see `_READ`); ``None`` if they do not follow ``after``."""
    if count == 0:
        return ()
    parts = packed.decode().split(_SEPARATOR)
    if len(parts) != 2 * count or int(bytes(start).split(b"-", 1)[0]) != after + 1:
        return None
    return tuple(
        HistoryEntry(offset=after + 1 + i, event=parts[2 * i], json=parts[2 * i + 1])
        for i in range(count)
    )
