"""The publisher's side of a log-based backplane, without I/O.

An `Outbox` numbers what a node publishes, holds it while the connection is
down (bounded), hands it out in order, and keeps what was sent recently so that it can
be sent again if the server that held it restarted empty. Receivers undo the repeats
with an `Inbox`.

Numbering: every entry gets the node's next sequence number (``seq``, one counter per
node) and the number of this node's previous entry on the same topic (``prev``). A
receiver that knows the last number it got from a node on a topic spots a repeat
(``seq`` not above it) and a loss (``prev`` above it).

When the buffer is full, new entries are dropped, never old ones: order is kept, and a
*gap marker* (an entry without payload, counting the dropped ones) takes their place,
so that receivers learn of the loss as soon as the marker arrives.
"""

from __future__ import annotations

from collections import OrderedDict, deque

import attrs

__all__ = ["Outbox", "OutboxEntry", "OutboxStatistics"]


@attrs.define(eq=False)
class OutboxEntry:
    """One entry to append to a topic's log.

    Attributes:
        topic: Where it goes.
        seq: This node's sequence number for it.
        prev: The sequence number of this node's previous entry on the topic, or 0.
        payload: What was published; ``None`` for a gap marker.
        dropped: For a gap marker, how many entries it stands for.
        replay_of: For an entry sent again, the server instance and the log id it
            had there.
    """

    topic: str
    seq: int
    prev: int
    payload: bytes | None
    dropped: int = 0
    replay_of: tuple[str, str] | None = None

    def fields(self, node: str) -> list[bytes]:
        """The entry's fields, as alternating names and values."""
        fields = [b"n", node.encode(), b"s", b"%d" % self.seq, b"q", b"%d" % self.prev]
        if self.payload is not None:
            fields += [b"p", self.payload]
        else:
            fields += [b"g", b"%d" % self.dropped]
        if self.replay_of is not None:
            instance, entry_id = self.replay_of
            fields += [b"i", instance.encode(), b"o", entry_id.encode()]
        return fields

    @property
    def size(self) -> int:
        """The payload's size in bytes (0 for a marker)."""
        return len(self.payload) if self.payload is not None else 0


@attrs.define
class OutboxStatistics:
    """Counters of an `Outbox`.

    Attributes:
        published: Entries accepted by `Outbox.add`.
        sent: Entries confirmed sent (replays included).
        dropped: Entries dropped because the buffer was full.
        replayed: Entries queued again after a server restart.
    """

    published: int = 0
    sent: int = 0
    dropped: int = 0
    replayed: int = 0


@attrs.define
class _Sent:
    at: float
    entry: OutboxEntry
    instance: str
    entry_id: str


class Outbox:
    """Numbers, buffers and replays what one node publishes.

    Args:
        limit: Entries held at most while they cannot be sent.
        max_bytes: Payload bytes held at most while they cannot be sent.
        replay_window: Seconds during which a sent entry is kept, to be sent again if
            the server restarted before every reader got it.
        topic_memory: Topics whose last sequence number is remembered; beyond it,
            the least recently used topics are forgotten (their next entry then
            carries ``prev=0``, which turns off loss detection for that one entry).
    """

    def __init__(
        self,
        *,
        limit: int,
        max_bytes: int,
        replay_window: float,
        topic_memory: int = 100_000,
    ) -> None:
        if limit <= 0 or max_bytes <= 0:
            raise ValueError("limit and max_bytes must be > 0")
        self.limit = limit
        self.max_bytes = max_bytes
        self.replay_window = replay_window
        self.topic_memory = topic_memory
        self.statistics = OutboxStatistics()
        self._seq = 0
        self._last: OrderedDict[str, int] = OrderedDict()
        self._queue: deque[OutboxEntry] = deque()
        self._entries = 0  # entries with a payload in the queue
        self._bytes = 0
        self._markers: dict[str, OutboxEntry] = {}  # each topic's trailing marker
        self._recent: deque[_Sent] = deque()

    def __len__(self) -> int:
        """The number of entries waiting, markers and replays included."""
        return len(self._queue)

    def add(self, topic: str, payload: bytes) -> bool:
        """Number ``payload`` and queue it behind everything queued before.

        Returns:
            ``False`` if the buffer was full: the entry was dropped, and a gap marker
            tells receivers.
        """
        self._seq += 1
        seq = self._seq
        prev = self._last.pop(topic, 0)
        self._last[topic] = seq
        if len(self._last) > self.topic_memory:
            self._last.popitem(last=False)
        self.statistics.published += 1
        if self._entries >= self.limit or self._bytes + len(payload) > self.max_bytes:
            self.statistics.dropped += 1
            marker = self._markers.get(topic)
            if marker is None:
                marker = OutboxEntry(topic=topic, seq=seq, prev=prev, payload=None, dropped=1)
                self._markers[topic] = marker
                self._queue.append(marker)
            else:
                marker.seq = seq
                marker.dropped += 1
            return False
        # A drop after this entry needs a new marker behind it.
        self._markers.pop(topic, None)
        self._queue.append(OutboxEntry(topic=topic, seq=seq, prev=prev, payload=payload))
        self._entries += 1
        self._bytes += len(payload)
        return True

    def batch(self, max_entries: int, max_bytes: int) -> list[OutboxEntry]:
        """The entries to send next, oldest first (at least one if any is waiting).

        They stay queued until `sent` confirms them. A gap marker handed out
        is not updated any more: later drops get a marker of their own.
        """
        batch: list[OutboxEntry] = []
        size = 0
        for entry in self._queue:
            if batch and (len(batch) >= max_entries or size + entry.size > max_bytes):
                break
            batch.append(entry)
            size += entry.size
            if self._markers.get(entry.topic) is entry:
                del self._markers[entry.topic]
        return batch

    def sent(self, count: int, *, instance: str, entry_ids: list[str], now: float) -> None:
        """Confirm that the first ``count`` queued entries were sent.

        Args:
            count: How many, from the front of the queue.
            instance: The server instance that took them.
            entry_ids: The id each one got there (empty if unknown: not replayable).
            now: The current time, for the replay window.
        """
        for index in range(count):
            entry = self._queue.popleft()
            if entry.payload is not None and entry.replay_of is None:
                self._entries -= 1
                self._bytes -= len(entry.payload)
            self.statistics.sent += 1
            if index < len(entry_ids) and self.replay_window > 0:
                self._recent.append(_Sent(now, entry, instance, entry_ids[index]))
        self._trim(now)

    def drop_front(self, count: int) -> None:
        """Give up on the first ``count`` queued entries (the server refuses them)."""
        for _ in range(count):
            entry = self._queue.popleft()
            if entry.payload is not None and entry.replay_of is None:
                self._entries -= 1
                self._bytes -= len(entry.payload)
                self.statistics.dropped += 1

    def restarted(self, instance: str, now: float) -> int:
        """The server ``instance`` is gone: queue again what it took recently.

        The replays go in front of everything waiting, in their first order, so that
        each topic's entries stay in sequence order.

        Returns:
            How many entries were queued again.
        """
        self._trim(now)
        replays = [
            OutboxEntry(
                topic=sent.entry.topic,
                seq=sent.entry.seq,
                prev=sent.entry.prev,
                payload=sent.entry.payload,
                dropped=sent.entry.dropped,
                replay_of=(sent.instance, sent.entry_id),
            )
            for sent in self._recent
            if sent.instance == instance
        ]
        self._recent.clear()
        self._queue.extendleft(reversed(replays))
        self.statistics.replayed += len(replays)
        return len(replays)

    def _trim(self, now: float) -> None:
        recent = self._recent
        while recent and (recent[0].at < now - self.replay_window or len(recent) > self.limit):
            recent.popleft()
