"""The echo probe (`chatrelay._probe`): deaf after two heartbeat intervals without an echo."""

from __future__ import annotations

from chatrelay._probe import EchoProbe


def test_two_intervals_without_an_echo_make_a_node_deaf() -> None:
    probe = EchoProbe(interval=2.0)
    assert not probe.deaf(100.0)  # not listening yet
    probe.heard(100.0)  # it starts listening
    assert not probe.deaf(100.0)
    probe.heard(101.0)
    assert not probe.deaf(105.0)  # 4 s since the last echo: two intervals, not more
    assert probe.deaf(105.1)
    probe.heard(105.2)  # it hears again
    assert not probe.deaf(105.3)


def test_a_backplane_that_is_down_is_not_deaf_and_starts_afresh_when_back() -> None:
    probe = EchoProbe(interval=2.0)
    probe.heard(0.0)
    probe.connection(False, 1.0)
    assert not probe.deaf(60.0)  # down: reported as such, not as deaf
    probe.connection(True, 60.0)
    assert not probe.deaf(63.9)
    assert probe.deaf(64.1)
