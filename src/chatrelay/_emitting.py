"""The emitter API: what application code calls on a relay to reach the clients.

`Relay` (and through it the write-only `Emitter`) inherits these methods: a
stored message or status to announce to a conversation's room, a user to disconnect
everywhere, and the cluster's presence, membership and typing to ask about. They
encode the event once and hand it to the relay's effects (`chatrelay._effects`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from . import codec
from ._effects import EffectRunner
from ._exceptions import CloseReason
from ._hub import Hub
from ._outbound import Outbound, _AckContext
from ._types import ConnectionId, ConversationId, MessageId, UserId
from .events import Message, MessageStatus, Sender, _coerce_status

__all__ = ["EmitterAPI"]


class EmitterAPI:
    """The application's side of a relay (see the module's docstring)."""

    _hub: Hub
    _effects: EffectRunner
    _require_running: Callable[[], None]
    _wall_clock: Callable[[], datetime]

    async def message_received(
        self,
        message: Message,
        *,
        sender: Sender | None = None,
        exclude: ConnectionId | None = None,
    ) -> None:
        """Tell a conversation's room that a message was stored (``message:received``).

        Ends the sender's typing episode in that conversation. Recipients' clients are
        asked to acknowledge it; their acks reach ``on_delivered``.

        Args:
            message: The stored message.
            sender: Who sent it, as shown to readers; defaults to its ``sender_id``.
            exclude: A connection not to send it to (the one that caused it); nor the
                ``typing:stop`` that ending the sender's episode sends.

        Any string of the message may hold any character, lone UTF-16 surrogates
        included: every transport sends it as a JSON escape, and clients decode the
        same string.

        With the history in another process (Redis), it returns once the event is
        queued for its position, and the event goes out a round trip later, in the
        order emitted (`Relay.flush` waits for it).

        Raises:
            BackplaneError: If the event is larger than the backplane accepts; nothing
                was sent then.
            ValueError: If the conversation id holds a lone UTF-16 surrogate; nothing
                was sent then.
        """
        self._require_running()
        data = codec._message_received(message, sender)
        conversation = message.conversation_id
        item = Outbound(
            "message:received",
            data,
            ack=_AckContext(
                conversation_id=conversation, message_id=message.id, sender_id=message.sender_id
            ),
        )
        hub, sender_id = self._hub, message.sender_id
        await self._effects.broadcast(
            conversation,
            item,
            exclude,
            then=lambda: hub.message_sent(conversation, sender_id, exclude),
        )

    async def message_status(
        self,
        conversation_id: ConversationId,
        message_id: MessageId,
        status: MessageStatus | str,
        *,
        user_id: UserId,
        updated_at: datetime | None = None,
        exclude: ConnectionId | None = None,
    ) -> None:
        """Tell a conversation's room that a message moved to a new status.

        Args:
            conversation_id: The conversation of the message.
            message_id: The message.
            status: ``sent``, ``delivered`` or ``read``.
            user_id: The user for whom the status changed (the reader).
            updated_at: When; defaults to now.
            exclude: A connection not to send it to.

        Like `message_received`, it may return before the event went out (a history
        in Redis): `Relay.flush` waits for it.

        Raises:
            ValueError: If ``status`` is not a known status, or the conversation id
                holds a lone UTF-16 surrogate.
            BackplaneError: If the event is larger than the backplane accepts.
        """
        self._require_running()
        # What codec.encode(MessageStatusChanged(...)) gives, and its JSON, built directly:
        # this is the hot path of a server that broadcasts read receipts.
        data, text = codec._status_changed(
            conversation_id,
            message_id,
            _coerce_status(status),
            user_id,
            updated_at if updated_at is not None else self._wall_clock(),
        )
        item = Outbound("message:status", data, json=text)
        await self._effects.broadcast(conversation_id, item, exclude)

    async def disconnect_user(
        self, user_id: UserId, reason: CloseReason | str = CloseReason.DISCONNECTED
    ) -> None:
        """Close every connection of a user, on every server of the cluster.

        For an account that was blocked, or a user who logged out everywhere. This
        node closes its connections at once; the others when the backplane tells them
        (within a heartbeat's time). Each client is told why first: a WebSocket close
        frame whose reason is ``reason``; for ``disconnected``, a Socket.IO ``error``
        event ``{status: 401, code: "disconnected"}`` before its transport is closed.
        A client may reconnect: the authenticator decides whether it may.

        Args:
            user_id: The user.
            reason: Why, as the clients are told (``"disconnected"`` by default).
        """
        self._require_running()
        await self._effects.carry_out(self._hub.disconnect_user(user_id, str(reason)))

    def is_online(self, user_id: UserId) -> bool:
        """Tell whether a user is online anywhere in the cluster."""
        return self._hub.is_online(user_id)

    def online_users(self) -> frozenset[UserId]:
        """The users online anywhere in the cluster."""
        return self._hub.online_users()

    def members(self, conversation_id: ConversationId) -> frozenset[UserId]:
        """The users with a connection in a conversation's room, anywhere in the cluster."""
        return self._hub.members(conversation_id)

    def typing_users(self, conversation_id: ConversationId) -> frozenset[UserId]:
        """The users typing in a conversation now, anywhere in the cluster."""
        return self._hub.typing_users(conversation_id)
