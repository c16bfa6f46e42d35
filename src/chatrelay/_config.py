"""Settings of a relay, with their defaults in one place."""

from __future__ import annotations

from typing import Any

import attrs

__all__ = ["HistorySettings", "Limits", "RelayConfig"]


def _positive(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


def _positive_or_none(_: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None:
        _positive(_, attribute, value)


@attrs.frozen(kw_only=True)
class Limits:
    """Limits that protect the server and the other clients from one connection.

    Attributes:
        max_payload_bytes: Largest inbound request, as UTF-8 JSON (default 16 KiB).
            A larger one is answered with ``payload_too_large``; the connection stays.
        outgoing_bytes: How much may wait to be sent to one connection, in bytes of
            JSON (`Outbound.size`), before it counts as a slow consumer and is
            closed with the reason ``"slow_consumer"`` (default 4 MiB). Others are
            never delayed by it. The bound is on bytes, not events, so that a burst
            the server makes itself (a conversation of 400 messages marked read, the
            replay after a backplane outage of 10 s) never cuts a client that reads:
            only one that stops reading outgrows it. A broadcast is encoded once and
            shared by its recipients, so this bounds a connection's share, not a
            copy each.
        outgoing_queue: The most events that may wait for one connection, on top of
            `outgoing_bytes` (default ``None``: no bound by count).
        pending_acks: Events sent to one connection and awaiting its ack (each
            ``message:received``) that the adapters remember (default 1024); past it
            the oldest is forgotten, and its late ack is not reported as a delivery.
            Clients that never ack (older front ends) cost at most this much.
        rate: Inbound requests a connection may send per second, sustained
            (default 10).
        burst: Inbound requests a connection may send at once (default 20).
        rate_error_interval: Seconds between two ``rate_limited`` error events to one
            connection (default 1); requests refused in between still fail their ack.
        max_connections_per_user: Connections one user may hold at once on this
            relay (default 100; ``None`` for no limit). The limit is per server node,
            not across the cluster: with N nodes behind a load balancer, a user may
            hold up to N times as many. A connection past it is refused at admission
            with status 429, code ``too_many_connections`` (a Socket.IO connect
            error; on WebSocket an ``error`` frame, then close 1008); the user's other
            connections stay, and a place frees up as soon as one of them closes.
            Tabs, devices and reconnects each count, so keep it well above what one
            person opens.
        auth_timeout: Seconds a client has, once its transport is open, to
            authenticate (default 10): a WebSocket client to send its ``auth`` frame,
            a Socket.IO client to join a namespace. Past it the transport is closed.
            The adapters take it from here unless given their own.
    """

    max_payload_bytes: int = attrs.field(default=16 * 1024, validator=_positive)
    outgoing_bytes: int = attrs.field(default=4 * 1024 * 1024, validator=_positive)
    outgoing_queue: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(_positive)
    )
    pending_acks: int = attrs.field(default=1024, validator=_positive)
    rate: float = attrs.field(default=10.0, validator=_positive)
    burst: int = attrs.field(default=20, validator=_positive)
    rate_error_interval: float = attrs.field(default=1.0, validator=_positive)
    max_connections_per_user: int | None = attrs.field(default=100, validator=_positive_or_none)
    auth_timeout: float = attrs.field(default=10.0, validator=_positive)


@attrs.frozen(kw_only=True)
class HistorySettings:
    """How much of each conversation's history is kept, and how much is recovered.

    Attributes:
        size: Events kept per conversation (default 1,000); ``0`` turns positions
            and recovery off (events then carry no ``position``, as before).
        ttl: Seconds a conversation's history is kept after its last event (default
            300); after that, its epoch changes.
        max_bytes: Bytes of payload kept per conversation (default 1 MiB); the
            oldest events go first.
        recovery_limit: Events recovered in one join at most (default 300); a client
            that missed more gets ``recovered: false``.
        reorder_window: Seconds a node holds an event that arrived before an earlier
            one of its room (two servers emitting at once) before it counts the
            earlier one lost and tells the room ``sync:required`` (default 1).
    """

    size: int = attrs.field(default=1000, validator=attrs.validators.ge(0))
    ttl: float = attrs.field(default=300.0, validator=_positive)
    max_bytes: int = attrs.field(default=1 << 20, validator=_positive)
    recovery_limit: int = attrs.field(default=300, validator=attrs.validators.ge(0))
    reorder_window: float = attrs.field(default=1.0, validator=_positive)

    @property
    def enabled(self) -> bool:
        """Whether events are numbered and recorded."""
        return self.size > 0


@attrs.frozen(kw_only=True)
class RelayConfig:
    """How a relay behaves; every field has a default that suits development.

    Attributes:
        production: Production mode: the development authenticator is refused and
            ``authorize_join`` must be given explicitly (default ``False``).
        typing_timeout: Seconds a typing episode lasts without a refresh (default 5).
        presence_grace: Seconds a user stays online after its last connection closed,
            so a page reload does not flap (default 3).
        heartbeat_interval: Seconds between two heartbeats of this node on a shared
            backplane (default 2).
        node_timeout: Seconds without a heartbeat after which another node counts as
            dead and its users go offline here (default 6).
        hook_timeout: Seconds the application's hooks (``authorize_join``,
            ``presence_audience``, ``on_delivered``) may take per call (default 5).
            A call that takes longer is cancelled, logged, and counts as failed: the
            join is refused with ``internal_error``, nobody is told of that presence
            change, the delivery is not reported. So a hook stuck on a database never
            stalls the relay's timers, its backplane or a client's connection.
        token_warning: Seconds before its credentials expire
            (`chatrelay.Identity.expires_at`) that a connection is told
            ``auth:expiring`` (default 60).
        token_grace: Seconds after they expired that a connection which did not
            refresh them (``auth:refresh``) is closed with ``token_expired``
            (default 25).
        limits: Per-connection limits.
        history: How much of each conversation's room events is kept and recovered
            (positions and recovery; see "Missed events" in the docs).
    """

    production: bool = False
    typing_timeout: float = attrs.field(default=5.0, validator=_positive)
    presence_grace: float = attrs.field(default=3.0, validator=attrs.validators.ge(0))
    heartbeat_interval: float = attrs.field(default=2.0, validator=_positive)
    node_timeout: float = attrs.field(default=6.0, validator=_positive)
    hook_timeout: float = attrs.field(default=5.0, validator=_positive)
    token_warning: float = attrs.field(default=60.0, validator=attrs.validators.ge(0))
    token_grace: float = attrs.field(default=25.0, validator=attrs.validators.ge(0))
    limits: Limits = attrs.field(factory=Limits)
    history: HistorySettings = attrs.field(factory=HistorySettings)

    def __attrs_post_init__(self) -> None:
        if self.node_timeout <= self.heartbeat_interval:
            raise ValueError("node_timeout must be longer than heartbeat_interval")
