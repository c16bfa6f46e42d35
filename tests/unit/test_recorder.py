"""The recorder: room events numbered in batches, sent in the order emitted.

A history that waits for the test's word stands for a remote one, so that what is
queued while a batch is under way can be seen.
"""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import pytest

from chatrelay import ConversationId, HistorySettings
from chatrelay._history import MemoryHistory
from chatrelay._outbound import Outbound
from chatrelay._recorder import Recorder, Recording
from chatrelay.events import Position
from chatrelay.exceptions import BackplaneError

pytestmark = pytest.mark.anyio

C1, C2 = ConversationId("c1"), ConversationId("c2")
WAIT = 5.0


class Gated(MemoryHistory):
    """Numbers each batch only when the test opens the gate; remembers the batches."""

    local = False

    def __init__(self) -> None:
        super().__init__(HistorySettings())
        self.batches: list[int] = []
        self.gate = anyio.Event()
        self.failing = False

    async def append_many(
        self, entries: Sequence[tuple[ConversationId, str, str]]
    ) -> list[Position | BackplaneError]:
        self.batches.append(len(entries))
        with anyio.fail_after(WAIT):  # never a hang, even in a shielded batch
            await self.gate.wait()
        self.gate = anyio.Event()
        if self.failing:
            return [BackplaneError("unreachable")] * len(entries)
        return await super().append_many(entries)


class Sent:
    """What the recorder sent, in order: (conversation, name, position offset)."""

    def __init__(self) -> None:
        self.log: list[tuple[str, str, int | None]] = []

    async def __call__(self, recording: Recording, position: Position | None) -> None:
        if recording.item.event == "boom":
            raise RuntimeError("a sink failed")
        offset = None if position is None else position.offset
        self.log.append((recording.conversation, recording.item.event, offset))


def recording(conversation: ConversationId, event: str = "message:received") -> Recording:
    return Recording(conversation, Outbound(event, {}, json="{}"), None, None)


async def open_gate(history: Gated, batches: int) -> None:
    """Let ``batches`` more batches through, each once it is asked for."""
    with anyio.fail_after(WAIT):
        for _ in range(batches):
            await anyio.wait_all_tasks_blocked()  # the recorder waits for its numbers
            history.gate.set()


async def test_what_is_queued_during_a_round_trip_goes_in_the_next_batch() -> None:
    history, sent = Gated(), Sent()
    recorder = Recorder(history, sent)
    async with anyio.create_task_group() as tg:
        tg.start_soon(recorder.run)
        with anyio.fail_after(WAIT):
            await recorder.record(recording(C1))  # returns at once: nothing numbered yet
            await anyio.wait_all_tasks_blocked()
            assert history.batches == [1]
            for conversation in (C1, C2, C1, C1):  # meanwhile
                await recorder.record(recording(conversation))
            assert len(recorder) == 5
            assert sent.log == []
            await open_gate(history, 2)
            await recorder.flush()
        tg.cancel_scope.cancel()
    assert history.batches == [1, 4]
    assert sent.log == [
        (C1, "message:received", 1),
        (C1, "message:received", 2),
        (C2, "message:received", 1),
        (C1, "message:received", 3),
        (C1, "message:received", 4),
    ]
    assert len(recorder) == 0


async def test_a_full_queue_holds_the_emitter_back() -> None:
    history, sent = Gated(), Sent()
    recorder = Recorder(history, sent, limit=2, batch=2)
    third_queued = anyio.Event()

    async def emit_three() -> None:
        for _ in range(3):
            await recorder.record(recording(C1))
        third_queued.set()

    async with anyio.create_task_group() as tg:
        with anyio.fail_after(WAIT):
            tg.start_soon(emit_three)
            await anyio.wait_all_tasks_blocked()  # the recorder is not running yet
            assert len(recorder) == 2
            assert not third_queued.is_set()
            tg.start_soon(recorder.run)
            await third_queued.wait()  # the first batch of 2 made room
            await open_gate(history, 2)
            await recorder.flush()
        tg.cancel_scope.cancel()
    assert history.batches == [2, 1]
    assert [offset for _, _, offset in sent.log] == [1, 2, 3]


async def test_unrecorded_events_still_go_out_and_a_failing_send_stops_nothing() -> None:
    history, sent = Gated(), Sent()
    recorder = Recorder(history, sent)
    async with anyio.create_task_group() as tg:
        tg.start_soon(recorder.run)
        with anyio.fail_after(WAIT):
            history.failing = True
            await recorder.record(recording(C1))
            await open_gate(history, 1)
            await recorder.flush()
            history.failing = False
            for event in ("message:received", "boom", "message:status"):
                await recorder.record(recording(C1, event))
            await open_gate(history, 1)
            await recorder.flush()
        tg.cancel_scope.cancel()
    assert history.batches == [1, 3]
    assert sent.log == [
        (C1, "message:received", None),  # without a position
        (C1, "message:received", 1),
        (C1, "message:status", 3),
    ]


async def test_a_batch_under_way_is_sent_even_when_the_recorder_is_cancelled() -> None:
    history, sent = Gated(), Sent()
    recorder = Recorder(history, sent)
    async with anyio.create_task_group() as tg:
        tg.start_soon(recorder.run)
        with anyio.fail_after(WAIT):
            await recorder.record(recording(C1))
            await anyio.wait_all_tasks_blocked()
            assert history.batches == [1]
        tg.cancel_scope.cancel()  # while the batch waits for its numbers
        history.gate.set()
    assert sent.log == [(C1, "message:received", 1)]
