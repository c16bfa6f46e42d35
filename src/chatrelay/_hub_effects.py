"""What the hub asks its driver to do: the effects `chatrelay._hub.Hub` returns.

Plain values, in the order they are to be carried out (by
`chatrelay._effects.EffectRunner`).
"""

from __future__ import annotations

import attrs

from ._nodes import NodeMessage
from ._outbound import Outbound
from ._types import ConnectionId, ConversationId
from .events import UserOffline, UserOnline

__all__ = [
    "Announce",
    "Close",
    "Effect",
    "Fanout",
    "Publish",
    "Subscribe",
    "Tell",
    "Unsubscribe",
    "Wake",
]


@attrs.frozen
class Fanout:
    """Hand ``item`` to this node's connections in a room, but ``exclude``."""

    conversation: ConversationId
    item: Outbound
    exclude: ConnectionId | None = None


@attrs.frozen
class Publish:
    """Tell the other nodes (on a shared backplane; nobody otherwise)."""

    topic: str
    message: NodeMessage


@attrs.frozen
class Subscribe:
    """Start receiving a backplane topic (a room this node now has members in)."""

    topic: str


@attrs.frozen
class Unsubscribe:
    """Stop receiving a backplane topic (a room this node no longer has members in)."""

    topic: str


@attrs.frozen
class Announce:
    """Tell the presence event's audience (the application's hook decides who)."""

    event: UserOnline | UserOffline
    exclude: ConnectionId | None = None


@attrs.frozen
class Close:
    """Close these local connections, saying why."""

    connections: frozenset[ConnectionId]
    reason: str


@attrs.frozen
class Tell:
    """Hand ``item`` to one local connection."""

    connection: ConnectionId
    item: Outbound


@attrs.frozen
class Wake:
    """A deadline may have moved earlier: recompute when the timers run next."""


Effect = Fanout | Publish | Subscribe | Unsubscribe | Announce | Close | Tell | Wake
"""What the hub asks its driver to do."""
