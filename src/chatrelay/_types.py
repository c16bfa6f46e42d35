"""Identifier aliases shared by every module.

IDs that applications supply (users, conversations, messages) are plain ``str``
aliases; IDs that chatrelay mints itself are distinct ``NewType`` s so that
a type checker catches one used for the other.
"""

from __future__ import annotations

from typing import NewType

__all__ = ["ConnectionId", "ConversationId", "MessageId", "NodeId", "UserId"]

UserId = str
"""A user's id, as the application's authentication names it."""

ConversationId = str
"""A conversation's id; one room per conversation."""

MessageId = str
"""A message's id, as the application stored it."""

ConnectionId = NewType("ConnectionId", str)
"""The id chatrelay gives one client connection (one tab, one device)."""

NodeId = NewType("NodeId", str)
"""The id of one relay process; unique per process start."""
