"""Prometheus metrics of a relay: ``instrument(relay)`` and an ASGI ``/metrics`` app.

Needs the ``prometheus`` extra (``pip install 'chatrelay[prometheus]'``)::

    from chatrelay.metrics import instrument, metrics_app

    instrument(relay)                        # on prometheus_client's default registry
    app.mount("/metrics", metrics_app())     # Starlette / FastAPI

Every value is read from `Relay.statistics` when Prometheus scrapes, so metrics
cost nothing per event. Names start with ``chatrelay_``; labels take values from
fixed sets only (a transport's name, a reason, an outcome), never a room, user or
connection id. One relay per process: with several worker processes, each serves
its own ``/metrics`` and Prometheus scrapes each (see "Operating chatrelay").
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

try:
    from prometheus_client import REGISTRY, CollectorRegistry, make_asgi_app
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
    from prometheus_client.registry import Collector
except ModuleNotFoundError as exc:  # pragma: no cover - exercised in a bare environment
    raise ModuleNotFoundError(
        f"chatrelay.metrics needs the prometheus extra: pip install 'chatrelay[prometheus]'"
        f" ({exc})",
        name=exc.name,
    ) from exc

from ._relay import Relay
from ._version import __version__

__all__ = ["RelayCollector", "instrument", "metrics_app"]


class RelayCollector(Collector):
    """Reports a relay's statistics to Prometheus at each scrape (see the module).

    Args:
        relay: The relay.
        backplane: What ``chatrelay_info`` says of the backplane (by default the
            name of its class, such as ``RedisBackplane``).
    """

    def __init__(self, relay: Relay, *, backplane: str | None = None) -> None:
        self.relay = relay
        self.backplane = backplane if backplane is not None else _kind(relay)

    def collect(self) -> Iterator[Any]:
        """The metric families, read from the relay now."""
        s = self.relay.statistics()
        b = s.backplane
        info = InfoMetricFamily("chatrelay", "The running chatrelay.")
        info.add_metric([], {"version": __version__, "backplane": self.backplane})
        yield info
        connections = GaugeMetricFamily(
            "chatrelay_connections", "Open connections on this server.", labels=["transport"]
        )
        for transport, count in sorted(s.transports.items()):
            connections.add_metric([transport], count)
        yield connections
        p = "chatrelay_backplane"
        gauges = (
            ("chatrelay_rooms", "Rooms with a connection on this server.", s.rooms),
            ("chatrelay_users_online", "Users online in the cluster.", s.online_users),
            ("chatrelay_nodes", "Other servers this one hears from.", s.nodes),
            ("chatrelay_draining", "1 while the server drains (Relay.drain).", int(s.draining)),
            (
                f"{p}_healthy",
                "1 while the backplane is connected and delivers (0 when deaf).",
                int(s.healthy),
            ),
            (f"{p}_buffered", "Entries waiting for the backplane.", b.buffered),
        )
        for name, documentation, value in gauges:
            yield GaugeMetricFamily(name, documentation, value=value)
        counters = (
            (
                "chatrelay_failed_requests",
                "Requests answered with an error event (rate limits included).",
                s.failed_requests,
            ),
            (
                "chatrelay_resyncs",
                "sync:required sent: room events from other servers were lost.",
                s.resyncs,
            ),
            (
                "chatrelay_unrecorded",
                "Room events sent without a position: the history could not record them.",
                s.unrecorded,
            ),
            (f"{p}_published", "Entries handed to the backplane.", b.published),
            (f"{p}_received", "Entries received from other servers.", b.delivered),
            (f"{p}_lost", "Entries of other servers known lost.", b.lost),
            (f"{p}_duplicates", "Entries received twice.", b.duplicates),
            (f"{p}_dropped", "Entries never sent: the buffer was full.", b.dropped),
            (f"{p}_reconnects", "Times the backplane reconnected.", b.reconnects),
            (f"{p}_errors", "Publishes to the backplane that failed.", s.backplane_errors),
        )
        for name, documentation, value in counters:
            yield CounterMetricFamily(name, documentation, value=value)
        yield _by(
            "chatrelay_connections_opened",
            "Connections opened on this server.",
            "transport",
            s.opened,
        )
        yield _by_two(
            "chatrelay_connections_closed",
            "Connections closed on this server, by who closed them and why.",
            ("transport", "reason"),
            s.closed,
        )
        yield _by(
            "chatrelay_auth_failures",
            "Connections the authenticator refused, by error code.",
            "reason",
            s.auth_failures,
        )
        yield _by_two(
            "chatrelay_requests",
            "Requests handled, by event and outcome (ok, or the error code).",
            ("event", "outcome"),
            s.requests,
        )
        yield _by(
            "chatrelay_dropped",
            "Connections closed, or requests refused, to protect the server.",
            "reason",
            {"slow_consumer": s.slow_consumers, "rate_limited": s.rate_limited},
        )
        yield _by(
            "chatrelay_recoveries",
            "Joins with a position, by outcome (recovered: every missed event handed).",
            "outcome",
            {"recovered": s.recoveries, "not_recovered": s.recoveries_failed},
        )


def _kind(relay: Relay) -> str:
    """What ``chatrelay_info`` says of the backplane: its class, such as ``RedisBackplane``."""
    return type(relay.backplane).__name__


def _by(
    name: str, documentation: str, label: str, values: Mapping[str, float]
) -> CounterMetricFamily:
    """A counter with one label, a value for each of its (fixed) values."""
    family = CounterMetricFamily(name, documentation, labels=[label])
    for value, count in sorted(values.items()):
        family.add_metric([value], count)
    return family


def _by_two(
    name: str, documentation: str, labels: tuple[str, str], values: Mapping[str, Mapping[str, int]]
) -> CounterMetricFamily:
    """A counter with two labels, from counts by the first, then by the second."""
    family = CounterMetricFamily(name, documentation, labels=list(labels))
    for first, counts in sorted(values.items()):
        for second, count in sorted(counts.items()):
            family.add_metric([first, second], count)
    return family


def instrument(relay: Relay, registry: CollectorRegistry | None = None) -> RelayCollector:
    """Report ``relay`` to Prometheus, on ``registry`` (prometheus_client's default).

    Returns:
        The collector, registered; ``registry.unregister(collector)`` removes it.
    """
    collector = RelayCollector(relay)
    (REGISTRY if registry is None else registry).register(collector)
    return collector


def metrics_app(registry: CollectorRegistry | None = None) -> Any:
    """An ASGI app that serves the registry in Prometheus's text format (``/metrics``)."""
    return make_asgi_app(REGISTRY if registry is None else registry)
