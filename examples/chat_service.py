"""A chat backend's message service that calls the relay after storing data.

This is the integration chatrelay is built for: the service stores a message (here in
a dict, in a real app in a database) and then tells the relay, which pushes
``message:received`` to every open tab in the conversation. Client acks come back
through ``on_delivered``, which moves the message to ``delivered``.

``test_chat_service.py`` next to this file shows how to test such a service with
:class:`chatrelay.testing.MemoryTransport`, without a server or a network.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import attrs

from chatrelay import Delivery, Identity, Message, MessageStatus, Relay, is_forward


@attrs.define
class Conversation:
    id: str
    participant_ids: set[str]


class ChatService:
    """Conversations and messages in memory, with real-time events through a relay."""

    def __init__(self) -> None:
        self.conversations: dict[str, Conversation] = {}
        self.messages: dict[str, Message] = {}
        self._ids = itertools.count(1)
        self.relay = Relay(authorize_join=self.authorize_join, on_delivered=self.on_delivered)

    def create_conversation(self, *participant_ids: str) -> Conversation:
        conversation = Conversation(id=f"c{next(self._ids)}", participant_ids=set(participant_ids))
        self.conversations[conversation.id] = conversation
        return conversation

    async def send_message(self, conversation_id: str, sender_id: str, text: str) -> Message:
        if sender_id not in self.conversations[conversation_id].participant_ids:
            raise PermissionError(f"{sender_id} is not in {conversation_id}")
        message = Message(
            id=f"m{next(self._ids)}",
            conversation_id=conversation_id,
            sender_id=sender_id,
            type="text",
            content={"text": text},
            status=MessageStatus.SENT,
            created_at=datetime.now(UTC),
        )
        self.messages[message.id] = message  # store first, then tell the clients
        await self.relay.message_received(message)
        return message

    async def update_status(self, message_id: str, status: MessageStatus, user_id: str) -> bool:
        message = self.messages[message_id]
        if not is_forward(message.status, status):
            return False  # read stays read; delivered never goes back to sent
        self.messages[message_id] = attrs.evolve(message, status=status)
        await self.relay.message_status(
            message.conversation_id, message_id, status, user_id=user_id
        )
        return True

    # --- relay hooks ---------------------------------------------------------------

    async def authorize_join(self, identity: Identity, conversation_id: str) -> bool:
        conversation = self.conversations.get(conversation_id)
        return conversation is not None and identity.user_id in conversation.participant_ids

    async def on_delivered(self, delivery: Delivery) -> None:
        await self.update_status(delivery.message_id, MessageStatus.DELIVERED, delivery.user_id)
