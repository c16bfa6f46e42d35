"""The JSON text framing of the WebSocket binding, without I/O.

Client frames are ``{"event": …, "data": …, "id": <int, optional>}``; the server
answers a frame that carried an ``id`` with ``{"event": "ack", "id": …, "data": …}``,
and asks for an ack itself with a string ``id`` in its own frames. This module
decodes client frames and builds server frames; it imports no web framework, so the
rules are tested without one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final, NoReturn

import attrs

from .. import codec
from .._connection import Outbound
from .._errors import error_payload, failed_ack
from .._exceptions import InvalidPayload, ProtocolError

__all__ = [
    "ACK_EVENT",
    "AUTH_EVENT",
    "FRAME_CACHE_KEY",
    "SUBPROTOCOL",
    "ClientFrame",
    "ack_frame",
    "binary_error",
    "error_frame",
    "event_frame",
    "failed_reply",
    "parse_auth",
    "parse_frame",
    "select_subprotocol",
    "text_frame",
]

ACK_EVENT: Final = "ack"
"""The event of an acknowledgement, in both directions."""

AUTH_EVENT: Final = "auth"
"""The event of a client's first-frame authentication."""

SUBPROTOCOL: Final = "chatrelay.v1"
"""The WebSocket subprotocol of this binding (``Sec-WebSocket-Protocol``)."""

_FIELDS: Final = frozenset({"event", "data", "id"})
_DATA_MARK: Final = ',"data":'
FRAME_CACHE_KEY: Final = "websocket"
"""The key under which an event keeps its WebSocket text frame (`Outbound.cached`)."""


def text_frame(item: Outbound) -> str:
    """The text frame of an event that asks for no ack (build it once: `FRAME_CACHE_KEY`)."""
    return f'{{"event":{codec.dumps(item.event)},"data":{item.json}}}'


@attrs.frozen(kw_only=True)
class ClientFrame:
    """One decoded client frame.

    Attributes:
        event: The event name, when the frame had a string one.
        data: The payload (``None`` when the frame had none).
        id: The client's request id (an ``int``), or for an ``ack`` frame the
            server's id (a ``str``); ``None`` when absent or unusable.
        error: Why the frame cannot be handled as a request, if it cannot.
    """

    event: str | None
    data: object = None
    id: int | str | None = None
    error: ProtocolError | None = None


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def parse_frame(text: str) -> ClientFrame:
    """Decode a client's text frame, refusing what the binding does not allow.

    Only the envelope is checked here; the payload is the core's to judge
    (`chatrelay.lowlevel.Connection.handle`).

    Args:
        text: The frame's text.

    Returns:
        The frame; its `error` is set when it is not a usable
        request (not JSON, not an object, a missing or non-string ``event``, a
        missing ``data``, an ``id`` that is not an integer, an unknown field). Its
        ``id`` is kept whenever it is valid, so that the error can be acknowledged.
    """
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        # RecursionError: a deeply nested frame must not take the reader down.
        return ClientFrame(event=None, error=InvalidPayload("the frame is not valid JSON"))
    if not isinstance(value, dict):
        return ClientFrame(event=None, error=InvalidPayload("the frame must be a JSON object"))
    event = value.get("event")
    name = event if isinstance(event, str) else None
    frame_id, id_error = _frame_id(value, name)
    error = id_error or _envelope_error(value, event)
    if error is None and "\\u" in text and codec.has_lone_surrogate(value):
        # An escaped lone surrogate decodes, but is no text: refused for every field,
        # the auth frame's token included, as the core refuses it in any request.
        error = InvalidPayload("the frame contains an unpaired surrogate escape")
    if error is not None:
        return ClientFrame(event=name, id=frame_id, error=error.for_event(name))
    return ClientFrame(event=name, data=value.get("data"), id=frame_id)


def _frame_id(
    value: Mapping[str, Any], name: str | None
) -> tuple[int | str | None, ProtocolError | None]:
    if "id" not in value:
        return None, None
    frame_id = value["id"]
    if name == ACK_EVENT:
        # An ack echoes the server's id, which is a string.
        if isinstance(frame_id, str):
            return frame_id, None
        return None, InvalidPayload("the id of an ack must be the server's string id")
    if type(frame_id) is int:  # bool is an int in Python, never on the wire
        return frame_id, None
    return None, InvalidPayload("the frame's id must be an integer")


def _envelope_error(value: Mapping[str, Any], event: object) -> ProtocolError | None:
    unknown = sorted(set(value) - _FIELDS)
    if unknown:
        return InvalidPayload(f"unknown frame fields: {', '.join(map(repr, unknown))}")
    if event is None:
        return InvalidPayload("the frame has no 'event'")
    if not isinstance(event, str):
        return InvalidPayload("the frame's 'event' must be a string")
    if "data" not in value and event != ACK_EVENT:
        return InvalidPayload("the frame has no 'data'")
    return None


def binary_error() -> InvalidPayload:
    """The error that answers a binary frame (the binding's frames are JSON text)."""
    return InvalidPayload("binary frames are not supported; send JSON text frames")


def select_subprotocol(offered: Sequence[str]) -> str | None:
    """Choose the subprotocol to answer a handshake's ``Sec-WebSocket-Protocol`` with.

    A client that offers none gets none; one that offers `SUBPROTOCOL` among others
    gets it. A browser fails the handshake when the server selects none of the
    subprotocols it offered, so a client that offers only others is refused.

    Args:
        offered: The subprotocols the client offered, in its order of preference.

    Returns:
        `SUBPROTOCOL`, or ``None`` if the client offered none.

    Raises:
        ValueError: If the client offered subprotocols, none of them this binding's;
            its message says what the server speaks.
    """
    if not offered:
        return None
    if SUBPROTOCOL in offered:
        return SUBPROTOCOL
    shown = ", ".join(repr(name) for name in offered[:5])
    raise ValueError(
        f"unsupported WebSocket subprotocol(s) {shown}: this server speaks"
        f" {SUBPROTOCOL!r}, or no subprotocol"
    )


def parse_auth(frame: ClientFrame) -> str:
    """Return the token of an ``auth`` frame.

    Raises:
        InvalidPayload: If its data is not ``{"token": "<non-empty string>"}``.
    """
    data = frame.data
    if (
        not isinstance(data, dict)
        or set(data) != {"token"}
        or not isinstance(data["token"], str)
        or not data["token"]
    ):
        raise InvalidPayload(
            'the auth frame\'s data must be {"token": "<token>"}', event=AUTH_EVENT
        )
    token: str = data["token"]
    return token


def event_frame(item: Outbound, ack_id: str | None = None) -> str:
    """The text frame of a server event, for one recipient.

    The event is serialized once for all its recipients (kept on the event);
    a recipient's ack id is spliced into that shared text, never re-encoded.

    Args:
        item: The event.
        ack_id: This recipient's ack id, when the event wants an ack. It must be
            made of characters that need no JSON escaping (the adapter's ids are
            decimal numbers).

    Returns:
        ``{"event":…,"data":…}``, or ``{"event":…,"id":"<ack_id>","data":…}``.
    """
    frame = item.cached(FRAME_CACHE_KEY, text_frame)
    if ack_id is None:
        return frame
    # In JSON text a quote inside a string is escaped, so the first ',"data":' is the
    # one after the event name.
    cut = frame.index(_DATA_MARK)
    return f'{frame[:cut]},"id":"{ack_id}"{frame[cut:]}'


def ack_frame(frame_id: int, reply: Mapping[str, Any]) -> str:
    """The reply to a client frame that carried ``id``.

    Args:
        frame_id: The client's id, echoed back.
        reply: The ack payload (from `chatrelay.lowlevel.Connection.handle`).

    Returns:
        ``{"event":"ack","id":<frame_id>,"data":<reply>}``.
    """
    return f'{{"event":"ack","id":{frame_id},"data":{codec.dumps(reply)}}}'


def error_frame(error: ProtocolError) -> str:
    """The ``error`` event for a failure decided outside a connection (before auth)."""
    return event_frame(Outbound("error", error_payload(error)))


def failed_reply(error: ProtocolError) -> dict[str, Any]:
    """The ack payload ``{"ok": false, "error": {…}}`` of a failure outside a connection."""
    return failed_ack(error)
