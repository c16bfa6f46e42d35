"""The write-only emitter: room events and presence from a process without sockets."""

from __future__ import annotations

from datetime import datetime

from ._auth import Authenticator, Credentials, Identity
from ._backplane import Backplane
from ._config import RelayConfig
from ._exceptions import Unauthorized
from ._relay import Relay, RelayStatistics
from ._resource import AsyncResource
from ._types import ConversationId, MessageId, NodeId, UserId
from .events import Message, MessageStatus, Sender

__all__ = ["Emitter"]


class _NoClients(Authenticator):
    """An emitter holds no connections: every client is refused."""

    async def authenticate(self, credentials: Credentials) -> Identity:
        raise Unauthorized("this is a write-only emitter; connect to a relay server")


async def _deny(identity: Identity, conversation_id: ConversationId) -> bool:
    return False


class Emitter(AsyncResource):
    """Emit room events and ask about presence from a process that holds no sockets.

    A REST worker or a job queue that stores a message tells the relay servers through
    the backplane they share, for example Redis::

        from chatrelay import Emitter
        from chatrelay.backplanes.redis import RedisBackplane

        async with Emitter(RedisBackplane("redis://127.0.0.1:6379/0")) as emitter:
            await emitter.message_received(message)
            if not emitter.is_online(recipient):
                ...  # send a push notification instead

    An emitter is a relay node without connections: the events it emits are built and
    encoded by the same code as a relay's, so clients cannot tell where one came from.
    It follows the cluster's control topic to answer `is_online`,
    `online_users`, `members` and `typing_users` like any node; its
    view fills in as the other nodes answer its request for their state, within
    about one round trip of `start`. It sends heartbeats like a node, so the
    others count it in their ``nodes`` statistic.

    Args:
        backplane: The backplane the relay servers use (not started yet).
        config: Timers of the cluster (``heartbeat_interval``, ``node_timeout``,
            ``presence_grace``); use the relays' values.

    Raises:
        ValueError: If the backplane is not shared (it would reach nobody).
    """

    def __init__(self, backplane: Backplane, *, config: RelayConfig | None = None) -> None:
        if not backplane.shared:
            raise ValueError("an Emitter needs a shared backplane, such as RedisBackplane")
        self._relay = Relay(
            config=config,
            authenticator=_NoClients(),
            authorize_join=_deny,
            backplane=backplane,
        )

    @property
    def node_id(self) -> NodeId:
        """This emitter's node id."""
        return self._relay.node_id

    async def start(self) -> None:
        """Start the backplane and follow the cluster; prefer ``async with``.

        Raises:
            RuntimeError: If the emitter was started before.
            BackplaneError: If the backplane cannot connect.
        """
        await self._relay.start()

    async def aclose(self) -> None:
        """Say goodbye to the cluster and close the backplane."""
        await self._relay.aclose()

    async def message_received(self, message: Message, *, sender: Sender | None = None) -> None:
        """Tell a conversation's room, on every server, that a message was stored.

        Ends the sender's typing episode in that conversation, wherever it types.

        Args:
            message: The stored message.
            sender: Who sent it, as shown to readers; defaults to its ``sender_id``.

        Raises:
            BackplaneError: If the event is larger than the backplane accepts; nothing
                was sent then.
            RuntimeError: If the emitter is not running.
        """
        await self._relay.message_received(message, sender=sender)

    async def message_status(
        self,
        conversation_id: ConversationId,
        message_id: MessageId,
        status: MessageStatus | str,
        *,
        user_id: UserId,
        updated_at: datetime | None = None,
    ) -> None:
        """Tell a conversation's room, on every server, that a message changed status.

        Args:
            conversation_id: The conversation of the message.
            message_id: The message.
            status: ``sent``, ``delivered`` or ``read``.
            user_id: The user for whom the status changed (the reader).
            updated_at: When; defaults to now.

        Raises:
            ValueError: If ``status`` is not a known status.
            BackplaneError: If the event is larger than the backplane accepts.
            RuntimeError: If the emitter is not running.
        """
        await self._relay.message_status(
            conversation_id, message_id, status, user_id=user_id, updated_at=updated_at
        )

    async def flush(self) -> None:
        """Return once every event emitted so far has been handed to the backplane.

        Emitting returns once the event is queued for its position (see
        `Relay.flush`); closing the emitter flushes too.
        """
        await self._relay.flush()

    async def disconnect_user(self, user_id: UserId, reason: str = "disconnected") -> None:
        """Close every connection of a user on every relay server (`Relay.disconnect_user`)."""
        await self._relay.disconnect_user(user_id, reason)

    def is_online(self, user_id: UserId) -> bool:
        """Tell whether a user is online anywhere in the cluster."""
        return self._relay.is_online(user_id)

    def online_users(self) -> frozenset[UserId]:
        """The users online anywhere in the cluster."""
        return self._relay.online_users()

    def members(self, conversation_id: ConversationId) -> frozenset[UserId]:
        """The users with a connection in a conversation's room, anywhere in the cluster."""
        return self._relay.members(conversation_id)

    def typing_users(self, conversation_id: ConversationId) -> frozenset[UserId]:
        """The users typing in a conversation now, anywhere in the cluster."""
        return self._relay.typing_users(conversation_id)

    def statistics(self) -> RelayStatistics:
        """Return the emitter's counters, the backplane's health among them."""
        return self._relay.statistics()
