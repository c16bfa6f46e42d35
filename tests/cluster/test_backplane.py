"""The backplane envelope, LocalBackplane and the MemoryBus (in one process)."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncGenerator

import anyio
import pytest

from chatrelay import NodeId
from chatrelay.abc import BackplaneMessage
from chatrelay.backplanes import (
    ENVELOPE_VERSION,
    Envelope,
    LocalBackplane,
    MemoryBackplane,
    MemoryBus,
    decode_envelope,
    encode_envelope,
    new_node_id,
)
from chatrelay.exceptions import BackplaneError
from relay_helpers import WAIT

# --- the envelope ---------------------------------------------------------------------


def test_envelope_round_trip_splices_the_body_as_it_is() -> None:
    body = '{"conversationId":"c1","data":{"text":"héllo"}}'
    payload = encode_envelope(NodeId("node-1"), "room", body)
    assert body.encode() in payload  # not serialized a second time
    assert decode_envelope(payload) == Envelope(
        version=ENVELOPE_VERSION,
        node=NodeId("node-1"),
        kind="room",
        body={"conversationId": "c1", "data": {"text": "héllo"}},
    )


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        pytest.param(b"not json", "not a chatrelay envelope", id="not-json"),
        pytest.param(b"\xff\xfe", "not a chatrelay envelope", id="not-utf8"),
        pytest.param(b"[1, 2]", "not a chatrelay envelope", id="array"),
        pytest.param(b'{"h": [1, "n", "room"]}', "not a chatrelay envelope", id="no-body"),
        pytest.param(b'{"b": {}}', "not a chatrelay envelope", id="no-header"),
        pytest.param(b'{"h": [1, "n"], "b": {}}', "not a chatrelay envelope", id="short-header"),
        pytest.param(b'{"h": 7, "b": {}}', "not a chatrelay envelope", id="header-number"),
        pytest.param(b'{"h": [2, "n", "room"], "b": {}}', "unsupported envelope version", id="v2"),
        pytest.param(b'{"h": [1, 5, "room"], "b": {}}', "malformed", id="node-number"),
        pytest.param(b'{"h": [1, "n", null], "b": {}}', "malformed", id="kind-null"),
        pytest.param(b'{"h": [1, "n", "room"], "b": []}', "malformed", id="body-array"),
    ],
)
def test_what_is_not_an_envelope_is_refused(payload: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        decode_envelope(payload)


def test_envelope_header_is_json() -> None:
    payload = encode_envelope(NodeId('quote"node'), "room", "{}")
    assert json.loads(payload)["h"] == [ENVELOPE_VERSION, 'quote"node', "room"]


def test_node_ids_are_unique_and_name_the_process() -> None:
    ids = {new_node_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(re.fullmatch(r".+-\d+-[0-9a-f]{8}", node) for node in ids)


# --- LocalBackplane -------------------------------------------------------------------


@pytest.mark.anyio
async def test_local_backplane_sends_nowhere_but_checks_what_it_is_given() -> None:
    backplane = LocalBackplane(node_id=NodeId("solo"))
    assert backplane.node_id == "solo"
    assert not backplane.shared
    async with backplane:
        await backplane.subscribe("t")
        await backplane.publish("t", b"x")
        await backplane.unsubscribe("t")
        with pytest.raises(BackplaneError, match="exceeds"):
            await backplane.publish("t", b"x" * (backplane.max_payload_bytes + 1))
        received: list[object] = []

        async def listen() -> None:
            received.extend([message async for message in backplane.messages()])

        async with anyio.create_task_group() as tg:
            tg.start_soon(listen)
            await anyio.wait_all_tasks_blocked()
            await backplane.aclose()  # messages() ends
        assert received == []
    with pytest.raises(BackplaneError, match="closed"):
        await backplane.publish("t", b"x")


# --- MemoryBus ------------------------------------------------------------------------


class Listener:
    """Collects what one backplane delivers, until it closes."""

    def __init__(self, backplane: MemoryBackplane) -> None:
        self.backplane = backplane
        self.received: list[tuple[str, bytes]] = []
        self.changed = anyio.Event()
        self.finished = anyio.Event()

    async def run(self) -> None:
        async for message in self.backplane.messages():
            if isinstance(message, BackplaneMessage):
                self.received.append((message.topic, message.payload))
                self.changed.set()
                self.changed = anyio.Event()
        self.finished.set()

    async def wait_for(self, count: int) -> list[tuple[str, bytes]]:
        with anyio.fail_after(WAIT):
            while len(self.received) < count:
                await self.changed.wait()
        return self.received


@pytest.mark.anyio
async def test_the_bus_delivers_to_subscribers_in_publish_order() -> None:
    bus = MemoryBus()
    async with bus.backplane() as a, bus.backplane() as b, bus.backplane() as c:
        assert a.shared
        assert len({a.node_id, b.node_id, c.node_id}) == 3
        listeners = [Listener(a), Listener(b), Listener(c)]
        async with anyio.create_task_group() as tg:
            for listener in listeners:
                tg.start_soon(listener.run)
            await a.subscribe("room")
            await b.subscribe("room")
            await b.subscribe("control")
            for n in range(3):
                await c.publish("room", b"r%d" % n)
            await a.publish("control", b"hello")
            await c.publish("nobody", b"lost")  # no subscriber: delivered nowhere
            # The publisher gets its own messages when subscribed to the topic.
            assert await listeners[0].wait_for(3) == [
                ("room", b"r0"),
                ("room", b"r1"),
                ("room", b"r2"),
            ]
            assert await listeners[1].wait_for(4) == [
                ("room", b"r0"),
                ("room", b"r1"),
                ("room", b"r2"),
                ("control", b"hello"),
            ]
            await b.unsubscribe("room")
            await a.publish("room", b"after")
            assert await listeners[0].wait_for(4) == [
                ("room", b"r0"),
                ("room", b"r1"),
                ("room", b"r2"),
                ("room", b"after"),
            ]
            assert bus.statistics.published == 6
            assert bus.statistics.delivered == 8
            assert listeners[2].received == []
            tg.cancel_scope.cancel()
        assert len(listeners[1].received) == 4  # nothing after the unsubscribe


@pytest.mark.anyio
async def test_a_closed_memory_backplane_refuses_and_stops() -> None:
    bus = MemoryBus()
    sender = bus.backplane(max_payload_bytes=8)
    receiver = bus.backplane()
    with pytest.raises(BackplaneError, match="closed"):
        await sender.publish("t", b"x")  # not started yet
    async with sender, receiver:
        await sender.start()  # starting twice is harmless
        await receiver.subscribe("t")
        with pytest.raises(BackplaneError, match="exceeds the backplane limit of 8"):
            await sender.publish("t", b"x" * 9)
        listener = Listener(receiver)
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.run)
            await sender.publish("t", b"12345678")
            await listener.wait_for(1)
            await receiver.aclose()
            with anyio.fail_after(WAIT):
                await listener.finished.wait()  # messages() ended
        await sender.publish("t", b"gone")  # the closed receiver left the bus
        assert bus.statistics.delivered == 1
    with pytest.raises(BackplaneError, match="closed"):
        await sender.publish("t", b"x")
    with pytest.raises(RuntimeError, match="cannot be started again"):
        await sender.start()


@pytest.mark.anyio
async def test_messages_of_a_backplane_closed_before_anyone_listened_just_end() -> None:
    # A relay's listener task may first run after its backplane closed under it.
    backplane = MemoryBus().backplane()
    async with backplane:
        pass
    assert [message async for message in backplane.messages()] == []


@pytest.mark.anyio
async def test_a_backplane_that_stopped_listening_is_skipped() -> None:
    bus = MemoryBus()
    async with bus.backplane() as sender, bus.backplane() as deaf:
        await deaf.subscribe("t")
        await sender.publish("t", b"one")
        stream = deaf.messages()
        assert isinstance(stream, AsyncGenerator)  # so it can be closed, as `break` does not
        async with contextlib.aclosing(stream) as messages:
            async for message in messages:
                assert message == BackplaneMessage(topic="t", payload=b"one")
                break  # the node stops reading, still on the bus
        await sender.publish("t", b"two")  # dropped, like a write to a closed socket
        assert bus.statistics.delivered == 2
