"""The relay: the async hub between adapters, application code and the backplane."""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Awaitable, Callable, Collection, Iterable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Final

import anyio
import attrs
from anyio.abc import TaskGroup

from . import codec
from ._auth import Authenticator, Credentials, DevelopmentAuthenticator, Identity
from ._backplane import (
    Backplane,
    BackplaneGap,
    BackplaneHealth,
    BackplaneMessage,
    BackplaneStatistics,
    decode_envelope,
    encode_envelope,
)
from ._cluster import ClusterView, NodeState
from ._config import RelayConfig
from ._connection import Connection, Delivery, Outbound, _AckContext
from ._debounce import TypingChanged, TypingDebouncer
from ._exceptions import (
    BackplaneError,
    ConnectionClosed,
    Forbidden,
    InternalError,
    InvalidPayload,
    NotInConversation,
    PayloadTooLarge,
    ProtocolError,
    RateLimited,
    TooManyConnections,
)
from ._limits import TokenBucket, check_connection_cap
from ._presence import PresenceTracker
from ._resource import AsyncResource
from ._rooms import RoomRegistry
from ._types import ConnectionId, ConversationId, MessageId, NodeId, UserId
from .backplanes import LocalBackplane
from .events import (
    ClientRequest,
    ErrorEvent,
    ErrorReply,
    JoinConversation,
    JoinReply,
    LeaveConversation,
    LeaveReply,
    Message,
    MessageStatus,
    OkReply,
    Reply,
    Sender,
    SyncRequired,
    TypingIndicator,
    TypingStart,
    TypingStop,
    TypingUser,
    UserOffline,
    UserOnline,
)

__all__ = [
    "AudienceHook",
    "DeliveryHook",
    "JoinAuthorizer",
    "Relay",
    "RelayStatistics",
    "allow_all",
]

logger = logging.getLogger("chatrelay")

JoinAuthorizer = Callable[[Identity, ConversationId], Awaitable[bool]]
"""``async (identity, conversation_id) -> bool``: may this user join that room?"""

DeliveryHook = Callable[[Delivery], Awaitable[None]]
"""``async (delivery) -> None``: a recipient's client acknowledged a message."""

AudienceHook = Callable[[UserId], Awaitable[Collection[UserId]]]
"""``async (user_id) -> user ids``: who is told that this user came online or went offline."""

CONTROL_TOPIC: Final = "chatrelay:control"
ROOM_TOPIC_PREFIX: Final = "chatrelay:room:"


def _room_topic(conversation: ConversationId) -> str:
    return f"{ROOM_TOPIC_PREFIX}{conversation}"


async def allow_all(identity: Identity, conversation_id: ConversationId) -> bool:
    """A join authorizer that lets every authenticated user join every conversation.

    Pass it explicitly (``authorize_join=allow_all``) to use it in production mode.
    """
    return True


@attrs.frozen(kw_only=True)
class RelayStatistics:
    """A snapshot of what a relay is doing.

    Attributes:
        node_id: This relay's node id.
        connections: Open connections on this node.
        rooms: Rooms with a connection on this node.
        online_users: Users online in the whole cluster.
        nodes: Other nodes this node hears from.
        slow_consumers: Connections closed because they did not keep up.
        rate_limited: Requests refused by rate limits.
        failed_requests: Requests answered with an ``error``, rate limits included.
        backplane_errors: Publishes to the backplane that failed.
        healthy: Whether the backplane is connected (a health check can report
            "degraded" while it is not).
        resyncs: ``sync:required`` events sent, because room events from other
            nodes were lost.
        backplane: The backplane's own counters.
    """

    node_id: NodeId
    connections: int
    rooms: int
    online_users: int
    nodes: int
    slow_consumers: int
    rate_limited: int
    failed_requests: int
    backplane_errors: int
    healthy: bool = True
    resyncs: int = 0
    backplane: BackplaneStatistics = attrs.field(factory=BackplaneStatistics)


@attrs.define
class _Counters:
    slow_consumers: int = 0
    rate_limited: int = 0
    failed_requests: int = 0
    backplane_errors: int = 0
    resyncs: int = 0


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
        self._rooms = RoomRegistry()
        self._presence = PresenceTracker(grace=config.presence_grace)
        self._typing = TypingDebouncer(timeout=config.typing_timeout)
        self._cluster = ClusterView(node_timeout=config.node_timeout, grace=config.presence_grace)
        self._connections: dict[ConnectionId, Connection] = {}
        self._ids = itertools.count(1)
        self._counters = _Counters()
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
                self._tg.start_soon(self._listen)
                self._tg.start_soon(self._heartbeat)
                await self._publish_control("sync", {"target": None})
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
                conn.close("server_shutdown")
                await self._forget(conn)
            if self._shared:
                await self._publish_control("bye", {})
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
        now = anyio.current_time()
        limits = self.config.limits
        user = identity.user_id
        try:
            # Checked and counted with no await in between: no two can slip in together.
            count = self._presence.connection_count(user)
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
        change = self._presence.connect(conn.user_id, conn.id, now)
        # From here on the connection is known: forget it however this ends, even if
        # cancelled while announcing it (the audience hook may be slow).
        try:
            if change is not None:
                online_elsewhere = self._cluster.is_online(conn.user_id)
                await self._publish_control("presence", {"userId": conn.user_id, "online": True})
                if not online_elsewhere:
                    await self._announce(UserOnline(user_id=conn.user_id), exclude=conn.id)
        except BaseException:
            await self._release(conn)
            raise
        return conn

    async def _release(self, conn: Connection) -> None:
        with anyio.CancelScope(shield=True):
            if conn.close_reason is None:
                conn.close("client_disconnected")
            await self._forget(conn)
        # Adapters read `outgoing` inside the block; if the block never ran (cancelled
        # while announcing), nobody else would close it.
        conn._close_queue()

    async def _forget(self, conn: Connection) -> None:
        """Remove a closed connection from rooms, typing and presence (idempotent)."""
        if self._connections.pop(conn.id, None) is None:
            return
        for change in self._typing.disconnect(conn.id):
            await self._typing_changed(change, exclude=conn.id)
        for conversation in self._rooms.rooms_of(conn.id):
            await self._leave_room(conn, conversation)
        self._presence.disconnect(conn.user_id, conn.id, anyio.current_time())
        self._wake()

    def _schedule_close(self, conn: Connection) -> None:
        # Connection.close calls this once, before the connection can be forgotten
        # (_forget only ever runs on closed connections); _forget is idempotent anyway.
        self._to_close.append(conn)
        self._wake()

    def _slow_consumer(self, conn: Connection) -> None:
        self._counters.slow_consumers += 1
        logger.warning(
            "closing slow consumer: connection=%s user=%s queued=%d events, %d bytes",
            conn.id,
            conn.user_id,
            conn.queued,
            conn.outgoing.queued_bytes,
        )
        conn.close("slow_consumer")

    # --- inbound requests ------------------------------------------------------------

    async def _handle(
        self, conn: Connection, event: object, data: object, size: int | None
    ) -> dict[str, Any]:
        if conn.closed:
            raise ConnectionClosed(conn.close_reason or "closed")
        name = event if isinstance(event, str) else None
        now = anyio.current_time()
        try:
            self._check_size(data, size)
            self._take_token(conn, now)
            request = codec.decode_request(event, data)
            reply = await self._dispatch(conn, request, now)
        except ProtocolError as exc:
            return self._fail(conn, exc.for_event(name), now)
        except ConnectionClosed:
            raise  # closed while handling (say, during authorize_join): nobody to answer
        except Exception:
            logger.exception(
                "request failed: event=%s connection=%s user=%s", name, conn.id, conn.user_id
            )
            return self._fail(conn, InternalError("the server failed", event=name), now)
        return codec.encode(reply)

    def _check_size(self, data: object, size: int | None) -> None:
        if size is None:
            try:
                size = len(codec.dumps(data).encode())
            except (TypeError, ValueError):
                raise InvalidPayload("payload is not JSON-compatible") from None
        limit = self.config.limits.max_payload_bytes
        if size > limit:
            raise PayloadTooLarge(f"payload of {size} bytes exceeds the limit of {limit}")

    def _reject(self, conn: Connection, exc: ProtocolError) -> dict[str, Any]:
        now = anyio.current_time()
        try:
            self._take_token(conn, now)
        except RateLimited as limited:
            exc = limited.for_event(exc.event)
        return self._fail(conn, exc, now)

    def _take_token(self, conn: Connection, now: float) -> None:
        if not conn._bucket.take(now):
            self._counters.rate_limited += 1
            raise RateLimited("too many requests; slow down")

    def _fail(self, conn: Connection, exc: ProtocolError, now: float) -> dict[str, Any]:
        self._counters.failed_requests += 1
        error = ErrorEvent(status=exc.status, code=exc.code, message=exc.message, event=exc.event)
        quiet = False
        if isinstance(exc, RateLimited):
            # One rate_limited error a second at most, so a flood is not answered by one.
            quiet = now - conn._last_rate_error < self.config.limits.rate_error_interval
            if not quiet:
                conn._last_rate_error = now
        if not quiet:
            logger.info(
                "request failed: event=%s status=%d code=%s connection=%s user=%s message=%s",
                exc.event,
                exc.status,
                exc.code,
                conn.id,
                conn.user_id,
                exc.message,
            )
            conn._push(Outbound("error", codec.encode(error)))
        return codec.encode(ErrorReply(error=error))

    async def _dispatch(self, conn: Connection, request: ClientRequest, now: float) -> Reply:
        conversation = request.conversation_id
        if isinstance(request, JoinConversation):
            if not self._rooms.is_in(conn.id, conversation):
                try:
                    with anyio.fail_after(self.config.hook_timeout):
                        allowed = await self._authorize_join(conn.identity, conversation)
                except TimeoutError:
                    logger.exception(
                        "authorize_join did not answer within %gs: connection=%s user=%s"
                        " conversation=%s",
                        self.config.hook_timeout,
                        conn.id,
                        conn.user_id,
                        conversation,
                    )
                    raise InternalError(
                        "the server could not check your access in time; try again"
                    ) from None
                if conn.closed:
                    raise ConnectionClosed(conn.close_reason or "closed")
                if allowed is not True:
                    raise Forbidden(f"you may not join conversation {conversation!r}")
                await self._join_room(conn, conversation)
            return JoinReply(
                conversation_id=conversation,
                members=sorted(self.members(conversation)),
                typing=sorted(self.typing_users(conversation)),
            )
        if not self._rooms.is_in(conn.id, conversation):
            raise NotInConversation(f"join conversation {conversation!r} first")
        if isinstance(request, LeaveConversation):
            change = self._typing.leave(conn.id, conversation)
            if change is not None:
                await self._typing_changed(change, exclude=conn.id)
            await self._leave_room(conn, conversation)
            return LeaveReply(conversation_id=conversation)
        if request.user_id is not None and request.user_id != conn.user_id:
            raise Forbidden("userId does not match the authenticated user")
        if isinstance(request, TypingStart):
            change = self._typing.start(conversation, conn.user_id, conn.id, now)
            self._wake()
        else:
            assert isinstance(request, TypingStop)
            change = self._typing.stop(conversation, conn.user_id, conn.id)
        if change is not None:
            await self._typing_changed(change, exclude=conn.id)
        return OkReply()

    async def _join_room(self, conn: Connection, conversation: ConversationId) -> None:
        first_here = not self._rooms.connections(conversation)
        new_member = not self._rooms.is_member(conn.user_id, conversation)
        self._rooms.join(conn.id, conn.user_id, conversation)
        if first_here and self._shared:
            await self._backplane.subscribe(_room_topic(conversation))
        if new_member:
            await self._publish_control(
                "member", {"conversationId": conversation, "userId": conn.user_id, "joined": True}
            )

    async def _leave_room(self, conn: Connection, conversation: ConversationId) -> None:
        self._rooms.leave(conn.id, conversation)
        if not self._rooms.is_member(conn.user_id, conversation):
            await self._publish_control(
                "member", {"conversationId": conversation, "userId": conn.user_id, "joined": False}
            )
        if not self._rooms.connections(conversation) and self._shared:
            await self._backplane.unsubscribe(_room_topic(conversation))

    async def _acknowledge(self, conn: Connection, item: Outbound) -> None:
        ack = item._ack
        if ack is None or conn.user_id == ack.sender_id:
            return  # the sender's own tabs acknowledging is not a delivery
        if item._acked is None:
            item._acked = set()
        if conn.user_id in item._acked:
            return
        item._acked.add(conn.user_id)
        if self._on_delivered is None:
            return
        delivery = Delivery(
            user_id=conn.user_id,
            conversation_id=ack.conversation_id,
            message_id=ack.message_id,
            connection_id=conn.id,
        )
        try:
            with anyio.fail_after(self.config.hook_timeout):
                await self._on_delivered(delivery)
        except TimeoutError:
            logger.exception(
                "on_delivered did not return within %gs for %r", self.config.hook_timeout, delivery
            )
        except Exception:
            logger.exception("on_delivered hook failed for %r", delivery)

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
        await self._broadcast(conversation, item, exclude)
        await self._message_sent(conversation, message.sender_id, exclude)

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
            updated_at if updated_at is not None else datetime.now(UTC),
        )
        item = Outbound("message:status", data, json=text)
        await self._broadcast(conversation_id, item, exclude)

    def is_online(self, user_id: UserId) -> bool:
        """Tell whether a user is online anywhere in the cluster."""
        return self._presence.is_online(user_id) or self._cluster.is_online(user_id)

    def online_users(self) -> frozenset[UserId]:
        """The users online anywhere in the cluster."""
        return self._presence.online_users().union(self._cluster.online_users())

    def members(self, conversation_id: ConversationId) -> frozenset[UserId]:
        """The users with a connection in a conversation's room, anywhere in the cluster."""
        return self._rooms.members(conversation_id).union(self._cluster.members(conversation_id))

    def typing_users(self, conversation_id: ConversationId) -> frozenset[UserId]:
        """The users typing in a conversation now, anywhere in the cluster."""
        local = self._typing.typing(conversation_id)
        return frozenset(local).union(self._cluster.typing(conversation_id))

    def statistics(self) -> RelayStatistics:
        """Return counters and sizes that describe this relay now."""
        backplane = self._backplane.statistics()
        return RelayStatistics(
            node_id=self.node_id,
            connections=len(self._connections),
            rooms=self._rooms.statistics().rooms,
            online_users=len(self.online_users()),
            nodes=len(self._cluster.nodes()),
            slow_consumers=self._counters.slow_consumers,
            rate_limited=self._counters.rate_limited,
            failed_requests=self._counters.failed_requests,
            backplane_errors=self._counters.backplane_errors,
            healthy=backplane.healthy,
            resyncs=self._counters.resyncs,
            backplane=backplane,
        )

    # --- fan-out ---------------------------------------------------------------------

    async def _broadcast(
        self, conversation: ConversationId, item: Outbound, exclude: ConnectionId | None
    ) -> None:
        if codec.has_lone_surrogate(conversation):
            # No client can be in such a room (requests refuse it), nor can a backplane
            # name its topic: refused before anything is sent.
            raise ValueError(f"conversation id {conversation!r} holds an unpaired surrogate")
        payload = None
        if self._shared:
            body = (
                f'{{"conversationId":{codec.dumps(conversation)},"event":{codec.dumps(item.event)},'
                f'"exclude":{codec.dumps(exclude)},"ack":{codec.dumps(_ack_body(item))},'
                f'"data":{item.json}}}'
            )
            payload = encode_envelope(self.node_id, "room", body)
            if len(payload) > self._backplane.max_payload_bytes:
                raise BackplaneError(
                    f"{item.event} of {len(payload)} bytes exceeds the backplane limit of"
                    f" {self._backplane.max_payload_bytes}"
                )
        self._fanout(conversation, item, exclude)
        if payload is not None:
            await self._publish(_room_topic(conversation), payload)

    def _fanout(
        self, conversation: ConversationId, item: Outbound, exclude: ConnectionId | None
    ) -> None:
        # A connection being forgotten is out of _connections before it is out of its
        # rooms, and forgetting it awaits backplane publishes: skip it meanwhile. The
        # recipients are looked up before the first push (a push never changes either).
        get = self._connections.get
        room = self._rooms.connections(conversation)
        if exclude is None:
            for conn in list(map(get, room)):
                if conn is not None:
                    conn._push(item)
            return
        for connection_id in list(room):
            if connection_id != exclude and (conn := get(connection_id)) is not None:
                conn._push(item)

    def _typing_item(self, change: TypingChanged) -> Outbound:
        conn = self._connections.get(change.connection_id) if change.connection_id else None
        name = conn.identity.name if conn is not None else None
        event = TypingIndicator(
            conversation_id=change.conversation_id,
            user_id=change.user_id,
            is_typing=change.is_typing,
            user=TypingUser(id=change.user_id, name=name),
        )
        return Outbound(codec.event_name(event), codec.encode(event))

    async def _typing_changed(self, change: TypingChanged, *, exclude: ConnectionId | None) -> None:
        item = self._typing_item(change)
        self._fanout(change.conversation_id, item, exclude)
        if self._shared:
            body = (
                f'{{"conversationId":{codec.dumps(change.conversation_id)},'
                f'"userId":{codec.dumps(change.user_id)},"isTyping":{codec.dumps(change.is_typing)},'
                f'"exclude":{codec.dumps(exclude)},"data":{item.json}}}'
            )
            await self._publish(CONTROL_TOPIC, encode_envelope(self.node_id, "typing", body))

    async def _message_sent(
        self, conversation: ConversationId, sender: UserId, exclude: ConnectionId | None
    ) -> None:
        change = self._typing.message_sent(conversation, sender)
        if change is not None:
            # The connection that sent the message caused the stop too: not echoed to it.
            await self._typing_changed(change, exclude=exclude)

    async def _announce(
        self, event: UserOnline | UserOffline, *, exclude: ConnectionId | None
    ) -> None:
        item = Outbound(codec.event_name(event), codec.encode(event))
        targets: Iterable[Connection] = self._connections.values()
        if self._presence_audience is not None:
            try:
                with anyio.fail_after(self.config.hook_timeout):
                    audience = set(await self._presence_audience(event.user_id))
            except TimeoutError:
                logger.exception(
                    "presence_audience did not answer within %gs for %r; nobody is told",
                    self.config.hook_timeout,
                    event.user_id,
                )
                return
            except Exception:
                logger.exception("presence_audience hook failed for %r", event.user_id)
                return
            targets = [
                self._connections[cid]
                for user in audience
                for cid in self._presence.connections(user)
                if cid in self._connections
            ]
        for conn in list(targets):
            if conn.id != exclude:
                conn._push(item)

    # --- timers ----------------------------------------------------------------------

    def _wake(self) -> None:
        self._wakeup.set()

    async def _run_timers(self) -> None:
        while True:
            self._wakeup = anyio.Event()
            deadlines = [
                d
                for d in (
                    self._typing.next_deadline(),
                    self._presence.next_deadline(),
                    self._cluster.next_deadline(),
                )
                if d is not None
            ]
            if not self._to_close:
                delay = min(deadlines, default=anyio.current_time() + 3600) - anyio.current_time()
                with anyio.move_on_after(max(delay, 0)):
                    await self._wakeup.wait()
            await self._expire(anyio.current_time())

    async def _expire(self, now: float) -> None:
        while self._to_close:
            await self._forget(self._to_close.pop())
        for change in self._typing.expire(now):
            await self._typing_changed(change, exclude=None)
        for presence in self._presence.expire(now):
            user = presence.user_id
            last_seen = self._wall(presence.at, now)
            await self._publish_control(
                "presence",
                {"userId": user, "online": False, "lastSeen": codec.format_timestamp(last_seen)},
            )
            if not self.is_online(user):
                await self._announce(UserOffline(user_id=user, last_seen=last_seen), exclude=None)
        dead, ended = self._cluster.expire(now)
        for node, state in dead:
            logger.warning(
                "node %s stopped sending heartbeats; %d users offline", node, len(state.online)
            )
            self._typing_vanished(state)
            await self._went_offline(state.online, self._wall(now - self.config.node_timeout, now))
        # Their grace period started when their node said goodbye: they were last seen then.
        await self._went_offline(ended, self._wall(now - self.config.presence_grace, now))

    def _typing_vanished(self, state: NodeState) -> None:
        """End the typing episodes of a dead node for this node's clients; it cannot."""
        for conversation, users in state.typing.items():
            for user in users - self.typing_users(conversation):
                change = TypingChanged(
                    conversation_id=conversation, user_id=user, is_typing=False, connection_id=None
                )
                # Every node finds the dead node out by itself: nothing to publish.
                self._fanout(conversation, self._typing_item(change), None)

    async def _went_offline(self, users: Iterable[UserId], last_seen: datetime) -> None:
        for user in users:
            if not self.is_online(user):
                await self._announce(UserOffline(user_id=user, last_seen=last_seen), exclude=None)

    @staticmethod
    def _wall(at: float, now: float) -> datetime:
        """Turn a time on the event loop's clock into wall-clock UTC."""
        return datetime.now(UTC) - timedelta(seconds=max(0.0, now - at))

    # --- the backplane ---------------------------------------------------------------

    async def _publish(self, topic: str, payload: bytes) -> None:
        try:
            await self._backplane.publish(topic, payload)
        except BackplaneError:
            self._counters.backplane_errors += 1
            logger.exception("backplane publish failed on %s", topic)

    async def _publish_control(self, kind: str, body: dict[str, Any]) -> None:
        if self._shared:
            payload = encode_envelope(self.node_id, kind, codec.dumps(body))
            await self._publish(CONTROL_TOPIC, payload)

    async def _heartbeat(self) -> None:
        while True:
            await anyio.sleep(self.config.heartbeat_interval)
            await self._publish_control("heartbeat", {})

    async def _listen(self) -> None:
        async for message in self._backplane.messages():
            if not isinstance(message, BackplaneMessage):
                await self._backplane_event(message)
                continue
            try:
                envelope = decode_envelope(message.payload)
            except ValueError:
                logger.warning("ignoring a malformed backplane message on %s", message.topic)
                continue
            if envelope.node == self.node_id:
                continue
            try:
                await self._apply(envelope.node, envelope.kind, envelope.body)
            except Exception:
                # A bad or unexpected envelope from one node must not stop this one.
                logger.exception("ignoring a bad %r envelope from %s", envelope.kind, envelope.node)

    async def _backplane_event(self, event: object) -> None:
        if isinstance(event, BackplaneHealth):
            if event.healthy:
                logger.warning("backplane connected again; resuming node liveness checks")
                self._cluster.resume(anyio.current_time())
            else:
                # Silence from the other nodes now says nothing about them.
                logger.warning("backplane down; other nodes are not judged by silence")
                self._cluster.suspend()
            self._wake()
        elif isinstance(event, BackplaneGap):
            if event.topic == CONTROL_TOPIC:
                # Presence, membership or typing changes were lost: ask every node for
                # its state again; the differences are announced as they arrive.
                logger.warning("lost %d control messages; resynchronizing", event.lost)
                await self._publish_control("sync", {"target": None})
            elif event.topic.startswith(ROOM_TOPIC_PREFIX):
                self._resync_room(ConversationId(event.topic[len(ROOM_TOPIC_PREFIX) :]))
        # Other events come from newer backplanes: nothing to do.

    def _resync_room(self, conversation: ConversationId) -> None:
        """Tell this node's clients in a room that they missed events of it."""
        connections = list(self._rooms.connections(conversation))
        logger.warning(
            "room events of %r were lost; telling %d connections to resync",
            conversation,
            len(connections),
        )
        event = SyncRequired(conversation_id=conversation)
        item = Outbound(codec.event_name(event), codec.encode(event))
        self._counters.resyncs += len(connections)
        self._fanout(conversation, item, None)

    async def _apply(self, node: NodeId, kind: str, body: Any) -> None:
        now = anyio.current_time()
        if kind == "room":
            conversation = body["conversationId"]
            ack = body["ack"]
            item = Outbound(
                body["event"],
                body["data"],
                ack=_AckContext(**ack) if ack is not None else None,
            )
            self._fanout(conversation, item, body["exclude"])
            if item._ack is not None:
                await self._message_sent(conversation, item._ack.sender_id, body["exclude"])
            if self._cluster.heard(node, now):
                self._wake()  # its liveness deadline may come before the timers' next one
            return
        if self._cluster.heard(node, now):
            # A node not known yet: its liveness deadline may come before the timers'
            # next one, and this node needs its state.
            self._wake()
            if kind not in ("state", "bye"):
                await self._publish_control("sync", {"target": node})
        if kind == "typing":
            self._cluster.set_typing(
                node, body["conversationId"], body["userId"], body["isTyping"], now
            )
            item = Outbound("typing:start" if body["isTyping"] else "typing:stop", body["data"])
            self._fanout(body["conversationId"], item, body["exclude"])
        elif kind == "member":
            self._cluster.set_member(
                node, body["conversationId"], body["userId"], body["joined"], now
            )
        elif kind == "presence":
            user = body["userId"]
            before = self.is_online(user)
            self._cluster.set_online(node, user, body["online"], now)
            await self._presence_moved(user, before, body.get("lastSeen"))
        elif kind == "sync":
            if body["target"] in (None, self.node_id):
                await self._publish_control("state", self._snapshot())
        elif kind == "state":
            state = NodeState(
                online=set(body["online"]),
                members={k: set(v) for k, v in body["members"].items()},
                typing={k: set(v) for k, v in body["typing"].items()},
            )
            affected = state.online | self._cluster_online_of(node)
            was_online = {user: self.is_online(user) for user in affected}
            self._cluster.replace(node, state, now)
            for user in affected:
                await self._presence_moved(user, was_online[user], None)
        elif kind == "bye":
            # Users of a node that said goodbye stay online for the grace period, if any.
            users = self._cluster.remove(node, now, graceful=True)
            await self._went_offline(users, datetime.now(UTC))
            self._wake()
        # "heartbeat" needs nothing beyond heard(); unknown kinds come from newer nodes.

    def _cluster_online_of(self, node: NodeId) -> set[UserId]:
        state = self._cluster._nodes.get(node)
        return set(state.online) if state is not None else set()

    async def _presence_moved(self, user: UserId, before: bool, last_seen: str | None) -> None:
        after = self.is_online(user)
        if after and not before:
            await self._announce(UserOnline(user_id=user), exclude=None)
        elif before and not after:
            seen = codec.parse_timestamp(last_seen) if last_seen else datetime.now(UTC)
            await self._announce(UserOffline(user_id=user, last_seen=seen), exclude=None)

    def _snapshot(self) -> dict[str, Any]:
        rooms = self._rooms.rooms()
        return {
            "online": sorted(self._presence.online_users()),
            "members": {room: sorted(self._rooms.members(room)) for room in rooms},
            "typing": {room: users for room in rooms if (users := self._typing.typing(room))},
        }


_STATUS_BY_TEXT: Final[dict[str, MessageStatus]] = {
    status.value: status for status in MessageStatus
}


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


def _ack_body(item: Outbound) -> dict[str, str] | None:
    ack = item._ack
    if ack is None:
        return None
    return {
        "conversation_id": ack.conversation_id,
        "message_id": ack.message_id,
        "sender_id": ack.sender_id,
    }


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
