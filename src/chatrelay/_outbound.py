"""One server event on its way to clients, encoded once for all its recipients."""

from __future__ import annotations

import json as _jsonlib
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

import attrs

from ._types import ConversationId, MessageId, UserId
from .codec import dumps
from .events import Position

__all__ = ["Outbound"]

_T = TypeVar("_T")

# What `Outbound.size` adds for the framing around name and payload ({"event":…}).
_FRAMING = 20


class _AckInfo(Protocol):
    """Which message a recipient's ack of a ``message:received`` is about, and whose."""

    @property
    def conversation_id(self) -> ConversationId: ...

    @property
    def message_id(self) -> MessageId: ...

    @property
    def sender_id(self) -> UserId: ...


@attrs.frozen(kw_only=True)
class _AckContext:
    conversation_id: ConversationId
    message_id: MessageId
    sender_id: UserId


class _AckFromPayload:
    """The ack context of a ``message:received`` read from its payload when asked for.

    A replayed event is sent as recorded, its payload not decoded; only an ack from
    its recipient needs these fields.
    """

    __slots__ = ("_item",)

    def __init__(self, item: Outbound) -> None:
        self._item = item

    @property
    def conversation_id(self) -> ConversationId:
        return ConversationId(self._item.data["conversationId"])

    @property
    def message_id(self) -> MessageId:
        return MessageId(self._item.data["message"]["id"])

    @property
    def sender_id(self) -> UserId:
        return UserId(self._item.data["message"]["senderId"])


class Outbound:
    """One server event on its way to clients, encoded once for all its recipients.

    Adapters read `event` and `json` (the payload serialized once) and wrap
    them in their framing; an event with `wants_ack` asks the client for an ack,
    which the adapter reports with `Connection.acknowledge`.

    Attributes:
        event: The wire event name.
        position: Where a room event stands in its conversation (also in `data`),
            when the relay numbers room events.
    """

    __slots__ = ("_ack", "_cache", "_data", "_json", "_size", "event", "position")

    def __init__(
        self,
        event: str,
        data: Mapping[str, Any] | None,
        *,
        json: str | None = None,
        ack: _AckInfo | None = None,
        position: Position | None = None,
    ) -> None:
        if data is None and json is None:
            raise TypeError("an Outbound needs its data or its json")
        self.event = event
        self.position = position
        self._data = data
        self._json = json
        self._ack = ack
        self._cache: dict[str, Any] | None = None
        self._size = 0

    @property
    def size(self) -> int:
        """About how many bytes the event takes on the wire: its name and payload.

        Counted in characters of JSON (computed once), which is what bounds a
        connection's queue (`Limits.outgoing_bytes`); the framing of each transport
        adds a few bytes more.
        """
        if not self._size:
            self._size = len(self.json) + len(self.event) + _FRAMING
        return self._size

    def _stamp(self, position: Position, json: str) -> None:
        """Give a new event, not shared yet, its position (and the JSON that carries it)."""
        data = self.data
        self._data = {**data, "position": {"offset": position.offset, "epoch": position.epoch}}
        self._json = json
        self._size = 0
        self.position = position

    @property
    def data(self) -> Mapping[str, Any]:
        """The JSON-compatible payload (treat it as read-only: it is shared).

        An event made from its JSON text alone (a replayed one) decodes it on first use.
        """
        if self._data is None:
            assert self._json is not None
            self._data = _jsonlib.loads(self._json)
        return self._data

    @property
    def json(self) -> str:
        """The payload as compact JSON text, serialized on first use and then shared."""
        if self._json is None:
            self._json = dumps(self.data)
        return self._json

    @property
    def wants_ack(self) -> bool:
        """Whether clients are asked to acknowledge this event (``message:received``)."""
        return self._ack is not None

    def cached(self, key: str, build: Callable[[Outbound], _T]) -> _T:
        """Return ``build(self)``, built on first use for ``key`` and then shared.

        Adapters keep their own encoding of the event here, so that a broadcast is
        encoded once however many recipients it has.

        Args:
            key: Names the encoding, unique per adapter and its settings
                (``"socketio:/messages"``, say).
            build: Makes the encoding from this event.

        Returns:
            What ``build`` returned, the first time it was called for ``key``.
        """
        if self._cache is None:
            self._cache = {}
        try:
            value: _T = self._cache[key]
        except KeyError:
            value = self._cache[key] = build(self)
        return value

    def __repr__(self) -> str:
        return f"Outbound({self.event!r}, {self.data!r})"
