"""What a relay reports about itself: counters and sizes, as one snapshot."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Final

import attrs

from ._backplane import BackplaneStatistics
from ._exceptions import CloseReason
from ._types import NodeId

__all__ = ["Counters", "RelayStatistics", "nested", "reason_label"]


@attrs.frozen(kw_only=True)
class RelayStatistics:
    """A snapshot of what a relay is doing.

    Attributes:
        node_id: This relay's node id.
        connections: Open connections on this node.
        transports: Open connections on this node by transport (the adapter's name:
            ``"websocket"``, ``"socketio"``, ``"memory"``...).
        opened: Connections opened on this node since it started, by transport.
        closed: Connections closed on this node, by transport, then by reason (a
            `CloseReason` value, ``"other"`` for a reason of the application's own).
        auth_failures: Connections refused by the authenticator, by error code.
        requests: Requests handled, by event (``"other"`` for an unknown one), then
            by outcome (``"ok"`` or the error code).
        rooms: Rooms with a connection on this node.
        online_users: Users online in the whole cluster.
        nodes: Other nodes this node hears from.
        slow_consumers: Connections closed because they did not keep up.
        rate_limited: Requests refused by rate limits.
        failed_requests: Requests answered with an ``error``, rate limits included.
        backplane_errors: Publishes to the backplane that failed.
        healthy: Whether the backplane is connected and delivers (a health check can
            report "degraded" while it is not).
        deaf: Whether the backplane says it is connected but delivers nothing, not
            even this node's own heartbeats, for two heartbeat intervals.
        resyncs: ``sync:required`` events sent, because room events from other
            nodes were lost.
        draining: Whether the relay is draining (`Relay.drain`): it refuses new
            connections, and a health check should take it out of rotation.
        recoveries: Joins with a position that got every missed event.
        recoveries_failed: Joins with a position answered ``recovered: false``.
        unrecorded: Room events sent without a position: the history could not
            record them (their conversation's epoch changes when it can again).
        backplane: The backplane's own counters.
    """

    node_id: NodeId
    connections: int
    rooms: int
    online_users: int
    nodes: int
    slow_consumers: int
    rate_limited: int
    failed_requests: int
    backplane_errors: int
    healthy: bool = True
    deaf: bool = False
    resyncs: int = 0
    draining: bool = False
    recoveries: int = 0
    recoveries_failed: int = 0
    unrecorded: int = 0
    backplane: BackplaneStatistics = attrs.field(factory=BackplaneStatistics)
    transports: Mapping[str, int] = attrs.field(factory=dict)
    opened: Mapping[str, int] = attrs.field(factory=dict)
    closed: Mapping[str, Mapping[str, int]] = attrs.field(factory=dict)
    auth_failures: Mapping[str, int] = attrs.field(factory=dict)
    requests: Mapping[str, Mapping[str, int]] = attrs.field(factory=dict)


@attrs.define
class Counters:
    """What a relay counts as it runs (the mutable part of `RelayStatistics`)."""

    slow_consumers: int = 0
    rate_limited: int = 0
    failed_requests: int = 0
    backplane_errors: int = 0
    recoveries: int = 0
    recoveries_failed: int = 0
    unrecorded: int = 0
    # By (transport), (transport, reason), (code), (event, outcome): labels from
    # fixed sets only.
    opened: Counter[str] = attrs.field(factory=Counter)
    closed: Counter[tuple[str, str]] = attrs.field(factory=Counter)
    auth_failures: Counter[str] = attrs.field(factory=Counter)
    requests: Counter[tuple[str, str]] = attrs.field(factory=Counter)


_REASONS: Final = frozenset(CloseReason)


def reason_label(reason: CloseReason | str | None) -> str:
    """A close reason as a metric label: one of `CloseReason`'s, else ``"other"``."""
    if reason is None:
        return CloseReason.CLIENT_DISCONNECTED.value
    return str(reason) if reason in _REASONS else "other"


def nested(counts: Counter[tuple[str, str]]) -> dict[str, dict[str, int]]:
    """Counts by pairs as counts by the first, then by the second."""
    out: dict[str, dict[str, int]] = {}
    for (outer, inner), count in counts.items():
        out.setdefault(outer, {})[inner] = count
    return out
