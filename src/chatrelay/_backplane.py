"""The backplane port: how relay nodes reach each other, and the envelope they exchange.

A backplane is topic-based publish/subscribe of opaque bytes. The relay decides what
goes in them: a versioned JSON `Envelope` naming the node that sent it. The
in-process implementations live in `chatrelay.backplanes`; the Redis one in
`chatrelay.backplanes.redis`.

Besides messages, a backplane tells its consumer what it could not deliver
(`BackplaneGap`) and when it lost or regained its connection
(`BackplaneHealth`), so that nothing is lost silently.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
from abc import abstractmethod
from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar, Final

import attrs

from ._config import HistorySettings
from ._history import History, MemoryHistory
from ._resource import AsyncResource
from ._types import NodeId

__all__ = [
    "ENVELOPE_VERSION",
    "Backplane",
    "BackplaneEvent",
    "BackplaneGap",
    "BackplaneHealth",
    "BackplaneMessage",
    "BackplaneStatistics",
    "Envelope",
    "decode_envelope",
    "encode_envelope",
    "new_node_id",
]

ENVELOPE_VERSION: Final = 1
"""The envelope format version this chatrelay writes and reads."""


def new_node_id() -> NodeId:
    """Make a node id that is unique per process start: host, pid and a random part."""
    return NodeId(f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}")


@attrs.frozen(kw_only=True)
class BackplaneMessage:
    """One message a backplane delivered.

    Attributes:
        topic: The topic it was published on.
        payload: The bytes as published.
    """

    topic: str
    payload: bytes


@attrs.frozen(kw_only=True)
class BackplaneGap:
    """Messages published on a topic were lost on their way to this node.

    The consumer should make up for them: the relay tells the clients of that room to
    resynchronize (``sync:required``), or asks every node for its state again.

    Attributes:
        topic: The topic on which messages were lost.
        node: The node that published them, if known.
        lost: How many were lost, at least (the exact number is not always known).
    """

    topic: str
    node: NodeId | None = None
    lost: int = 1


@attrs.frozen(kw_only=True)
class BackplaneHealth:
    """The backplane lost (``healthy=False``) or regained its connection.

    While it is down, this node hears nobody: silence from other nodes says nothing
    about them, so the relay does not count them dead for it.

    Attributes:
        healthy: Whether what other nodes publish reaches this node again.
    """

    healthy: bool


BackplaneEvent = BackplaneMessage | BackplaneGap | BackplaneHealth
"""What `Backplane.messages` yields."""


@attrs.frozen(kw_only=True)
class BackplaneStatistics:
    """A snapshot of what a backplane did, for health checks and metrics.

    Attributes:
        healthy: Whether the backplane is connected (always ``True`` in one process).
        published: Payloads accepted by `Backplane.publish`.
        delivered: Messages yielded by `Backplane.messages`.
        buffered: Payloads waiting to be sent (while the connection is down).
        dropped: Payloads this node published but never sent: its buffer was full.
        lost: Messages from other nodes known to be lost (at least this many).
        duplicates: Messages received twice and delivered once.
        reconnects: Times the connection was lost and made again.
    """

    healthy: bool = True
    published: int = 0
    delivered: int = 0
    buffered: int = 0
    dropped: int = 0
    lost: int = 0
    duplicates: int = 0
    reconnects: int = 0


@attrs.frozen(kw_only=True)
class Envelope:
    """What relay nodes publish to each other.

    Attributes:
        version: The envelope format version (`ENVELOPE_VERSION`).
        node: The node that published it.
        kind: What it carries, such as ``"room"`` or ``"presence"``.
        body: The JSON object it carries.
    """

    version: int
    node: NodeId
    kind: str
    body: Mapping[str, Any]


def encode_envelope(node: NodeId, kind: str, body_json: str) -> bytes:
    """Wrap a JSON object, already serialized, in an envelope.

    The body is spliced in as it is, so a room event serialized once for local clients
    is not serialized again for the backplane.
    """
    header = json.dumps([ENVELOPE_VERSION, node, kind], separators=(",", ":"))
    return f'{{"h":{header},"b":{body_json}}}'.encode()


def decode_envelope(payload: bytes) -> Envelope:
    """Read an envelope.

    Raises:
        ValueError: If ``payload`` is not an envelope of a version this code reads.
    """
    try:
        raw = json.loads(payload)
        (version, node, kind), body = raw["h"], raw["b"]
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"not a chatrelay envelope: {exc}") from None
    if version != ENVELOPE_VERSION:
        raise ValueError(f"unsupported envelope version {version!r}")
    if not isinstance(node, str) or not isinstance(kind, str) or not isinstance(body, dict):
        raise ValueError("malformed envelope header or body")
    return Envelope(version=version, node=NodeId(node), kind=kind, body=body)


class Backplane(AsyncResource):
    """Publish/subscribe between relay nodes.

    Implementations deliver each payload published on a topic to every node subscribed
    to it (the publisher included, if it subscribed), once and in publish order per
    publisher and topic. What they cannot deliver they report as a
    `BackplaneGap`, never silently. A payload larger than
    `max_payload_bytes` is refused with `BackplaneError`
    before anything is sent. Use it as an async context manager, or call
    `start` and `aclose` (from the same task: a backplane may run
    background tasks between the two).

    `chatrelay.testing.check_backplane` checks an implementation against this
    contract.

    Attributes:
        node_id: This node's id, unique per process start.
        max_payload_bytes: The largest payload `publish` accepts.
    """

    shared: ClassVar[bool] = True
    """Whether other nodes can be reached; ``False`` lets a relay skip publishing."""

    def __init__(self, *, node_id: NodeId | None = None, max_payload_bytes: int = 1 << 20) -> None:
        self.node_id = node_id if node_id is not None else new_node_id()
        self.max_payload_bytes = max_payload_bytes

    async def start(self) -> None:
        """Connect. The default does nothing."""

    @abstractmethod
    async def aclose(self) -> None:
        """Disconnect; `messages` ends."""

    @abstractmethod
    async def publish(self, topic: str, payload: bytes) -> None:
        """Publish ``payload`` on ``topic``.

        Raises:
            BackplaneError: If the payload is too large or the backplane is closed.
        """

    @abstractmethod
    async def subscribe(self, topic: str) -> None:
        """Start receiving what is published on ``topic``."""

    @abstractmethod
    async def unsubscribe(self, topic: str) -> None:
        """Stop receiving what is published on ``topic``."""

    @abstractmethod
    def messages(self) -> AsyncIterator[BackplaneEvent]:
        """Iterate over delivered messages until the backplane closes.

        Besides `BackplaneMessage` s, it may yield a `BackplaneGap`
        (messages were lost on a topic) and `BackplaneHealth` (the connection
        went down or came back). Consumers ignore what they do not know.
        """

    def history(self, settings: HistorySettings) -> History:
        """The history of room events that the relays on this backplane share.

        A relay asks once, when it is made. The default keeps it in this process
        (`MemoryHistory`): right for a backplane whose nodes are all here. A
        backplane between processes returns one they all reach, numbering each
        conversation's events atomically for all of them.
        """
        return MemoryHistory(settings)

    def statistics(self) -> BackplaneStatistics:
        """Return counters that describe this backplane now.

        The default reports a healthy backplane with no counts; backplanes that can
        fail override it.
        """
        return BackplaneStatistics()
