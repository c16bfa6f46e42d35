"""What relay nodes tell each other over the backplane, as typed messages with one codec.

Each message travels in a backplane envelope (`encode_envelope`) whose ``kind``
names its type; the JSON body's fields are those every released node reads, so
nodes of different versions keep understanding each other during a rolling deploy.
A kind this code does not know (from a newer node) decodes to ``None`` and is
ignored; a known kind with missing or mistyped fields is an error.

Room and typing events carry the event's payload as the local clients got it: its
JSON, serialized once, is spliced into the body rather than serialized again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import attrs

from . import codec
from ._backplane import decode_envelope, encode_envelope
from ._cluster import NodeState
from ._history import position_field
from ._types import ConnectionId, ConversationId, MessageId, NodeId, UserId
from .events import Position

__all__ = [
    "CONTROL_TOPIC",
    "MalformedMessage",
    "ROOM_TOPIC_PREFIX",
    "AckFields",
    "Bye",
    "DisconnectUser",
    "Heartbeat",
    "MemberChanged",
    "NodeMessage",
    "PresenceChanged",
    "RoomEvent",
    "StateReport",
    "SyncRequest",
    "TypingEvent",
    "decode",
    "encode",
    "room_topic",
    "stamp_room_event",
]

CONTROL_TOPIC: Final = "chatrelay:control"
"""Presence, membership, typing and liveness: every node subscribes to it."""
ROOM_TOPIC_PREFIX: Final = "chatrelay:room:"
"""Room events go to ``ROOM_TOPIC_PREFIX + conversation id``, for the nodes with members there."""


class MalformedMessage(ValueError):
    """A node sent a message of a known kind with a field missing or of the wrong type.

    Attributes:
        node: The node that sent it.
        kind: Its kind.
    """

    def __init__(self, node: NodeId, kind: str, problem: str) -> None:
        super().__init__(f"bad {kind!r} message from {node}: {problem}")
        self.node = node
        self.kind = kind


def room_topic(conversation: ConversationId) -> str:
    """The backplane topic of a conversation's room events."""
    return f"{ROOM_TOPIC_PREFIX}{conversation}"


@attrs.frozen(kw_only=True)
class AckFields:
    """What a recipient's ack of a ``message:received`` reports: which message, whose."""

    conversation_id: ConversationId
    message_id: MessageId
    sender_id: UserId


@attrs.frozen(kw_only=True)
class RoomEvent:
    """A room event (``message:received``, ``message:status``) for the room's clients.

    ``json`` is the payload as serialized once for the local clients (when sent);
    ``data`` is the payload as decoded (when received).
    """

    conversation_id: ConversationId
    event: str
    data: Mapping[str, Any] = attrs.field(factory=dict)
    json: str | None = None
    exclude: ConnectionId | None = None
    ack: AckFields | None = None


@attrs.frozen(kw_only=True)
class TypingEvent:
    """A typing episode started or stopped on the sending node."""

    conversation_id: ConversationId
    user_id: UserId
    is_typing: bool
    data: Mapping[str, Any] = attrs.field(factory=dict)
    json: str | None = None
    exclude: ConnectionId | None = None


@attrs.frozen(kw_only=True)
class MemberChanged:
    """A user's first connection joined a room on the sending node, or its last left."""

    conversation_id: ConversationId
    user_id: UserId
    joined: bool


@attrs.frozen(kw_only=True)
class PresenceChanged:
    """A user came online on the sending node, or went offline there (after its grace)."""

    user_id: UserId
    online: bool
    last_seen: str | None = None


@attrs.frozen(kw_only=True)
class SyncRequest:
    """Asks ``target`` (every node if ``None``) for a `StateReport`."""

    target: NodeId | None = None


@attrs.frozen(kw_only=True)
class StateReport:
    """The sending node's whole state: who is online, in which rooms, typing where."""

    state: NodeState


@attrs.frozen(kw_only=True)
class DisconnectUser:
    """Close every connection of a user, on every node (`Relay.disconnect_user`)."""

    user_id: UserId
    reason: str


@attrs.frozen
class Bye:
    """The sending node is going away on purpose."""


@attrs.frozen
class Heartbeat:
    """The sending node is alive."""


NodeMessage = (
    RoomEvent
    | TypingEvent
    | MemberChanged
    | PresenceChanged
    | SyncRequest
    | StateReport
    | DisconnectUser
    | Bye
    | Heartbeat
)
"""Anything one node tells the others."""


def encode(node: NodeId, message: NodeMessage) -> bytes:
    """The envelope that carries ``message`` from ``node``."""
    dumps = codec.dumps
    match message:
        case RoomEvent():
            ack = message.ack
            ack_json = (
                "null"
                if ack is None
                else f'{{"conversation_id":{dumps(ack.conversation_id)},'
                f'"message_id":{dumps(ack.message_id)},"sender_id":{dumps(ack.sender_id)}}}'
            )
            body = (
                f'{{"conversationId":{dumps(message.conversation_id)},"event":{dumps(message.event)},'
                f'"exclude":{dumps(message.exclude)},"ack":{ack_json},'
                f'"data":{_payload(message.json, message.data)}}}'
            )
            return encode_envelope(node, "room", body)
        case TypingEvent():
            body = (
                f'{{"conversationId":{dumps(message.conversation_id)},'
                f'"userId":{dumps(message.user_id)},"isTyping":{dumps(message.is_typing)},'
                f'"exclude":{dumps(message.exclude)},'
                f'"data":{_payload(message.json, message.data)}}}'
            )
            return encode_envelope(node, "typing", body)
        case MemberChanged():
            fields: dict[str, Any] = {
                "conversationId": message.conversation_id,
                "userId": message.user_id,
                "joined": message.joined,
            }
            return encode_envelope(node, "member", dumps(fields))
        case PresenceChanged():
            fields = {"userId": message.user_id, "online": message.online}
            if message.last_seen is not None:
                fields["lastSeen"] = message.last_seen
            return encode_envelope(node, "presence", dumps(fields))
        case SyncRequest():
            return encode_envelope(node, "sync", dumps({"target": message.target}))
        case StateReport():
            state = message.state
            report = {
                "online": sorted(state.online),
                "members": {room: sorted(users) for room, users in state.members.items()},
                "typing": {room: sorted(users) for room, users in state.typing.items() if users},
            }
            return encode_envelope(node, "state", dumps(report))
        case DisconnectUser():
            fields = {"userId": message.user_id, "reason": message.reason}
            return encode_envelope(node, "disconnect", dumps(fields))
        case Bye():
            return encode_envelope(node, "bye", "{}")
        case Heartbeat():
            return encode_envelope(node, "heartbeat", "{}")


def decode(payload: bytes) -> tuple[NodeId, NodeMessage | None]:
    """The sending node and its message; ``None`` for a kind from a newer node.

    Raises:
        MalformedMessage: If a known kind lacks a field or has one of the wrong type.
        ValueError: If ``payload`` is not an envelope.
    """
    envelope = decode_envelope(payload)
    body = envelope.body
    decoder = _DECODERS.get(envelope.kind)
    if decoder is None:
        return envelope.node, None
    try:
        return envelope.node, decoder(body)
    except (KeyError, TypeError, AttributeError) as exc:
        raise MalformedMessage(envelope.node, envelope.kind, repr(exc)) from None


def stamp_room_event(envelope: bytes, position: Position) -> bytes:
    """The envelope of a room event (from `encode`) with ``position`` stamped in.

    What `encode` gives for the event's JSON stamped by `chatrelay._history.stamp`:
    a room event's envelope ends with its payload's closing brace and then the
    body's and the envelope's, so the position goes before the last three bytes.
    Made so once the history numbered an event whose envelope was already made.
    """
    return b"".join((envelope[:-3], position_field(position).encode(), envelope[-3:]))


def _payload(json: str | None, data: Mapping[str, Any]) -> str:
    return json if json is not None else codec.dumps(data)


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value


def _flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {value!r}")
    return value


def _object(value: object) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"expected an object, got {value!r}")
    return value


def _exclude(value: object) -> ConnectionId | None:
    return None if value is None else ConnectionId(_text(value))


def _room(body: Mapping[str, Any]) -> RoomEvent:
    ack = body["ack"]
    return RoomEvent(
        conversation_id=ConversationId(_text(body["conversationId"])),
        event=_text(body["event"]),
        data=_object(body["data"]),
        exclude=_exclude(body["exclude"]),
        ack=None
        if ack is None
        else AckFields(
            conversation_id=ConversationId(_text(ack["conversation_id"])),
            message_id=MessageId(_text(ack["message_id"])),
            sender_id=UserId(_text(ack["sender_id"])),
        ),
    )


def _typing(body: Mapping[str, Any]) -> TypingEvent:
    return TypingEvent(
        conversation_id=ConversationId(_text(body["conversationId"])),
        user_id=UserId(_text(body["userId"])),
        is_typing=_flag(body["isTyping"]),
        data=_object(body["data"]),
        exclude=_exclude(body["exclude"]),
    )


def _member(body: Mapping[str, Any]) -> MemberChanged:
    return MemberChanged(
        conversation_id=ConversationId(_text(body["conversationId"])),
        user_id=UserId(_text(body["userId"])),
        joined=_flag(body["joined"]),
    )


def _presence(body: Mapping[str, Any]) -> PresenceChanged:
    last_seen = body.get("lastSeen")
    return PresenceChanged(
        user_id=UserId(_text(body["userId"])),
        online=_flag(body["online"]),
        last_seen=None if last_seen is None else _text(last_seen),
    )


def _sync(body: Mapping[str, Any]) -> SyncRequest:
    target = body["target"]
    return SyncRequest(target=None if target is None else NodeId(_text(target)))


def _users(value: object) -> set[UserId]:
    if not isinstance(value, list):
        raise TypeError(f"expected a list of user ids, got {value!r}")
    return {UserId(_text(user)) for user in value}


def _rooms(value: object) -> dict[ConversationId, set[UserId]]:
    return {ConversationId(room): _users(users) for room, users in _object(value).items()}


def _state(body: Mapping[str, Any]) -> StateReport:
    return StateReport(
        state=NodeState(
            online=_users(body["online"]),
            members=_rooms(body["members"]),
            typing=_rooms(body["typing"]),
        )
    )


_DECODERS: Final[Mapping[str, Any]] = {
    "room": _room,
    "typing": _typing,
    "member": _member,
    "presence": _presence,
    "sync": _sync,
    "state": _state,
    "disconnect": lambda body: DisconnectUser(
        user_id=UserId(_text(body["userId"])), reason=_text(body["reason"])
    ),
    "bye": lambda body: Bye(),
    "heartbeat": lambda body: Heartbeat(),
}
