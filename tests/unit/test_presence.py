"""Tests of PresenceTracker: unit tests, and a state machine checked against a plain model."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from chatrelay import ConnectionId, PresenceChanged, PresenceTracker

A1 = ConnectionId("a1")
A2 = ConnectionId("a2")
B1 = ConnectionId("b1")


def online(user: str, at: float) -> PresenceChanged:
    return PresenceChanged(user_id=user, online=True, at=at)


def offline(user: str, at: float) -> PresenceChanged:
    return PresenceChanged(user_id=user, online=False, at=at)


@pytest.mark.parametrize("grace", [-1, -0.001])
def test_negative_grace_rejected(grace: float) -> None:
    with pytest.raises(ValueError, match="grace"):
        PresenceTracker(grace=grace)


def test_zero_grace_allowed() -> None:
    tracker = PresenceTracker(grace=0)
    tracker.connect("a", A1, 1)
    tracker.disconnect("a", A1, 2)
    assert tracker.is_online("a")  # until expire(2) runs
    assert tracker.next_deadline() == 2
    assert tracker.expire(2) == [offline("a", 2)]
    assert not tracker.is_online("a")


def test_initial_state() -> None:
    tracker = PresenceTracker(grace=3)
    assert tracker.grace == 3
    assert not tracker.is_online("a")
    assert not tracker.is_connected("a")
    assert tracker.online_users() == frozenset()
    assert tracker.connections("a") == frozenset()
    assert tracker.last_seen("a") is None
    assert tracker.next_deadline() is None
    assert tracker.expire(100) == []


def test_first_connection_goes_online() -> None:
    tracker = PresenceTracker(grace=3)
    assert tracker.connect("a", A1, 10) == online("a", 10)
    assert tracker.is_online("a")
    assert tracker.is_connected("a")
    assert tracker.online_users() == {"a"}
    assert tracker.connections("a") == {A1}
    assert tracker.connect("a", A2, 11) is None
    assert tracker.connections("a") == {A1, A2}


def test_duplicate_connect_rejected() -> None:
    tracker = PresenceTracker(grace=3)
    tracker.connect("a", A1, 0)
    with pytest.raises(ValueError, match="already connected"):
        tracker.connect("a", A1, 1)
    assert tracker.connections("a") == {A1}


def test_unknown_disconnect_rejected() -> None:
    tracker = PresenceTracker(grace=3)
    with pytest.raises(ValueError, match="not connected"):
        tracker.disconnect("a", A1, 0)  # unknown user
    tracker.connect("a", A1, 0)
    with pytest.raises(ValueError, match="not connected"):
        tracker.disconnect("a", A2, 0)  # known user, unknown connection
    with pytest.raises(ValueError, match="not connected"):
        tracker.disconnect("b", A1, 0)  # connection of another user
    assert tracker.connections("a") == {A1}


def test_last_connection_starts_grace_then_offline() -> None:
    tracker = PresenceTracker(grace=3)
    tracker.connect("a", A1, 0)
    tracker.connect("a", A2, 1)
    tracker.disconnect("a", A1, 2)
    assert tracker.next_deadline() is None  # still connected
    tracker.disconnect("a", A2, 4)
    assert tracker.is_online("a")
    assert not tracker.is_connected("a")
    assert tracker.connections("a") == frozenset()
    assert tracker.online_users() == {"a"}
    assert tracker.last_seen("a") is None  # online during the grace
    assert tracker.next_deadline() == 7
    assert tracker.expire(6.999) == []
    assert tracker.is_online("a")
    assert tracker.expire(7) == [offline("a", 4)]  # at = last disconnect, not the deadline
    assert not tracker.is_online("a")
    assert tracker.online_users() == frozenset()
    assert tracker.last_seen("a") == 4
    assert tracker.next_deadline() is None
    assert tracker.expire(100) == []


def test_reconnect_within_grace_reports_nothing() -> None:
    tracker = PresenceTracker(grace=3)
    tracker.connect("a", A1, 0)
    tracker.disconnect("a", A1, 1)
    assert tracker.connect("a", A2, 2) is None
    assert tracker.next_deadline() is None  # the stale deadline is dropped
    assert tracker.expire(10) == []
    assert tracker.is_online("a")
    assert tracker.last_seen("a") is None


def test_expire_skips_the_deadline_of_a_reconnected_user() -> None:
    tracker = PresenceTracker(grace=3)
    tracker.connect("a", A1, 0)
    tracker.connect("b", B1, 0)
    tracker.disconnect("a", A1, 1)  # deadline 4, made stale by the reconnect below
    tracker.connect("a", A1, 2)
    tracker.disconnect("b", B1, 2)  # deadline 5
    assert tracker.expire(10) == [offline("b", 2)]
    assert tracker.is_online("a")
    assert tracker.next_deadline() is None


def test_second_disconnect_moves_the_deadline() -> None:
    tracker = PresenceTracker(grace=3)
    tracker.connect("a", A1, 0)
    tracker.disconnect("a", A1, 1)  # deadline 4
    tracker.connect("a", A1, 2)
    tracker.disconnect("a", A1, 3)  # deadline 6
    assert tracker.next_deadline() == 6
    assert tracker.expire(5) == []  # the deadline 4 entry is stale
    assert tracker.expire(6) == [offline("a", 3)]


def test_expire_orders_users_by_deadline() -> None:
    tracker = PresenceTracker(grace=2)
    tracker.connect("b", B1, 0)
    tracker.connect("a", A1, 0)
    tracker.disconnect("b", B1, 1)
    tracker.disconnect("a", A1, 1.5)
    assert tracker.next_deadline() == 3
    assert tracker.expire(10) == [offline("b", 1), offline("a", 1.5)]


def test_back_online_after_going_offline() -> None:
    tracker = PresenceTracker(grace=1)
    tracker.connect("a", A1, 0)
    tracker.disconnect("a", A1, 1)
    tracker.expire(2)
    assert tracker.last_seen("a") == 1
    assert tracker.connect("a", A1, 5) == online("a", 5)
    assert tracker.last_seen("a") is None
    tracker.disconnect("a", A1, 6)
    assert tracker.expire(7) == [offline("a", 6)]
    assert tracker.last_seen("a") == 6


# --- stateful --------------------------------------------------------------------------

USERS = ["a", "b", "c"]
CONNECTIONS = [ConnectionId(n) for n in ("1", "2")]
users = st.sampled_from(USERS)
connection_ids = st.sampled_from(CONNECTIONS)


class PresenceMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.grace = 0.0
        self.tracker = PresenceTracker(grace=0)
        self.live: dict[str, set[ConnectionId]] = {}
        self.leaving: dict[str, tuple[float, float]] = {}  # user -> (deadline, last disconnect)
        self.log: dict[str, list[PresenceChanged]] = {}
        self.offline_at: dict[str, float] = {}

    @initialize(grace=st.sampled_from([0.0, 0.5, 2.0, 3.25]) | st.floats(0, 10))
    def make(self, grace: float) -> None:
        self.grace = grace
        self.tracker = PresenceTracker(grace=grace)
        self.now = 1000.0

    def model_online(self, user: str) -> bool:
        return bool(self.live.get(user)) or user in self.leaving

    def record(self, change: PresenceChanged) -> None:
        history = self.log.setdefault(change.user_id, [])
        # Online and offline alternate, starting with online.
        assert change.online == (not history or not history[-1].online)
        history.append(change)

    @rule(step=st.sampled_from([0.0, 0.25, 1.0, 3.0]) | st.floats(0, 5))
    def advance(self, step: float) -> None:
        self.now += step

    @rule(user=users, connection=connection_ids)
    def connect(self, user: str, connection: ConnectionId) -> None:
        conns = self.live.setdefault(user, set())
        if connection in conns:
            with pytest.raises(ValueError, match="already connected"):
                self.tracker.connect(user, connection, self.now)
            return
        was_online = self.model_online(user)
        change = self.tracker.connect(user, connection, self.now)
        conns.add(connection)
        self.leaving.pop(user, None)
        if was_online:
            assert change is None
        else:
            assert change == online(user, self.now)
            self.record(change)

    @rule(user=users, connection=connection_ids)
    def disconnect(self, user: str, connection: ConnectionId) -> None:
        conns = self.live.get(user, set())
        if connection not in conns:
            with pytest.raises(ValueError, match="not connected"):
                self.tracker.disconnect(user, connection, self.now)
            return
        self.tracker.disconnect(user, connection, self.now)
        conns.remove(connection)
        if not conns:
            self.leaving[user] = (self.now + self.grace, self.now)

    @rule()
    def expire(self) -> None:
        due = sorted(
            (deadline, user, seen)
            for user, (deadline, seen) in self.leaving.items()
            if deadline <= self.now
        )
        changes = self.tracker.expire(self.now)
        assert changes == [offline(user, seen) for _, user, seen in due]
        for change in changes:
            self.record(change)
            del self.leaving[change.user_id]
            self.offline_at[change.user_id] = change.at
        # Nobody whose grace ran out by now is still online.
        for user in USERS:
            in_grace = user in self.leaving and self.leaving[user][0] > self.now
            assert self.tracker.is_online(user) == (bool(self.live.get(user)) or in_grace)

    @invariant()
    def matches_model(self) -> None:
        for user in USERS:
            is_online = self.model_online(user)
            assert self.tracker.is_online(user) == is_online
            assert self.tracker.is_connected(user) == bool(self.live.get(user))
            assert self.tracker.connections(user) == self.live.get(user, set())
            expected_seen = None if is_online else self.offline_at.get(user)
            assert self.tracker.last_seen(user) == expected_seen
            # The log says online exactly when the user is online.
            history = self.log.get(user, [])
            assert bool(history and history[-1].online) == is_online
        assert self.tracker.online_users() == {u for u in USERS if self.model_online(u)}
        deadlines = [deadline for deadline, _ in self.leaving.values()]
        assert self.tracker.next_deadline() == (min(deadlines) if deadlines else None)


def test_presence_state_machine() -> None:
    run_state_machine_as_test(
        PresenceMachine,
        settings=settings(max_examples=100, stateful_step_count=50, deadline=None),
    )


def test_last_seen_is_remembered_for_a_bounded_time_and_number_of_users() -> None:
    tracker = PresenceTracker(grace=1, last_seen_ttl=100, last_seen_limit=50)
    # A stream of distinct users, one a second, each online for a moment.
    for n in range(10_000):
        user, conn = f"u{n}", ConnectionId(f"c{n}")
        tracker.connect(user, conn, now=n)
        tracker.disconnect(user, conn, now=n + 0.5)
        tracker.expire(now=n + 1.5)
        assert len(tracker._last_seen) <= 50
    assert tracker.last_seen("u9999") == 9999.5
    assert tracker.last_seen("u9950") == 9950.5  # the 50 most recent
    assert tracker.last_seen("u9949") is None  # forgotten: answered as never seen
    # By age: a day later, once a grace period ends, only the newest is remembered.
    tracker.connect("late", ConnectionId("l"), now=90_000)
    tracker.disconnect("late", ConnectionId("l"), now=90_000)
    assert tracker.expire(now=90_001) == [offline("late", 90_000)]
    assert tracker._last_seen == {"late": 90_000}
    # A user who goes offline again moves to the newest end.
    tracker.connect("u9999", ConnectionId("x"), now=90_010)
    tracker.disconnect("u9999", ConnectionId("x"), now=90_010)
    tracker.expire(now=90_011)
    assert list(tracker._last_seen) == ["late", "u9999"]


def test_the_default_bounds_hold_for_many_distinct_users() -> None:
    tracker = PresenceTracker(grace=0)
    assert (tracker.last_seen_ttl, tracker.last_seen_limit) == (3600, 10_000)
    # 30,000 users in 50 minutes: the count bounds them.
    for n in range(30_000):
        user, conn = f"u{n}", ConnectionId("c")
        tracker.connect(user, conn, now=n * 0.1)
        tracker.disconnect(user, conn, now=n * 0.1)
        tracker.expire(now=n * 0.1)
    assert len(tracker._last_seen) == 10_000
    # 1,000 users an hour from then on: the age bounds them.
    for n in range(1_000):
        user, conn = f"v{n}", ConnectionId("c")
        now = 3000 + 3600 + n * 3.6
        tracker.connect(user, conn, now=now)
        tracker.disconnect(user, conn, now=now)
        tracker.expire(now=now)
    assert len(tracker._last_seen) <= 1_001


def test_last_seen_bounds_are_not_negative() -> None:
    with pytest.raises(ValueError, match="last_seen"):
        PresenceTracker(grace=1, last_seen_ttl=-1)
    with pytest.raises(ValueError, match="last_seen"):
        PresenceTracker(grace=1, last_seen_limit=-1)
