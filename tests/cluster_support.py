"""Relay nodes in separate processes (``tests/cluster_node.py``), driven from a test.

Every wait is bounded: a command's reply, an event a client should receive, the
process's exit. Events are collected as the node prints them, so a test asserts on
what arrived, and waits for what it expects with a bound instead of sleeping.
"""

from __future__ import annotations

import json
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream

NODE = Path(__file__).with_name("cluster_node.py")
WAIT = 10.0
"""The bound on a wait for a node: far above what it needs, far below a hang."""

Event = dict[str, Any]


class NodeProcess:
    """A running ``cluster_node.py``: send it commands, look at its clients' events."""

    def __init__(self, process: anyio.abc.Process, log: Path) -> None:
        self.process = process
        self.log = log
        self.node_id = ""
        self.events: list[Event] = []
        self.lines: list[Event] = []
        self._replies: dict[int, Event] = {}
        self._ids = iter(range(1, 1_000_000))
        self._changed = anyio.Event()

    async def _read(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        assert self.process.stdout is not None
        stream = BufferedByteReceiveStream(self.process.stdout)
        started = False
        try:
            while True:
                line: Event = json.loads(await stream.receive_until(b"\n", 1 << 20))
                self.lines.append(line)
                if "ready" in line:
                    self.node_id = line["ready"]
                    started = True
                    task_status.started()
                elif "id" in line:
                    self._replies[line["id"]] = line
                elif "event" in line:
                    self.events.append(line)
                self._notify()
        except (anyio.EndOfStream, anyio.IncompleteRead, anyio.ClosedResourceError):
            if not started:
                message = f"node did not start; see {self.log}:\n{self.log_text()}"
                raise RuntimeError(message) from None
        finally:
            self._notify()

    def _notify(self) -> None:
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    async def request(self, op: str, **fields: Any) -> Any:
        """Run one command on the node and return its result."""
        command_id = next(self._ids)
        assert self.process.stdin is not None
        line = json.dumps({"id": command_id, "op": op, **fields}) + "\n"
        await self.process.stdin.send(line.encode())
        with anyio.fail_after(WAIT):
            while command_id not in self._replies:
                await self._changed.wait()
        reply = self._replies.pop(command_id)
        if not reply["ok"]:
            raise AssertionError(f"{op} failed on the node: {reply['error']}")
        return reply["result"]

    def received(self, client: str, event: str | None = None) -> list[Event]:
        """The events ``client`` received so far (of the name ``event``, if given)."""
        return [
            e
            for e in self.events
            if e["client"] == client and (event is None or e["event"] == event)
        ]

    async def wait_for(
        self, predicate: Callable[[], bool], *, within: float = WAIT, what: str = "condition"
    ) -> float:
        """Wait until ``predicate()`` holds, re-checking as lines arrive; return the time taken."""
        start = anyio.current_time()
        try:
            with anyio.fail_after(within):
                while not predicate():
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"timed out after {within} s waiting for {what}") from None
        return anyio.current_time() - start

    async def wait_answer(
        self, expected: object, op: str, *, within: float = WAIT, **fields: Any
    ) -> float:
        """Ask the node ``op`` until it answers ``expected`` (bounded); return the time taken.

        For state that no client event announces, such as another node's view.
        """
        start = anyio.current_time()
        answer: object = None
        try:
            with anyio.fail_after(within):
                # Polling, with a bound: another process's view announces nothing.
                while (answer := await self.request(op, **fields)) != expected:  # noqa: ASYNC110
                    await anyio.sleep(0.02)
        except TimeoutError:
            raise AssertionError(
                f"{op} answered {answer!r}, not {expected!r}, for {within} s"
            ) from None
        return anyio.current_time() - start

    def signal(self, sig: signal.Signals) -> None:
        self.process.send_signal(sig)

    async def wait_exit(self, *, within: float = WAIT) -> int:
        with anyio.fail_after(within):
            return await self.process.wait()

    async def connect(self, client: str, user: str, *conversations: str) -> None:
        """Connect a client and join it to ``conversations``."""
        await self.request("connect", client=client, user=user)
        for conversation in conversations:
            reply = await self.request("join", client=client, conversation=conversation)
            assert reply["ok"] is True, reply


@asynccontextmanager
async def cluster_node(url: str, prefix: str, *options: str) -> AsyncIterator[NodeProcess]:
    """Start a node process; stop it (SIGTERM, then SIGKILL) when the block ends."""
    with tempfile.NamedTemporaryFile("w+b", prefix="chatrelay-node-", suffix=".log") as log:
        command = [sys.executable, str(NODE), "--url", url, "--prefix", prefix, *options]
        process = await anyio.open_process(command, stderr=log)
        node = NodeProcess(process, Path(log.name))
        try:
            async with anyio.create_task_group() as tg:
                with anyio.fail_after(WAIT):
                    await tg.start(node._read)
                try:
                    yield node
                finally:
                    await _stop(process)
                    tg.cancel_scope.cancel()
        finally:
            await process.aclose()


async def _stop(process: anyio.abc.Process) -> None:
    with anyio.CancelScope(shield=True):
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            with anyio.move_on_after(WAIT):
                await process.wait()
        if process.returncode is None:
            process.kill()
            with anyio.move_on_after(WAIT):
                await process.wait()


@asynccontextmanager
async def cluster(
    url: str, prefix: str, count: int, *options: str
) -> AsyncIterator[list[NodeProcess]]:
    """Start ``count`` nodes at once (they boot in parallel)."""
    nodes: list[NodeProcess] = []
    async with anyio.create_task_group() as tg:
        stop = anyio.Event()
        ready = anyio.Event()

        async def run_one() -> None:
            async with cluster_node(url, prefix, *options) as node:
                nodes.append(node)
                if len(nodes) == count:
                    ready.set()
                await stop.wait()

        for _ in range(count):
            tg.start_soon(run_one)
        with anyio.fail_after(WAIT * 2):
            await ready.wait()
        try:
            yield nodes
        finally:
            stop.set()
