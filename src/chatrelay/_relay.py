"""The relay: the async hub between adapters, application code and the backplane."""

from __future__ import annotations

import itertools
import logging
import math
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Final

import anyio
from anyio.abc import TaskGroup

from . import codec
from ._auth import Authenticator, Credentials, DevelopmentAuthenticator, Identity
from ._backplane import Backplane
from ._config import RelayConfig
from ._connection import Connection
from ._effects import EffectRunner
from ._exceptions import CloseReason, InternalError, ProtocolError, TooManyConnections
from ._hooks import AudienceHook, DeliveryHook, JoinAuthorizer, allow_all
from ._hub import Hub
from ._limits import TokenBucket, check_connection_cap
from ._nodes import CONTROL_TOPIC
from ._outbound import Outbound, _AckContext
from ._requests import Requests
from ._resource import AsyncResource
from ._statistics import Counters, RelayStatistics
from ._types import ConnectionId, ConversationId, MessageId, NodeId, UserId
from .backplanes import LocalBackplane
from .events import Message, MessageStatus, Sender

__all__ = [
    "AudienceHook",
    "DeliveryHook",
    "JoinAuthorizer",
    "Relay",
    "RelayStatistics",
    "allow_all",
]

logger = logging.getLogger("chatrelay")


class Relay(AsyncResource):
    """The hub of chatrelay: connections, rooms, presence, typing, and the emitter API.

    Use it as an async context manager; it runs the timers (typing expiry, presence
    grace, heartbeats) and the backplane listener in its own task group::

        async with Relay() as relay:
            ...  # attach adapters; call relay.message_received(...) from app code

    Args:
        config: Settings; defaults suit development.
        authenticator: Turns a client's credentials into an identity. Defaults to
            `DevelopmentAuthenticator` outside production mode; required in it.
        authorize_join: Decides who may join a conversation's room (for example a
            membership check in the database). Only a result of ``True`` allows.
            Defaults to allowing everyone outside production mode; required in it
            (pass `allow_all` to allow everyone there).
        on_delivered: Called when a recipient's client acknowledges a
            ``message:received`` (once per user and message on this node; acks from
            the sender's own connections are not deliveries).
        presence_audience: Who is told of a user's ``user:online`` / ``user:offline``;
            by default every connected client. Return the users who share a
            conversation with that user to limit it to them.
            Each call of these three hooks is bounded by ``config.hook_timeout``.
        backplane: Connects this relay to other nodes; by default it is alone.

    Raises:
        ValueError: If production mode lacks an authenticator or ``authorize_join``,
            or is given a development authenticator.
    """

    def __init__(
        self,
        *,
        config: RelayConfig | None = None,
        authenticator: Authenticator | None = None,
        authorize_join: JoinAuthorizer | None = None,
        on_delivered: DeliveryHook | None = None,
        presence_audience: AudienceHook | None = None,
        backplane: Backplane | None = None,
    ) -> None:
        self.config = config = config if config is not None else RelayConfig()
        if config.production:
            if authenticator is None or authenticator.development:
                raise ValueError(
                    "production mode needs an authenticator that verifies identity"
                    " (the development authenticator trusts the client)"
                )
            if authorize_join is None:
                raise ValueError(
                    "production mode needs authorize_join; pass allow_all explicitly to"
                    " let every user join every conversation"
                )
        self._authenticator = authenticator or DevelopmentAuthenticator()
        self._authorize_join = authorize_join or allow_all
        self._on_delivered = on_delivered
        self._presence_audience = presence_audience
        self._backplane = backplane if backplane is not None else LocalBackplane()
        self._shared = self._backplane.shared
        self.node_id: NodeId = self._backplane.node_id
        self._hub = Hub(
            node_id=self.node_id,
            typing_timeout=config.typing_timeout,
            presence_grace=config.presence_grace,
            node_timeout=config.node_timeout,
        )
        self._connections: dict[ConnectionId, Connection] = {}
        self._counters = Counters()
        self._effects = EffectRunner(
            hub=self._hub,
            backplane=self._backplane,
            connections=self._connections,
            counters=self._counters,
            presence_audience=presence_audience,
            hook_timeout=config.hook_timeout,
            heartbeat_interval=config.heartbeat_interval,
            wake=self._wake,
            clock=self._clock,
            wall_clock=self._wall_clock,
        )
        self._requests = Requests(
            config=config,
            hub=self._hub,
            counters=self._counters,
            carry_out=self._effects.carry_out,
            authorize_join=self._authorize_join,
            on_delivered=self._on_delivered,
            clock=self._clock,
        )
        self._ids = itertools.count(1)
        self._to_close: list[Connection] = []
        self._wakeup = anyio.Event()
        self._stack: AsyncExitStack | None = None
        self._tg: TaskGroup | None = None
        self._running = False

    # --- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Start the timers and the backplane listener; prefer ``async with``.

        Raises:
            RuntimeError: If the relay was started before.
            BackplaneError: If the backplane cannot connect.
        """
        if self._stack is not None:
            raise RuntimeError("a Relay can be entered only once")
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(self._backplane)
            self._tg = await stack.enter_async_context(anyio.create_task_group())
            if self._shared:
                await self._backplane.subscribe(CONTROL_TOPIC)
                self._tg.start_soon(self._effects.listen)
                self._tg.start_soon(self._effects.heartbeat)
                await self._effects.carry_out(self._hub.hello())
            self._tg.start_soon(self._run_timers)
            self._running = True
            self._stack = stack.pop_all()

    async def aclose(self) -> None:
        """Close every connection (reason ``"server_shutdown"``) and stop the relay."""
        if self._stack is None or not self._running:
            return
        self._running = False
        with anyio.CancelScope(shield=True):
            for conn in list(self._connections.values()):
                conn.close(CloseReason.SERVER_SHUTDOWN)
                await self._forget(conn)
            await self._effects.carry_out(self._hub.goodbye())
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
        # The task group was entered in start(): leave it outside any new scope.
        await self._stack.aclose()

    def _require_running(self) -> None:
        if not self._running:
            raise RuntimeError("the relay is not running; use it inside 'async with relay:'")

    # --- connections (the adapter side) ---------------------------------------------

    async def authenticate(self, credentials: Credentials) -> Identity:
        """Authenticate a connecting client with the relay's authenticator.

        Returns:
            The client's identity.

        Raises:
            Unauthorized: If the credentials are refused.
            InternalError: If the authenticator failed (logged with its traceback).
        """
        try:
            identity = await self._authenticator.authenticate(credentials)
        except ProtocolError as exc:
            # One line per refusal, for every transport; never the credentials.
            logger.info(
                "connection refused: transport=%s status=%d code=%s message=%s",
                credentials.transport,
                exc.status,
                exc.code,
                exc.message,
            )
            raise
        except Exception:
            logger.exception("authenticator failed (transport=%s)", credentials.transport)
            raise InternalError("authentication failed on the server") from None
        if not isinstance(identity, Identity):
            raise TypeError(f"authenticators must return an Identity, not {identity!r}")
        return identity

    def connect(
        self, identity: Identity, *, transport: str
    ) -> AbstractAsyncContextManager[Connection]:
        """Open a connection for an authenticated client; leaving the block closes it.

        Use it as ``async with relay.connect(identity, transport="…") as connection:``.

        Args:
            identity: Who connected (from `authenticate`).
            transport: The adapter's name, for logs and statistics.

        Returns:
            An async context manager whose block drives the connection it enters with.

        Raises:
            TooManyConnections: On entering, if the user holds
                ``Limits.max_connections_per_user`` connections on this relay already.
        """
        return _Connected(self, identity, transport)

    async def _open(self, identity: Identity, transport: str) -> Connection:
        self._require_running()
        now = self._clock()
        limits = self.config.limits
        user = identity.user_id
        try:
            # Checked and counted with no await in between: no two can slip in together.
            count = self._hub.presence.connection_count(user)
            check_connection_cap(user, count, limits.max_connections_per_user)
        except TooManyConnections as exc:
            logger.info("connection refused: transport=%s user=%s %s", transport, user, exc)
            raise
        conn = Connection(
            self,
            ConnectionId(f"{self.node_id}#{next(self._ids)}"),
            identity,
            transport=transport,
            max_bytes=limits.outgoing_bytes,
            max_items=math.inf if limits.outgoing_queue is None else limits.outgoing_queue,
            bucket=TokenBucket(rate=limits.rate, burst=limits.burst, now=now),
        )
        self._connections[conn.id] = conn
        effects = self._hub.connect(conn.id, user, identity.name, now)
        # From here on the connection is known: forget it however this ends, even if
        # cancelled while announcing it (the audience hook may be slow).
        try:
            await self._effects.carry_out(effects)
        except BaseException:
            await self._release(conn)
            raise
        return conn

    async def _release(self, conn: Connection) -> None:
        with anyio.CancelScope(shield=True):
            if conn.close_reason is None:
                conn.close(CloseReason.CLIENT_DISCONNECTED)
            await self._forget(conn)
        # Adapters read `outgoing` inside the block; if the block never ran (cancelled
        # while announcing), nobody else would close it.
        conn._close_queue()

    async def _forget(self, conn: Connection) -> None:
        """Remove a closed connection from rooms, typing and presence (idempotent)."""
        if self._connections.pop(conn.id, None) is None:
            return
        await self._effects.carry_out(self._hub.disconnect(conn.id, conn.user_id, self._clock()))

    def connection_closed(self, conn: Connection) -> None:
        # Connection.close calls this once, before the connection can be forgotten
        # (_forget only ever runs on closed connections); _forget is idempotent anyway.
        self._to_close.append(conn)
        self._wake()

    def slow_consumer(self, conn: Connection) -> None:
        self._counters.slow_consumers += 1
        logger.warning(
            "closing slow consumer: connection=%s user=%s queued=%d events, %d bytes",
            conn.id,
            conn.user_id,
            conn.queued,
            conn.outgoing.queued_bytes,
        )
        conn.close(CloseReason.SLOW_CONSUMER)

    # --- inbound requests ------------------------------------------------------------

    # The connections' owner (`chatrelay._connection.ConnectionOwner`): requests go to
    # the request handler; closes and overflows are the relay's.

    async def handle_request(
        self, conn: Connection, event: object, data: object, size: int | None
    ) -> dict[str, Any]:
        return await self._requests.handle(conn, event, data, size)

    def reject_request(self, conn: Connection, error: ProtocolError) -> dict[str, Any]:
        return self._requests.reject(conn, error)

    async def acknowledge(self, conn: Connection, item: Outbound) -> None:
        await self._requests.acknowledge(conn, item)

    # --- the emitter API (application side) ------------------------------------------

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
        await self._effects.broadcast(conversation, item, exclude)
        typing_ended = self._hub.message_sent(conversation, message.sender_id, exclude)
        await self._effects.carry_out(typing_ended)

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
            _status(status),
            user_id,
            updated_at if updated_at is not None else self._wall_clock(),
        )
        item = Outbound("message:status", data, json=text)
        await self._effects.broadcast(conversation_id, item, exclude)

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

    def statistics(self) -> RelayStatistics:
        """Return counters and sizes that describe this relay now."""
        backplane = self._backplane.statistics()
        return RelayStatistics(
            node_id=self.node_id,
            connections=len(self._connections),
            rooms=self._hub.rooms.statistics().rooms,
            online_users=len(self.online_users()),
            nodes=len(self._hub.cluster.nodes()),
            slow_consumers=self._counters.slow_consumers,
            rate_limited=self._counters.rate_limited,
            failed_requests=self._counters.failed_requests,
            backplane_errors=self._counters.backplane_errors,
            healthy=backplane.healthy,
            resyncs=self._hub.resyncs,
            backplane=backplane,
        )

    # --- timers ----------------------------------------------------------------------

    def _wake(self) -> None:
        self._wakeup.set()

    async def _run_timers(self) -> None:
        while True:
            self._wakeup = anyio.Event()
            if not self._to_close:
                now = self._clock()
                deadline = self._hub.next_deadline()
                delay = (deadline if deadline is not None else now + 3600) - now
                with anyio.move_on_after(max(delay, 0)):
                    await self._wakeup.wait()
            while self._to_close:
                await self._forget(self._to_close.pop())
            await self._effects.carry_out(self._hub.expire(self._clock(), self._wall_clock()))

    def _clock(self) -> float:
        """The relay's clock for deadlines: the event loop's (seconds, monotonic)."""
        return anyio.current_time()

    def _wall_clock(self) -> datetime:
        """The wall clock, for the times the relay reports (``lastSeen``, ``updatedAt``)."""
        return datetime.now(UTC)


_STATUS_BY_TEXT: Final = {status.value: status for status in MessageStatus}


def _status(status: MessageStatus | str) -> MessageStatus:
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


class _Connected:
    """What `Relay.connect` returns: one object per connection, a small one."""

    __slots__ = ("_conn", "_identity", "_relay", "_transport")

    def __init__(self, relay: Relay, identity: Identity, transport: str) -> None:
        self._relay = relay
        self._identity = identity
        self._transport = transport
        self._conn: Connection | None = None

    async def __aenter__(self) -> Connection:
        self._conn = await self._relay._open(self._identity, self._transport)
        return self._conn

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._conn is not None
        await self._relay._release(self._conn)
