"""The hub's rules, sans-I/O: events and ``now`` in, effects out; no event loop here."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from chatrelay import ConnectionId, ConversationId, MessageId, NodeId, UserId
from chatrelay._cluster import NodeState
from chatrelay._hub import Announce, Effect, Fanout, Hub, Publish, Subscribe, Unsubscribe, Wake
from chatrelay._nodes import (
    CONTROL_TOPIC,
    AckFields,
    Bye,
    Heartbeat,
    MemberChanged,
    NodeMessage,
    PresenceChanged,
    RoomEvent,
    StateReport,
    SyncRequest,
    TypingEvent,
    decode,
    encode,
    room_topic,
)
from chatrelay.events import UserOffline, UserOnline

WALL = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
A, B = ConnectionId("n#1"), ConnectionId("n#2")
ALICE, BOB = UserId("alice"), UserId("bob")
C1 = ConversationId("c1")
OTHER = NodeId("other")


def hub() -> Hub:
    return Hub(node_id=NodeId("n"), typing_timeout=5.0, presence_grace=3.0, node_timeout=6.0)


def published(effects: list[Effect]) -> list[NodeMessage]:
    return [e.message for e in effects if isinstance(e, Publish)]


def fanned(effects: list[Effect]) -> list[tuple[str, ConnectionId | None]]:
    return [(e.item.event, e.exclude) for e in effects if isinstance(e, Fanout)]


def announced(effects: list[Effect]) -> list[UserOnline | UserOffline]:
    return [e.event for e in effects if isinstance(e, Announce)]


def test_credentials_that_expire_wake_the_timers_whoever_connects() -> None:
    # The warning's deadline may be the earliest of all: the relay's timers, asleep
    # until the previous one, must look again (first and later connections alike).
    h = hub()
    assert Wake() in h.connect(A, ALICE, "Alice", now=0.0, expires_in=3.0)
    assert h.connect(B, ALICE, "Alice", now=0.0, expires_in=3.0) == [Wake()]
    assert h.next_deadline() == 3.0 - h.lifetimes.warning
    assert Wake() not in h.connect(ConnectionId("n#3"), BOB, None, now=0.0)


def test_a_first_connection_is_announced_and_published_a_second_is_not() -> None:
    h = hub()
    first = h.connect(A, ALICE, "Alice", now=0.0)
    assert published(first) == [PresenceChanged(user_id=ALICE, online=True)]
    assert [(e.event, e.exclude) for e in first if isinstance(e, Announce)] == [
        (UserOnline(user_id=ALICE), A)
    ]
    assert h.connect(B, ALICE, "Alice", now=1.0) == []


def test_online_elsewhere_is_not_announced_again() -> None:
    h = hub()
    h.receive(OTHER, PresenceChanged(user_id=ALICE, online=True), now=0.0, wall=WALL)
    effects = h.connect(A, ALICE, None, now=1.0)
    assert published(effects) == [PresenceChanged(user_id=ALICE, online=True)]
    assert announced(effects) == []


def test_the_first_local_member_subscribes_the_room_and_the_last_unsubscribes() -> None:
    h = hub()
    h.connect(A, ALICE, None, 0.0)
    h.connect(B, BOB, None, 0.0)
    first = h.join(A, ALICE, C1)
    assert [e for e in first if isinstance(e, Subscribe)] == [Subscribe(room_topic(C1))]
    assert published(first) == [MemberChanged(conversation_id=C1, user_id=ALICE, joined=True)]
    second = h.join(B, BOB, C1)
    assert not [e for e in second if isinstance(e, Subscribe)]
    assert h.join(B, BOB, C1) == []  # joined already: nothing
    assert not [e for e in h.leave(A, ALICE, C1) if isinstance(e, Unsubscribe)]
    last = h.leave(B, BOB, C1)
    assert [e for e in last if isinstance(e, Unsubscribe)] == [Unsubscribe(room_topic(C1))]


def test_leaving_ends_ones_typing_there() -> None:
    h = hub()
    h.connect(A, ALICE, "Alice", 0.0)
    h.join(A, ALICE, C1)
    start = h.typing_start(A, ALICE, C1, now=1.0)
    assert Wake() in start
    assert fanned(start) == [("typing:start", A)]
    [told] = published(start)
    assert isinstance(told, TypingEvent)
    assert told.is_typing
    assert told.json is not None
    assert '"name":"Alice"' in told.json
    leave = h.leave(A, ALICE, C1)
    assert fanned(leave) == [("typing:stop", A)]
    assert h.typing_users(C1) == frozenset()


def test_a_disconnect_ends_typing_leaves_rooms_and_starts_the_grace() -> None:
    h = hub()
    h.connect(A, ALICE, None, 0.0)
    h.join(A, ALICE, C1)
    h.typing_start(A, ALICE, C1, now=1.0)
    effects = h.disconnect(A, ALICE, now=2.0)
    assert fanned(effects) == [("typing:stop", A)]
    assert MemberChanged(conversation_id=C1, user_id=ALICE, joined=False) in published(effects)
    assert Unsubscribe(room_topic(C1)) in effects
    assert h.is_online(ALICE)  # the grace period
    assert h.next_deadline() == pytest.approx(5.0)
    expired = h.expire(now=5.0, wall=WALL)
    [offline] = announced(expired)
    assert offline == UserOffline(user_id=ALICE, last_seen=WALL - timedelta(seconds=3))
    assert not h.is_online(ALICE)


def test_a_typing_episode_times_out_by_itself() -> None:
    h = hub()
    h.connect(A, ALICE, None, 0.0)
    h.join(A, ALICE, C1)
    h.typing_start(A, ALICE, C1, now=0.0)
    assert h.expire(now=4.9, wall=WALL) == []
    assert fanned(h.expire(now=5.0, wall=WALL)) == [("typing:stop", None)]


def test_a_message_from_a_typing_user_ends_the_episode() -> None:
    h = hub()
    h.connect(A, ALICE, None, 0.0)
    h.join(A, ALICE, C1)
    h.typing_start(A, ALICE, C1, now=0.0)
    assert fanned(h.message_sent(C1, ALICE, exclude=A)) == [("typing:stop", A)]
    assert h.message_sent(C1, ALICE, exclude=A) == []


def test_a_node_heard_first_is_asked_for_its_state_unless_it_tells_it() -> None:
    h = hub()
    effects = h.receive(OTHER, Heartbeat(), now=0.0, wall=WALL)
    assert Wake() in effects
    assert published(effects) == [SyncRequest(target=OTHER)]
    assert h.receive(OTHER, Heartbeat(), now=1.0, wall=WALL) == []
    state = StateReport(state=NodeState(online={BOB}))
    told = h.receive(NodeId("ghost"), state, now=1.0, wall=WALL)
    assert published(told) == []
    assert announced(told) == [UserOnline(user_id=BOB)]


def test_a_dead_nodes_users_go_offline_and_its_typing_ends() -> None:
    h = hub()
    h.connect(A, ALICE, None, 0.0)
    h.join(A, ALICE, C1)
    report = NodeState(online={BOB}, members={C1: {BOB}}, typing={C1: {BOB}})
    h.receive(OTHER, StateReport(state=report), now=0.0, wall=WALL)
    assert h.typing_users(C1) == {BOB}
    effects = h.expire(now=6.0, wall=WALL)
    assert fanned(effects) == [("typing:stop", None)]
    assert announced(effects) == [UserOffline(user_id=BOB, last_seen=WALL - timedelta(seconds=6))]


def test_a_goodbye_keeps_users_online_for_the_grace_period() -> None:
    h = hub()
    h.receive(OTHER, PresenceChanged(user_id=BOB, online=True), now=0.0, wall=WALL)
    assert announced(h.receive(OTHER, Bye(), now=1.0, wall=WALL)) == []
    assert h.is_online(BOB)
    assert announced(h.expire(now=4.0, wall=WALL)) == [
        UserOffline(user_id=BOB, last_seen=WALL - timedelta(seconds=3))
    ]


def test_a_sync_request_for_this_node_or_all_is_answered_with_its_state() -> None:
    h = hub()
    h.connect(A, ALICE, None, 0.0)
    h.join(A, ALICE, C1)
    h.receive(OTHER, Heartbeat(), now=0.0, wall=WALL)
    [answer] = published(h.receive(OTHER, SyncRequest(), now=0.0, wall=WALL))
    assert answer == StateReport(state=NodeState(online={ALICE}, members={C1: {ALICE}}))
    assert h.receive(OTHER, SyncRequest(target=NodeId("someone")), now=0.0, wall=WALL) == []


def test_a_room_event_from_another_node_reaches_the_room_and_ends_typing() -> None:
    h = hub()
    h.receive(OTHER, Heartbeat(), now=0.0, wall=WALL)
    typing = TypingEvent(conversation_id=C1, user_id=BOB, is_typing=True, data={"x": 1})
    h.receive(OTHER, typing, now=0.0, wall=WALL)
    ack = AckFields(conversation_id=C1, message_id=MessageId("m1"), sender_id=BOB)
    room = RoomEvent(conversation_id=C1, event="message:received", data={"m": 1}, ack=ack)
    effects = h.receive(OTHER, room, now=1.0, wall=WALL)
    [fanout] = [e for e in effects if isinstance(e, Fanout)]
    assert fanout.item.wants_ack
    assert fanout.item.data == {"m": 1}


def test_lost_room_events_tell_the_rooms_clients_to_resync() -> None:
    h = hub()
    h.connect(A, ALICE, None, 0.0)
    h.join(A, ALICE, C1)
    assert fanned(h.lost_room(C1)) == [("sync:required", None)]
    assert h.resyncs == 1
    assert published(h.lost_control()) == [SyncRequest()]


@pytest.mark.parametrize(
    "message",
    [
        RoomEvent(conversation_id=C1, event="message:status", data={"a": 1}, exclude=A),
        TypingEvent(conversation_id=C1, user_id=BOB, is_typing=False, data={"b": [1]}),
        MemberChanged(conversation_id=C1, user_id=BOB, joined=True),
        PresenceChanged(user_id=BOB, online=False, last_seen="2026-12-03T12:00:00.000Z"),
        PresenceChanged(user_id=BOB, online=True),
        SyncRequest(target=OTHER),
        SyncRequest(),
        StateReport(state=NodeState(online={BOB}, members={C1: {BOB}}, typing={C1: {BOB}})),
        Bye(),
        Heartbeat(),
    ],
)
def test_node_messages_round_trip(message: NodeMessage) -> None:
    assert decode(encode(OTHER, message)) == (OTHER, message)


def test_a_kind_from_a_newer_node_decodes_to_none_and_a_bad_one_is_refused() -> None:
    from chatrelay.backplanes import encode_envelope

    assert decode(encode_envelope(OTHER, "gossip", "{}")) == (OTHER, None)
    with pytest.raises(ValueError, match="'presence'"):
        decode(encode_envelope(OTHER, "presence", '{"userId": 1, "online": true}'))
    assert CONTROL_TOPIC == "chatrelay:control"


def test_disconnect_user_closes_the_users_connections_here_and_tells_the_others() -> None:
    from chatrelay._hub import Close
    from chatrelay._nodes import DisconnectUser

    h = hub()
    h.connect(A, UserId("alice"), None, now=0.0)
    h.connect(B, UserId("alice"), None, now=0.0)
    effects = h.disconnect_user(UserId("alice"), "blocked")
    assert effects == [
        Close(frozenset({A, B}), "blocked"),
        Publish(CONTROL_TOPIC, DisconnectUser(user_id=UserId("alice"), reason="blocked")),
    ]
    # Told by another node: only this node's connections, nothing published again.
    told = h.receive(OTHER, DisconnectUser(user_id=UserId("alice"), reason="x"), 1.0, WALL)
    assert [e for e in told if not isinstance(e, Wake | Publish)] == [Close(frozenset({A, B}), "x")]
    assert h.disconnect_user(UserId("nobody"), "x") == [
        Publish(CONTROL_TOPIC, DisconnectUser(user_id=UserId("nobody"), reason="x"))
    ]
