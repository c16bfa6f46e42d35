"""What the Redis backplane's reader and writer share: streams, tokens, backoff."""

from __future__ import annotations

import random
import secrets
from collections.abc import Sequence
from typing import Final
from urllib.parse import urlsplit

import attrs
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from .._backplane import BackplaneMessage
from ._inbox import Subscription, parse_entry_id

__all__ = ["FAILURES", "Backoff", "Delivery", "Stream", "display", "ensure_token", "resolve"]

FAILURES: Final = (RedisError, OSError, TimeoutError)
"""What an unreachable or failing Redis raises."""

_FIRST_BACKOFF: Final = 0.05


@attrs.define(eq=False)
class Stream:
    """A stream a node reads: where it is, and where its subscription began.

    Attributes:
        topic: The topic it carries.
        key: Its Redis key.
        position: The id of the last entry read.
        instance: The Redis instance (token) on which ``position`` is valid.
        since: Where the subscription began; ``None`` until that is known.
        missed: Subscribed while Redis was unreachable (report a possible gap).
    """

    topic: str
    key: str
    position: str = "0-0"
    instance: str | None = None
    since: Subscription | None = None
    missed: bool = False


@attrs.frozen
class Delivery:
    """A message read from ``stream``, on its way to ``messages()``."""

    stream: Stream
    message: BackplaneMessage


class Backoff:
    """Capped exponential backoff with jitter, from 50 ms up to ``cap`` seconds."""

    def __init__(self, cap: float) -> None:
        self.cap = cap
        self._attempt = 0

    def next(self) -> float:
        """The next delay: twice the last one (at most ``cap``), less up to half."""
        delay = min(self.cap, _FIRST_BACKOFF * 2.0 ** min(self._attempt, 30))
        self._attempt += 1
        return delay * random.uniform(0.5, 1.0)

    def reset(self) -> None:
        """Start again from the shortest delay."""
        self._attempt = 0


async def ensure_token(client: aioredis.Redis, key: str) -> str:
    """Return the token of the Redis instance, making one if it has none.

    A Redis that restarted empty has no token; the first node to see that makes a new
    one, and every node then knows the instance changed. A Redis restored from disk
    keeps its token, and its streams keep their ids.
    """
    pipe = client.pipeline(transaction=False)
    pipe.set(key, secrets.token_hex(8), nx=True)
    pipe.get(key)
    _, token = await pipe.execute()
    return bytes(token).decode()


async def resolve(client: aioredis.Redis, token_key: str, streams: Sequence[Stream]) -> str:
    """Start ``streams`` at their current end, on the current instance.

    Returns:
        The instance's token.
    """
    pipe = client.pipeline(transaction=False)
    pipe.set(token_key, secrets.token_hex(8), nx=True)
    pipe.get(token_key)
    for stream in streams:
        pipe.xrevrange(stream.key, count=1)
    _, raw_token, *lasts = await pipe.execute()
    token = bytes(raw_token).decode()
    for stream, last in zip(streams, lasts, strict=True):
        stream.position = last[0][0].decode() if last else "0-0"
        stream.instance = token
        stream.since = Subscription(instance=token, start=parse_entry_id(stream.position))
    return token


def display(url: str) -> str:
    """The URL without credentials, for logs and errors."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"
