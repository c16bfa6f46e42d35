"""How a relay reacts to what its backplane reports: outages and lost messages.

On the memory bus, in one process, on asyncio and trio: a backplane that goes down
suspends the judging of silent nodes, a gap in a room makes its clients resync, a
gap in the control topic makes the relay ask every node for its state again.
"""

from __future__ import annotations

import anyio
import pytest

from chatrelay import NodeId, Relay, RelayConfig, codec
from chatrelay._cluster import ClusterView
from chatrelay.abc import BackplaneEvent, BackplaneGap, BackplaneHealth, BackplaneStatistics
from chatrelay.backplanes import MemoryBackplane, MemoryBus, decode_envelope
from chatrelay.events import SyncRequired
from chatrelay.testing import MemoryTransport
from relay_helpers import joined
from waiting import eventually

pytestmark = pytest.mark.anyio

CONFIG = RelayConfig(heartbeat_interval=0.05, node_timeout=0.3, presence_grace=0.05)
WAIT = 5.0


class Injectable(MemoryBackplane):
    """A memory backplane whose test can report outages and gaps, or fall silent."""

    silent = False
    healthy = True
    published: list[bytes]

    def inject(self, event: BackplaneGap | BackplaneHealth) -> None:
        if isinstance(event, BackplaneHealth):
            self.healthy = event.healthy
        self._deliver(event)

    async def publish(self, topic: str, payload: bytes) -> None:
        if not hasattr(self, "published"):
            self.published = []
        self.published.append(payload)
        if not self.silent:
            await super().publish(topic, payload)

    def statistics(self) -> BackplaneStatistics:
        return BackplaneStatistics(healthy=self.healthy)


async def test_a_down_backplane_suspends_node_liveness() -> None:
    bus = MemoryBus()
    mine, theirs = Injectable(bus), Injectable(bus)
    async with (
        Relay(config=CONFIG, backplane=mine) as a,
        Relay(config=CONFIG, backplane=theirs) as c,
        joined(a, "alice") as alice,
        joined(c, "carol"),
    ):
        await eventually(lambda: a.is_online("carol"))
        mine.inject(BackplaneHealth(healthy=False))
        await eventually(lambda: not a.statistics().healthy)
        theirs.silent = True  # like a node nobody can hear any more
        # The scenario: silence lasting well beyond node_timeout.
        await anyio.sleep(CONFIG.node_timeout * 3)
        assert a.is_online("carol"), "a node was judged by its silence during an outage"
        assert alice.events("user:offline") == []
        mine.inject(BackplaneHealth(healthy=True))
        start = anyio.current_time()
        offline = await alice.receive("user:offline", timeout=WAIT)
        assert offline.data["userId"] == "carol"
        assert anyio.current_time() - start >= CONFIG.node_timeout * 0.9


async def test_a_gap_in_a_room_tells_its_clients_to_resync() -> None:
    bus = MemoryBus()
    mine = Injectable(bus)
    async with (
        Relay(config=CONFIG, backplane=mine) as a,
        joined(a, "alice") as alice,
        joined(a, "bob", "c2") as bob,
    ):
        # Its own entries, read back, lost: its clients had them from it directly.
        mine.inject(BackplaneGap(topic="chatrelay:room:c1", node=a.node_id, lost=3))
        mine.inject(BackplaneGap(topic="chatrelay:room:c1", node=NodeId("n"), lost=3))
        event = await alice.receive("sync:required", timeout=WAIT)
        assert event.data == {"conversationId": "c1"}
        mine.inject(BackplaneGap(topic="chatrelay:room:c2"))
        await bob.receive("sync:required", timeout=WAIT)
        assert len(alice.events("sync:required")) == 1
        assert a.statistics().resyncs == 2


async def test_a_gap_in_the_control_topic_asks_every_node_for_its_state() -> None:
    bus = MemoryBus()
    mine = Injectable(bus)
    async with Relay(config=CONFIG, backplane=mine) as a:
        before = len(mine.published)
        mine.inject(BackplaneGap(topic="chatrelay:control", lost=1))
        mine.inject(BackplaneGap(topic="someone-elses-topic"))  # ignored

        def asked() -> bool:
            kinds = [decode_envelope(p).kind for p in mine.published[before:]]
            return "sync" in kinds

        await eventually(asked)
        assert a.statistics().resyncs == 0


async def test_sync_required_is_a_server_event_of_the_codec() -> None:
    event = SyncRequired(conversation_id="c1")
    assert codec.event_name(event) == "sync:required"
    assert codec.encode(event) == {"conversationId": "c1"}
    assert codec.decode_server_event("sync:required", {"conversationId": "c1"}) == event


def test_cluster_view_does_not_judge_silence_while_suspended() -> None:
    view = ClusterView(node_timeout=1.0, grace=0.0)
    view.set_online(NodeId("n1"), "carol", True, now=0.0)
    view.suspend()
    assert view.suspended
    assert view.next_deadline() is None
    assert view.expire(now=10.0) == ([], set())
    assert view.is_online("carol")
    view.resume(now=10.0)
    assert view.expire(now=10.5) == ([], set())  # heard "now" on resuming
    assert view.next_deadline() == 11.0
    dead, _ = view.expire(now=11.0)
    assert [(node, state.online) for node, state in dead] == [(NodeId("n1"), {"carol"})]


async def test_a_node_heard_once_and_then_silent_is_found_dead() -> None:
    # The timers of a node with nothing else to do slept through the first deadline of
    # a node heard for the first time, which then stayed online forever.
    bus = MemoryBus()
    theirs = Injectable(bus)
    async with (
        Relay(config=CONFIG, backplane=bus.backplane()) as a,
        Relay(config=CONFIG, backplane=theirs) as c,
        MemoryTransport(c).connect("carol"),
    ):
        await eventually(lambda: a.is_online("carol"))
        theirs.silent = True
        await eventually(lambda: not a.is_online("carol"), within=CONFIG.node_timeout * 4)


class Deafening(MemoryBackplane):
    """A memory backplane that can stop delivering while saying it is connected."""

    deaf = False

    def _deliver(self, message: BackplaneEvent) -> None:
        if not self.deaf:
            super()._deliver(message)


async def test_a_deaf_backplane_is_found_and_reported_unhealthy() -> None:
    bus = MemoryBus()
    mine = Deafening(bus)
    async with (
        Relay(config=CONFIG, backplane=mine) as a,
        Relay(config=CONFIG, backplane=MemoryBackplane(bus)) as b,
    ):
        await eventually(lambda: a.statistics().nodes == 1)
        assert a.statistics().healthy
        mine.deaf = True  # its subscription is alive; nothing comes any more
        await eventually(lambda: a.statistics().deaf, within=WAIT)
        statistics = a.statistics()
        assert not statistics.healthy
        assert statistics.backplane.healthy  # what the backplane itself still says
        assert b.statistics().healthy
        assert not b.statistics().deaf
        mine.deaf = False
        await eventually(lambda: a.statistics().healthy, within=WAIT)
