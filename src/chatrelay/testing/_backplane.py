"""A conformance check for backplanes, reusable by any implementation."""

from __future__ import annotations

import secrets
from collections.abc import Callable

import anyio

from .._backplane import Backplane, BackplaneMessage, BackplaneStatistics
from .._exceptions import BackplaneError

__all__ = ["check_backplane"]


class _Listener:
    """Collects what one backplane delivers."""

    def __init__(self, backplane: Backplane, name: str) -> None:
        self.backplane = backplane
        self.name = name
        self.received: list[BackplaneMessage] = []
        self.finished = anyio.Event()
        self._changed = anyio.Event()

    async def run(self) -> None:
        try:
            async for event in self.backplane.messages():
                if isinstance(event, BackplaneMessage):
                    self.received.append(event)
                    changed, self._changed = self._changed, anyio.Event()
                    changed.set()
        finally:
            self.finished.set()
            self._changed.set()

    def payloads(self, topic: str) -> list[bytes]:
        return [m.payload for m in self.received if m.topic == topic]

    async def wait_for(self, topic: str, payload: bytes, timeout: float) -> None:
        with anyio.move_on_after(timeout):
            while payload not in self.payloads(topic):
                if self.finished.is_set():
                    break
                await self._changed.wait()
        _require(
            payload in self.payloads(topic),
            f"backplane {self.name} did not deliver {payload!r} on {topic!r} within {timeout} s",
        )


def _require(condition: bool, message: str) -> None:
    # Not `assert`: the check must hold under `python -O` too.
    if not condition:
        raise AssertionError(message)


async def check_backplane(factory: Callable[[], Backplane], *, timeout: float = 5.0) -> None:
    """Check that the backplanes ``factory`` makes keep the contract of a backplane.

    The contract is that of `Backplane`.

    ``factory`` is called three times; each call must return a new, unstarted
    backplane connected to the same medium (the same bus, the same Redis). The check
    starts and closes them itself, uses topics of its own (random names, so a shared
    server can be used), and verifies that:

    - node ids differ between backplanes;
    - a payload reaches every backplane subscribed to its topic, the publisher
      included, exactly once, and no backplane that is not subscribed;
    - one publisher's payloads on a topic arrive in publish order;
    - after `unsubscribe`, nothing more of the topic
      arrives;
    - a payload above ``max_payload_bytes`` is refused with
      `BackplaneError` and nothing of it is delivered, while one of
      exactly that size is delivered;
    - `aclose` ends
      `messages`, and publishing afterwards raises
      `BackplaneError`;
    - `statistics` returns a
      `BackplaneStatistics`.

    Example::

        async def test_my_backplane() -> None:
            await check_backplane(lambda: MyBackplane(url))

    Args:
        factory: Makes one backplane per call.
        timeout: Seconds any one delivery may take.

    Raises:
        AssertionError: Naming the first rule that was broken.
    """
    a, b, c = factory(), factory(), factory()
    la, lb, lc = _Listener(a, "a"), _Listener(b, "b"), _Listener(c, "c")
    # The listeners' task group comes first: a backplane may run a task group of its
    # own from start() to aclose(), and task groups must close in reverse order.
    failure: AssertionError | None = None
    async with anyio.create_task_group() as tg:
        for listener in (la, lb, lc):
            tg.start_soon(listener.run)
        async with a, b, c:
            try:
                _require(
                    len({a.node_id, b.node_id, c.node_id}) == 3,
                    "backplanes must have distinct node ids",
                )
                await _check(a, b, c, la, lb, lc, timeout)
            except AssertionError as exc:
                failure = exc  # raised below, not wrapped in the task group's group
        tg.cancel_scope.cancel()
    if failure is not None:
        raise failure


async def _check(
    a: Backplane,
    b: Backplane,
    c: Backplane,
    la: _Listener,
    lb: _Listener,
    lc: _Listener,
    timeout: float,
) -> None:
    prefix = f"chatrelay-check-{secrets.token_hex(4)}"
    t, u = f"{prefix}:t", f"{prefix}:u"
    # Delivery to subscribers only, the publisher included.
    await a.subscribe(t)
    await b.subscribe(t)
    await b.subscribe(u)
    await c.subscribe(u)
    await a.publish(t, b"one")
    await a.publish(u, b"sentinel-1")
    await la.wait_for(t, b"one", timeout)
    await lb.wait_for(t, b"one", timeout)
    await lc.wait_for(u, b"sentinel-1", timeout)
    _require(lc.payloads(t) == [], "a backplane received a topic it did not subscribe to")

    # Per-publisher order, exactly once, with two publishers interleaved.
    mine = [b"a-%d" % i for i in range(50)]
    theirs = [b"b-%d" % i for i in range(50)]
    for x, y in zip(mine, theirs, strict=True):
        await a.publish(t, x)
        await b.publish(t, y)
    for listener in (la, lb):
        await listener.wait_for(t, mine[-1], timeout)
        await listener.wait_for(t, theirs[-1], timeout)
        got = listener.payloads(t)
        _require(
            [p for p in got if p.startswith(b"a-")] == mine
            and [p for p in got if p.startswith(b"b-")] == theirs,
            f"backplane {listener.name} broke publish order or delivered twice",
        )
        _require(got.count(b"one") == 1, f"backplane {listener.name} delivered twice")

    # Unsubscribing stops delivery.
    await b.unsubscribe(t)
    await a.publish(t, b"after-unsubscribe")
    await a.publish(u, b"sentinel-2")
    await lb.wait_for(u, b"sentinel-2", timeout)
    await la.wait_for(t, b"after-unsubscribe", timeout)
    _require(
        b"after-unsubscribe" not in lb.payloads(t),
        "a backplane delivered a topic after unsubscribing from it",
    )

    # Oversize payloads are refused before anything is published.
    limit = a.max_payload_bytes
    try:
        await a.publish(t, b"x" * (limit + 1))
    except BackplaneError:
        pass
    else:
        raise AssertionError(f"a payload of {limit + 1} bytes was not refused")
    await a.publish(t, b"y" * limit)
    await la.wait_for(t, b"y" * limit, timeout)
    _require(
        all(len(p) <= limit for p in la.payloads(t)),
        "an oversize payload was delivered",
    )

    _require(
        isinstance(a.statistics(), BackplaneStatistics),
        "statistics() must return BackplaneStatistics",
    )

    # Closing ends messages(), and publishing after it fails.
    await c.aclose()
    with anyio.move_on_after(timeout):
        await lc.finished.wait()
    _require(lc.finished.is_set(), "aclose() did not end messages()")
    try:
        await c.publish(u, b"late")
    except BackplaneError:
        pass
    else:
        raise AssertionError("publish() after aclose() did not raise BackplaneError")
