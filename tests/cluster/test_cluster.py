"""Several relays on one MemoryBus behave as the servers of one cluster; ClusterView.

Every relay runs in this process, on asyncio and trio; the bus carries what Redis
carries between real servers. Short heartbeats and timeouts keep the waits short, and
every wait is for an event (or a state) with a bound.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest.mock import ANY

import anyio
import pytest

from chatrelay import Delivery, NodeId, Relay, RelayConfig
from chatrelay._cluster import ClusterView, NodeState
from chatrelay._nodes import CONTROL_TOPIC
from chatrelay.backplanes import MemoryBackplane, MemoryBus, encode_envelope
from chatrelay.testing import MemoryClient, MemoryTransport
from relay_helpers import (
    WAIT,
    SilentBackplane,
    in_background,
    join,
    message,
    names,
    settle,
)
from waiting import eventually

pytestmark = pytest.mark.anyio

CLUSTER = RelayConfig(
    typing_timeout=0.05, presence_grace=0.05, heartbeat_interval=0.05, node_timeout=0.2
)


def presence_of(client: MemoryClient, user: str) -> list[str]:
    """The presence events about ``user`` that ``client`` received so far."""
    return [
        e.event for e in client.received if e.event.startswith("user:") and e.data["userId"] == user
    ]


async def presence_event(observer: MemoryClient, event: str, user: str) -> dict[str, Any]:
    """Wait for ``observer`` to receive ``event`` (online/offline) of ``user``; return it."""
    while True:
        received = await observer.receive(event, timeout=WAIT)
        if received.data["userId"] == user:
            data: dict[str, Any] = received.data
            return data


async def offline_of(observer: MemoryClient, user: str) -> dict[str, Any]:
    """Wait for ``observer`` to receive ``user:offline`` of ``user``; return its payload."""
    return await presence_event(observer, "user:offline", user)


async def clock_tick(observer: MemoryClient, node: Relay, name: str) -> None:
    """Connect and disconnect ``name`` on ``node``; wait until ``observer`` hears it leave.

    A cross-node round trip that takes a grace period: whatever the nodes had queued
    for the observer before has arrived by then.
    """
    async with MemoryTransport(node).connect(name):
        pass
    await offline_of(observer, name)


# --- rooms, typing and presence across nodes ----------------------------------------


async def test_room_events_reach_members_on_every_node() -> None:
    bus = MemoryBus()
    async with (
        Relay(config=CLUSTER, backplane=bus.backplane()) as a,
        Relay(config=CLUSTER, backplane=bus.backplane()) as b,
        Relay(config=CLUSTER, backplane=bus.backplane()) as worker,
        MemoryTransport(a).connect("alice") as alice,
        MemoryTransport(b).connect("bob") as bob,
        MemoryTransport(b).connect("carol") as carol,
    ):
        await join(alice)
        await join(bob)
        await eventually(lambda: a.members("c1") == b.members("c1") == {"alice", "bob"})

        await a.message_received(message("m1"), exclude=alice.connection.id)
        received = await bob.receive("message:received", timeout=WAIT)
        assert received.data["message"]["id"] == "m1"
        assert received.wants_ack

        await b.message_status("c1", "m1", "read", user_id="bob")
        status = await alice.receive("message:status", timeout=WAIT)
        assert (status.data["messageId"], status.data["status"]) == ("m1", "read")

        # A worker holding no connection emits to the rooms of the others.
        await worker.message_received(message("m2", sender="bob"))
        for client in (alice, bob):
            got = await client.receive("message:received", timeout=WAIT)
            assert got.data["message"]["id"] == "m2"

        assert [e.data["message"]["id"] for e in alice.events("message:received")] == ["m2"]
        assert await settle(carol, presence=False) == []  # not a member


async def test_typing_crosses_nodes_once_per_episode() -> None:
    bus = MemoryBus()
    async with (
        Relay(config=CLUSTER, backplane=bus.backplane()) as a,
        Relay(config=CLUSTER, backplane=bus.backplane()) as b,
        MemoryTransport(a).connect("alice") as alice,
        MemoryTransport(b).connect("bob") as bob,
    ):
        await join(alice)
        await join(bob)
        await eventually(lambda: a.members("c1") == {"alice", "bob"})
        for _ in range(3):
            await alice.request("typing:start", {"conversationId": "c1"})
        start = await bob.receive("typing:start", timeout=WAIT)
        assert start.data == {
            "conversationId": "c1",
            "userId": "alice",
            "isTyping": True,
            "user": {"id": "alice"},
        }
        assert b.typing_users("c1") == {"alice"}
        await alice.request("typing:stop", {"conversationId": "c1"})
        await bob.receive("typing:stop", timeout=WAIT)
        assert b.typing_users("c1") == frozenset()

        # The typist's node ends an episode by timeout; the other node relays it.
        await alice.request("typing:start", {"conversationId": "c1"})
        await bob.receive("typing:start", timeout=WAIT)
        await bob.receive("typing:stop", timeout=WAIT)
        assert names(await settle(bob, presence=False)) == []
        assert [e.event for e in bob.received if e.event.startswith("typing")] == [
            "typing:start",
            "typing:stop",
            "typing:start",
            "typing:stop",
        ]


async def test_a_message_emitted_on_another_node_ends_the_typists_episode() -> None:
    bus = MemoryBus()
    slow_typing = RelayConfig(presence_grace=0.05, typing_timeout=60)
    async with (
        Relay(config=slow_typing, backplane=bus.backplane()) as a,
        Relay(config=slow_typing, backplane=bus.backplane()) as b,
        MemoryTransport(a).connect("alice") as alice,
        MemoryTransport(b).connect("bob") as bob,
    ):
        await join(alice)
        await join(bob)
        await eventually(lambda: a.members("c1") == {"alice", "bob"})
        await alice.request("typing:start", {"conversationId": "c1"})
        await bob.receive("typing:start", timeout=WAIT)
        # The app server that stored alice's message is b's process.
        await b.message_received(message(sender="alice"))
        await bob.receive("message:received", timeout=WAIT)
        await bob.receive("typing:stop", timeout=WAIT)
        assert names(await settle(alice, presence=False)) == ["message:received", "typing:stop"]
        assert a.typing_users("c1") == b.typing_users("c1") == frozenset()


async def test_presence_crosses_nodes_and_queries_answer_for_the_cluster() -> None:
    bus = MemoryBus()
    async with (
        Relay(config=CLUSTER, backplane=bus.backplane()) as a,
        Relay(config=CLUSTER, backplane=bus.backplane()) as b,
        MemoryTransport(b).connect("bob") as bob,
    ):
        async with MemoryTransport(a).connect("alice") as alice:
            online = await bob.receive("user:online", timeout=WAIT)
            assert online.data == {"userId": "alice"}
            assert b.is_online("alice")
            assert a.is_online("bob")
            assert a.online_users() == b.online_users() == {"alice", "bob"}
            await join(alice)
            await alice.request("typing:start", {"conversationId": "c1"})
            await eventually(lambda: b.typing_users("c1") == {"alice"})
            assert b.members("c1") == {"alice"}
            assert b.statistics().nodes == a.statistics().nodes == 1
            left = datetime.now(UTC)
        offline = await bob.receive("user:offline", timeout=WAIT)
        assert offline.data["userId"] == "alice"
        last_seen = datetime.fromisoformat(offline.data["lastSeen"])
        assert left - timedelta(seconds=0.05) <= last_seen <= datetime.now(UTC)
        assert not b.is_online("alice")
        assert b.online_users() == {"bob"}
        assert b.members("c1") == frozenset()
        assert b.typing_users("c1") == frozenset()


async def test_a_user_on_two_nodes_is_online_once_and_offline_once() -> None:
    bus = MemoryBus()
    async with (
        Relay(config=CLUSTER, backplane=bus.backplane()) as a,
        Relay(config=CLUSTER, backplane=bus.backplane()) as b,
        MemoryTransport(a).connect("carol") as carol,
        MemoryTransport(b).connect("dave") as dave,
    ):
        await eventually(lambda: a.is_online("dave") and b.is_online("carol"))
        async with MemoryTransport(a).connect("alice"):
            for observer in (carol, dave):
                await presence_event(observer, "user:online", "alice")
            # b knows alice is online on a: her tab on b is not news.
            async with MemoryTransport(b).connect("alice"):
                await eventually(lambda: "alice" in b.online_users())
            # alice's tab on b is gone, her tab on a keeps her online everywhere.
            await clock_tick(carol, b, "clock-1")
            assert a.is_online("alice")
            assert b.is_online("alice")
        for observer in (carol, dave):
            await offline_of(observer, "alice")
        await clock_tick(carol, b, "clock-2")
        await clock_tick(dave, a, "clock-3")
        for observer in (carol, dave):
            assert presence_of(observer, "alice") == ["user:online", "user:offline"]


# --- nodes that leave, die, come back or come late ------------------------------------


async def test_a_node_that_leaves_takes_its_users_offline_after_the_grace_period() -> None:
    bus = MemoryBus()
    slow_typing = RelayConfig(presence_grace=0.2, typing_timeout=60)
    a = Relay(config=slow_typing, backplane=bus.backplane())
    async with (
        Relay(config=slow_typing, backplane=bus.backplane()) as b,
        MemoryTransport(b).connect("bob") as bob,
        in_background(a) as stop_a,
        MemoryTransport(a).connect("alice") as alice,
    ):
        await join(alice)
        await join(bob)
        await alice.request("typing:start", {"conversationId": "c1"})
        await bob.receive("typing:start", timeout=WAIT)
        assert b.members("c1") == {"alice", "bob"}
        left = datetime.now(UTC)
        await stop_a()
        assert alice.close_reason == "server_shutdown"
        await bob.receive("typing:stop", timeout=WAIT)
        # Her membership ends in the next message from a: b applies it right after.
        await eventually(lambda: b.members("c1") == {"bob"}, within=WAIT)
        # Still online during the grace period: she may reconnect to b.
        assert b.is_online("alice")
        offline = await bob.receive("user:offline", timeout=WAIT)
        assert offline.data["userId"] == "alice"
        # lastSeen is when her node left, not when the grace period ran out.
        last_seen = datetime.fromisoformat(offline.data["lastSeen"])
        assert left - timedelta(seconds=0.05) <= last_seen <= left + timedelta(seconds=0.1)
        assert not b.is_online("alice")
        assert b.statistics().nodes == 0


async def test_a_node_that_leaves_without_grace_takes_its_users_offline_at_once() -> None:
    bus = MemoryBus()
    no_grace = RelayConfig(presence_grace=0)
    a = Relay(config=no_grace, backplane=bus.backplane())
    async with (
        Relay(config=no_grace, backplane=bus.backplane()) as b,
        MemoryTransport(b).connect("bob") as bob,
        in_background(a) as stop_a,
        MemoryTransport(a).connect("alice"),
    ):
        await bob.receive("user:online", timeout=WAIT)
        await stop_a()
        offline = await bob.receive("user:offline", timeout=WAIT)
        assert offline.data["userId"] == "alice"
        assert not b.is_online("alice")


async def test_a_silent_node_has_its_users_go_offline_and_back_online() -> None:
    bus = MemoryBus()
    silent = SilentBackplane(bus)
    config = RelayConfig(
        presence_grace=0.05, typing_timeout=60, heartbeat_interval=0.05, node_timeout=0.2
    )
    async with (
        Relay(config=config, backplane=silent) as a,
        Relay(config=config, backplane=bus.backplane()) as b,
        MemoryTransport(a).connect("alice") as alice,
        MemoryTransport(b).connect("bob") as bob,
    ):
        await join(alice)
        await join(bob)
        await eventually(lambda: a.members("c1") == {"alice", "bob"})
        await alice.request("typing:start", {"conversationId": "c1"})
        await bob.receive("typing:start", timeout=WAIT)
        await settle(bob)  # whatever came before, such as alice's user:online

        # a stops publishing, heartbeats included, as if killed: b gives up on it.
        silent.silent = True
        died = anyio.current_time()
        offline = await bob.receive("user:offline", timeout=WAIT)
        assert anyio.current_time() - died >= config.node_timeout - config.heartbeat_interval
        assert offline.data["userId"] == "alice"
        # A typing:stop is never lost because a server vanished.
        stop = await bob.receive("typing:stop", timeout=WAIT)
        assert stop.data["userId"] == "alice"
        assert not b.is_online("alice")
        assert b.members("c1") == {"bob"}
        assert b.typing_users("c1") == frozenset()
        assert b.statistics().nodes == 0

        # a comes back: b asks for its state and announces what changed.
        silent.silent = False
        online = await bob.receive("user:online", timeout=WAIT)
        assert online.data["userId"] == "alice"
        assert b.members("c1") == {"alice", "bob"}
        assert b.typing_users("c1") == {"alice"}


async def test_a_late_node_learns_the_state_of_the_cluster() -> None:
    bus = MemoryBus()
    slow_typing = RelayConfig(presence_grace=0.05, typing_timeout=60)
    async with (
        Relay(config=slow_typing, backplane=bus.backplane()) as a,
        MemoryTransport(a).connect("alice") as alice,
    ):
        await join(alice)
        await alice.request("typing:start", {"conversationId": "c1"})
        async with Relay(config=slow_typing, backplane=bus.backplane()) as b:
            await eventually(lambda: b.is_online("alice"))
            assert b.online_users() == {"alice"}
            assert b.members("c1") == {"alice"}
            assert b.typing_users("c1") == {"alice"}
            async with MemoryTransport(b).connect("bob") as bob:
                reply = await bob.request("conversation:join", {"conversationId": "c1"})
                assert reply == {
                    "ok": True,
                    "conversationId": "c1",
                    "members": ["alice", "bob"],
                    "typing": ["alice"],
                    "position": {"offset": 0, "epoch": ANY},
                }
                await eventually(lambda: a.members("c1") == {"alice", "bob"})
                online = await alice.receive("user:online", timeout=WAIT)
                assert online.data == {"userId": "bob"}


async def test_deliveries_are_reported_by_the_recipients_node() -> None:
    bus = MemoryBus()
    delivered: dict[str, list[Delivery]] = {"a": [], "b": []}
    acked = anyio.Event()

    async def on_a(delivery: Delivery) -> None:
        delivered["a"].append(delivery)  # pragma: no cover - must not be called

    async def on_b(delivery: Delivery) -> None:
        delivered["b"].append(delivery)
        acked.set()

    async with (
        Relay(config=CLUSTER, backplane=bus.backplane(), on_delivered=on_a) as a,
        Relay(config=CLUSTER, backplane=bus.backplane(), on_delivered=on_b) as b,
        MemoryTransport(a).connect("alice", auto_ack=True) as alice,
        MemoryTransport(b).connect("bob", auto_ack=True) as bob,
    ):
        await join(alice)
        await join(bob)
        await eventually(lambda: a.members("c1") == {"alice", "bob"})
        await a.message_received(message(sender="alice"))
        with anyio.fail_after(WAIT):
            await acked.wait()
        await alice.receive("message:received", timeout=WAIT)
        assert [(d.user_id, d.message_id) for d in delivered["b"]] == [("bob", "m1")]
        assert delivered["b"][0].connection_id == bob.connection.id
        assert delivered["a"] == []  # alice's own tab acked too: not a delivery


async def test_bad_backplane_messages_are_ignored(caplog: pytest.LogCaptureFixture) -> None:
    bus = MemoryBus()
    stranger = bus.backplane()
    async with (
        Relay(config=CLUSTER, backplane=bus.backplane()) as a,
        Relay(config=CLUSTER, backplane=bus.backplane()) as b,
        Relay(config=CLUSTER, backplane=stranger),
        MemoryTransport(b).connect("bob") as bob,
    ):
        node = NodeId("stranger")
        with caplog.at_level(logging.WARNING, logger="chatrelay"):
            for payload in (
                b"not json",
                b'{"h":[99,"stranger","presence"],"b":{}}',  # a version from the future
                encode_envelope(node, "presence", "{}"),  # fields missing
                encode_envelope(node, "room", '{"conversationId":"c1"}'),
                encode_envelope(node, "gossip", '{"x":1}'),  # a kind from a newer node
            ):
                await stranger.publish(CONTROL_TOPIC, payload)
            async with MemoryTransport(a).connect("alice"):
                online = await bob.receive("user:online", timeout=WAIT)
        assert online.data["userId"] == "alice"
        assert "malformed backplane message" in caplog.text
        assert "ignoring a bad 'presence' envelope" in caplog.text


class RecordingBackplane(MemoryBackplane):
    """A memory backplane that keeps what its node published."""

    def __init__(self, bus: MemoryBus) -> None:
        super().__init__(bus)
        self.published: list[bytes] = []

    async def publish(self, topic: str, payload: bytes) -> None:
        self.published.append(payload)
        await super().publish(topic, payload)


async def test_nodes_first_heard_in_a_room_event_a_snapshot_or_a_goodbye() -> None:
    bus = MemoryBus()
    recording = RecordingBackplane(bus)
    other = bus.backplane()  # a running node's backplane, to publish as other nodes would
    ghost = NodeId("ghost")
    async with (
        Relay(config=CLUSTER, backplane=recording) as relay,
        Relay(config=CLUSTER, backplane=other),
        MemoryTransport(relay).connect("bob") as bob,
    ):
        await eventually(lambda: relay.statistics().nodes == 1)
        # A room event from a node not heard before is delivered, and the node known.
        await join(bob)
        status = (
            '{"conversationId":"c1","event":"message:status","exclude":null,"ack":null,'
            '"data":{"conversationId":"c1","messageId":"m1","status":"read","userId":"x",'
            '"updatedAt":"2026-01-01T00:00:00.000Z"}}'
        )
        room = encode_envelope(NodeId("poltergeist"), "room", status)
        await other.publish("chatrelay:room:c1", room)
        event = await bob.receive("message:status", timeout=WAIT)
        assert event.data["messageId"] == "m1"
        assert relay.statistics().nodes == 2
        # A snapshot from a node not heard before: nothing more to ask it.
        state = '{"online":["casper"],"members":{"c1":["casper"]},"typing":{}}'
        await other.publish(CONTROL_TOPIC, encode_envelope(ghost, "state", state))
        await presence_event(bob, "user:online", "casper")
        assert relay.members("c1") == {"bob", "casper"}
        # And a goodbye from it: its users go offline after the grace period.
        await other.publish(CONTROL_TOPIC, encode_envelope(ghost, "bye", "{}"))
        await offline_of(bob, "casper")
        assert relay.statistics().nodes == 2
        assert not [p for p in recording.published if b'"target":"ghost"' in p]


async def test_a_closed_backplane_counts_failed_publishes_and_the_node_keeps_serving() -> None:
    bus = MemoryBus()
    backplane = bus.backplane()
    async with (
        Relay(config=CLUSTER, backplane=backplane) as a,
        Relay(config=CLUSTER, backplane=bus.backplane()) as b,
        MemoryTransport(a).connect("alice") as alice,
        MemoryTransport(a).connect("bob") as bob,
    ):
        await join(alice)
        await join(bob)
        await eventually(lambda: a.statistics().nodes == b.statistics().nodes == 1)
        # The connection to the other nodes is lost under a running node.
        await backplane.aclose()
        await alice.request("typing:start", {"conversationId": "c1"})
        assert names(await settle(bob, presence=False)) == ["typing:start"]
        assert a.statistics().backplane_errors >= 1


# --- ClusterView, the sans-I/O part ---------------------------------------------------

A = NodeId("a")
B = NodeId("b")


def test_cluster_view_learns_nodes_from_what_they_say() -> None:
    view = ClusterView(node_timeout=6, grace=3)
    assert view.nodes() == frozenset()
    assert view.next_deadline() is None
    assert view.heard(A, 0) is True
    assert view.heard(A, 1) is False
    view.set_online(B, "bob", True, 1)
    view.set_member(B, "c1", "bob", True, 1)
    view.set_member(A, "c1", "alice", True, 1)
    view.set_member(A, "c2", "alice", True, 1)
    view.set_typing(A, "c1", "alice", True, 1)
    assert view.nodes() == {A, B}
    assert view.is_online("bob")
    assert not view.is_online("alice")
    assert view.online_users() == {"bob"}
    assert view.members("c1") == {"alice", "bob"}
    assert view.typing("c1") == {"alice"}
    assert view.rooms_of_user("alice") == {"c1", "c2"}
    view.set_typing(A, "c1", "alice", False, 2)
    view.set_typing(A, "c1", "alice", False, 2)  # twice: no error
    view.set_member(A, "c2", "alice", False, 2)
    view.set_online(B, "bob", False, 2)
    assert view.typing("c1") == set()
    assert view.rooms_of_user("alice") == {"c1"}
    assert view.members("c2") == set()
    assert not view.is_online("bob")
    assert view._nodes[A].typing == {}  # emptied rooms are dropped, not kept empty


def test_cluster_view_replace_takes_a_snapshot() -> None:
    view = ClusterView(node_timeout=6, grace=3)
    view.set_online(A, "old", True, 0)
    view.replace(A, NodeState(online={"alice"}, members={"c1": {"alice"}}), 1)
    assert view.online_users() == {"alice"}
    assert view.members("c1") == {"alice"}
    assert view.next_deadline() == 6  # the first deadline still stands
    dead, ended = view.expire(6.5)
    assert (dead, ended) == ([], set())  # replaced at 1: alive until 7
    dead, _ = view.expire(7)
    assert [node for node, _ in dead] == [A]


def test_cluster_view_counts_silent_nodes_dead() -> None:
    view = ClusterView(node_timeout=6, grace=3)
    view.set_online(A, "alice", True, 0)
    view.set_online(B, "bob", True, 0)
    view.set_typing(A, "c1", "alice", True, 0)
    view.heard(B, 4)
    assert view.next_deadline() == 6
    dead, ended = view.expire(5.9)
    assert (dead, ended) == ([], set())
    dead, ended = view.expire(6)
    assert [node for node, _ in dead] == [A]
    assert dead[0][1].online == {"alice"}
    assert dead[0][1].typing == {"c1": {"alice"}}
    assert ended == set()
    assert view.nodes() == {B}
    assert not view.is_online("alice")
    assert view.typing("c1") == set()
    assert view.next_deadline() == 10  # b's refreshed deadline; its stale one is gone
    dead, _ = view.expire(10)
    assert [node for node, _ in dead] == [B]
    assert view.next_deadline() is None


def test_cluster_view_keeps_users_of_a_node_that_left_for_the_grace_period() -> None:
    view = ClusterView(node_timeout=6, grace=3)
    view.set_online(A, "alice", True, 0)
    view.set_online(A, "carol", True, 0)
    view.set_online(B, "alice", True, 0)
    assert view.remove(A, 1, graceful=True) == {"alice", "carol"}
    assert view.remove(A, 1, graceful=True) == set()  # unknown now
    assert view.nodes() == {B}
    assert view.online_users() == {"alice", "carol"}
    assert view.is_online("carol")
    # b leaves later: alice stays until the later of the two deadlines.
    assert view.remove(B, 2, graceful=True) == {"alice"}
    assert view.next_deadline() == 4
    dead, ended = view.expire(4)
    assert (dead, ended) == ([], {"carol"})
    assert view.is_online("alice")
    dead, ended = view.expire(5)
    assert (dead, ended) == ([], {"alice"})
    assert view.online_users() == set()
    # What is left are the liveness deadlines of the nodes that left: they find nothing.
    assert view.next_deadline() == 6
    assert view.expire(6) == ([], set())
    assert view.next_deadline() is None


def test_cluster_view_without_grace_drops_users_at_once() -> None:
    view = ClusterView(node_timeout=6, grace=0)
    view.set_online(A, "alice", True, 0)
    assert view.remove(A, 1, graceful=True) == {"alice"}
    assert not view.is_online("alice")
    assert view.next_deadline() == 6  # only a's stale liveness deadline
    assert view.expire(6) == ([], set())
    view.set_online(B, "bob", True, 7)
    assert view.remove(B, 8, graceful=False) == {"bob"}
    assert not view.is_online("bob")
