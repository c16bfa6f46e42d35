"""The demo's backend: the rules about users, conversations and messages.

The service layer stores data, then calls the relay's emitter, as a real backend
(the NestJS services chatrelay replaces, for example) would. Where the data is kept
is a `DemoStore`'s business: in memory by default, in Redis
when several demo servers share it. The rules are the same for both, and live here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Final

from .._auth import Identity
from .._connection import Delivery
from .._relay import Relay
from ..events import Message, MessageStatus, Sender, is_forward
from ._models import Conversation, DemoError, User
from ._store import DemoStore, Draft, MemoryStore

__all__ = ["SEED_CONVERSATIONS", "SEED_USERS", "DemoService"]

SEED_USERS: Final = (
    User(id="alice", name="Alice"),
    User(id="bob", name="Bob"),
    User(id="carol", name="Carol"),
)
SEED_CONVERSATIONS: Final[tuple[Draft, ...]] = (
    (("alice", "bob"), None),
    (("alice", "bob", "carol"), "Lunch crew"),
    (("bob", "carol"), None),
)
"""The conversations a new demo starts with: participants and name."""

# A status can change at most len(MessageStatus) - 1 times, so a status update that
# keeps losing races to other servers ends after this many reads.
_ATTEMPTS: Final = len(MessageStatus)


class DemoService:
    """Conversations and messages, with real-time events through a relay.

    The relay is attached after construction (`attach`), because the relay's
    hooks are this service's methods.

    Args:
        users: The users of the demo (the same on every server).
        store: Where conversations and messages are kept; in memory by default.
    """

    def __init__(self, users: Iterable[User] = SEED_USERS, store: DemoStore | None = None) -> None:
        self.users = {user.id: user for user in users}
        self.store: DemoStore = store if store is not None else MemoryStore()
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

    async def seed(self, drafts: Sequence[Draft] = SEED_CONVERSATIONS) -> list[Conversation]:
        """Create the demo's first conversations, unless a server sharing the store did.

        Returns:
            The conversations this call created.
        """
        for participant_ids, _ in drafts:
            self._check_participants(participant_ids)
        return await self.store.seed(drafts)

    # --- conversations -------------------------------------------------------------

    async def create_conversation(
        self, participant_ids: Iterable[str], name: str | None = None
    ) -> Conversation:
        """Create a conversation between known users (at least two, no repeats)."""
        participants = tuple(participant_ids)
        self._check_participants(participants)
        conversation = Conversation(
            id=await self.store.new_id("c"), participant_ids=participants, name=name
        )
        await self.store.add_conversation(conversation)
        return conversation

    async def conversations_of(self, user_id: str) -> list[Conversation]:
        """The conversations ``user_id`` takes part in, oldest first."""
        self._user(user_id)
        return [c for c in await self.store.conversations() if user_id in c.participant_ids]

    async def conversation(self, conversation_id: str) -> Conversation:
        """A conversation by id, or a 404 `DemoError`."""
        conversation = await self.store.conversation(conversation_id)
        if conversation is None:
            raise DemoError(404, "not_found", f"no conversation {conversation_id!r}")
        return conversation

    # --- messages ------------------------------------------------------------------

    # --8<-- [start:send]
    async def send_message(self, conversation_id: str, sender_id: str, text: str) -> Message:
        """Store a text message, then emit ``message:received`` to the room."""
        conversation = await self.conversation(conversation_id)
        sender = self._user(sender_id)
        if sender_id not in conversation.participant_ids:
            raise DemoError(403, "forbidden", f"{sender_id!r} is not in this conversation")
        if not text.strip():
            raise DemoError(400, "invalid_payload", "a message needs some text")
        message = Message(
            id=await self.store.new_id("m"),
            conversation_id=conversation_id,
            sender_id=sender_id,
            type="text",
            content={"text": text},
            status=MessageStatus.SENT,
            created_at=datetime.now(UTC),
        )
        await self.store.add_message(message)
        await self.relay.message_received(message, sender=Sender(id=sender.id, name=sender.name))
        return message

    # --8<-- [end:send]

    async def messages_of(self, conversation_id: str) -> list[Message]:
        """The messages of a conversation, oldest first."""
        await self.conversation(conversation_id)
        return await self.store.messages(conversation_id)

    # --8<-- [start:status]
    async def update_status(self, message_id: str, status: str, user_id: str) -> Message:
        """Move a message forward to ``status`` for ``user_id``; backward moves are 409."""
        message = await self._message(message_id)
        try:
            new = MessageStatus(status)
        except ValueError:
            raise DemoError(400, "invalid_payload", f"unknown status {status!r}") from None
        conversation = await self.conversation(message.conversation_id)
        self._user(user_id)
        if user_id not in conversation.participant_ids or user_id == message.sender_id:
            raise DemoError(403, "forbidden", "only a recipient can change a message's status")
        for _ in range(_ATTEMPTS):
            if not is_forward(message.status, new):
                raise DemoError(
                    409, "conflict", f"status cannot go from {message.status.value} to {new.value}"
                )
            # Compare and set: another server may have moved it since we read it.
            updated = await self.store.set_status(message_id, message.status, new)
            if updated is not None:
                await self.relay.message_status(
                    updated.conversation_id, updated.id, new, user_id=user_id
                )
                return updated
            message = await self._message(message_id)
        raise DemoError(409, "conflict", "the status keeps changing; try again")

    async def mark_read(self, conversation_id: str, user_id: str) -> list[Message]:
        """Mark every unread message from others as read; one ``message:status`` each."""
        conversation = await self.conversation(conversation_id)
        self._user(user_id)
        if user_id not in conversation.participant_ids:
            raise DemoError(403, "forbidden", f"{user_id!r} is not in this conversation")
        updated = []
        for message in await self.store.messages(conversation_id):
            if message.sender_id != user_id and message.status is not MessageStatus.READ:
                try:
                    updated.append(await self.update_status(message.id, "read", user_id))
                except DemoError as exc:
                    if exc.status != 409:
                        raise  # 409: read meanwhile, on another tab or server
        return updated

    # --8<-- [end:status]

    # --- relay hooks ---------------------------------------------------------------

    # --8<-- [start:hooks]
    async def authorize_join(self, identity: Identity, conversation_id: str) -> bool:
        """Only a conversation's participants may join its room."""
        conversation = await self.store.conversation(conversation_id)
        return conversation is not None and identity.user_id in conversation.participant_ids

    async def on_delivered(self, delivery: Delivery) -> None:
        """A recipient's client acknowledged a message: mark it delivered."""
        message = await self.store.message(delivery.message_id)
        if message is not None and is_forward(message.status, MessageStatus.DELIVERED):
            try:
                await self.update_status(message.id, "delivered", delivery.user_id)
            except DemoError as exc:
                if exc.status != 409:
                    raise  # 409: another tab or server got there first

    async def presence_audience(self, user_id: str) -> list[str]:
        """Everyone who shares a conversation with ``user_id``."""
        return sorted(
            {
                p
                for c in await self.store.conversations()
                if user_id in c.participant_ids
                for p in c.participant_ids
            }
        )

    # --8<-- [end:hooks]

    async def _message(self, message_id: str) -> Message:
        message = await self.store.message(message_id)
        if message is None:
            raise DemoError(404, "not_found", f"no message {message_id!r}")
        return message

    def _check_participants(self, participants: Sequence[str]) -> None:
        if len(participants) < 2 or len(set(participants)) != len(participants):
            raise DemoError(400, "invalid_payload", "a conversation needs two or more users")
        for user_id in participants:
            self._user(user_id)

    def _user(self, user_id: str) -> User:
        user = self.users.get(user_id)
        if user is None:
            raise DemoError(404, "not_found", f"no user {user_id!r}")
        return user
