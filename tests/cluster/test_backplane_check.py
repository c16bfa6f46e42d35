"""``check_backplane``: the memory bus and Redis pass it, broken backplanes do not."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from chatrelay import NodeId
from chatrelay.abc import BackplaneEvent, BackplaneMessage
from chatrelay.backplanes import MemoryBackplane, MemoryBus
from chatrelay.testing import check_backplane
from redis_support import RedisTarget, fresh_target, shared_or_private_redis

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with shared_or_private_redis() as url:
        yield url


@pytest.fixture
def redis_target(redis_url: str) -> Iterator[RedisTarget]:
    with fresh_target(redis_url) as target:
        yield target


async def test_memory_bus_passes() -> None:
    await check_backplane(MemoryBus().backplane)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_redis_passes(redis_target: RedisTarget) -> None:
    await check_backplane(redis_target.backplane)


class DeafToUnsubscribe(MemoryBackplane):
    async def unsubscribe(self, topic: str) -> None:
        pass


class Echoing(MemoryBackplane):
    async def messages(self) -> AsyncIterator[BackplaneEvent]:
        async for message in super().messages():
            yield message
            yield message


class Lenient(MemoryBackplane):
    async def publish(self, topic: str, payload: bytes) -> None:
        self.max_payload_bytes += len(payload)
        try:
            await super().publish(topic, payload)
        finally:
            self.max_payload_bytes -= len(payload)


class Shuffling(MemoryBackplane):
    async def messages(self) -> AsyncIterator[BackplaneEvent]:
        held: BackplaneMessage | None = None
        async for message in super().messages():
            if isinstance(message, BackplaneMessage) and message.payload == b"a-3":
                held = message
                continue
            yield message
            if held is not None and getattr(message, "payload", None) == b"a-4":
                yield held
                held = None


@pytest.mark.parametrize(
    ("kind", "complaint"),
    [
        (DeafToUnsubscribe, "after unsubscribing"),
        (Echoing, "delivered twice"),
        (Lenient, "was not refused"),
        (Shuffling, "broke publish order"),
    ],
)
async def test_broken_backplanes_fail(kind: type[MemoryBackplane], complaint: str) -> None:
    bus = MemoryBus()
    with pytest.raises(AssertionError, match=complaint):
        await check_backplane(lambda: kind(bus), timeout=1.0)


async def test_node_ids_must_differ() -> None:
    bus = MemoryBus()
    with pytest.raises(AssertionError, match="distinct node ids"):
        await check_backplane(lambda: bus.backplane(node_id=NodeId("same")), timeout=1.0)
