"""What a relay reports about itself: counters and sizes, as one snapshot."""

from __future__ import annotations

import attrs

from ._backplane import BackplaneStatistics
from ._types import NodeId

__all__ = ["Counters", "RelayStatistics"]


@attrs.frozen(kw_only=True)
class RelayStatistics:
    """A snapshot of what a relay is doing.

    Attributes:
        node_id: This relay's node id.
        connections: Open connections on this node.
        rooms: Rooms with a connection on this node.
        online_users: Users online in the whole cluster.
        nodes: Other nodes this node hears from.
        slow_consumers: Connections closed because they did not keep up.
        rate_limited: Requests refused by rate limits.
        failed_requests: Requests answered with an ``error``, rate limits included.
        backplane_errors: Publishes to the backplane that failed.
        healthy: Whether the backplane is connected (a health check can report
            "degraded" while it is not).
        resyncs: ``sync:required`` events sent, because room events from other
            nodes were lost.
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
    resyncs: int = 0
    backplane: BackplaneStatistics = attrs.field(factory=BackplaneStatistics)


@attrs.define
class Counters:
    """What a relay counts as it runs (the mutable part of `RelayStatistics`)."""

    slow_consumers: int = 0
    rate_limited: int = 0
    failed_requests: int = 0
    backplane_errors: int = 0
