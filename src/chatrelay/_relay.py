"""The relay: the async hub between adapters, application code and the backplane."""

from __future__ import annotations

import itertools
import logging
import math
from collections import Counter
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from datetime import UTC, datetime
from typing import Any, Final

import anyio
from anyio.abc import TaskGroup

from ._auth import Authenticator, Credentials, DevelopmentAuthenticator, Identity
from ._backplane import Backplane
from ._config import RelayConfig
from ._connection import Connected, Connection
from ._drain import drain
from ._effects import EffectRunner
from ._emitting import EmitterAPI
from ._exceptions import (
    CloseReason,
    InternalError,
    ProtocolError,
    TooManyConnections,
    draining_refusal,
)
from ._hooks import AudienceHook, DeliveryHook, JoinAuthorizer, allow_all
from ._hub import Hub
from ._limits import TokenBucket, check_connection_cap
from ._nodes import CONTROL_TOPIC
from ._outbound import Outbound
from ._recovery import Recovery
from ._requests import Requests
from ._resource import AsyncResource
from ._statistics import Counters, RelayStatistics, nested, reason_label
from ._types import ConnectionId, NodeId
from .backplanes import LocalBackplane

__all__ = [
    "AudienceHook",
    "DeliveryHook",
    "JoinAuthorizer",
    "Relay",
    "RelayStatistics",
    "allow_all",
]

logger = logging.getLogger("chatrelay")

# Seconds a closing relay waits for the room events still being numbered.
_FLUSH_TIMEOUT: Final = 10.0


class Relay(EmitterAPI, AsyncResource):
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
            reorder_window=config.history.reorder_window,
            token_warning=config.token_warning,
            token_grace=config.token_grace,
        )
        history = self._backplane.history(config.history) if config.history.enabled else None
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
            history=history,
            wake=self._wake,
            clock=self._clock,
            wall_clock=self._wall_clock,
        )
        self._recovery = Recovery(
            hub=self._hub,
            history=history,
            limit=config.history.recovery_limit,
            carry_out=self._effects.carry_out,
            clock=self._clock,
            counters=self._counters,
        )
        self._effects.catching = self._recovery.catching
        self._requests = Requests(
            config=config,
            hub=self._hub,
            counters=self._counters,
            carry_out=self._effects.carry_out,
            authorize_join=self._authorize_join,
            on_delivered=self._on_delivered,
            recovery=self._recovery,
            authenticate=self.authenticate,
            clock=self._clock,
            wall_clock=self._wall_clock,
        )
        self._ids = itertools.count(1)
        self._to_close: list[Connection] = []
        self._wakeup = anyio.Event()
        self._stack: AsyncExitStack | None = None
        self._tg: TaskGroup | None = None
        self._running = False
        self._draining = False

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
            if self._effects.recorder is not None:
                self._tg.start_soon(self._effects.recorder.run)
            self._running = True
            self._stack = stack.pop_all()

    async def aclose(self) -> None:
        """Close every connection (reason ``"server_shutdown"``) and stop the relay."""
        if self._stack is None or not self._running:
            return
        self._running = False
        with anyio.CancelScope(shield=True):
            await self._flush_recorder()
            for conn in list(self._connections.values()):
                conn.close(CloseReason.SERVER_SHUTDOWN)
                await self._forget(conn)
            await self._effects.carry_out(self._hub.goodbye())
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
        # The task group was entered in start(): leave it outside any new scope.
        await self._stack.aclose()

    async def flush(self) -> None:
        """Return once every room event emitted so far has gone out from this node.

        With a history in another process (Redis), ``message_received`` and
        ``message_status`` return once the event is queued for its position; it goes
        out, to this node's clients and to the backplane, a round trip later, in the
        order emitted. Await this where something must come after the events emitted
        so far, for example before telling another process that may emit next in the
        same conversation. With the history off or in memory, it returns at once.
        """
        recorder = self._effects.recorder
        if recorder is not None:
            await recorder.flush()

    async def _flush_recorder(self) -> None:
        """Send the room events still waiting for their numbers (a bounded wait)."""
        recorder = self._effects.recorder
        if recorder is None or not len(recorder):
            return
        with anyio.move_on_after(_FLUSH_TIMEOUT):
            await recorder.flush()
        if len(recorder):
            logger.warning(
                "closing with %d room events not sent: the history did not answer", len(recorder)
            )

    @property
    def backplane(self) -> Backplane:
        """The backplane that connects this relay to the other servers."""
        return self._backplane

    @property
    def draining(self) -> bool:
        """Whether the relay is draining (`drain`): it refuses new connections."""
        return self._draining

    def ensure_accepting(self) -> None:
        """Refuse a new connection if the relay takes none now (it is draining).

        Adapters call it before the handshake's work, to answer with HTTP 503 or a
        connect error; `connect` checks it too.

        Raises:
            Unavailable: If the relay is draining.
        """
        if self._draining:
            raise draining_refusal()

    async def drain(
        self, window: float = 10.0, *, reason: CloseReason | str = CloseReason.SERVER_RESTART
    ) -> None:
        """Close every connection, spread over ``window`` seconds, before going away.

        From now on new connections are refused (``unavailable``, 503). Each connection
        gets ``server:draining {reconnectAfterMs}`` with a slot of its own in the
        window, and is closed at the end of that slot (WebSocket 1012; Socket.IO: its transport
        is closed, so the official client reconnects by itself). Users it closes are
        announced offline only after the window plus the presence grace, so those who
        reconnect elsewhere meanwhile never appear to leave. Leave the relay's block
        afterwards (``aclose``), which lets the backplane flush.

        Args:
            window: Seconds over which the connections are closed (0: all at once).
            reason: The close reason the clients are told.

        Raises:
            ValueError: If ``window`` is negative.
            RuntimeError: If the relay is not running, or already draining.
        """
        self._require_running()
        if window < 0:
            raise ValueError(f"window must be >= 0, got {window!r}")
        if self._draining:
            raise RuntimeError("the relay is draining already")
        self._draining = True
        connections = list(self._connections.values())
        logger.warning("draining %d connections over %g s", len(connections), window)
        self._hub.presence.grace = self.config.presence_grace + window
        await drain(connections, window=window, reason=reason, clock=self._clock)

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
            self._counters.auth_failures[exc.code] += 1
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
        return Connected(self, identity, transport)

    async def _open(self, identity: Identity, transport: str) -> Connection:
        self._require_running()
        self.ensure_accepting()
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
        self._counters.opened[transport] += 1
        expires = identity.expires_at
        expires_in = None if expires is None else (expires - self._wall_clock()).total_seconds()
        effects = self._hub.connect(conn.id, user, identity.name, now, expires_in=expires_in)
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
        self._counters.closed[conn.transport, reason_label(conn.close_reason)] += 1
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

    def statistics(self) -> RelayStatistics:
        """Return counters and sizes that describe this relay now."""
        backplane = self._backplane.statistics()
        probe = self._effects.probe
        deaf = self._running and probe is not None and probe.deaf(self._clock())
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
            healthy=backplane.healthy and not deaf,
            deaf=deaf,
            resyncs=self._hub.resyncs,
            draining=self._draining,
            recoveries=self._counters.recoveries,
            recoveries_failed=self._counters.recoveries_failed,
            unrecorded=self._counters.unrecorded,
            backplane=backplane,
            transports=dict(Counter(c.transport for c in self._connections.values())),
            opened=dict(self._counters.opened),
            closed=nested(self._counters.closed),
            auth_failures=dict(self._counters.auth_failures),
            requests=nested(self._counters.requests),
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
