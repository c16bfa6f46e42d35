"""When credentials expire: the warning before and the close after, without a loop."""

from __future__ import annotations

from chatrelay import ConnectionId
from chatrelay._lifetime import Lifetimes

K1, K2, K3 = ConnectionId("k1"), ConnectionId("k2"), ConnectionId("k3")


def test_lifetimes_warn_then_close_and_start_over_on_refresh() -> None:
    lives = Lifetimes(warning=60, grace=25)
    lives.track(K1, 100, now=0)
    lives.track(K2, None, now=0)  # never expires: not tracked
    assert len(lives) == 1
    assert lives.next_deadline() == 40
    [warn] = lives.expire(now=40)
    assert (warn.connection, warn.kind, warn.expires_in) == (K1, "expiring", 60)
    lives.track(K1, 100, now=50)  # refreshed: the old deadlines are void
    assert lives.next_deadline() == 90  # 150 - 60, not the old close at 125
    assert lives.expire(now=89) == []
    [warn] = lives.expire(now=90)
    assert warn.kind == "expiring"
    [closed] = lives.expire(now=175)
    assert (closed.kind, closed.expires_in) == ("expired", -25)
    assert len(lives) == 0
    assert lives.next_deadline() is None
    lives.track(K3, 10, now=0)
    lives.forget(K3)
    assert lives.expire(now=1000) == []
