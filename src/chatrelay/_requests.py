"""A relay's inbound requests: measured, rate-limited, decoded, answered.

`Requests` takes each request of a connection (``conversation:join``, ``leave``,
``typing:start`` / ``stop``) through the same steps on every transport: the size
limit, the rate limit, the codec, the application's ``authorize_join``, then the
hub's rules; a failure becomes one ``error`` event and a failed ack, in one place.
It also reports a client's ack of ``message:received`` to ``on_delivered``.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Final

import anyio

from . import codec
from ._auth import Credentials, Identity
from ._config import RelayConfig
from ._connection import Connection, Delivery, Outbound
from ._errors import check_payload_size, error_payload, failed_ack, payload_size
from ._exceptions import (
    ConnectionClosed,
    Forbidden,
    InternalError,
    NotInConversation,
    ProtocolError,
    RateLimited,
)
from ._hub import Effect, Hub
from ._recovery import Recovery
from ._statistics import Counters
from ._types import ConversationId, MessageId, UserId
from .events import (
    ClientRequest,
    JoinConversation,
    JoinReply,
    LeaveConversation,
    LeaveReply,
    OkReply,
    RefreshAuth,
    RefreshReply,
    Reply,
    TypingStart,
    TypingStop,
)

__all__ = ["Requests"]

logger = logging.getLogger("chatrelay")

# How many (message, user) deliveries are remembered, so that each is reported once:
# a window far longer than a message takes to reach every tab of its recipients.
_REPORTED: Final = 16_384


class Requests:
    """Handles the requests of a relay's connections (see the module's docstring).

    Args:
        config: The relay's settings (limits, hook timeout).
        hub: The relay's rules and state.
        counters: The relay's counters, which this updates.
        carry_out: Does what the hub asks (the relay's driver).
        authorize_join: The application's join hook.
        on_delivered: The application's delivery hook, if any.
        recovery: Joins with catch-up.
        authenticate: The relay's authentication (for ``auth:refresh``).
        clock: The relay's clock for deadlines.
        wall_clock: The relay's wall clock (credentials expire at a wall-clock time).
    """

    def __init__(
        self,
        *,
        config: RelayConfig,
        hub: Hub,
        counters: Counters,
        carry_out: Callable[[list[Effect]], Awaitable[None]],
        authorize_join: Callable[[Identity, ConversationId], Awaitable[bool]],
        on_delivered: Callable[[Delivery], Awaitable[None]] | None,
        recovery: Recovery,
        authenticate: Callable[[Credentials], Awaitable[Identity]],
        clock: Callable[[], float],
        wall_clock: Callable[[], datetime],
    ) -> None:
        self.config = config
        self._hub = hub
        self._counters = counters
        self._carry_out = carry_out
        self._authorize_join = authorize_join
        self._on_delivered = on_delivered
        self._recovery = recovery
        self._authenticate = authenticate
        self._clock = clock
        self._wall_clock = wall_clock
        # The deliveries reported lately, oldest first: (message, user).
        self._reported: OrderedDict[tuple[MessageId, UserId], None] = OrderedDict()

    async def handle(
        self, conn: Connection, event: object, data: object, size: int | None
    ) -> dict[str, Any]:
        """Handle one request; return its ack (a failure is answered with an ``error``)."""
        if conn.closed:
            raise ConnectionClosed(conn.close_reason or "closed")
        name = event if isinstance(event, str) else None
        now = self._clock()
        try:
            measured = payload_size(data) if size is None else size
            check_payload_size(measured, self.config.limits.max_payload_bytes)
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
        self._counters.requests[_event_label(name), "ok"] += 1
        return codec.encode(reply)

    def reject(self, conn: Connection, exc: ProtocolError) -> dict[str, Any]:
        """Answer a request the adapter could not decode, as `handle` would."""
        now = self._clock()
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
        self._counters.requests[_event_label(exc.event), exc.code] += 1
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
            conn._push(Outbound("error", error_payload(exc)))
        return failed_ack(exc)

    async def _dispatch(self, conn: Connection, request: ClientRequest, now: float) -> Reply:
        if isinstance(request, RefreshAuth):
            return await self._refresh(conn, request.token, now)
        conversation = request.conversation_id
        hub = self._hub
        if isinstance(request, JoinConversation):
            asked = request.position
            if hub.rooms.is_in(conn.id, conversation):
                joined = self._recovery.rejoin(conversation, asked)
            else:
                await self._authorize(conn, conversation)

                async def enter() -> None:
                    await self._carry_out(hub.join(conn.id, conn.user_id, conversation))

                joined = await self._recovery.join(conn, conversation, asked, enter)
            return JoinReply(
                conversation_id=conversation,
                members=sorted(hub.members(conversation)),
                typing=sorted(hub.typing_users(conversation)),
                position=joined.position,
                recovered=joined.recovered,
            )
        if not hub.rooms.is_in(conn.id, conversation):
            raise NotInConversation(f"join conversation {conversation!r} first")
        if isinstance(request, LeaveConversation):
            await self._carry_out(hub.leave(conn.id, conn.user_id, conversation))
            return LeaveReply(conversation_id=conversation)
        if request.user_id is not None and request.user_id != conn.user_id:
            raise Forbidden("userId does not match the authenticated user")
        if isinstance(request, TypingStart):
            effects = hub.typing_start(conn.id, conn.user_id, conversation, now)
        else:
            assert isinstance(request, TypingStop)
            effects = hub.typing_stop(conn.id, conn.user_id, conversation)
        await self._carry_out(effects)
        return OkReply()

    async def _refresh(self, conn: Connection, token: str, now: float) -> RefreshReply:
        """``auth:refresh``: the same user's new credentials; its expiry starts over.

        A token the authenticator refuses, or one for another user, changes nothing:
        the request fails (``unauthorized`` / ``forbidden``), the connection stays.
        """
        credentials = Credentials(token=token, query={}, headers={}, transport=conn.transport)
        identity = await self._authenticate(credentials)
        if identity.user_id != conn.user_id:
            raise Forbidden("the new credentials are for another user")
        conn.identity = identity
        expires_in = _expires_in(identity, self._wall_clock())
        await self._carry_out(self._hub.refresh(conn.id, expires_in, now))
        return RefreshReply(expires_in=None if expires_in is None else math.floor(expires_in))

    async def _authorize(self, conn: Connection, conversation: ConversationId) -> None:
        """Ask the application's ``authorize_join``; raise unless it allows the join."""
        try:
            with anyio.fail_after(self.config.hook_timeout):
                allowed = await self._authorize_join(conn.identity, conversation)
        except TimeoutError:
            logger.exception(
                "authorize_join did not answer within %gs: connection=%s user=%s conversation=%s",
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

    async def acknowledge(self, conn: Connection, item: Outbound) -> None:
        """A client acknowledged ``item``: report the delivery (once per user)."""
        ack = item._ack
        if ack is None or conn.user_id == ack.sender_id:
            return  # the sender's own tabs acknowledging is not a delivery
        if self._on_delivered is None:
            return
        # Once per user and message, whichever of its tabs acks first, live or
        # replayed (a replay is a copy of its own for each resuming connection).
        key = (ack.message_id, conn.user_id)
        reported = self._reported
        if key in reported:
            return
        reported[key] = None
        if len(reported) > _REPORTED:
            reported.popitem(last=False)
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


def _event_label(event: str | None) -> str:
    """A request's event as a metric label: a client event's name, else ``"other"``."""
    return event if event is not None and event in codec.CLIENT_EVENTS else "other"


def _expires_in(identity: Identity, now: datetime) -> float | None:
    """Seconds until the identity's credentials expire, if they do."""
    if identity.expires_at is None:
        return None
    return (identity.expires_at - now).total_seconds()
