"""Room events in offset order on one node, and the gaps spotted: no event loop."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from chatrelay import ConnectionId, NodeId, UserId
from chatrelay._hub import Effect, Fanout, Hub, Wake
from chatrelay._nodes import RoomEvent
from chatrelay._sequencer import Sequencer, position_of
from chatrelay.events import Position

E = "epoch-a"
WALL = datetime(2026, 1, 1, tzinfo=UTC)
OTHER = NodeId("n2")


def p(offset: int, epoch: str = E) -> Position:
    return Position(offset, epoch)


def opened(baseline: int = 0) -> Sequencer[str]:
    seq: Sequencer[str] = Sequencer(window=1.0)
    seq.open("c1")
    assert seq.baseline("c1", p(baseline), now=0).items == []
    return seq


def test_in_order_events_go_straight_through() -> None:
    seq = opened()
    for n in range(1, 4):
        released = seq.offer("c1", p(n), f"e{n}", now=0)
        assert (released.items, released.lost) == ([f"e{n}"], False)
    assert seq.position("c1") == p(3)
    assert seq.next_deadline() is None


def test_an_early_event_waits_for_the_one_before_it() -> None:
    seq = opened()
    assert seq.offer("c1", p(2), "e2", now=0).items == []
    assert seq.next_deadline() == 1.0
    assert seq.offer("c1", p(3), "e3", now=0.1).items == []
    released = seq.offer("c1", p(1), "e1", now=0.2)
    assert (released.items, released.lost) == (["e1", "e2", "e3"], False)
    assert seq.next_deadline() is None


def test_a_hole_that_stays_open_for_the_window_is_lost() -> None:
    seq = opened()
    seq.offer("c1", p(1), "e1", now=0)
    seq.offer("c1", p(3), "e3", now=5)
    seq.offer("c1", p(4), "e4", now=5.5)
    assert seq.expire(now=5.99) == []
    [(room, released)] = seq.expire(now=6)
    assert (room, released.items, released.lost) == ("c1", ["e3", "e4"], True)
    assert seq.position("c1") == p(4)
    # The missing one turning up late is a repeat now: dropped.
    assert seq.offer("c1", p(2), "e2", now=7).items == []


def test_repeats_are_dropped() -> None:
    seq = opened()
    seq.offer("c1", p(1), "e1", now=0)
    assert seq.offer("c1", p(1), "e1", now=0).items == []


def test_before_its_baseline_a_room_holds_and_then_drops_what_the_join_covers() -> None:
    seq: Sequencer[str] = Sequencer(window=1.0)
    seq.open("c1")
    assert seq.pending("c1")
    assert seq.offer("c1", p(5), "e5", now=0).items == []
    assert seq.offer("c1", p(6), "e6", now=0).items == []
    released = seq.baseline("c1", p(5), now=0)
    assert released.items == ["e6"]
    assert not seq.pending("c1")


def test_a_new_epoch_restarts_numbering_without_a_resync() -> None:
    # The history was lost (say, Redis flushed), not the live events: those the
    # backplane lost it reports itself.
    seq = opened(baseline=7)
    released = seq.offer("c1", p(1, "epoch-b"), "b1", now=0)
    assert (released.items, released.lost) == (["b1"], False)
    assert seq.position("c1") == p(1, "epoch-b")


def test_without_a_baseline_the_first_event_sets_it() -> None:
    seq: Sequencer[str] = Sequencer(window=1.0)
    seq.open("c1")
    seq.baseline("c1", None, now=0)
    assert seq.offer("c1", p(9), "e9", now=0).items == ["e9"]
    assert seq.offer("c1", p(10), "e10", now=0).items == ["e10"]


def test_a_room_nobody_here_is_in_is_not_ordered() -> None:
    seq: Sequencer[str] = Sequencer(window=1.0)
    assert seq.offer("c9", p(3), "x", now=0).items == ["x"]


@given(st.permutations(list(range(1, 30))))
def test_any_arrival_order_is_released_in_offset_order(order: list[int]) -> None:
    seq = opened()
    out: list[str] = []
    for n in order:
        out += seq.offer("c1", p(n), f"e{n}", now=0).items
    assert out == [f"e{n}" for n in range(1, 30)]


def test_position_of_reads_only_sane_positions() -> None:
    assert position_of({"position": {"offset": 3, "epoch": "x"}}) == p(3, "x")
    for bad in ({}, {"position": 1}, {"position": {"offset": "3", "epoch": "x"}}):
        assert position_of(bad) is None
    assert position_of({"position": {"offset": 0, "epoch": "x"}}) is None
    assert position_of({"position": {"offset": 2, "epoch": ""}}) is None


# --- through the hub: events from another node --------------------------------------


def room_event(offset: int) -> RoomEvent:
    data = {"conversationId": "c1", "n": offset, "position": {"offset": offset, "epoch": E}}
    return RoomEvent(conversation_id="c1", event="message:status", data=data)


def fanned(effects: list[Effect]) -> list[tuple[str, object]]:
    return [(e.item.event, e.item.data.get("n")) for e in effects if isinstance(e, Fanout)]


def test_the_hub_orders_another_nodes_events_and_resyncs_a_room_after_a_hole() -> None:
    hub = Hub(
        node_id=NodeId("me"), typing_timeout=5, presence_grace=3, node_timeout=6, reorder_window=1
    )
    hub.connect(ConnectionId("k1"), UserId("bob"), None, now=0)
    hub.join(ConnectionId("k1"), UserId("bob"), "c1")
    assert hub.baseline("c1", p(0), now=0) == []
    assert fanned(hub.receive(OTHER, room_event(1), now=0, wall=WALL)) == [("message:status", 1)]
    held = hub.receive(OTHER, room_event(3), now=1, wall=WALL)
    assert fanned(held) == []
    assert any(isinstance(e, Wake) for e in held)
    assert hub.next_deadline() == 2
    effects = hub.expire(now=2, wall=WALL)
    assert fanned(effects) == [("sync:required", None), ("message:status", 3)]
    assert hub.resyncs == 1
