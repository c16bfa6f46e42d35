"""The demo's data in Redis, shared by every demo server on that Redis (``chatrelay[redis]``).

Values are JSON strings under a key prefix (``chatrelay-demo:`` by default):

- ``ids``: the counter every conversation and message id comes from (``INCR``), so
  that servers never hand out the same id;
- ``seeded``: set by the server that created the demo's first conversations, in
  the same transaction (so a server that finds it set finds them too);
- ``conversations``: the list of conversation ids, oldest first, and
  ``conversation:<id>`` each conversation;
- ``messages:<conversationId>``: the list of its message ids, and ``message:<id>``
  each message, in its wire form.

A status changes under ``WATCH``: if another server changed the message between the
read and the write, the write is not made and the caller looks again.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final, Literal
from urllib.parse import urlsplit

import attrs
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError, WatchError

from .. import codec
from ..backplanes._redis_common import display
from ..events import Message, MessageStatus
from ._models import Conversation
from ._store import DemoStore, Draft, StoreUnavailable

__all__ = ["RedisStore", "check_redis", "validate_url"]

_FAILURES: Final = (RedisError, OSError, TimeoutError)
_SCHEMES: Final = ("redis", "rediss", "unix")
_MAX_CONNECTIONS: Final = 32
_PASSWORD: Final = re.compile(r"(//[^/@]*?:)[^/@]*@")


def _invalid(url: str, why: object) -> ValueError:
    """An error about a malformed URL that does not repeat its password."""
    shown = _PASSWORD.sub(r"\1***@", url)
    return ValueError(f"invalid Redis URL {shown!r}: {why}")


def validate_url(url: str) -> None:
    """Check that ``url`` is a Redis URL, without connecting.

    Raises:
        ValueError: If it is not, saying why.
    """
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises for a port that is not a number
    except ValueError as exc:
        raise _invalid(url, exc) from None
    if parts.scheme not in _SCHEMES:
        raise _invalid(url, "it must start with redis://, rediss:// or unix://")
    database = parts.path.strip("/")
    if parts.scheme != "unix" and database and not database.isdigit():
        raise _invalid(url, "the database must be a number")


def _client(url: str, socket_timeout: float) -> aioredis.Redis:
    validate_url(url)
    try:
        # A burst of requests (every tab back at once after a restart) waits for a
        # free connection rather than failing with "Too many connections".
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=_MAX_CONNECTIONS,
            timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            socket_timeout=socket_timeout,
        )
        return aioredis.Redis.from_pool(pool)
    except ValueError as exc:
        raise _invalid(url, exc) from None


async def _ping(client: aioredis.Redis, url: str) -> None:
    try:
        await client.ping()
    except TypeError as exc:  # an unknown ?option=… in the URL
        raise _invalid(url, exc) from None
    except _FAILURES as exc:
        raise StoreUnavailable(f"cannot reach Redis at {display(url)}: {exc}") from exc


async def check_redis(url: str, *, socket_timeout: float = 3.0) -> None:
    """Check that ``url`` is a Redis URL and that Redis answers there (within ``socket_timeout``).

    Raises:
        ValueError: If ``url`` is malformed.
        StoreUnavailable: If Redis does not answer.
    """
    client = _client(url, socket_timeout)
    try:
        await _ping(client, url)
    finally:
        await client.aclose()


@asynccontextmanager
async def _failures() -> AsyncIterator[None]:
    try:
        yield
    except _FAILURES as exc:
        raise StoreUnavailable(f"Redis is unreachable: {exc}") from exc


def _encode_conversation(conversation: Conversation) -> str:
    return codec.dumps(
        {
            "id": conversation.id,
            "participantIds": list(conversation.participant_ids),
            "name": conversation.name,
        }
    )


def _decode_conversation(raw: bytes | str) -> Conversation:
    data: dict[str, Any] = json.loads(raw)
    return Conversation(
        id=data["id"], participant_ids=tuple(data["participantIds"]), name=data["name"]
    )


def _encode_message(message: Message) -> str:
    return codec.dumps(codec.encode(message))


def _decode_message(raw: bytes | str) -> Message:
    return codec.decode_reply(json.loads(raw), Message)


class RedisStore(DemoStore):
    """The demo's conversations and messages in Redis, for several demo servers.

    Args:
        url: The Redis URL, such as ``"redis://127.0.0.1:6379/0"``.
        prefix: Put in front of every key.
        socket_timeout: Seconds an operation may take before Redis counts as
            unreachable.

    Raises:
        ValueError: If ``url`` is malformed.
    """

    def __init__(
        self, url: str, *, prefix: str = "chatrelay-demo:", socket_timeout: float = 3.0
    ) -> None:
        self.url = url
        self.prefix = prefix
        self._redis = _client(url, socket_timeout)

    async def start(self) -> None:
        """Check that Redis answers.

        Raises:
            StoreUnavailable: If it does not.
        """
        await _ping(self._redis, self.url)

    async def aclose(self) -> None:
        """Close the connections to Redis."""
        await self._redis.aclose()

    async def seed(self, drafts: Sequence[Draft]) -> list[Conversation]:
        """Create the conversations and the seed marker in one transaction, or nothing.

        Under ``WATCH`` of the marker: if another server sets it first, nothing is
        written (a few ids are skipped, which is harmless).
        """
        marker = self._key("seeded")
        async with _failures(), self._redis.pipeline(transaction=True) as pipe:
            await pipe.watch(marker)
            if await pipe.exists(marker):
                return []
            last = await pipe.incrby(self._key("ids"), len(drafts))
            created = [
                Conversation(id=f"c{last - len(drafts) + n}", participant_ids=p, name=name)
                for n, (p, name) in enumerate(drafts, start=1)
            ]
            pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
            pipe.set(marker, "1")
            for conversation in created:
                self._queue_conversation(pipe, conversation)
            try:
                await pipe.execute()
            except WatchError:
                return []  # another server seeded first
            return created

    async def new_id(self, kind: Literal["c", "m"]) -> str:
        """The next value of the shared counter, after ``kind``."""
        async with _failures():
            return f"{kind}{await self._redis.incr(self._key('ids'))}"

    async def add_conversation(self, conversation: Conversation) -> None:
        """Store it and list it, in one transaction."""
        async with _failures(), self._redis.pipeline(transaction=True) as pipe:
            self._queue_conversation(pipe, conversation)
            await pipe.execute()

    async def conversation(self, conversation_id: str) -> Conversation | None:
        """The conversation with that id, if there is one."""
        async with _failures():
            raw = await self._redis.get(self._key("conversation", conversation_id))
        return None if raw is None else _decode_conversation(raw)

    async def conversations(self) -> list[Conversation]:
        """Every conversation, oldest first."""
        async with _failures():
            ids = await self._redis.lrange(self._key("conversations"), 0, -1)
            raws = await self._values("conversation", ids)
        return [_decode_conversation(raw) for raw in raws if raw is not None]

    async def add_message(self, message: Message) -> None:
        """Store it and append it to its conversation, in one transaction."""
        async with _failures(), self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self._key("message", message.id), _encode_message(message))
            pipe.rpush(self._key("messages", message.conversation_id), message.id)
            await pipe.execute()

    async def message(self, message_id: str) -> Message | None:
        """The message with that id, if there is one."""
        async with _failures():
            raw = await self._redis.get(self._key("message", message_id))
        return None if raw is None else _decode_message(raw)

    async def messages(self, conversation_id: str) -> list[Message]:
        """The messages of a conversation, oldest first."""
        async with _failures():
            ids = await self._redis.lrange(self._key("messages", conversation_id), 0, -1)
            raws = await self._values("message", ids)
        return [_decode_message(raw) for raw in raws if raw is not None]

    async def set_status(
        self, message_id: str, expected: MessageStatus, status: MessageStatus
    ) -> Message | None:
        """Set the status under ``WATCH``: nothing is written if the message changed."""
        key = self._key("message", message_id)
        async with _failures(), self._redis.pipeline(transaction=True) as pipe:
            await pipe.watch(key)
            raw = await pipe.get(key)
            if raw is None:
                return None
            message = _decode_message(raw)
            if message.status is not expected:
                return None
            message = attrs.evolve(message, status=status)
            pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
            pipe.set(key, _encode_message(message))
            try:
                await pipe.execute()
            except WatchError:
                return None  # another server wrote it between our read and write
            return message

    async def _values(self, kind: str, ids: Sequence[bytes | str]) -> list[bytes | str | None]:
        if not ids:
            return []
        keys = [self._key(kind, i.decode() if isinstance(i, bytes) else i) for i in ids]
        values: list[bytes | str | None] = await self._redis.mget(keys)
        return values

    def _queue_conversation(self, pipe: Pipeline, conversation: Conversation) -> None:
        pipe.set(self._key("conversation", conversation.id), _encode_conversation(conversation))
        pipe.rpush(self._key("conversations"), conversation.id)

    def _key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)
