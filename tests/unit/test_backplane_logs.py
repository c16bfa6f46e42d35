"""The sans-I/O halves of the Redis backplane: numbering, buffering, replay, dedupe.

``Outbox`` (publisher) and ``Inbox`` (receiver) decide everything about exactly-once
delivery without a server, so these tests state the situations directly: a full
buffer, a batch sent twice, a server that restarted empty.
"""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
from hypothesis import given

from chatrelay.backplanes._inbox import Accepted, Inbox, Subscription, parse_entry_id
from chatrelay.backplanes._outbox import Outbox, OutboxEntry

NODE = "node-a"
SINCE = Subscription(instance="i1", start=(0, 0))


def fields(entry: OutboxEntry) -> dict[bytes, bytes]:
    raw = entry.fields(NODE)
    return dict(zip(raw[::2], raw[1::2], strict=True))


def outbox(limit: int = 100, replay_window: float = 5.0) -> Outbox:
    return Outbox(limit=limit, max_bytes=1 << 20, replay_window=replay_window)


def send_all(box: Outbox, *, instance: str = "i1", now: float = 0.0) -> list[OutboxEntry]:
    batch = box.batch(1000, 1 << 30)
    box.sent(
        len(batch), instance=instance, entry_ids=[f"{i + 1}-0" for i in range(len(batch))], now=now
    )
    return batch


def test_parse_entry_id_orders_like_redis() -> None:
    assert parse_entry_id("1700000000000-3") == (1700000000000, 3)
    assert parse_entry_id("5") == (5, 0)
    assert parse_entry_id("10-0") > parse_entry_id("9-99")


def test_entries_carry_the_node_sequence_and_the_previous_on_their_topic() -> None:
    box = outbox()
    box.add("t", b"1")
    box.add("u", b"2")
    box.add("t", b"3")
    entries = box.batch(10, 1 << 20)
    assert [(e.topic, e.seq, e.prev) for e in entries] == [("t", 1, 0), ("u", 2, 0), ("t", 3, 1)]
    assert fields(entries[2]) == {b"n": b"node-a", b"s": b"3", b"q": b"1", b"p": b"3"}


def test_a_full_buffer_drops_new_entries_behind_one_marker_per_topic() -> None:
    box = outbox(limit=2)
    assert box.add("t", b"1")
    assert box.add("t", b"2")
    assert not box.add("t", b"3")
    assert not box.add("u", b"4")
    assert not box.add("t", b"5")
    entries = box.batch(10, 1 << 20)
    assert [(e.topic, e.seq, e.prev, e.payload, e.dropped) for e in entries] == [
        ("t", 1, 0, b"1", 0),
        ("t", 2, 1, b"2", 0),
        ("t", 5, 2, None, 2),  # stands for 3 and 5
        ("u", 4, 0, None, 1),
    ]
    assert box.statistics.dropped == 3
    assert box.statistics.published == 5


def test_a_marker_handed_out_is_not_changed_any_more() -> None:
    box = outbox(limit=1)
    box.add("t", b"1")
    box.add("t", b"2")  # dropped: marker
    marker = box.batch(10, 1 << 20)[1]
    box.add("t", b"3")  # dropped again: a new marker, the first one is frozen
    assert (marker.seq, marker.dropped) == (2, 1)
    assert [e.seq for e in box.batch(10, 1 << 20)] == [1, 2, 3]


def test_sending_frees_room_in_the_buffer() -> None:
    box = outbox(limit=1)
    box.add("t", b"1")
    send_all(box)
    assert len(box) == 0
    assert box.add("t", b"2")
    assert box.statistics.sent == 1


def test_batches_respect_their_limits_but_always_take_one() -> None:
    box = outbox()
    box.add("t", b"x" * 10)
    box.add("t", b"y" * 10)
    assert len(box.batch(1, 1 << 20)) == 1
    assert len(box.batch(10, 15)) == 1
    assert len(box.batch(10, 5)) == 1  # even if the first alone is too large


def test_drop_front_gives_up_on_entries_the_server_refuses() -> None:
    box = outbox(limit=1)
    box.add("t", b"1")
    box.drop_front(1)
    assert len(box) == 0
    assert box.statistics.dropped == 1
    assert box.add("t", b"2")


def test_a_restart_queues_recent_entries_again_in_front_and_in_order() -> None:
    box = outbox(replay_window=5.0)
    box.add("t", b"1")
    box.add("t", b"2")
    send_all(box, instance="i1", now=10.0)
    box.add("t", b"3")  # waiting when the restart is found out
    assert box.restarted("i1", now=12.0) == 2
    entries = box.batch(10, 1 << 20)
    assert [(e.seq, e.replay_of) for e in entries] == [
        (1, ("i1", "1-0")),
        (2, ("i1", "2-0")),
        (3, None),
    ]
    assert fields(entries[0])[b"o"] == b"1-0"
    assert fields(entries[0])[b"i"] == b"i1"
    assert box.statistics.replayed == 2


def test_only_entries_inside_the_replay_window_and_of_that_instance_are_replayed() -> None:
    box = outbox(replay_window=5.0)
    box.add("t", b"old")
    send_all(box, instance="i0", now=0.0)
    box.add("t", b"other-instance")
    send_all(box, instance="i0", now=9.0)
    box.add("t", b"recent")
    send_all(box, instance="i1", now=9.0)
    assert box.restarted("i1", now=10.0) == 1
    assert [e.payload for e in box.batch(10, 1 << 20)] == [b"recent"]


def test_replayed_entries_do_not_count_against_the_buffer() -> None:
    box = outbox(limit=1)
    box.add("t", b"1")
    send_all(box, now=0.0)
    box.restarted("i1", now=1.0)
    assert box.add("t", b"2")
    send_all(box, instance="i2", now=1.0)
    assert len(box) == 0


def test_outbox_refuses_nonsense_limits() -> None:
    with pytest.raises(ValueError, match="must be > 0"):
        Outbox(limit=0, max_bytes=1, replay_window=1)


def accept(inbox: Inbox, entry: OutboxEntry, since: Subscription = SINCE) -> Accepted:
    return inbox.accept(entry.topic, fields(entry), since)


def test_inbox_delivers_once_and_drops_repeats() -> None:
    box = outbox()
    box.add("t", b"1")
    box.add("t", b"2")
    first, second = box.batch(10, 1 << 20)
    inbox = Inbox()
    assert accept(inbox, first) == Accepted(b"1", NODE)
    assert accept(inbox, first).duplicate
    assert accept(inbox, second) == Accepted(b"2", NODE)
    assert accept(inbox, first).duplicate


def test_inbox_reports_a_loss_from_the_gap_in_numbers() -> None:
    box = outbox()
    for payload in (b"1", b"2", b"3"):
        box.add("t", payload)
    first, _, third = box.batch(10, 1 << 20)
    inbox = Inbox()
    accept(inbox, first)
    assert accept(inbox, third) == Accepted(b"3", NODE, lost=1)


def test_inbox_counts_what_a_marker_stands_for() -> None:
    box = outbox(limit=1)
    for payload in (b"1", b"2", b"3"):
        box.add("t", payload)
    box.add("t", b"4")
    entry, marker = box.batch(10, 1 << 20)
    inbox = Inbox()
    accept(inbox, entry)
    assert accept(inbox, marker) == Accepted(None, NODE, lost=3)


def test_inbox_starts_anywhere_in_a_publishers_sequence() -> None:
    box = outbox()
    box.add("t", b"1")
    box.add("t", b"2")
    _, second = box.batch(10, 1 << 20)
    assert accept(Inbox(), second) == Accepted(b"2", NODE)


def test_replays_from_before_the_subscription_are_not_delivered() -> None:
    box = outbox()
    box.add("t", b"before")
    box.add("t", b"after")
    box.sent(2, instance="i1", entry_ids=["5-0", "20-0"], now=0.0)
    box.restarted("i1", now=1.0)
    before, after = box.batch(10, 1 << 20)
    since = Subscription(instance="i1", start=(10, 0))
    inbox = Inbox()
    assert accept(inbox, before, since).duplicate
    assert accept(inbox, after, since) == Accepted(b"after", NODE)
    # On an instance seen after the subscription began, everything is after it.
    assert not accept(
        Inbox(), before, Subscription(instance="i0", start=(99, 0), later=["i1"])
    ).duplicate
    # On an instance this node never saw, it cannot tell: it does not deliver.
    assert accept(Inbox(), after, Subscription(instance="i9", start=(0, 0))).duplicate


def test_a_replay_of_something_already_received_is_a_repeat() -> None:
    box = outbox()
    box.add("t", b"1")
    box.sent(1, instance="i1", entry_ids=["5-0"], now=0.0)
    box.restarted("i1", now=1.0)
    (replay,) = box.batch(10, 1 << 20)
    inbox = Inbox()
    original = OutboxEntry(topic="t", seq=1, prev=0, payload=b"1")
    accept(inbox, original)
    assert accept(inbox, replay).duplicate


def test_inbox_refuses_foreign_entries_and_forgets_topics() -> None:
    inbox = Inbox()
    with pytest.raises(ValueError, match="not a chatrelay log entry"):
        inbox.accept("t", {b"x": b"y"}, SINCE)
    entry = OutboxEntry(topic="t", seq=1, prev=0, payload=b"1")
    accept(inbox, entry)
    inbox.forget("t")
    assert not accept(inbox, entry).duplicate


def test_inbox_forgets_the_least_recent_publisher_beyond_its_memory() -> None:
    inbox = Inbox(node_memory=1)
    entry = OutboxEntry(topic="t", seq=1, prev=0, payload=b"1")
    from_b = entry.fields("node-b")
    accept(inbox, entry)
    inbox.accept("t", dict(zip(from_b[::2], from_b[1::2], strict=True)), SINCE)
    assert not accept(inbox, entry).duplicate  # node-a was forgotten


@given(
    st.lists(st.tuples(st.sampled_from(["t", "u"]), st.binary(max_size=4)), max_size=30),
    st.lists(st.integers(min_value=0, max_value=29), max_size=30),
    st.booleans(),
)
def test_any_repeats_and_replays_deliver_each_payload_once_in_order(
    published: list[tuple[str, bytes]], repeats: list[int], restart: bool
) -> None:
    box = outbox()
    for topic, payload in published:
        box.add(topic, payload)
    sent = box.batch(1000, 1 << 30)
    box.sent(len(sent), instance="i1", entry_ids=[f"{i + 1}-0" for i in range(len(sent))], now=0.0)
    stream = list(sent)
    # A batch sent again after an ambiguous failure: some entries a second time.
    stream += [sent[i] for i in sorted(repeats) if i < len(sent)]
    if restart:
        box.restarted("i1", now=1.0)
        stream += box.batch(1000, 1 << 30)
    inbox = Inbox()
    delivered: dict[str, list[bytes]] = {"t": [], "u": []}
    for entry in stream:
        result = accept(inbox, entry)
        assert result.lost == 0
        if result.payload is not None:
            delivered[entry.topic].append(result.payload)
    for topic in ("t", "u"):
        assert delivered[topic] == [p for t, p in published if t == topic]
