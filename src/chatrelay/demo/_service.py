"""The demo's backend: users, conversations and messages in memory.

The service layer calls the relay's emitter after storing data, as a real backend
(the NestJS services chatrelay replaces, for example) would.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from datetime import UTC, datetime

import attrs

from .._auth import Identity
from .._connection import Delivery
from .._relay import Relay
from ..events import Message, MessageStatus, Sender, is_forward

__all__ = ["Conversation", "DemoError", "DemoService", "User"]


@attrs.frozen(kw_only=True)
class User:
    """A user of the demo."""

    id: str
    name: str


@attrs.frozen(kw_only=True)
class Conversation:
    """A conversation between participants."""

    id: str
    participant_ids: tuple[str, ...]
    name: str | None = None


class DemoError(Exception):
    """A request the service refuses; maps to an HTTP error ``{status, code, message}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


SEED_USERS = (
    User(id="alice", name="Alice"),
    User(id="bob", name="Bob"),
    User(id="carol", name="Carol"),
)


class DemoService:
    """Conversations and messages in memory, with real-time events through a relay.

    The relay is attached after construction (:meth:`attach`), because the relay's
    hooks are this service's methods.
    """

    def __init__(self, users: Iterable[User] = SEED_USERS) -> None:
        self.users = {user.id: user for user in users}
        self.conversations: dict[str, Conversation] = {}
        self.messages: dict[str, Message] = {}
        self._by_conversation: dict[str, list[str]] = {}
        self._ids = itertools.count(1)
        self._relay: Relay | None = None

    def attach(self, relay: Relay) -> None:
        """Use ``relay`` to emit events."""
        self._relay = relay

    @property
    def relay(self) -> Relay:
        """The relay the service emits to."""
        if self._relay is None:
            raise RuntimeError("attach a relay first")
        return self._relay

    # --- conversations -------------------------------------------------------------

    def create_conversation(
        self, participant_ids: Iterable[str], name: str | None = None
    ) -> Conversation:
        """Create a conversation between known users (at least two, no repeats)."""
        participants = tuple(participant_ids)
        if len(participants) < 2 or len(set(participants)) != len(participants):
            raise DemoError(400, "invalid_payload", "a conversation needs two or more users")
        for user_id in participants:
            self._user(user_id)
        conversation = Conversation(
            id=f"c{next(self._ids)}", participant_ids=participants, name=name
        )
        self.conversations[conversation.id] = conversation
        self._by_conversation[conversation.id] = []
        return conversation

    def conversations_of(self, user_id: str) -> list[Conversation]:
        """The conversations ``user_id`` takes part in, oldest first."""
        self._user(user_id)
        return [c for c in self.conversations.values() if user_id in c.participant_ids]

    def conversation(self, conversation_id: str) -> Conversation:
        """A conversation by id, or a 404 :class:`DemoError`."""
        conversation = self.conversations.get(conversation_id)
        if conversation is None:
            raise DemoError(404, "not_found", f"no conversation {conversation_id!r}")
        return conversation

    # --- messages ------------------------------------------------------------------

    # --8<-- [start:send]
    async def send_message(self, conversation_id: str, sender_id: str, text: str) -> Message:
        """Store a text message, then emit ``message:received`` to the room."""
        conversation = self.conversation(conversation_id)
        sender = self._user(sender_id)
        if sender_id not in conversation.participant_ids:
            raise DemoError(403, "forbidden", f"{sender_id!r} is not in this conversation")
        if not text.strip():
            raise DemoError(400, "invalid_payload", "a message needs some text")
        message = Message(
            id=f"m{next(self._ids)}",
            conversation_id=conversation_id,
            sender_id=sender_id,
            type="text",
            content={"text": text},
            status=MessageStatus.SENT,
            created_at=datetime.now(UTC),
        )
        self.messages[message.id] = message
        self._by_conversation[conversation_id].append(message.id)
        await self.relay.message_received(message, sender=Sender(id=sender.id, name=sender.name))
        return message

    # --8<-- [end:send]

    def messages_of(self, conversation_id: str) -> list[Message]:
        """The messages of a conversation, oldest first."""
        self.conversation(conversation_id)
        return [self.messages[m] for m in self._by_conversation[conversation_id]]

    # --8<-- [start:status]
    async def update_status(self, message_id: str, status: str, user_id: str) -> Message:
        """Move a message forward to ``status`` for ``user_id``; backward moves are 409."""
        message = self.messages.get(message_id)
        if message is None:
            raise DemoError(404, "not_found", f"no message {message_id!r}")
        try:
            new = MessageStatus(status)
        except ValueError:
            raise DemoError(400, "invalid_payload", f"unknown status {status!r}") from None
        conversation = self.conversation(message.conversation_id)
        self._user(user_id)
        if user_id not in conversation.participant_ids or user_id == message.sender_id:
            raise DemoError(403, "forbidden", "only a recipient can change a message's status")
        if not is_forward(message.status, new):
            raise DemoError(
                409, "conflict", f"status cannot go from {message.status.value} to {new.value}"
            )
        message = attrs.evolve(message, status=new)
        self.messages[message_id] = message
        await self.relay.message_status(message.conversation_id, message.id, new, user_id=user_id)
        return message

    async def mark_read(self, conversation_id: str, user_id: str) -> list[Message]:
        """Mark every unread message from others as read; one ``message:status`` each."""
        conversation = self.conversation(conversation_id)
        self._user(user_id)
        if user_id not in conversation.participant_ids:
            raise DemoError(403, "forbidden", f"{user_id!r} is not in this conversation")
        updated = []
        for message in self.messages_of(conversation_id):
            if message.sender_id != user_id and message.status is not MessageStatus.READ:
                updated.append(await self.update_status(message.id, "read", user_id))
        return updated

    # --8<-- [end:status]

    # --- relay hooks ---------------------------------------------------------------

    # --8<-- [start:hooks]
    async def authorize_join(self, identity: Identity, conversation_id: str) -> bool:
        """Only a conversation's participants may join its room."""
        conversation = self.conversations.get(conversation_id)
        return conversation is not None and identity.user_id in conversation.participant_ids

    async def on_delivered(self, delivery: Delivery) -> None:
        """A recipient's client acknowledged a message: mark it delivered."""
        message = self.messages.get(delivery.message_id)
        if message is not None and is_forward(message.status, MessageStatus.DELIVERED):
            await self.update_status(message.id, "delivered", delivery.user_id)

    async def presence_audience(self, user_id: str) -> list[str]:
        """Everyone who shares a conversation with ``user_id``."""
        return sorted(
            {
                p
                for c in self.conversations.values()
                if user_id in c.participant_ids
                for p in c.participant_ids
            }
        )

    # --8<-- [end:hooks]

    def _user(self, user_id: str) -> User:
        user = self.users.get(user_id)
        if user is None:
            raise DemoError(404, "not_found", f"no user {user_id!r}")
        return user
