"""The application's hooks into a relay: their types, and the allow-all authorizer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection

from ._auth import Identity
from ._connection import Delivery
from ._types import ConversationId, UserId

__all__ = ["AudienceHook", "DeliveryHook", "JoinAuthorizer", "allow_all"]

JoinAuthorizer = Callable[[Identity, ConversationId], Awaitable[bool]]
"""``async (identity, conversation_id) -> bool``: may this user join that room?"""

DeliveryHook = Callable[[Delivery], Awaitable[None]]
"""``async (delivery) -> None``: a recipient's client acknowledged a message."""

AudienceHook = Callable[[UserId], Awaitable[Collection[UserId]]]
"""``async (user_id) -> user ids``: who is told that this user came online or went offline."""


async def allow_all(identity: Identity, conversation_id: ConversationId) -> bool:
    """A join authorizer that lets every authenticated user join every conversation.

    Pass it explicitly (``authorize_join=allow_all``) to use it in production mode.
    """
    return True
