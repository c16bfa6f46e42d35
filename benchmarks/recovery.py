"""What positions and recovery cost, with the history on and off, in one run.

On the memory history and on Redis (``--redis``):

- **emit**: ``relay.message_received(...)`` to a room of one member, until every
  event went out (``relay.flush()``): wall time and this process's CPU time per
  event, for one emitter at a time and for 32 emitting at once; with
  ``HistorySettings()`` (on) and ``HistorySettings(size=0)`` (off, a bare
  publish), interleaved, each ratio within a round;
- **across servers** (two relays on one Redis): milliseconds from the emit on one
  server to the event in the hands of a client of the other, p50, on and off;
- **recover**: the server's time to answer a ``conversation:join`` 300 events behind:
  the join handled by the relay, the 300 events handed to the connection's sink, the
  ack returned (no client decoding counted), p50 and p99; with the room closed on
  that server (the join opens it) and with the room open there.

Usage::

    .venv/bin/python benchmarks/recovery.py [--redis redis://127.0.0.1:6379/15]
        [--emits 2000] [--rounds 5] [--resumes 200] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import anyio

from chatrelay import HistorySettings, Identity, Message, MessageStatus, Relay, RelayConfig
from chatrelay.abc import Backplane
from chatrelay.lowlevel import Outbound
from chatrelay.testing import MemoryTransport

ON = RelayConfig(history=HistorySettings())
OFF = RelayConfig(history=HistorySettings(size=0))
CONCURRENCY = 32


def message(n: int, conversation: str, sent: float = 0.0) -> Message:
    return Message(
        id=f"m{n}",
        conversation_id=conversation,
        sender_id="alice",
        type="text",
        content={"text": "x" * 100, "sent": sent},
        status=MessageStatus.SENT,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


def backplane(redis: str | None, prefix: str) -> Backplane:
    if redis is None:
        from chatrelay.backplanes import LocalBackplane

        return LocalBackplane()
    from chatrelay.backplanes.redis import RedisBackplane

    return RedisBackplane(redis, prefix=prefix)


@asynccontextmanager
async def relay(config: RelayConfig, redis: str | None, prefix: str = "") -> AsyncIterator[Relay]:
    prefix = prefix or f"bench-{secrets.token_hex(4)}:"
    async with Relay(config=config, backplane=backplane(redis, prefix)) as r:
        yield r


def _ratio(on: list[float], off: list[float]) -> tuple[float, float, float]:
    ratios = [a / b for a, b in zip(on, off, strict=True)]
    return statistics.median(ratios), min(ratios), max(ratios)


async def emit_cost(redis: str | None, emits: int, rounds: int) -> dict[str, Any]:
    """Per event: wall and CPU microseconds, sequential and concurrent, on and off."""
    samples: dict[str, list[float]] = {}
    async with AsyncExitStack() as stack:
        relays = {
            "on": await stack.enter_async_context(relay(ON, redis)),
            "off": await stack.enter_async_context(relay(OFF, redis)),
        }
        # Each room's member takes its events straight from the relay, as a transport
        # whose socket always has room does: no client decoding, no queue to fall
        # behind in; the count tells when every event is out.
        handed = dict.fromkeys(relays, 0)
        for name, r in relays.items():

            def sink(item: Outbound, name: str = name) -> bool:
                handed[name] += 1
                return True

            conn = await stack.enter_async_context(
                r.connect(Identity(user_id="bob"), transport="bench")
            )
            conn.deliver_directly(sink)
            await conn.handle("conversation:join", {"conversationId": f"room-{name}"})

        async def delivered(name: str, expected: int) -> None:
            """Until the member has every event emitted so far."""
            await relays[name].flush()
            if handed[name] != expected:
                raise RuntimeError(f"{name}: {handed[name]} of {expected} events handed over")

        for _ in range(rounds):
            for name in ("on", "off"):
                r, conversation = relays[name], f"room-{name}"
                handed_before = handed[name]
                started, cpu = time.perf_counter(), time.process_time()
                for n in range(emits):
                    await r.message_received(message(n, conversation))
                await delivered(name, handed_before + emits)
                samples.setdefault(f"{name}_wall", []).append(
                    (time.perf_counter() - started) / emits * 1e6
                )
                samples.setdefault(f"{name}_cpu", []).append(
                    (time.process_time() - cpu) / emits * 1e6
                )

                async def emitter(
                    first: int, r: Relay = r, conversation: str = conversation
                ) -> None:
                    for n in range(first, emits, CONCURRENCY):
                        await r.message_received(message(n, conversation))

                started, cpu = time.perf_counter(), time.process_time()
                async with anyio.create_task_group() as tg:
                    for first in range(CONCURRENCY):
                        tg.start_soon(emitter, first)
                await delivered(name, handed_before + 2 * emits)
                samples.setdefault(f"{name}_wall_concurrent", []).append(
                    (time.perf_counter() - started) / emits * 1e6
                )
                samples.setdefault(f"{name}_cpu_concurrent", []).append(
                    (time.process_time() - cpu) / emits * 1e6
                )
    out: dict[str, Any] = {k: statistics.median(v) for k, v in samples.items()}
    for kind in ("wall", "cpu", "wall_concurrent", "cpu_concurrent"):
        out[f"ratio_{kind}"] = _ratio(samples[f"on_{kind}"], samples[f"off_{kind}"])
    return out


async def cross_server(redis: str, count: int) -> dict[str, Any]:
    """Milliseconds from an emit on one relay to the event at a client of another."""
    out: dict[str, Any] = {}
    for name, config in (("on", ON), ("off", OFF)):
        prefix = f"bench-{secrets.token_hex(4)}:"
        async with (
            relay(config, redis, prefix) as a,
            relay(config, redis, prefix) as b,
            MemoryTransport(b).connect("bob", auto_ack=True) as bob,
        ):
            await bob.request("conversation:join", {"conversationId": "c1"})
            await anyio.sleep(0.5)  # let a hear of b's member (the backplane's control topic)
            latencies = []
            for n in range(count):
                sent = time.perf_counter()
                await a.message_received(message(n, "c1", sent))
                event = await bob.receive("message:received", timeout=5)
                latencies.append(
                    (time.perf_counter() - event.data["message"]["content"]["sent"]) * 1000
                )
            out[f"{name}_p50_ms"] = statistics.median(latencies)
    out["ratio_p50"] = out["on_p50_ms"] / out["off_p50_ms"]
    return out


async def recover_time(redis: str | None, resumes: int, missed: int) -> dict[str, Any]:
    """Server milliseconds from a join ``missed`` events behind to its ack.

    Twice: with the room closed on this server (the join opens it: on Redis, it
    subscribes to the room's stream first), as for the first client back on a
    restarted server; and with the room open (another member connected here), as
    for a client that comes back to a server its room lives on.
    """
    out: dict[str, Any] = {"events": missed}
    for name in ("closed", "open"):
        async with relay(ON, redis) as r, AsyncExitStack() as stack:
            bob = await stack.enter_async_context(MemoryTransport(r).connect("bob"))
            ack = await bob.request("conversation:join", {"conversationId": "c1"})
            if name == "closed":
                await stack.aclose()  # bob leaves: the room closes on this server
            start = ack["position"]
            for n in range(missed):
                await r.message_received(message(n, "c1"))
            await r.flush()
            times = []
            for _ in range(resumes):
                handed: list[Outbound] = []

                def sink(item: Outbound, handed: list[Outbound] = handed) -> bool:
                    handed.append(item)
                    return True

                async with r.connect(Identity(user_id="carol"), transport="bench") as conn:
                    conn.deliver_directly(sink)
                    data = {"conversationId": "c1", "position": start}
                    began = time.perf_counter()
                    reply = await conn.handle("conversation:join", data)
                    times.append((time.perf_counter() - began) * 1000)
                if reply.get("recovered") is not True or len(handed) != missed:
                    raise RuntimeError(f"recovery failed: {reply}, {len(handed)} events")
        times.sort()
        p50, p99 = statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.99))]
        # "p50_ms"/"p99_ms": the room closed here, as the earlier runs measured.
        keys = ("p50_ms", "p99_ms") if name == "closed" else ("open_p50_ms", "open_p99_ms")
        out.update(zip(keys, (p50, p99), strict=True))
    return out


def _line(name: str, result: dict[str, Any]) -> str:
    emit, recover = result["emit"], result["recover"]
    text = (
        f"{name:7} emit, one at a time: on {emit['on_wall']:.1f} us (CPU {emit['on_cpu']:.1f}),"
        f" off {emit['off_wall']:.1f} us (CPU {emit['off_cpu']:.1f}): wall"
        f" {emit['ratio_wall'][0]:.2f}x, CPU {emit['ratio_cpu'][0]:.2f}x\n"
        f"{'':7} emit, {CONCURRENCY} at once: on {emit['on_wall_concurrent']:.1f} us"
        f" (CPU {emit['on_cpu_concurrent']:.1f}), off {emit['off_wall_concurrent']:.1f} us"
        f" (CPU {emit['off_cpu_concurrent']:.1f}): wall {emit['ratio_wall_concurrent'][0]:.2f}x,"
        f" CPU {emit['ratio_cpu_concurrent'][0]:.2f}x\n"
        f"{'':7} recover 300: p50 {recover['p50_ms']:.2f} ms, p99 {recover['p99_ms']:.2f} ms;"
        f" room open here: p50 {recover['open_p50_ms']:.2f} ms, p99 {recover['open_p99_ms']:.2f} ms"
    )
    if "cross" in result:
        cross = result["cross"]
        text += (
            f"\n{'':7} across servers p50: on {cross['on_p50_ms']:.2f} ms, off"
            f" {cross['off_p50_ms']:.2f} ms: {cross['ratio_p50']:.2f}x"
        )
    return text


async def main(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    targets = [("memory", None)] + ([("redis", args.redis)] if args.redis else [])
    for name, redis in targets:
        result = {
            "emit": await emit_cost(redis, args.emits, args.rounds),
            "recover": await recover_time(redis, args.resumes, 300),
        }
        if redis is not None:
            result["cross"] = await cross_server(redis, args.resumes)
        results[name] = result
        print(_line(name, result), flush=True)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--redis", help="a Redis URL: also measure the Redis history")
    parser.add_argument("--emits", type=int, default=2000, help="emits per round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--resumes", type=int, default=200, help="resumes measured")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    results = anyio.run(main, args)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)
