"""The Python servers of the benchmarks, one process each: chatrelay and the bare transports.

    python benchmarks/server.py KIND [--compression] [--ws IMPL]

KIND is one of:

- ``chatrelay-socketio``: a Relay behind chatrelay's Socket.IO adapter;
- ``chatrelay-websocket``: a Relay behind chatrelay's WebSocket (Starlette) adapter;
- ``socketio``: bare python-socketio, rooms and emits written directly against it;
- ``starlette``: bare Starlette, a dict of rooms and sequential ``send_text`` calls.

Every server runs under uvicorn on 127.0.0.1 (a port of the kernel's choosing), with
per-message compression set explicitly, and speaks the part of chatrelay's protocol the
benchmarks use: ``conversation:join`` (acknowledged) and server-side ``message:status``
broadcasts. Those broadcasts come from the same loop (:func:`fanout`) for every kind;
only the one line that emits differs. For chatrelay it is the emitter API,
``relay.message_status``.

The process prints JSON lines on stdout (``{"type": "ready", "port": …, "feedbackPort":
…}``, then ``{"type": "done", …}`` per command), reads commands from stdin, and exits
when stdin ends. Node's socket.io server (``node/server.mjs``) follows the same
protocol.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import resource
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvicorn

Emit = Callable[[str, int, float], Awaitable[None]]
"""``async (room, seq, ts) -> None``: one broadcast of ``message:status`` to a room."""

KINDS = ("chatrelay-socketio", "chatrelay-websocket", "socketio", "starlette")
NAMESPACE = "/messages"
PADDING = "x" * 64  # makes the payload ~200 bytes of JSON, like a small chat event


def message_id(seq: int, ts: float) -> str:
    """The id the load generator reads back: sequence number, send time, padding."""
    return f"{seq}:{ts:.3f}:{PADDING}"


def status_payload(room: str, seq: int, ts: float) -> dict[str, Any]:
    """The ``message:status`` payload that the bare servers emit (chatrelay builds its own)."""
    updated = datetime.fromtimestamp(ts / 1000, UTC).isoformat(timespec="milliseconds")
    return {
        "conversationId": room,
        "messageId": message_id(seq, ts),
        "status": "delivered",
        "userId": "bench",
        "updatedAt": updated.replace("+00:00", "Z"),
    }


# --- the servers -----------------------------------------------------------------------


def chatrelay_app(kind: str, redis: str | None = None) -> tuple[Any, Emit]:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from chatrelay import Relay
    from chatrelay.abc import Backplane

    backplane: Backplane | None = None
    if redis is not None:
        from chatrelay.backplanes.redis import RedisBackplane

        backplane = RedisBackplane(redis)

    async def no_one(user_id: str) -> tuple[str, ...]:
        return ()

    # By default every client hears of every other one coming online: with 10,000
    # clients connecting that is 10,000 x 10,000 events, which the bare servers do not
    # send. The benchmarks compare fan-out, so nobody is told (see docs/benchmarks.md).
    relay = Relay(presence_audience=no_one, backplane=backplane)

    async def emit(room: str, seq: int, ts: float) -> None:
        await relay.message_status(
            room,
            message_id(seq, ts),
            "delivered",
            user_id="bench",
            updated_at=datetime.fromtimestamp(ts / 1000, UTC),
        )

    if kind == "chatrelay-socketio":
        from chatrelay.adapters.socketio import SocketIOAdapter

        sio = SocketIOAdapter(relay, allowed_origins="*")

        @asynccontextmanager
        async def sio_lifespan(app: Starlette) -> AsyncIterator[None]:
            async with relay, sio:
                yield

        app = Starlette(routes=[Mount("/socket.io", app=sio.asgi_app())], lifespan=sio_lifespan)
        return app, emit

    from chatrelay.adapters.starlette import WebSocketAdapter

    ws = WebSocketAdapter(relay)

    @asynccontextmanager
    async def ws_lifespan(app: Starlette) -> AsyncIterator[None]:
        async with relay:
            yield

    return Starlette(routes=[ws.route("/ws")], lifespan=ws_lifespan), emit


def socketio_app() -> tuple[Any, Emit]:
    import socketio

    sio = socketio.AsyncServer(
        async_mode="asgi", cors_allowed_origins="*", logger=False, engineio_logger=False
    )

    async def join(sid: str, data: dict[str, Any]) -> dict[str, Any]:
        room = str(data["conversationId"])
        await sio.enter_room(sid, room, namespace=NAMESPACE)
        return {"ok": True, "conversationId": room}

    sio.on("conversation:join", join, namespace=NAMESPACE)

    async def emit(room: str, seq: int, ts: float) -> None:
        data = status_payload(room, seq, ts)
        await sio.emit("message:status", data, room=room, namespace=NAMESPACE)

    return socketio.ASGIApp(sio), emit


def starlette_app() -> tuple[Any, Emit]:
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    rooms: dict[str, set[WebSocket]] = {}

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        joined: list[str] = []
        try:
            while True:
                frame = json.loads(await websocket.receive_text())
                if frame.get("event") == "conversation:join":
                    room = str(frame["data"]["conversationId"])
                    rooms.setdefault(room, set()).add(websocket)
                    joined.append(room)
                    reply = {"ok": True, "conversationId": room}
                    await websocket.send_text(
                        json.dumps({"event": "ack", "id": frame.get("id"), "data": reply})
                    )
        except WebSocketDisconnect:
            pass
        finally:
            for room in joined:
                rooms[room].discard(websocket)

    async def emit(room: str, seq: int, ts: float) -> None:
        # Encoded once, sent to each member in turn: the obvious bare broadcast.
        text = json.dumps(
            {"event": "message:status", "data": status_payload(room, seq, ts)},
            separators=(",", ":"),
        )
        for websocket in list(rooms.get(room, ())):
            # RuntimeError: it left while the broadcast was under way.
            with contextlib.suppress(WebSocketDisconnect, RuntimeError):
                await websocket.send_text(text)

    return Starlette(routes=[WebSocketRoute("/ws", endpoint)]), emit


def make_app(kind: str, redis: str | None = None) -> tuple[Any, Emit]:
    if kind.startswith("chatrelay-"):
        return chatrelay_app(kind, redis)
    if redis is not None:
        raise ValueError("only chatrelay's servers share a Redis")
    if kind == "socketio":
        return socketio_app()
    if kind == "starlette":
        return starlette_app()
    raise ValueError(f"unknown server kind {kind!r}; expected one of {', '.join(KINDS)}")


# --- the broadcast loop ----------------------------------------------------------------


class Feedback(asyncio.DatagramProtocol):
    """The load generator's reports of the last broadcast delivered to all recipients."""

    def __init__(self) -> None:
        self.delivered = -1
        self.changed = asyncio.Event()

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        seq = int(data)
        if seq > self.delivered:
            self.delivered = seq
            self.changed.set()


async def fanout(emit: Emit, feedback: Feedback, command: dict[str, Any]) -> dict[str, Any]:
    """Broadcast ``count`` events round-robin over ``rooms`` rooms, as Node's loop does.

    At most ``window`` broadcasts are in flight (sent and not yet reported delivered to
    all of their recipients). With ``rate``, broadcast ``i`` is due at ``i / rate``
    seconds and carries that scheduled time, so a late server's delay counts in the
    latency; without it, the loop goes as fast as the window allows.
    """
    rooms: int = command["rooms"]
    count: int = command["count"]
    rate: float | None = command.get("rate")
    window: int = command["window"]
    loop = asyncio.get_running_loop()
    feedback.delivered = -1
    started = time.time() * 1000
    deadline = loop.time() + command["timeout"]
    error = None
    i = 0
    while i < count:
        while i - feedback.delivered > window and loop.time() < deadline:
            feedback.changed.clear()
            try:
                await asyncio.wait_for(feedback.changed.wait(), deadline - loop.time())
            except TimeoutError:
                break
        if loop.time() >= deadline:
            error = f"stalled after {i} broadcasts"
            break
        ts = time.time() * 1000
        if rate:
            due = started + i * 1000 / rate
            if due > ts:
                await asyncio.sleep((due - ts) / 1000)
            # Late broadcasts carry their scheduled time (no coordinated omission).
            ts = min(time.time() * 1000, due)
        else:
            await asyncio.sleep(0)  # let the sockets write between broadcasts
        await emit(f"c{i % rooms}", i, ts)
        i += 1
    return {
        "type": "done",
        "emitted": i,
        "seconds": (time.time() * 1000 - started) / 1000,
        "error": error,
    }


# --- the process -----------------------------------------------------------------------


@contextlib.contextmanager
def gc_watch() -> Iterator[dict[str, float]]:
    """Count the garbage collections of a block, by generation, and their seconds."""
    collected: dict[str, float] = {"0": 0, "1": 0, "2": 0, "seconds": 0.0}
    started = 0.0

    def callback(phase: str, info: dict[str, int]) -> None:
        nonlocal started
        if phase == "start":
            started = time.perf_counter()
        else:
            collected[str(info["generation"])] += 1
            collected["seconds"] += time.perf_counter() - started

    gc.callbacks.append(callback)
    try:
        yield collected
    finally:
        gc.callbacks.remove(callback)


@contextlib.contextmanager
def cprofiled() -> Iterator[None]:
    """With ``BENCH_CPROFILE=DIR``, profile the block into DIR/<pid>-<n>.prof.

    What one broadcast run costs, apart from connecting and idling (which py-spy's
    whole-process samples mix in).
    """
    folder = os.environ.get("BENCH_CPROFILE")
    if not folder:
        yield
        return
    import cProfile

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        yield
    finally:
        profiler.disable()
        n = len(list(Path(folder).glob(f"{os.getpid()}-*.prof")))
        profiler.dump_stats(Path(folder) / f"{os.getpid()}-{n}.prof")


def print_line(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def control(emit: Emit, feedback: Feedback, server: uvicorn.Server) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        if not line.strip():
            continue
        command = json.loads(line)
        if command["op"] == "fanout":
            with gc_watch() as collected, cprofiled():
                done = await fanout(emit, feedback, command)
            print_line({**done, "gc": collected})
        elif command["op"] == "memory":
            # Where the memory went, by line (run with PYTHONTRACEMALLOC=<frames>).
            import tracemalloc

            if tracemalloc.is_tracing():
                stats = tracemalloc.take_snapshot().statistics("lineno")
                top = [(str(s.traceback[0]), s.size, s.count) for s in stats[: command["top"]]]
            else:
                top = []
            print_line({"type": "memory", "top": top})
    server.should_exit = True


async def serve(kind: str, *, compression: bool, ws: str, redis: str | None) -> None:
    app, emit = make_app(kind, redis)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)
    loop = asyncio.get_running_loop()
    transport, feedback = await loop.create_datagram_endpoint(Feedback, local_addr=("127.0.0.1", 0))
    config = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="on" if kind.startswith("chatrelay-") else "off",
        ws=ws,
        ws_per_message_deflate=compression,
        backlog=4096,
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve([sock]))
    # uvicorn offers a flag, not an event, for "listening now".
    while not server.started and not serving.done():  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    if serving.done():
        serving.result()  # raises why uvicorn did not start
        return
    print_line(
        {
            "type": "ready",
            "port": sock.getsockname()[1],
            "feedbackPort": transport.get_extra_info("sockname")[1],
        }
    )
    try:
        await control(emit, feedback, server)
        await serving
    finally:
        transport.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--compression", action="store_true", help="per-message deflate on")
    parser.add_argument("--ws", default="websockets-sansio", help="uvicorn's WebSocket library")
    parser.add_argument("--redis", help="a Redis URL: the relay's backplane (chatrelay only)")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    args = parser.parse_args()
    # 10,000 connections need as many descriptors: take the hard limit.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    loop_factory = None
    if args.loop == "uvloop":
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(args.kind, compression=args.compression, ws=args.ws, redis=args.redis))


if __name__ == "__main__":
    main()
