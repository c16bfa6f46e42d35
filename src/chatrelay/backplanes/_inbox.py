"""The receiver's side of a log-based backplane, without I/O.

An `Inbox` takes the entries read from topic logs (see
`chatrelay.backplanes._outbox` for their numbering) and decides, for each one,
whether to deliver it, drop it as a repeat, or report a loss before it. It remembers,
per topic, the last sequence number it took from each publishing node.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

import attrs

__all__ = ["Accepted", "Inbox", "Subscription", "parse_entry_id"]

StreamId = tuple[int, int]


def parse_entry_id(entry_id: str) -> StreamId:
    """Turn a log id such as ``"1700000000000-3"`` into a comparable pair."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


@attrs.define
class Subscription:
    """Where a subscription began, to tell replays from before it apart.

    Attributes:
        instance: The server instance the subscription began on.
        start: The log id it began after, on that instance.
        later: Server instances seen after that one, in order.
    """

    instance: str | None
    start: StreamId
    later: list[str] = attrs.field(factory=list)


@attrs.frozen
class Accepted:
    """What to do with one entry.

    Attributes:
        payload: The payload to deliver, or ``None``.
        node: The publishing node.
        lost: Entries from that node on that topic known lost before this one.
        duplicate: Whether it was a repeat (nothing to deliver).
    """

    payload: bytes | None
    node: str
    lost: int = 0
    duplicate: bool = False


class Inbox:
    """Delivers each entry once and spots the ones that never arrived.

    Args:
        node_memory: Publishing nodes remembered per topic; beyond it, the least
            recently heard is forgotten (its next entry is then taken as new).
    """

    def __init__(self, *, node_memory: int = 1024) -> None:
        self.node_memory = node_memory
        self._last: dict[str, OrderedDict[str, int]] = {}

    def forget(self, topic: str) -> None:
        """Forget a topic (the subscription ended)."""
        self._last.pop(topic, None)

    def accept(
        self, topic: str, fields: Mapping[bytes, bytes], subscription: Subscription
    ) -> Accepted:
        """Decide what to do with an entry read from ``topic``'s log.

        Args:
            topic: The topic.
            fields: The entry's fields.
            subscription: Where this node's subscription to the topic began.

        Raises:
            ValueError: If the entry is not one of ours (missing or bad fields).
        """
        try:
            node = fields[b"n"].decode()
            seq = int(fields[b"s"])
            prev = int(fields.get(b"q", b"0"))
        except (KeyError, ValueError, UnicodeDecodeError):
            raise ValueError("not a chatrelay log entry") from None
        payload = fields.get(b"p")
        last_by_node = self._last.setdefault(topic, OrderedDict())
        last = last_by_node.get(node)
        if last is not None and seq <= last:
            return Accepted(None, node, duplicate=True)
        if last is None and b"o" in fields and not _after(fields, subscription):
            # A replay of an entry from before this subscription began.
            return Accepted(None, node, duplicate=True)
        lost = 1 if last is not None and prev > last else 0
        if payload is None:
            lost += int(fields.get(b"g", b"1"))
        last_by_node.pop(node, None)
        last_by_node[node] = seq
        if len(last_by_node) > self.node_memory:
            last_by_node.popitem(last=False)
        return Accepted(payload, node, lost=lost)


def _after(fields: Mapping[bytes, bytes], subscription: Subscription) -> bool:
    """Whether a replayed entry was first published after the subscription began."""
    instance = fields.get(b"i", b"").decode(errors="replace")
    if instance in subscription.later:
        return True
    if instance != subscription.instance:
        return False  # an instance this node never saw: cannot tell, so do not deliver
    try:
        return parse_entry_id(fields[b"o"].decode()) > subscription.start
    except (ValueError, UnicodeDecodeError):
        return False
