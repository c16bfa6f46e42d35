"""One server event on its way to clients, encoded once for all its recipients."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import attrs

from ._types import ConversationId, MessageId, UserId
from .codec import dumps

__all__ = ["Outbound"]

_T = TypeVar("_T")

# What `Outbound.size` adds for the framing around name and payload ({"event":…}).
_FRAMING = 20


@attrs.frozen(kw_only=True)
class _AckContext:
    conversation_id: ConversationId
    message_id: MessageId
    sender_id: UserId


class Outbound:
    """One server event on its way to clients, encoded once for all its recipients.

    Adapters read `event` and `json` (the payload serialized once) and wrap
    them in their framing; an event with `wants_ack` asks the client for an ack,
    which the adapter reports with `Connection.acknowledge`.

    Attributes:
        event: The wire event name.
        data: The JSON-compatible payload (treat it as read-only: it is shared).
    """

    __slots__ = ("_ack", "_acked", "_cache", "_frame", "_json", "_size", "data", "event")

    def __init__(
        self,
        event: str,
        data: Mapping[str, Any],
        *,
        json: str | None = None,
        ack: _AckContext | None = None,
    ) -> None:
        self.event = event
        self.data = data
        self._json = json
        self._frame: str | None = None
        self._ack = ack
        self._acked: set[UserId] | None = None
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

    def frame(self) -> str:
        """The JSON text frame ``{"event": …, "data": …}``, built once and then shared."""
        if self._frame is None:
            self._frame = f'{{"event":{dumps(self.event)},"data":{self.json}}}'
        return self._frame

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
