"""Where the demo keeps conversations and messages: the port, and its in-memory form."""

from __future__ import annotations

import itertools
from abc import abstractmethod
from collections.abc import Sequence
from typing import Literal, TypeAlias

import attrs

from .._resource import AsyncResource
from ..events import Message, MessageStatus
from ._models import Conversation

__all__ = ["DemoStore", "Draft", "MemoryStore", "StoreUnavailable"]

Draft: TypeAlias = tuple[tuple[str, ...], str | None]
"""A conversation to create: its participants' ids and its name."""


class StoreUnavailable(Exception):
    """The store cannot be reached now (its server is down, say)."""


class DemoStore(AsyncResource):
    """Keeps the demo's conversations and messages, and decides nothing.

    The rules (who may post, statuses only move forward) are
    `DemoService`'s. A store hands out ids that never collide,
    keeps what it is given, and changes a message's status only while it still is
    what the caller saw, so that two servers sharing the store cannot move a status
    backward.

    Use it as an async context manager: ``async with store:`` connects it, if it has
    something to connect to.
    """

    async def start(self) -> None:
        """Connect to the storage, if there is one to connect to.

        Raises:
            StoreUnavailable: If the storage cannot be reached.
        """

    async def aclose(self) -> None:
        """Disconnect from the storage."""

    @abstractmethod
    async def seed(self, drafts: Sequence[Draft]) -> list[Conversation]:
        """Create the demo's first conversations, with new ids, once per store.

        All or nothing: whoever reads the store after this call returned sees either
        every one of them or (while another server is seeding) none.

        Returns:
            The conversations created: none if the store was seeded before.
        """

    @abstractmethod
    async def new_id(self, kind: Literal["c", "m"]) -> str:
        """A new id (``c…`` for a conversation, ``m…`` for a message), never given before."""

    @abstractmethod
    async def add_conversation(self, conversation: Conversation) -> None:
        """Keep a new conversation."""

    @abstractmethod
    async def conversation(self, conversation_id: str) -> Conversation | None:
        """The conversation with that id, if there is one."""

    @abstractmethod
    async def conversations(self) -> list[Conversation]:
        """Every conversation, oldest first."""

    @abstractmethod
    async def add_message(self, message: Message) -> None:
        """Keep a new message, last of its conversation (which exists)."""

    @abstractmethod
    async def message(self, message_id: str) -> Message | None:
        """The message with that id, if there is one."""

    @abstractmethod
    async def messages(self, conversation_id: str) -> list[Message]:
        """The messages of a conversation, oldest first."""

    @abstractmethod
    async def set_status(
        self, message_id: str, expected: MessageStatus, status: MessageStatus
    ) -> Message | None:
        """Set a message's status if it is still ``expected`` (compare and set).

        Returns:
            The message as stored now, or ``None`` if there is no such message or its
            status is no longer ``expected`` (another server changed it meanwhile).
        """


class MemoryStore(DemoStore):
    """Conversations and messages in this process's memory: the demo's default."""

    def __init__(self) -> None:
        self._seeded = False
        self._ids = itertools.count(1)
        self._conversations: dict[str, Conversation] = {}
        self._messages: dict[str, Message] = {}
        self._by_conversation: dict[str, list[str]] = {}

    async def seed(self, drafts: Sequence[Draft]) -> list[Conversation]:
        """Create the conversations, the first time only (no await in between)."""
        if self._seeded:
            return []
        self._seeded = True
        created = [
            Conversation(id=f"c{next(self._ids)}", participant_ids=participants, name=name)
            for participants, name in drafts
        ]
        for conversation in created:
            self._conversations[conversation.id] = conversation
            self._by_conversation[conversation.id] = []
        return created

    async def new_id(self, kind: Literal["c", "m"]) -> str:
        """``c1``, ``c2``, ``m3``…: one counter for both kinds."""
        return f"{kind}{next(self._ids)}"

    async def add_conversation(self, conversation: Conversation) -> None:
        """Keep a new conversation."""
        self._conversations[conversation.id] = conversation
        self._by_conversation[conversation.id] = []

    async def conversation(self, conversation_id: str) -> Conversation | None:
        """The conversation with that id, if there is one."""
        return self._conversations.get(conversation_id)

    async def conversations(self) -> list[Conversation]:
        """Every conversation, oldest first."""
        return list(self._conversations.values())

    async def add_message(self, message: Message) -> None:
        """Keep a new message, last of its conversation."""
        self._messages[message.id] = message
        self._by_conversation[message.conversation_id].append(message.id)

    async def message(self, message_id: str) -> Message | None:
        """The message with that id, if there is one."""
        return self._messages.get(message_id)

    async def messages(self, conversation_id: str) -> list[Message]:
        """The messages of a conversation, oldest first."""
        return [self._messages[m] for m in self._by_conversation.get(conversation_id, [])]

    async def set_status(
        self, message_id: str, expected: MessageStatus, status: MessageStatus
    ) -> Message | None:
        """Set a message's status if it is still ``expected``; no await in between."""
        message = self._messages.get(message_id)
        if message is None or message.status is not expected:
            return None
        message = self._messages[message_id] = attrs.evolve(message, status=status)
        return message
