"""The slots of a drain: spread evenly over the window, each close at its slot's end."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatrelay._drain import slots


def test_slots_spread_over_the_window() -> None:
    assert slots(4, 2.0, start=10.0) == [10.5, 11.0, 11.5, 12.0]
    assert slots(1, 5.0, start=0.0) == [5.0]
    assert slots(0, 5.0, start=0.0) == []
    assert slots(3, 0.0, start=1.0) == [1.0, 1.0, 1.0]


@given(st.integers(min_value=1, max_value=500), st.floats(min_value=0, max_value=600))
def test_slots_are_ordered_and_inside_the_window(count: int, window: float) -> None:
    due = slots(count, window, start=0.0)
    assert len(due) == count
    assert due == sorted(due)
    assert due[0] >= 0.0
    assert due[-1] == pytest.approx(window)
