"""The events of the wire protocol, as frozen attrs classes.

Every event of the contract (``DESIGN.md`` §2) has a class here. Field names are
snake_case in Python and camelCase on the wire; `chatrelay.codec` converts
between the two. Timestamps are timezone-aware `datetime` s,
sent as ISO 8601 UTC strings.

Client → server requests: `JoinConversation`, `LeaveConversation`,
`TypingStart`, `TypingStop`.

Server → client events: `MessageReceived`, `MessageStatusChanged`,
`TypingIndicator` (sent as ``typing:start`` or ``typing:stop``),
`UserOnline`, `UserOffline`, `ErrorEvent`, `SyncRequired`.

Replies (acks): `JoinReply`, `LeaveReply`, `OkReply`,
`ErrorReply`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final, Literal

import attrs

from ._types import ConversationId, MessageId, UserId

__all__ = [
    "AuthExpiring",
    "ClientRequest",
    "ErrorEvent",
    "ErrorReply",
    "JoinConversation",
    "JoinReply",
    "LeaveConversation",
    "LeaveReply",
    "Message",
    "MessageReceived",
    "MessageStatus",
    "MessageStatusChanged",
    "OkReply",
    "Position",
    "RefreshAuth",
    "RefreshReply",
    "Reply",
    "Sender",
    "ServerDraining",
    "ServerEvent",
    "SyncRequired",
    "TypingIndicator",
    "TypingStart",
    "TypingStop",
    "TypingUser",
    "UserOffline",
    "UserOnline",
    "is_forward",
]


class MessageStatus(enum.Enum):
    """Where a message is on its way to a reader: ``sent < delivered < read``.

    Members compare by that order, so ``MessageStatus.SENT < MessageStatus.READ``.
    """

    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"

    @property
    def rank(self) -> int:
        """The position of this status in the order ``sent < delivered < read``."""
        return _STATUS_RANK[self]

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, MessageStatus):
            return NotImplemented
        return self.rank < other.rank

    def __le__(self, other: object) -> bool:
        if not isinstance(other, MessageStatus):
            return NotImplemented
        return self.rank <= other.rank

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, MessageStatus):
            return NotImplemented
        return self.rank > other.rank

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, MessageStatus):
            return NotImplemented
        return self.rank >= other.rank


_STATUS_RANK = {MessageStatus.SENT: 0, MessageStatus.DELIVERED: 1, MessageStatus.READ: 2}


def is_forward(current: MessageStatus, new: MessageStatus) -> bool:
    """Tell whether moving a message from ``current`` to ``new`` goes forward.

    Args:
        current: The status the message has now.
        new: The status it would get.

    Returns:
        ``True`` when ``new`` is later than ``current`` (``sent → read`` is forward,
        ``read → delivered`` and ``read → read`` are not).
    """
    return new > current


_STATUS_BY_TEXT: Final = {status.value: status for status in MessageStatus}


def _coerce_status(status: MessageStatus | str) -> MessageStatus:
    if type(status) is str:
        found = _STATUS_BY_TEXT.get(status)
        if found is not None:
            return found
    if isinstance(status, MessageStatus):
        return status
    try:
        return MessageStatus(status)
    except ValueError:
        allowed = ", ".join(s.value for s in MessageStatus)
        raise ValueError(f"unknown message status {status!r}; expected one of {allowed}") from None


@attrs.frozen
class Position:
    """Where a room event stands in its conversation: ``{offset, epoch}`` on the wire.

    The offset grows by exactly 1 per room event (``message:received``,
    ``message:status``) of the conversation, whichever server emitted it; the epoch
    changes only when the conversation's history was lost, so offsets compare only
    within one epoch. (The codec refuses a client's negative offset or empty epoch.)

    Attributes:
        offset: The event's number in its conversation (0 before the first).
        epoch: The history it belongs to.
    """

    offset: int
    epoch: str


# --- client → server -------------------------------------------------------------


@attrs.frozen(kw_only=True)
class JoinConversation:
    """``conversation:join``: join the room of a conversation.

    Attributes:
        conversation_id: The conversation to join.
        since: Accepted for compatibility; chatrelay stores no messages, so the
            application resynchronizes a client over its own API.
        position: The position of the last room event the client got; the events
            after it are delivered before the ack (``recovered: true``), or none is
            (``recovered: false``).
    """

    conversation_id: ConversationId
    since: datetime | None = None
    position: Position | None = None


@attrs.frozen(kw_only=True)
class LeaveConversation:
    """``conversation:leave``: leave the room of a conversation."""

    conversation_id: ConversationId


@attrs.frozen(kw_only=True)
class TypingStart:
    """``typing:start``: the user started (or keeps) typing in a conversation.

    Attributes:
        conversation_id: Where the user types.
        user_id: Accepted only when it equals the authenticated user.
        is_typing: Accepted only as ``true``.
    """

    conversation_id: ConversationId
    user_id: UserId | None = None
    is_typing: Literal[True] | None = None


@attrs.frozen(kw_only=True)
class TypingStop:
    """``typing:stop``: the user stopped typing in a conversation.

    Attributes:
        conversation_id: Where the user typed.
        user_id: Accepted only when it equals the authenticated user.
        is_typing: Accepted only as ``false``.
    """

    conversation_id: ConversationId
    user_id: UserId | None = None
    is_typing: Literal[False] | None = None


@attrs.frozen(kw_only=True)
class RefreshAuth:
    """``auth:refresh``: new credentials for the same user, before the old ones expire.

    Attributes:
        token: The new token (say, a JWT from the application's login endpoint).
    """

    token: str


ClientRequest = JoinConversation | LeaveConversation | TypingStart | TypingStop | RefreshAuth
"""Any request a client can send."""


# --- server → client -------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Message:
    """A stored message, as the application hands it to the emitter.

    Attributes:
        id: The message's id.
        conversation_id: The conversation it belongs to.
        sender_id: The user who sent it.
        type: The application's message type, such as ``"text"``.
        content: The message body, any JSON object (for example ``{"text": "hi"}``).
        status: Its status when emitted, usually ``sent``.
        created_at: When it was stored.
        extra: Further JSON fields the application sends along (camelCase keys, sent
            as they are).
    """

    id: MessageId
    conversation_id: ConversationId
    sender_id: UserId
    type: str
    content: Mapping[str, Any]
    status: MessageStatus
    created_at: datetime
    extra: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class Sender:
    """Who sent a message, as shown next to it."""

    id: UserId
    name: str | None = None
    avatar_url: str | None = None


@attrs.frozen(kw_only=True)
class MessageReceived:
    """``message:received``: a message was stored in a conversation.

    ``position`` is set by the relay when it sends the event (history on).
    """

    conversation_id: ConversationId
    message: Message
    sender: Sender
    position: Position | None = None


@attrs.frozen(kw_only=True)
class MessageStatusChanged:
    """``message:status``: a message moved to a new status for a user."""

    conversation_id: ConversationId
    message_id: MessageId
    status: MessageStatus
    user_id: UserId
    updated_at: datetime
    position: Position | None = None


@attrs.frozen(kw_only=True)
class TypingUser:
    """The user shown in a typing indicator."""

    id: UserId
    name: str | None = None


@attrs.frozen(kw_only=True)
class TypingIndicator:
    """``typing:start`` / ``typing:stop`` as the server sends them to a room."""

    conversation_id: ConversationId
    user_id: UserId
    is_typing: bool
    user: TypingUser | None = None


@attrs.frozen(kw_only=True)
class UserOnline:
    """``user:online``: a user's first connection anywhere opened."""

    user_id: UserId


@attrs.frozen(kw_only=True)
class UserOffline:
    """``user:offline``: a user's last connection closed and the grace period passed."""

    user_id: UserId
    last_seen: datetime


@attrs.frozen(kw_only=True)
class ErrorEvent:
    """``error``: a request failed, or a limit was hit.

    Attributes:
        status: An HTTP-like status.
        code: A stable snake_case code.
        message: A sentence for humans.
        event: The client event that caused it, if any.
    """

    status: int
    code: str
    message: str
    event: str | None = None


@attrs.frozen(kw_only=True)
class SyncRequired:
    """``sync:required``: events of a conversation may have been lost; fetch it again.

    Sent when events could not be carried between servers (for example, a server
    dropped them after its Redis was unreachable for too long). The client should
    reload the conversation from the application's API, as after a reconnect.
    Clients that do not know this event can ignore it.
    """

    conversation_id: ConversationId


@attrs.frozen(kw_only=True)
class AuthExpiring:
    """``auth:expiring``: the connection's credentials expire in ``expires_in`` seconds.

    Sent about `RelayConfig.token_warning` seconds before; the client answers with
    ``auth:refresh {token}``, or is closed with ``token_expired`` after the expiry
    plus `RelayConfig.token_grace`.
    """

    expires_in: int


@attrs.frozen(kw_only=True)
class ServerDraining:
    """``server:draining``: this server is going away; its connection closes soon.

    Sent to each connection of a draining relay (`Relay.drain`), which then closes
    it at about ``reconnect_after_ms`` from now: the connections of a server close
    spread over its drain window, so that they come back to the others gradually.
    A client may reconnect then (to another server; this one refuses new
    connections), or simply when the close comes.
    """

    reconnect_after_ms: int


ServerEvent = (
    MessageReceived
    | MessageStatusChanged
    | TypingIndicator
    | UserOnline
    | UserOffline
    | ErrorEvent
    | SyncRequired
    | ServerDraining
    | AuthExpiring
)
"""Any event the server sends on its own."""


# --- replies (acks) ------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class JoinReply:
    """The ack of ``conversation:join``."""

    ok: Literal[True] = True
    conversation_id: ConversationId
    members: list[UserId]
    typing: list[UserId]
    position: Position | None = None
    recovered: bool | None = None


@attrs.frozen(kw_only=True)
class LeaveReply:
    """The ack of ``conversation:leave``."""

    ok: Literal[True] = True
    conversation_id: ConversationId


@attrs.frozen(kw_only=True)
class OkReply:
    """The ack of ``typing:start`` and ``typing:stop``."""

    ok: Literal[True] = True


@attrs.frozen(kw_only=True)
class RefreshReply:
    """The ack of ``auth:refresh``: the new credentials' lifetime, in seconds, if any."""

    ok: Literal[True] = True
    expires_in: int | None = None


@attrs.frozen(kw_only=True)
class ErrorReply:
    """The ack of a request that failed: ``{ok: false, error: {...}}``."""

    ok: Literal[False] = False
    error: ErrorEvent


Reply = JoinReply | LeaveReply | OkReply | RefreshReply | ErrorReply
"""Any ack the server sends."""
