"""Tests of RoomRegistry: unit tests, and a state machine checked against a plain model."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from chatrelay import ConnectionId, RoomRegistry, RoomStatistics

A1 = ConnectionId("a1")
A2 = ConnectionId("a2")
B1 = ConnectionId("b1")


def test_empty_registry() -> None:
    rooms = RoomRegistry()
    assert rooms.rooms() == frozenset()
    assert list(rooms.connections("c")) == []
    assert rooms.rooms_of(A1) == frozenset()
    assert rooms.members("c") == frozenset()
    assert rooms.rooms_of_user("a") == frozenset()
    assert not rooms.is_in(A1, "c")
    assert not rooms.is_member("a", "c")
    assert rooms.statistics() == RoomStatistics(rooms=0, memberships=0)


def test_join() -> None:
    rooms = RoomRegistry()
    assert rooms.join(A1, "a", "c") is True
    assert rooms.is_in(A1, "c")
    assert rooms.is_member("a", "c")
    assert set(rooms.connections("c")) == {A1}
    assert rooms.rooms_of(A1) == {"c"}
    assert rooms.members("c") == {"a"}
    assert rooms.rooms_of_user("a") == {"c"}
    assert rooms.rooms() == {"c"}
    assert rooms.statistics() == RoomStatistics(rooms=1, memberships=1)


def test_join_twice_is_a_no_op() -> None:
    rooms = RoomRegistry()
    rooms.join(A1, "a", "c")
    assert rooms.join(A1, "a", "c") is False
    assert rooms.statistics() == RoomStatistics(rooms=1, memberships=1)
    # One leave is enough: the second join did not count twice.
    assert rooms.leave(A1, "c") is True
    assert not rooms.is_member("a", "c")
    assert rooms.rooms() == frozenset()


def test_user_with_two_connections_stays_member_until_both_leave() -> None:
    rooms = RoomRegistry()
    rooms.join(A1, "a", "c")
    rooms.join(A2, "a", "c")
    rooms.join(B1, "b", "c")
    assert rooms.members("c") == {"a", "b"}
    assert set(rooms.connections("c")) == {A1, A2, B1}
    assert rooms.leave(A1, "c") is True
    assert rooms.is_member("a", "c")
    assert rooms.rooms_of_user("a") == {"c"}
    assert rooms.leave(A2, "c") is True
    assert not rooms.is_member("a", "c")
    assert rooms.rooms_of_user("a") == frozenset()
    assert rooms.members("c") == {"b"}
    assert rooms.statistics() == RoomStatistics(rooms=1, memberships=1)


def test_leave_when_not_in_the_room() -> None:
    rooms = RoomRegistry()
    assert rooms.leave(A1, "c") is False  # no such room
    rooms.join(B1, "b", "c")
    assert rooms.leave(A1, "c") is False  # room exists, connection not in it
    assert set(rooms.connections("c")) == {B1}
    assert rooms.rooms_of(A1) == frozenset()


def test_leave_one_of_several_rooms() -> None:
    rooms = RoomRegistry()
    rooms.join(A1, "a", "c")
    rooms.join(A1, "a", "d")
    assert rooms.leave(A1, "c") is True
    assert rooms.rooms_of(A1) == {"d"}
    assert rooms.rooms_of_user("a") == {"d"}
    assert rooms.rooms() == {"d"}
    assert rooms.statistics() == RoomStatistics(rooms=1, memberships=1)


def test_disconnect_leaves_every_room() -> None:
    rooms = RoomRegistry()
    rooms.join(A1, "a", "c")
    rooms.join(A1, "a", "d")
    rooms.join(B1, "b", "d")
    assert rooms.disconnect(A1) == {"c", "d"}
    assert rooms.rooms_of(A1) == frozenset()
    assert rooms.rooms() == {"d"}
    assert rooms.members("d") == {"b"}
    assert rooms.rooms_of_user("a") == frozenset()
    assert rooms.disconnect(A1) == frozenset()
    assert rooms.statistics() == RoomStatistics(rooms=1, memberships=1)


def test_connections_is_a_live_view() -> None:
    rooms = RoomRegistry()
    rooms.join(A1, "a", "c")
    view = rooms.connections("c")
    rooms.join(B1, "b", "c")
    assert set(view) == {A1, B1}
    assert len(view) == 2


def test_answers_are_snapshots() -> None:
    rooms = RoomRegistry()
    rooms.join(A1, "a", "c")
    of, members, users = rooms.rooms_of(A1), rooms.members("c"), rooms.rooms_of_user("a")
    all_rooms = rooms.rooms()
    rooms.disconnect(A1)
    assert of == {"c"}
    assert members == {"a"}
    assert users == {"c"}
    assert all_rooms == {"c"}


# --- stateful --------------------------------------------------------------------------

USERS = {ConnectionId(f"{u}{n}"): u for u in "ab" for n in range(2)} | {ConnectionId("c0"): "c"}
connections = st.sampled_from(sorted(USERS))
conversations = st.sampled_from(["x", "y", "z"])


class RoomMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.rooms = RoomRegistry()
        self.model: dict[ConnectionId, set[str]] = {}

    @rule(connection=connections, conversation=conversations)
    def join(self, connection: ConnectionId, conversation: str) -> None:
        joined = self.model.setdefault(connection, set())
        assert self.rooms.join(connection, USERS[connection], conversation) == (
            conversation not in joined
        )
        joined.add(conversation)

    @rule(connection=connections, conversation=conversations)
    def leave(self, connection: ConnectionId, conversation: str) -> None:
        joined = self.model.get(connection, set())
        assert self.rooms.leave(connection, conversation) == (conversation in joined)
        joined.discard(conversation)
        assert not self.rooms.is_in(connection, conversation)

    @rule(connection=connections)
    def disconnect(self, connection: ConnectionId) -> None:
        assert self.rooms.disconnect(connection) == self.model.pop(connection, set())
        assert self.rooms.rooms_of(connection) == frozenset()

    @invariant()
    def matches_model(self) -> None:
        all_rooms = {room for joined in self.model.values() for room in joined}
        assert self.rooms.rooms() == all_rooms  # empty rooms disappear
        for conversation in ["x", "y", "z"]:
            inside = {c for c, joined in self.model.items() if conversation in joined}
            assert set(self.rooms.connections(conversation)) == inside
            assert self.rooms.members(conversation) == {USERS[c] for c in inside}
            for connection, user in USERS.items():
                assert self.rooms.is_in(connection, conversation) == (connection in inside)
                assert self.rooms.is_member(user, conversation) == (
                    user in {USERS[c] for c in inside}
                )
        for connection, user in USERS.items():
            assert self.rooms.rooms_of(connection) == self.model.get(connection, set())
            mine = {r for c, joined in self.model.items() if USERS[c] == user for r in joined}
            assert self.rooms.rooms_of_user(user) == mine
        memberships = sum(len(joined) for joined in self.model.values())
        assert self.rooms.statistics() == RoomStatistics(
            rooms=len(all_rooms), memberships=memberships
        )


def test_room_registry_state_machine() -> None:
    run_state_machine_as_test(
        RoomMachine, settings=settings(max_examples=80, stateful_step_count=40, deadline=None)
    )
