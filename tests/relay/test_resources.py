"""Everything used with `async with` shares one base: `start` on entry, `aclose` on exit."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import anyio.abc
import pytest

import chatrelay
from chatrelay import Emitter, Identity, Relay
from chatrelay.abc import Backplane
from chatrelay.backplanes import MemoryBus
from chatrelay.demo import DemoStore

pytestmark = pytest.mark.anyio


def _all_classes() -> list[type]:
    classes: list[type] = []
    for info in pkgutil.walk_packages(chatrelay.__path__, prefix="chatrelay."):
        if info.name == "chatrelay.__main__":
            continue
        module = importlib.import_module(info.name)
        classes.extend(
            obj
            for obj in vars(module).values()
            if inspect.isclass(obj) and obj.__module__ == info.name
        )
    return classes


def test_only_the_base_writes_aexit() -> None:
    # `Relay.connect` returns a small context manager whose `async with` gives a
    # Connection, not itself: it is not a resource, and stays on its own.
    written = sorted(
        f"{cls.__module__}.{cls.__qualname__}"
        for cls in _all_classes()
        if "__aexit__" in vars(cls) or "__aenter__" in vars(cls)
    )
    assert written == ["chatrelay._connection.Connected", "chatrelay._resource.AsyncResource"]


@pytest.mark.parametrize("cls", [Relay, Emitter, Backplane, DemoStore])
def test_resources_are_anyio_resources(cls: type) -> None:
    assert issubclass(cls, anyio.abc.AsyncResource)


async def test_relay_runs_between_start_and_aclose() -> None:
    relay = Relay()
    alice = Identity(user_id="alice")
    await relay.start()
    try:
        async with relay.connect(alice, transport="test"):
            assert relay.is_online("alice")
        with pytest.raises(RuntimeError, match="only once"):
            await relay.start()
    finally:
        await relay.aclose()
    with pytest.raises(RuntimeError, match="not running"):
        async with relay.connect(alice, transport="test"):
            pass


async def test_emitter_starts_and_closes_its_relay() -> None:
    bus = MemoryBus()
    async with Emitter(bus.backplane()) as emitter:
        assert emitter.online_users() == frozenset()
        with pytest.raises(RuntimeError, match="only once"):
            await emitter.start()
