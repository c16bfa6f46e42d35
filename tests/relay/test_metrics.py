"""Prometheus metrics (`chatrelay.metrics`): values that move with real traffic.

Each test scrapes a registry of its own and parses the text with prometheus-client's
own parser, as Prometheus would read it.
"""

from __future__ import annotations

from typing import Final

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from chatrelay import Authenticator, Credentials, Identity, Limits, Relay, RelayConfig
from chatrelay.exceptions import Forbidden, ProtocolError, Unauthorized
from chatrelay.metrics import instrument
from chatrelay.testing import MemoryTransport
from recovery_scenarios import emit, received_five, resume
from relay_helpers import WAIT, join
from waiting import eventually

pytestmark = pytest.mark.anyio

# Labels come from fixed sets only: never a room, user or connection id.
LABELS: Final = {"transport", "reason", "outcome", "event", "version", "backplane"}

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(registry: CollectorRegistry) -> Samples:
    text = generate_latest(registry).decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            assert set(sample.labels) <= LABELS, sample
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


async def test_the_metrics_follow_connections_rooms_drops_and_recoveries() -> None:
    registry = CollectorRegistry()
    config = RelayConfig(presence_grace=0.05, limits=Limits(outgoing_queue=4))
    async with Relay(config=config) as relay:
        instrument(relay, registry)
        before = scrape(registry)
        assert before["chatrelay_rooms", ()] == 0
        assert ("chatrelay_connections", (("transport", "memory"),)) not in before
        transport = MemoryTransport(relay)
        last = await received_five(relay)
        await emit(relay, 6, 8)
        async with transport.connect("bob") as bob:
            assert (await resume(bob, last))["recovered"] is True
        async with transport.connect("bob") as bob:
            assert (await resume(bob, {"offset": 1, "epoch": "x"}))["recovered"] is False
        recovered = scrape(registry)
        assert recovered["chatrelay_recoveries_total", (("outcome", "recovered"),)] == 1
        assert recovered["chatrelay_recoveries_total", (("outcome", "not_recovered"),)] == 1
        await eventually(lambda: relay.online_users() == frozenset())  # past the grace
        async with transport.connect("slow") as slow, transport.connect("fast") as fast:
            await join(slow)
            await join(fast)
            during = scrape(registry)
            assert during["chatrelay_connections", (("transport", "memory"),)] == 2
            assert during["chatrelay_rooms", ()] == 1
            assert during["chatrelay_users_online", ()] == 2
            slow.pause()
            for i in range(20):
                await relay.message_status("c1", f"m{i}", "read", user_id="fast")
                await fast.receive(timeout=WAIT)
            await eventually(lambda: relay.members("c1") == {"fast"})
            after = scrape(registry)
            assert after["chatrelay_dropped_total", (("reason", "slow_consumer"),)] == 1
            assert after["chatrelay_connections", (("transport", "memory"),)] == 1
            await fast.request("typing:start", {"conversationId": "c1"})
            await fast.request("typing:start", {"conversationId": "elsewhere"})
            await fast.request("no:such:event", {})
        closed = scrape(registry)
        memory = ("transport", "memory")
        assert closed["chatrelay_connections_opened_total", (memory,)] == 5
        by_reason = {
            dict(labels)["reason"]: value
            for (name, labels), value in closed.items()
            if name == "chatrelay_connections_closed_total"
        }
        assert by_reason == {"client_disconnected": 4, "slow_consumer": 1}
        requests = {
            (dict(labels)["event"], dict(labels)["outcome"]): value
            for (name, labels), value in closed.items()
            if name == "chatrelay_requests_total"
        }
        assert requests[("typing:start", "ok")] == 1
        assert requests[("typing:start", "not_in_conversation")] == 1
        assert requests[("other", "unknown_event")] == 1  # never the name asked for
        assert scrape(registry)["chatrelay_backplane_healthy", ()] == 1
        assert scrape(registry)["chatrelay_draining", ()] == 0


async def test_the_info_names_the_version_and_the_backplane() -> None:
    registry = CollectorRegistry()
    async with Relay() as relay:
        instrument(relay, registry)
        samples = scrape(registry)
    [(labels, value)] = [(dict(k), v) for (n, k), v in samples.items() if n == "chatrelay_info"]
    assert value == 1
    assert labels["backplane"] == "LocalBackplane"
    assert labels["version"]


async def test_refused_credentials_are_counted_by_reason() -> None:
    class Refusing(Authenticator):
        async def authenticate(self, credentials: Credentials) -> Identity:
            if credentials.token == "expired":
                raise Unauthorized("the token expired")
            raise Forbidden("not here")

    registry = CollectorRegistry()
    async with Relay(authenticator=Refusing()) as relay:
        instrument(relay, registry)
        for token in ("expired", "expired", "other"):
            with pytest.raises(ProtocolError):
                await relay.authenticate(
                    Credentials(token=token, query={}, headers={}, transport="memory")
                )
        samples = scrape(registry)
    assert samples["chatrelay_auth_failures_total", (("reason", "unauthorized"),)] == 2
    assert samples["chatrelay_auth_failures_total", (("reason", "forbidden"),)] == 1
