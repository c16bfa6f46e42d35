"""Tests of TypingDebouncer: unit tests, and a state machine checked against a plain model."""

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

from chatrelay import ConnectionId, TypingChanged, TypingDebouncer

A1 = ConnectionId("a1")
A2 = ConnectionId("a2")
B1 = ConnectionId("b1")


def started(conversation: str, user: str, connection: ConnectionId | None) -> TypingChanged:
    return TypingChanged(
        conversation_id=conversation, user_id=user, is_typing=True, connection_id=connection
    )


def stopped(conversation: str, user: str, connection: ConnectionId | None) -> TypingChanged:
    return TypingChanged(
        conversation_id=conversation, user_id=user, is_typing=False, connection_id=connection
    )


@pytest.mark.parametrize("timeout", [0, -1, -0.5])
def test_non_positive_timeout_rejected(timeout: float) -> None:
    with pytest.raises(ValueError, match="timeout"):
        TypingDebouncer(timeout=timeout)


def test_initial_state() -> None:
    typing = TypingDebouncer(timeout=5)
    assert typing.timeout == 5
    assert typing.typing("c") == []
    assert not typing.is_typing("c", "a")
    assert typing.next_deadline() is None
    assert typing.expire(100) == []
    assert typing.stop("c", "a", A1) is None
    assert typing.message_sent("c", "a") is None
    assert typing.leave(A1, "c") is None
    assert typing.disconnect(A1) == []


def test_start_then_refresh() -> None:
    typing = TypingDebouncer(timeout=5)
    assert typing.start("c", "a", A1, 0) == started("c", "a", A1)
    assert typing.is_typing("c", "a")
    assert typing.typing("c") == ["a"]
    assert typing.next_deadline() == 5
    assert typing.start("c", "a", A1, 2) is None
    assert typing.next_deadline() == 7  # the deadline of the first start is stale
    assert typing.typing("c") == ["a"]


def test_stop() -> None:
    typing = TypingDebouncer(timeout=5)
    typing.start("c", "a", A1, 0)
    assert typing.stop("c", "a", A1) == stopped("c", "a", A1)
    assert not typing.is_typing("c", "a")
    assert typing.typing("c") == []
    assert typing.stop("c", "a", A1) is None
    assert typing.next_deadline() is None
    assert typing.expire(10) == []


def test_stop_of_another_user_in_the_same_room() -> None:
    typing = TypingDebouncer(timeout=5)
    typing.start("c", "a", A1, 0)
    assert typing.stop("c", "b") is None
    assert typing.typing("c") == ["a"]


def test_typing_lists_users_in_start_order() -> None:
    typing = TypingDebouncer(timeout=5)
    typing.start("c", "b", B1, 0)
    typing.start("c", "a", A1, 1)
    typing.start("c", "b", B1, 2)  # a refresh does not reorder
    typing.start("d", "a", A2, 2)
    assert typing.typing("c") == ["b", "a"]
    assert typing.typing("d") == ["a"]


def test_timeout_expires_at_exactly_the_deadline() -> None:
    typing = TypingDebouncer(timeout=5)
    typing.start("c", "a", A1, 1)
    typing.start("c", "a", A1, 3)
    assert typing.expire(7.999) == []  # 1 + 5 passed, but the refresh at 3 counts
    assert typing.is_typing("c", "a")
    assert typing.expire(8) == [stopped("c", "a", None)]
    assert not typing.is_typing("c", "a")
    assert typing.next_deadline() is None


def test_expire_orders_by_deadline() -> None:
    typing = TypingDebouncer(timeout=2)
    typing.start("d", "b", B1, 0)
    typing.start("c", "a", A1, 1)
    typing.start("c", "b", B1, 1)
    assert typing.expire(100) == [
        stopped("d", "b", None),
        stopped("c", "a", None),
        stopped("c", "b", None),
    ]


def test_message_sent_ends_the_episode() -> None:
    typing = TypingDebouncer(timeout=5)
    typing.start("c", "a", A1, 0)
    assert typing.message_sent("c", "a") == stopped("c", "a", None)
    assert typing.message_sent("c", "a") is None
    assert typing.disconnect(A1) == []


def test_leave_ends_only_the_episode_in_that_room() -> None:
    typing = TypingDebouncer(timeout=5)
    typing.start("c", "a", A1, 0)
    typing.start("d", "a", A1, 0)
    assert typing.leave(A1, "e") is None
    assert typing.leave(A1, "c") == stopped("c", "a", A1)
    assert typing.typing("d") == ["a"]
    assert typing.leave(A1, "c") is None


def test_leave_of_a_connection_that_does_not_own_the_episode() -> None:
    typing = TypingDebouncer(timeout=5)
    typing.start("c", "a", A1, 0)
    assert typing.leave(A2, "c") is None
    assert typing.is_typing("c", "a")


def test_disconnect_ends_every_owned_episode() -> None:
    typing = TypingDebouncer(timeout=5)
    typing.start("d", "a", A1, 0)
    typing.start("c", "a", A1, 0)
    typing.start("c", "b", B1, 0)
    assert typing.disconnect(A1) == [stopped("c", "a", A1), stopped("d", "a", A1)]
    assert typing.typing("c") == ["b"]
    assert typing.typing("d") == []
    assert typing.disconnect(A1) == []


def test_refresh_from_another_connection_takes_ownership() -> None:
    typing = TypingDebouncer(timeout=5)
    typing.start("c", "a", A1, 0)
    assert typing.start("c", "a", A2, 1) is None
    # A1 no longer owns it: its leaving or vanishing does not end the episode.
    assert typing.leave(A1, "c") is None
    assert typing.disconnect(A1) == []
    assert typing.is_typing("c", "a")
    assert typing.disconnect(A2) == [stopped("c", "a", A2)]


def test_stop_from_a_non_owner_still_ends_the_episode() -> None:
    typing = TypingDebouncer(timeout=5)
    typing.start("c", "a", A1, 0)
    assert typing.stop("c", "a", A2) == stopped("c", "a", A2)
    assert typing.disconnect(A1) == []


def test_new_episode_after_stop() -> None:
    typing = TypingDebouncer(timeout=5)
    typing.start("c", "a", A1, 0)
    typing.stop("c", "a", A1)
    assert typing.start("c", "a", A1, 0) == started("c", "a", A1)
    # The first episode's heap entry has the same deadline; it ends once, not twice.
    assert typing.next_deadline() == 5
    assert typing.expire(5) == [stopped("c", "a", None)]
    assert typing.expire(5) == []


# --- stateful --------------------------------------------------------------------------

CONVERSATIONS = ["x", "y"]
OWNERS = {ConnectionId(f"{u}{n}"): u for u in "ab" for n in (1, 2)}
conversations = st.sampled_from(CONVERSATIONS)
connection_ids = st.sampled_from(sorted(OWNERS))
Key = tuple[str, str]


class TypingMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.timeout = 1.0
        self.typing = TypingDebouncer(timeout=1)
        # (conversation, user) -> [owner, last refresh]; insertion order = start order
        self.open: dict[Key, tuple[ConnectionId, float]] = {}
        self.log: dict[Key, list[bool]] = {}

    @initialize(timeout=st.sampled_from([0.5, 1.0, 5.0]) | st.floats(0.01, 10))
    def make(self, timeout: float) -> None:
        self.timeout = timeout
        self.typing = TypingDebouncer(timeout=timeout)
        self.now = 50.0

    def record(self, change: TypingChanged) -> None:
        key = (change.conversation_id, change.user_id)
        history = self.log.setdefault(key, [])
        # start, stop, start, stop...: never two starts, never a stop without a start.
        assert change.is_typing == (not history or not history[-1])
        history.append(change.is_typing)

    def expect_stop(
        self, change: TypingChanged | None, key: Key, connection: ConnectionId | None
    ) -> None:
        if key in self.open:
            assert change == stopped(*key, connection)
            self.record(change)
            del self.open[key]
        else:
            assert change is None

    @rule(step=st.sampled_from([0.0, 0.5, 1.0]) | st.floats(0, 3))
    def advance(self, step: float) -> None:
        self.now += step

    @rule(conversation=conversations, connection=connection_ids)
    def start(self, conversation: str, connection: ConnectionId) -> None:
        key = (conversation, OWNERS[connection])
        change = self.typing.start(conversation, OWNERS[connection], connection, self.now)
        if key in self.open:
            assert change is None
        else:
            assert change == started(*key, connection)
            self.record(change)
        self.open[key] = (connection, self.now)

    @rule(conversation=conversations, connection=connection_ids)
    def stop(self, conversation: str, connection: ConnectionId) -> None:
        key = (conversation, OWNERS[connection])
        self.expect_stop(self.typing.stop(*key, connection), key, connection)

    @rule(conversation=conversations, user=st.sampled_from("ab"))
    def message_sent(self, conversation: str, user: str) -> None:
        key = (conversation, user)
        self.expect_stop(self.typing.message_sent(*key), key, None)

    @rule(conversation=conversations, connection=connection_ids)
    def leave(self, conversation: str, connection: ConnectionId) -> None:
        key = (conversation, OWNERS[connection])
        change = self.typing.leave(connection, conversation)
        if key in self.open and self.open[key][0] == connection:
            self.expect_stop(change, key, connection)
        else:
            assert change is None

    @rule(connection=connection_ids)
    def disconnect(self, connection: ConnectionId) -> None:
        owned = sorted(key for key, (owner, _) in self.open.items() if owner == connection)
        changes = self.typing.disconnect(connection)
        assert changes == [stopped(*key, connection) for key in owned]
        for change, key in zip(changes, owned, strict=True):
            self.record(change)
            del self.open[key]

    @rule()
    def expire(self) -> None:
        due = sorted(
            (last + self.timeout, key)
            for key, (_, last) in self.open.items()
            if last + self.timeout <= self.now
        )
        changes = self.typing.expire(self.now)
        assert changes == [stopped(*key, None) for _, key in due]
        for change, (_, key) in zip(changes, due, strict=True):
            self.record(change)
            del self.open[key]
        # Every episode still open was refreshed within the timeout.
        for _, last in self.open.values():
            assert last + self.timeout > self.now

    @invariant()
    def matches_model(self) -> None:
        for conversation in CONVERSATIONS:
            users = [user for (conv, user) in self.open if conv == conversation]
            assert self.typing.typing(conversation) == users
            for user in "ab":
                assert self.typing.is_typing(conversation, user) == (user in users)
        for key in self.log:
            # The log says typing exactly when an episode is open.
            assert self.log[key][-1] == (key in self.open)
        deadlines = [last + self.timeout for _, last in self.open.values()]
        assert self.typing.next_deadline() == (min(deadlines) if deadlines else None)


def test_typing_state_machine() -> None:
    run_state_machine_as_test(
        TypingMachine,
        settings=settings(max_examples=100, stateful_step_count=50, deadline=None),
    )
