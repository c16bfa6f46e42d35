"""TokenBucket (sans-I/O rate limiting) and the validation of Limits and RelayConfig."""

from __future__ import annotations

import pytest

from chatrelay import Limits, RelayConfig
from chatrelay._limits import TokenBucket


def test_a_full_bucket_allows_a_burst_then_refuses() -> None:
    bucket = TokenBucket(rate=1, burst=3, now=0)
    assert [bucket.take(0) for _ in range(4)] == [True, True, True, False]


def test_tokens_come_back_at_the_rate() -> None:
    bucket = TokenBucket(rate=2, burst=2, now=0)
    assert bucket.take(0)
    assert bucket.take(0)
    assert not bucket.take(0.25)  # half a token
    assert bucket.take(0.5)  # the half and another half: one token
    assert not bucket.take(0.5)


def test_the_bucket_holds_at_most_burst_tokens() -> None:
    bucket = TokenBucket(rate=10, burst=2, now=0)
    # An hour of silence does not buy a flood.
    assert [bucket.take(3600) for _ in range(3)] == [True, True, False]


def test_a_clock_going_backwards_adds_nothing() -> None:
    bucket = TokenBucket(rate=1, burst=1, now=10)
    assert bucket.take(10)
    assert not bucket.take(5)
    assert not bucket.take(10.5)  # only half a token since 10, not since 5
    assert bucket.take(11)


def test_taking_several_tokens_at_once() -> None:
    bucket = TokenBucket(rate=1, burst=5, now=0)
    assert bucket.take(0, tokens=3)
    assert not bucket.take(0, tokens=3)  # two left: none are taken
    assert bucket.take(0, tokens=2)
    assert not bucket.take(0)


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (1, 0), (1, 0.5)])
def test_bucket_arguments_are_checked(rate: float, burst: float) -> None:
    with pytest.raises(ValueError, match="rate"):
        TokenBucket(rate=rate, burst=burst, now=0)


@pytest.mark.parametrize(
    "field", ["max_payload_bytes", "outgoing_queue", "rate", "burst", "rate_error_interval"]
)
def test_limits_must_be_positive(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        Limits(**{field: 0})


def test_relay_config_is_checked() -> None:
    with pytest.raises(ValueError, match="typing_timeout"):
        RelayConfig(typing_timeout=0)
    with pytest.raises(ValueError, match="presence_grace"):
        RelayConfig(presence_grace=-1)
    with pytest.raises(ValueError, match="node_timeout must be longer"):
        RelayConfig(heartbeat_interval=1, node_timeout=1)
    assert RelayConfig(presence_grace=0).presence_grace == 0
    assert RelayConfig().limits == Limits()
