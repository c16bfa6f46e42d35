"""The fixed cost of one broadcast through the emitter API, against the bare servers' code.

In one process, without sockets: a `Relay` whose connections take their events through
`Connection.deliver_directly` with a sink that only builds the frame (what the WebSocket
adapter does before ``send_text``) and counts, against what the bare Starlette server of
`server.py` does per broadcast (``status_payload`` + ``json.dumps``, then one call per
member). Both run in the same process, interleaved, for rooms of 1, 10 and 100:

    .venv/bin/python benchmarks/micro_emit.py
    .venv/bin/python benchmarks/micro_emit.py --event received --repetitions 15

It prints microseconds per broadcast (medians) and the ratio bare / chatrelay (the
median of the ratios of each repetition; above 1.0x chatrelay is the cheaper). The
network, the event loop and the clients are left out on purpose: what remains is what
chatrelay adds per broadcast and per recipient. ``--profile FILE`` writes a cProfile of
the chatrelay side only.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime

from server import PADDING, message_id, status_payload

from chatrelay import HistorySettings, Identity, Message, MessageStatus, Relay, RelayConfig
from chatrelay.adapters._wsframes import event_frame
from chatrelay.lowlevel import Outbound

Emit = Callable[[str, int], Awaitable[None]]


async def no_one(user_id: str) -> tuple[str, ...]:
    return ()


async def run(args: argparse.Namespace) -> None:
    delivered = 0

    def sink(item: Outbound) -> bool:
        nonlocal delivered
        event_frame(item)  # what the WebSocket adapter does for each recipient
        delivered += 1
        return True

    def send_text(text: str) -> None:
        nonlocal delivered
        delivered += 1

    async with AsyncExitStack() as stack:
        config = RelayConfig(history=HistorySettings(size=0 if args.no_history else 1000))
        relay = await stack.enter_async_context(Relay(presence_audience=no_one, config=config))
        bare_rooms: dict[str, list[Callable[[str], None]]] = {}
        for size in args.sizes:
            room = f"room-{size}"
            bare_rooms[room] = [send_text] * size
            for i in range(size):
                identity = Identity(user_id=f"user-{size}-{i}")
                conn = await stack.enter_async_context(relay.connect(identity, transport="micro"))
                conn.deliver_directly(sink)
                reply = await conn.handle("conversation:join", {"conversationId": room})
                assert reply["ok"] is True, reply
        created = datetime.now(UTC)
        created_text = created.isoformat(timespec="milliseconds").replace("+00:00", "Z")

        async def chatrelay_status(room: str, n: int) -> None:
            ts = time.time() * 1000
            for seq in range(n):
                await relay.message_status(
                    room,
                    message_id(seq, ts),
                    "delivered",
                    user_id="bench",
                    updated_at=datetime.fromtimestamp(ts / 1000, UTC),
                )

        async def bare_status(room: str, n: int) -> None:
            ts = time.time() * 1000
            for seq in range(n):
                text = json.dumps(
                    {"event": "message:status", "data": status_payload(room, seq, ts)},
                    separators=(",", ":"),
                )
                for send in list(bare_rooms[room]):
                    send(text)

        async def chatrelay_received(room: str, n: int) -> None:
            for seq in range(n):
                message = Message(
                    id=f"{seq}:{PADDING}",
                    conversation_id=room,
                    sender_id="bench",
                    type="text",
                    content={"text": "hello"},
                    status=MessageStatus.SENT,
                    created_at=created,
                )
                await relay.message_received(message)

        async def bare_received(room: str, n: int) -> None:
            for seq in range(n):
                data = {
                    "conversationId": room,
                    "message": {
                        "id": f"{seq}:{PADDING}",
                        "conversationId": room,
                        "senderId": "bench",
                        "type": "text",
                        "content": {"text": "hello"},
                        "status": "sent",
                        "createdAt": created_text,
                    },
                    "sender": {"id": "bench"},
                }
                text = json.dumps(
                    {"event": "message:received", "data": data}, separators=(",", ":")
                )
                for send in list(bare_rooms[room]):
                    send(text)

        ours: Emit
        bare: Emit
        if args.event == "status":
            ours, bare = chatrelay_status, bare_status
        else:
            ours, bare = chatrelay_received, bare_received
        if args.profile:
            profile = cProfile.Profile()
            profile.enable()
            for size in args.sizes:
                await ours(f"room-{size}", args.broadcasts)
            profile.disable()
            profile.dump_stats(args.profile)
            print(f"profile of the chatrelay side written to {args.profile}")
            return
        n = args.broadcasts
        for size in args.sizes:
            room = f"room-{size}"
            await ours(room, n // 10)  # warm up
            await bare(room, n // 10)
            mine: list[float] = []
            theirs: list[float] = []
            ratios: list[float] = []
            for rep in range(args.repetitions):
                micros: dict[Emit, float] = {}
                for emit in (ours, bare) if rep % 2 == 0 else (bare, ours):
                    start = time.perf_counter()
                    await emit(room, n)
                    micros[emit] = (time.perf_counter() - start) / n * 1e6
                mine.append(micros[ours])
                theirs.append(micros[bare])
                ratios.append(micros[bare] / micros[ours])
            print(
                f"{args.event:>8}, room of {size:>3}: chatrelay {statistics.median(mine):6.2f} µs,"
                f" bare {statistics.median(theirs):6.2f} µs per broadcast;"
                f" bare / chatrelay {statistics.median(ratios):.2f}x"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--event", choices=["status", "received"], default="status")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--broadcasts", type=int, default=5000, help="per repetition")
    parser.add_argument("--repetitions", type=int, default=9)
    parser.add_argument("--profile", metavar="FILE", help="cProfile the chatrelay side only")
    parser.add_argument(
        "--no-history", action="store_true", help="positions and recovery off (a bare publish)"
    )
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
