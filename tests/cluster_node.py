"""One relay node with the Redis backplane, driven over stdin/stdout by the cluster tests.

Run as ``python tests/cluster_node.py --url redis://… --prefix p:``. Clients are
in-memory clients of this process (``chatrelay.testing.MemoryTransport``), which run
the relay's real request path; the test tells the node what they do and hears what
they receive, one JSON object per line:

- stdin, a command: ``{"id": 1, "op": "join", "client": "a1", "conversation": "c1"}``
- stdout, its reply: ``{"id": 1, "ok": true, "result": …}`` (or ``"ok": false, "error"``)
- stdout, an event a client received: ``{"client": "a1", "event": "…", "data": {…}}``
- stdout, once started: ``{"ready": "<node id>"}``

With ``--ws-port``, the node also serves real WebSocket clients with the Starlette
adapter under uvicorn, at ``ws://127.0.0.1:<port>/ws``.

SIGTERM shuts the node down gracefully (its relay says goodbye to the others).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import anyio
import attrs
import uvicorn
from anyio import CancelScope
from anyio.abc import TaskGroup
from starlette.applications import Starlette

from chatrelay import Message, MessageStatus, Relay, RelayConfig
from chatrelay.adapters.starlette import WebSocketAdapter
from chatrelay.backplanes.redis import RedisBackplane
from chatrelay.testing import MemoryClient, MemoryTransport


def write(line: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(line, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def make_message(message_id: str, conversation: str, sender: str, text: str) -> Message:
    return Message(
        id=message_id,
        conversation_id=conversation,
        sender_id=sender,
        type="text",
        content={"text": text},
        status=MessageStatus.SENT,
        created_at=datetime.now(UTC),
    )


class Node:
    def __init__(self, relay: Relay, tg: TaskGroup) -> None:
        self.relay = relay
        self.transport = MemoryTransport(relay)
        self.tg = tg
        self.clients: dict[str, MemoryClient] = {}
        self.closers: dict[str, anyio.Event] = {}

    async def run_client(
        self,
        name: str,
        user: str,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        close = self.closers[name] = anyio.Event()
        async with self.transport.connect(user, auto_ack=True) as client:
            self.clients[name] = client
            task_status.started()
            async with anyio.create_task_group() as tg:
                tg.start_soon(self.forward, name, client)
                await close.wait()
                tg.cancel_scope.cancel()
        self.clients.pop(name, None)

    async def forward(self, name: str, client: MemoryClient) -> None:
        while True:
            event = await client.receive(timeout=3600)
            write({"client": name, "event": event.event, "data": event.data})

    async def stream(
        self, conversation: str, sender: str, prefix: str, count: int, interval: float
    ) -> None:
        for index in range(count):
            message = make_message(f"{prefix}{index}", conversation, sender, str(index))
            await self.relay.message_received(message)
            await anyio.sleep(interval)
        write({"streamed": prefix, "count": count})

    async def handle(self, command: dict[str, Any]) -> Any:
        op = command["op"]
        if op == "connect":
            await self.tg.start(self.run_client, command["client"], command["user"])
            return None
        if op == "disconnect":
            self.closers[command["client"]].set()
            return None
        if op in ("join", "leave", "typing:start", "typing:stop"):
            event = {"join": "conversation:join", "leave": "conversation:leave"}.get(op, op)
            client = self.clients[command["client"]]
            data = {"conversationId": command["conversation"]}
            if "position" in command:  # a join that resumes from there
                data["position"] = command["position"]
            return await client.request(event, data)
        if op == "emit":
            message = make_message(
                command["message"], command["conversation"], command["sender"], command["text"]
            )
            await self.relay.message_received(message)
            return None
        if op == "flush":  # until what was emitted went out
            await self.relay.flush()
            return None
        if op == "stream":
            self.tg.start_soon(
                self.stream,
                command["conversation"],
                command["sender"],
                command["prefix"],
                command["count"],
                command["interval"],
            )
            return None
        if op == "is_online":
            return self.relay.is_online(command["user"])
        if op == "online_users":
            return sorted(self.relay.online_users())
        if op == "members":
            return sorted(self.relay.members(command["conversation"]))
        if op == "nodes":
            return sorted(self.relay._hub.cluster.nodes())
        if op == "statistics":
            return json.loads(json.dumps(attrs.asdict(self.relay.statistics())))
        raise ValueError(f"unknown op {op!r}")

    async def serve(self, stop: CancelScope) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := await reader.readline():
            command = json.loads(line)
            try:
                result = await self.handle(command)
            except Exception as exc:
                write({"id": command.get("id"), "ok": False, "error": repr(exc)})
            else:
                write({"id": command.get("id"), "ok": True, "result": result})
        stop.cancel()  # stdin closed: the test is gone


class Server(uvicorn.Server):
    """uvicorn inside the node's event loop; the node handles signals itself."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_websockets(
    relay: Relay, port: int, *, task_status: anyio.abc.TaskStatus[None]
) -> None:
    adapter = WebSocketAdapter(relay)
    app = Starlette(routes=[adapter.route("/ws")])
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, lifespan="off", log_level="warning", ws="websockets"
    )
    server = Server(config)
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        with anyio.fail_after(10):
            # uvicorn says it listens by a flag only: poll it, with a bound.
            while not server.started:  # noqa: ASYNC110
                await anyio.sleep(0.01)
        task_status.started()


async def watch_signals(stop: CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            stop.cancel()
            return


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--heartbeat", type=float, default=0.25)
    parser.add_argument("--node-timeout", type=float, default=1.0)
    parser.add_argument("--grace", type=float, default=0.3)
    parser.add_argument("--buffer-limit", type=int, default=10_000)
    parser.add_argument("--wake-ttl", type=float, default=1.0)
    parser.add_argument("--max-backoff", type=float, default=0.25)
    parser.add_argument("--ws-port", type=int, default=0)
    args = parser.parse_args()
    config = RelayConfig(
        heartbeat_interval=args.heartbeat,
        node_timeout=args.node_timeout,
        presence_grace=args.grace,
    )
    backplane = RedisBackplane(
        args.url,
        prefix=args.prefix,
        buffer_limit=args.buffer_limit,
        wake_ttl=args.wake_ttl,
        max_backoff=args.max_backoff,
    )
    async with Relay(config=config, backplane=backplane) as relay, anyio.create_task_group() as tg:
        node = Node(relay, tg)
        tg.start_soon(watch_signals, tg.cancel_scope)
        tg.start_soon(node.serve, tg.cancel_scope)
        if args.ws_port:
            await tg.start(serve_websockets, relay, args.ws_port)
        write({"ready": relay.node_id})
    write({"stopped": relay.node_id})


if __name__ == "__main__":
    anyio.run(main, backend="asyncio")
