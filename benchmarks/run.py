"""Measure chatrelay against the bare transports and Node's socket.io, side by side.

    .venv/bin/python benchmarks/run.py                 # the full run (~25 minutes)
    .venv/bin/python benchmarks/run.py --smoke         # seconds; what CI runs

Runs every server on the same workload, in one session, repetitions interleaved, and
prints each figure (the median over repetitions) and each ratio (the median of the
ratios within a repetition). See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Coroutine, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any, Final

HERE: Final = Path(__file__).resolve().parent
ROOT: Final = HERE.parent
NODE_DIR: Final = HERE / "node"
CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
PAGE_SIZE: Final = os.sysconf("SC_PAGE_SIZE")

SERVER_CORE: Final = 0
CLIENT_CORE: Final = 1


@dataclass(frozen=True)
class Server:
    name: str
    client: str  # the load generator's kind of client: "socketio" or "websocket"
    node: bool = False
    # (d): two processes of `kind` sharing a Redis; it runs the fan-out scenario only.
    cluster: bool = False
    # A chatrelay server run from another source tree (``--baseline DIR``): before/after.
    src: str | None = None

    @property
    def kind(self) -> str:
        return self.name.removesuffix("-redis").removesuffix("@baseline")


SERVERS: dict[str, Server] = {
    s.name: s
    for s in (
        Server("chatrelay-websocket", "websocket"),
        Server("starlette", "websocket"),
        Server("chatrelay-socketio", "socketio"),
        Server("socketio", "socketio"),
        Server("node-socketio", "socketio", node=True),
        Server("chatrelay-websocket-redis", "websocket", cluster=True),
    )
}

# (figure's server, baseline server): the comparisons the targets are about.
PAIRS: tuple[tuple[str, str], ...] = (
    ("chatrelay-websocket", "starlette"),
    ("chatrelay-websocket", "node-socketio"),
    ("chatrelay-socketio", "socketio"),
    ("chatrelay-socketio", "node-socketio"),
    ("chatrelay-websocket-redis", "chatrelay-websocket"),
)


@dataclass(frozen=True)
class Profile:
    """How much of everything a run does."""

    repetitions: int = 5
    compression: tuple[str, ...] = ("off", "on")
    # Scenarios run with compression on; with it off, all of them run (unless
    # `scenarios` says otherwise, for every mode).
    compressed_scenarios: tuple[str, ...] = ("fanout",)
    scenarios: tuple[str, ...] | None = None
    servers: tuple[str, ...] = tuple(SERVERS)
    # (a) fan-out: one room.
    fanout_clients: int = 100
    fanout_count: int = 1000
    # (b) many rooms, whose connections are also (c)'s idle ones.
    rooms: int = 1000
    per_room: int = 10
    rooms_count: int = 5000
    # Deliveries in flight at most (sent, not yet reported delivered to every recipient).
    window_deliveries: int = 2000
    # Latency: broadcasts at a fixed rate of deliveries per second, for this long.
    latency_rate: float = 10_000
    latency_seconds: float = 2.0
    warmup_count: int = 100
    # (c) idle connections.
    # A full heartbeat cycle of every stack (uvicorn pings every 20 s, engine.io every
    # 25 s): a shorter window says more about when the clients connected than about
    # what idle connections cost.
    idle_seconds: float = 25.0
    settle_seconds: float = 2.0
    connect_concurrency: int = 100
    timeout: float = 120.0
    # How the Python servers run: uvicorn's WebSocket implementation and event loop.
    ws: str = "websockets-sansio"
    loop: str = "asyncio"


SMOKE: Final = Profile(
    repetitions=1,
    compression=("off", "on"),
    fanout_clients=4,
    fanout_count=20,
    rooms=3,
    per_room=2,
    rooms_count=30,
    window_deliveries=8,
    latency_rate=400,
    latency_seconds=0.25,
    warmup_count=4,
    idle_seconds=0.3,
    settle_seconds=0.1,
    connect_concurrency=4,
    timeout=20.0,
)

# Each figure: (key, label, unit, higher is better).
FIGURES: Final = (
    ("fanout_rate", "(a) fan-out, 1 room: deliveries per server-CPU-second", "/s", True),
    ("fanout_p50", "(a) latency p50 at the fixed rate", "ms", False),
    ("fanout_p99", "(a) latency p99 at the fixed rate", "ms", False),
    ("fanout_remote_p99", "(d) latency p99 of the clients on the other server", "ms", False),
    ("rooms_rate", "(b) many rooms: deliveries per server-CPU-second", "/s", True),
    ("rooms_p50", "(b) latency p50 at the fixed rate", "ms", False),
    ("rooms_p99", "(b) latency p99 at the fixed rate", "ms", False),
    ("idle_kib", "(c) memory per idle connection", "KiB", False),
    ("idle_cpu", "(c) server CPU with every connection idle", "%", False),
    ("fanout_load_cpu", "(a) load generator CPU during the rate run", "%", False),
    ("rooms_load_cpu", "(b) load generator CPU during the rate run", "%", False),
    ("fanout_gc", "(a) server CPU in garbage collection during the rate run", "%", False),
    ("rooms_gc", "(b) server CPU in garbage collection during the rate run", "%", False),
)
SCENARIO_FIGURES: Final = {
    "fanout": ("fanout_rate", "fanout_p50", "fanout_p99"),
    "rooms": ("rooms_rate", "rooms_p50", "rooms_p99", "idle_kib", "idle_cpu"),
}


class BenchmarkError(RuntimeError):
    pass


# --- processes -------------------------------------------------------------------------


def pinned(core: int, argv: Sequence[str]) -> list[str]:
    """``argv`` pinned to one core with taskset, when there is a second core to spare."""
    if shutil.which("taskset") and (os.cpu_count() or 1) > max(SERVER_CORE, CLIENT_CORE):
        return ["taskset", "-c", str(core), *argv]
    return list(argv)


def raise_fd_limit() -> None:
    # 10,000 connections need as many descriptors, in the server and in the load
    # generator; children inherit the limit.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Process:
    """A child speaking JSON lines, in a process group of its own, always killed."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.name = name
        self.proc = proc
        self.log = log

    @classmethod
    @asynccontextmanager
    async def run(cls, name: str, argv: Sequence[str], log: Path) -> AsyncIterator[Process]:
        with log.open("ab") as stderr:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
                cwd=ROOT,
                start_new_session=True,
                limit=1 << 20,
            )
        try:
            yield cls(name, proc, log)
        finally:
            await cls._stop(proc)

    @staticmethod
    async def _stop(proc: asyncio.subprocess.Process) -> None:
        if proc.returncode is None and proc.stdin is not None:
            proc.stdin.close()  # asks it to exit
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 3)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if proc.returncode is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 3)
        # Anything it left in its group goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    def send(self, command: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(command) + "\n").encode())

    async def receive(self, within: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), within)
        except TimeoutError:
            raise BenchmarkError(f"{self.name}: no answer within {within:g}s") from None
        if not line:
            tail = self.log.read_text(errors="replace")[-2000:]
            raise BenchmarkError(f"{self.name} exited; its log ends with:\n{tail}")
        message: dict[str, Any] = json.loads(line)
        return message

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process (all its threads), from /proc."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        # Fields 14 and 15 of stat(5); the split starts at field 3.
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def rss_bytes(self) -> int:
        with open(f"/proc/{self.proc.pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE_SIZE


def server_argv(
    profile: Profile, server: Server, compressed: bool, redis: str | None = None
) -> list[str]:
    if server.node:
        config = json.dumps({"compression": compressed})
        return pinned(SERVER_CORE, ["node", str(NODE_DIR / "server.mjs"), config])
    argv = [sys.executable, str(HERE / "server.py"), server.kind]
    if server.src is not None:  # that tree's chatrelay, this tree's harness
        argv = ["env", f"PYTHONPATH={server.src}", *argv]
    argv += ["--ws", profile.ws, "--loop", profile.loop]
    if compressed:
        argv.append("--compression")
    if redis is not None:
        argv += ["--redis", redis]
    return pinned(SERVER_CORE, argv)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@asynccontextmanager
async def redis_server(logs: Path) -> AsyncIterator[str]:
    """A throwaway redis-server on a free port (with the load generator's core)."""
    port = free_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1"]
    argv += ["--save", "", "--appendonly", "no"]
    async with Process.run("redis", pinned(CLIENT_CORE, argv), logs / "redis.log"):
        deadline = time.monotonic() + 10
        while True:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"PING\r\n")
                pong = await asyncio.wait_for(reader.readline(), 1)
                writer.close()
                if pong.startswith(b"+PONG"):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise BenchmarkError("redis-server did not answer within 10 s")
            await asyncio.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"


def install_node_packages() -> None:
    """``npm ci`` in benchmarks/node unless its node_modules matches the lock file."""
    lock = NODE_DIR / "package-lock.json"
    installed = NODE_DIR / "node_modules" / ".package-lock.json"
    if installed.exists() and installed.stat().st_mtime >= lock.stat().st_mtime:
        return
    npm = shutil.which("npm")
    if npm is None:
        raise BenchmarkError("the benchmarks need Node.js and npm (Node's server and clients)")
    subprocess.run(
        [npm, "ci", "--prefix", str(NODE_DIR), "--silent", "--no-audit", "--no-fund"],
        check=True,
        timeout=300,
    )


# --- one server, one repetition --------------------------------------------------------


@dataclass
class Session:
    profile: Profile
    server: Server
    compressed: bool
    proc: Process
    load: Process
    port: int
    feedback_port: int
    # (d): the second server, which the broadcasts reach through Redis.
    peer: Process | None = None
    peer_port: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu_seconds(self) -> float:
        """The CPU time of the server, or of both servers of a cluster."""
        peer = self.peer.cpu_seconds() if self.peer is not None else 0.0
        return self.proc.cpu_seconds() + peer

    async def connect(self, clients: int, rooms: int, *, peer: bool = False) -> None:
        p = self.profile
        self.load.send(
            {
                "op": "connect",
                "kind": self.server.client,
                "url": f"http://127.0.0.1:{self.peer_port}" if peer else self.url,
                "clients": clients,
                "rooms": rooms,
                "compression": self.compressed,
                "concurrency": p.connect_concurrency,
                "timeout": min(p.timeout, 30),
                "group": 1 if peer else 0,
            }
        )
        reply = await self.load.receive(p.timeout)
        if reply["failed"]:
            raise BenchmarkError(
                f"{self.server.name}: {reply['failed']} of {clients} clients failed to"
                f" connect: {reply['errors']}"
            )

    async def close(self) -> None:
        self.load.send({"op": "close"})
        await self.load.receive(self.profile.timeout)

    async def broadcast(
        self, *, rooms: int, per_room: int, count: int, rate: float | None
    ) -> tuple[dict[str, Any], float, float, float | None]:
        """Run the server's loop once.

        Returns the clients' report, the server's CPU seconds, the load generator's
        share of its core (%: near 100, the clients set the pace, not the server) and
        the server's seconds in garbage collection (``None`` for Node's).
        """
        p = self.profile
        window = max(1, p.window_deliveries // per_room)
        self.load.send(
            {
                "op": "expect",
                "count": count,
                "rooms": rooms,
                "perRoom": per_room,
                "feedbackPort": self.feedback_port,
                "step": max(1, window // 4),
                "timeout": p.timeout,
            }
        )
        await self.load.receive(p.timeout)
        cpu = self.cpu_seconds()
        load_cpu, started = self.load.cpu_seconds(), time.monotonic()
        self.proc.send(
            {
                "op": "fanout",
                "rooms": rooms,
                "count": count,
                "rate": rate,
                "window": window,
                "timeout": p.timeout,
            }
        )
        done = await self.proc.receive(p.timeout + 10)
        report = await self.load.receive(p.timeout + 10)
        cpu = self.cpu_seconds() - cpu
        load_share = (self.load.cpu_seconds() - load_cpu) / (time.monotonic() - started) * 100
        if done["error"] or report["outcome"] != "ok" or report["disconnects"]:
            raise BenchmarkError(f"{self.server.name}: broadcasts failed: {done} {report}")
        gc = done.get("gc")  # Node's server reports none
        return report, cpu, load_share, None if gc is None else float(gc["seconds"])

    async def throughput_and_latency(
        self, prefix: str, *, rooms: int, per_room: int, count: int
    ) -> dict[str, float]:
        p = self.profile
        await self.broadcast(rooms=rooms, per_room=per_room, count=p.warmup_count, rate=None)
        report, cpu, load_share, gc_seconds = await self.broadcast(
            rooms=rooms, per_room=per_room, count=count, rate=None
        )
        rate = p.latency_rate / per_room  # broadcasts per second
        timed, _, _, _ = await self.broadcast(
            rooms=rooms,
            per_room=per_room,
            count=max(1, round(rate * p.latency_seconds)),
            rate=rate,
        )
        figures = {
            f"{prefix}_rate": report["deliveries"] / max(cpu, 1 / CLOCK_TICKS),
            f"{prefix}_p50": timed["latency"]["p50"],
            f"{prefix}_p99": timed["latency"]["p99"],
            f"{prefix}_load_cpu": load_share,
        }
        if gc_seconds is not None:
            figures[f"{prefix}_gc"] = gc_seconds / max(cpu, 1 / CLOCK_TICKS) * 100
        if timed["remote"] is not None:
            figures[f"{prefix}_remote_p99"] = timed["remote"]["p99"]
        return figures

    async def fanout(self) -> dict[str, float]:
        p = self.profile
        if self.peer is None:
            await self.connect(p.fanout_clients, 1)
        else:
            # (d): half the room on each server; the loop runs on the first one.
            await self.connect(p.fanout_clients // 2, 1)
            await self.connect(p.fanout_clients - p.fanout_clients // 2, 1, peer=True)
        try:
            return await self.throughput_and_latency(
                "fanout", rooms=1, per_room=p.fanout_clients, count=p.fanout_count
            )
        finally:
            await self.close()

    async def rooms(self) -> dict[str, float]:
        """(b) and (c): connect rooms x per_room idle clients, measure, then broadcast."""
        p = self.profile
        clients = p.rooms * p.per_room
        await asyncio.sleep(p.settle_seconds)
        rss = self.proc.rss_bytes()
        await self.connect(clients, p.rooms)
        try:
            await asyncio.sleep(p.settle_seconds)
            idle_kib = (self.proc.rss_bytes() - rss) / clients / 1024
            cpu = self.proc.cpu_seconds()
            started = time.monotonic()
            await asyncio.sleep(p.idle_seconds)
            idle_cpu = (self.proc.cpu_seconds() - cpu) / (time.monotonic() - started) * 100
            figures = await self.throughput_and_latency(
                "rooms", rooms=p.rooms, per_room=p.per_room, count=p.rooms_count
            )
        finally:
            await self.close()
        return {**figures, "idle_kib": idle_kib, "idle_cpu": idle_cpu}


async def start_profiler(proc: Process, out: Path, logs: Path) -> None:
    """Sample the server with py-spy until it exits (collapsed stacks, for flame graphs)."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    argv = [py_spy, "record", "--pid", str(proc.proc.pid), "--format", "raw"]
    argv += ["--output", str(out), "--rate", "250", "--nonblocking"]
    with (logs / "py-spy.log").open("ab") as log:
        # It stops by itself, and writes its file, when the server exits.
        await asyncio.create_subprocess_exec(*pinned(CLIENT_CORE, argv), stdout=log, stderr=log)


async def measure(
    profile: Profile,
    server: Server,
    compressed: bool,
    scenarios: Iterable[str],
    logs: Path,
    profile_dir: Path | None = None,
) -> dict[str, float]:
    label = f"{server.name}-{'on' if compressed else 'off'}"
    load_argv = pinned(CLIENT_CORE, ["node", str(NODE_DIR / "load.mjs")])
    async with contextlib.AsyncExitStack() as stack:
        redis = await stack.enter_async_context(redis_server(logs)) if server.cluster else None
        argv = server_argv(profile, server, compressed, redis)
        proc = await stack.enter_async_context(Process.run(label, argv, logs / f"{label}.log"))
        peer = None
        if server.cluster:
            peer_log = logs / f"{label}-peer.log"
            peer = await stack.enter_async_context(Process.run(f"{label} peer", argv, peer_log))
        load_log = logs / f"load-{label}.log"
        load = await stack.enter_async_context(
            Process.run(f"load for {label}", load_argv, load_log)
        )
        ready = await proc.receive(30)
        if profile_dir is not None and not server.node:
            await start_profiler(proc, profile_dir / f"{label}.txt", logs)
        session = Session(
            profile, server, compressed, proc, load, ready["port"], ready["feedbackPort"]
        )
        if peer is not None:
            session.peer = peer
            session.peer_port = (await peer.receive(30))["port"]
        figures: dict[str, float] = {}
        for scenario in scenarios:
            if server.cluster and scenario != "fanout":
                continue
            figures.update(await getattr(session, scenario)())
        return figures
    raise AssertionError("unreachable")  # the stack does not swallow exceptions


# --- the run ---------------------------------------------------------------------------


@dataclass
class Results:
    profile: Profile
    command: str
    environment: dict[str, Any]
    # samples[compression][server][figure] = one value per repetition
    samples: dict[str, dict[str, dict[str, list[float]]]] = field(default_factory=dict)
    seconds: float = 0.0

    def medians(self, mode: str) -> dict[str, dict[str, float]]:
        return {
            server: {key: statistics.median(values) for key, values in figures.items()}
            for server, figures in self.samples.get(mode, {}).items()
        }

    def ratios(self, mode: str) -> dict[str, dict[str, float]]:
        """For each pair, the median over repetitions of the ratio within each one."""
        return {
            pair: {key: statistics.median(values) for key, values in figures.items()}
            for pair, figures in self.same_run_ratios(mode).items()
        }

    def spreads(self, mode: str) -> dict[str, dict[str, tuple[float, float]]]:
        """For each pair, the lowest and highest of the ratios within one repetition."""
        return {
            pair: {key: (min(values), max(values)) for key, values in figures.items()}
            for pair, figures in self.same_run_ratios(mode).items()
        }

    def same_run_ratios(self, mode: str) -> dict[str, dict[str, list[float]]]:
        """For each pair and figure, the ratio measured within each repetition."""
        samples = self.samples.get(mode, {})
        out: dict[str, dict[str, list[float]]] = {}
        for a, b in PAIRS:
            if a not in samples or b not in samples:
                continue
            pair: dict[str, list[float]] = {}
            for key in samples[a]:
                xs, ys = samples[a][key], samples[b].get(key, [])
                ratios = [x / y for x, y in zip(xs, ys, strict=False) if y]
                if ratios:
                    pair[key] = ratios
            out[f"{a} / {b}"] = pair
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Results:
        profile = data["profile"]
        for key, value in profile.items():
            if isinstance(value, list):
                profile[key] = tuple(value)
        results = cls(Profile(**profile), data["command"], data["environment"], data["samples"])
        results.seconds = data["seconds"]
        return results

    def to_json(self) -> dict[str, Any]:
        modes = list(self.samples)
        return {
            "command": self.command,
            "environment": self.environment,
            "profile": asdict(self.profile),
            "seconds": self.seconds,
            "samples": self.samples,
            "medians": {mode: self.medians(mode) for mode in modes},
            "ratios": {mode: self.ratios(mode) for mode in modes},
            "spreads": {mode: self.spreads(mode) for mode in modes},
            "targets": {mode: targets(self, mode) for mode in modes},
        }


def plan(profile: Profile) -> list[tuple[str, tuple[str, ...]]]:
    out = []
    for mode in profile.compression:
        scenarios = ("fanout", "rooms") if mode == "off" else profile.compressed_scenarios
        scenarios = profile.scenarios or scenarios
        out.append((mode, scenarios))
    return out


async def run(
    profile: Profile, logs: Path, command: str, *, seed: int, profile_dir: Path | None = None
) -> Results:
    results = Results(profile, command, environment())
    started = time.monotonic()
    rng = random.Random(seed)
    for rep in range(profile.repetitions):
        for mode, scenarios in plan(profile):
            # Interleaved: every server once per repetition, in a new order each time.
            # (d) is about the backplane: it runs with compression off only.
            order = [s for s in profile.servers if mode == "off" or not SERVERS[s].cluster]
            rng.shuffle(order)
            for name in order:
                t0 = time.monotonic()
                figures = await measure(
                    profile, SERVERS[name], mode == "on", scenarios, logs, profile_dir
                )
                per_server = results.samples.setdefault(mode, {}).setdefault(name, {})
                for key, value in figures.items():
                    per_server.setdefault(key, []).append(value)
                print(
                    f"[{rep + 1}/{profile.repetitions}] compression {mode:3} {name:20}"
                    f" {time.monotonic() - t0:5.1f}s  "
                    + "  ".join(f"{k}={v:.4g}" for k, v in figures.items()),
                    file=sys.stderr,
                    flush=True,
                )
    results.seconds = time.monotonic() - started
    return results


# --- targets and reports ---------------------------------------------------------------

# (pair, figure, bound, "min" or "max"): the targets, as ratios in one run.
TARGETS: Final = (
    ("chatrelay-websocket / starlette", "fanout_rate", 0.9, "min"),
    ("chatrelay-websocket / starlette", "rooms_rate", 0.9, "min"),
    ("chatrelay-websocket / node-socketio", "fanout_rate", 1.0, "min"),
    ("chatrelay-websocket / node-socketio", "rooms_rate", 1.0, "min"),
    ("chatrelay-websocket / starlette", "fanout_p99", 1.2, "max"),
    ("chatrelay-websocket / starlette", "rooms_p99", 1.2, "max"),
    ("chatrelay-socketio / socketio", "fanout_rate", 2.0, "min"),
    ("chatrelay-socketio / socketio", "rooms_rate", 2.0, "min"),
    ("chatrelay-socketio / socketio", "fanout_p99", 1.0, "max"),
    ("chatrelay-socketio / socketio", "rooms_p99", 1.0, "max"),
    ("chatrelay-websocket / starlette", "idle_kib", 1.1, "max"),
    ("chatrelay-websocket / starlette", "idle_cpu", 2.0, "max"),
)


def targets(results: Results, mode: str) -> list[dict[str, Any]]:
    ratios = results.ratios(mode)
    out = []
    for pair, key, bound, kind in TARGETS:
        value = ratios.get(pair, {}).get(key)
        if value is None:
            continue
        met = value >= bound if kind == "min" else value <= bound
        out.append({"pair": pair, "figure": key, "ratio": value, "bound": bound, "kind": kind,
                    "met": met})  # fmt: skip
    return out


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if unit == "/s":
        return f"{value:,.0f}"
    if unit == "%":
        return f"{value:.1f} %"
    return f"{value:.2f}" if value < 100 else f"{value:,.0f}"


def markdown(results: Results) -> str:
    lines = []
    for mode in results.samples:
        medians = results.medians(mode)
        servers = [s for s in results.profile.servers if s in medians]
        lines += [
            f"#### Per-message compression {mode}",
            "",
            "| figure (median) | " + " | ".join(servers) + " |",
            "|---|" + "---:|" * len(servers),
        ]
        for key, label, unit, _ in FIGURES:
            if not any(key in medians[s] for s in servers):
                continue
            cells = [_fmt(medians[s].get(key), unit) for s in servers]
            lines.append(f"| {label} ({unit}) | " + " | ".join(cells) + " |")
        ratios, spreads = results.ratios(mode), results.spreads(mode)
        pairs = [p for p in ratios if ratios[p]]
        lines += [
            "",
            "| ratio: median of same-run ratios (lowest to highest) | " + " | ".join(pairs) + " |",
            "|---|" + "---:|" * len(pairs),
        ]
        for key, label, _, _ in FIGURES:
            if any(key in ratios[p] for p in pairs):
                cells = [
                    f"{ratios[p][key]:.2f}x ({spreads[p][key][0]:.2f} to {spreads[p][key][1]:.2f})"
                    if key in ratios[p]
                    else "-"
                    for p in pairs
                ]
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
        checks = targets(results, mode)
        if checks:
            lines += ["", "| target | ratio | met |", "|---|---:|:---:|"]
            for t in checks:
                sign = ">=" if t["kind"] == "min" else "<="
                lines.append(
                    f"| {t['pair']}, {t['figure']} {sign} {t['bound']}x | {t['ratio']:.2f}x |"
                    f" {'yes' if t['met'] else '**no**'} |"
                )
        lines.append("")
    return "\n".join(lines)


def plot(results: Results, path: Path) -> None:
    """Bars of each figure per server (compression off), as a PNG; needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    medians = results.medians("off")
    servers = [s for s in results.profile.servers if s in medians]
    keys = [f for f in FIGURES if any(f[0] in medians[s] for s in servers)]
    cols = 4
    rows = (len(keys) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows), squeeze=False)
    colors = {
        "chatrelay-websocket": "#1f77b4",
        "starlette": "#aec7e8",
        "chatrelay-socketio": "#d62728",
        "socketio": "#ff9896",
        "node-socketio": "#2ca02c",
        "chatrelay-websocket-redis": "#9467bd",
    }
    for ax, (key, label, unit, higher) in zip(axes.flat, keys, strict=False):
        names = [s for s in servers if key in medians[s]]
        values = [medians[s][key] for s in names]
        ax.bar(range(len(names)), values, color=[colors.get(s, "gray") for s in names])
        ax.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=8)
        better = "higher" if higher else "lower"
        scale = ""
        if unit == "ms":
            # A saturated server's latency is seconds, the others' milliseconds.
            ax.set_yscale("log")
            scale = ", log scale"
        ax.set_title(f"{label}\n({unit}{scale}, {better} is better)", fontsize=8)
        ax.tick_params(axis="y", labelsize=8)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    fig.suptitle(
        "chatrelay vs bare transports and Node socket.io (medians, compression off)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def environment() -> dict[str, Any]:
    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    def node_version(package: str) -> str | None:
        try:
            data = json.loads((NODE_DIR / "node_modules" / package / "package.json").read_text())
        except OSError:
            return None
        return str(data["version"])

    def run(*argv: str) -> str | None:
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10, cwd=ROOT)
        except OSError:
            return None
        return out.stdout.strip() or None

    cpu = None
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.partition(":")[2].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "node": run("node", "--version"),
        "chatrelay": run("git", "describe", "--always", "--dirty"),
        "pinned": pinned(SERVER_CORE, ["x"])[0] == "taskset",
        "packages": {
            name: version(name)
            for name in (
                "python-socketio",
                "python-engineio",
                "starlette",
                "uvicorn",
                "websockets",
                "anyio",
                "uvloop",
            )
        }
        | {f"npm:{name}": node_version(name) for name in ("socket.io", "socket.io-client", "ws")},
    }


def add_baseline(src: Path) -> None:
    """Add NAME@baseline for each chatrelay server, run from ``src``, and its pairs."""
    global PAIRS
    for name in ("chatrelay-websocket", "chatrelay-socketio"):
        base = f"{name}@baseline"
        SERVERS[base] = Server(base, SERVERS[name].client, src=str(src))
        PAIRS = (*PAIRS, (name, base))


async def stoppable(main: Coroutine[Any, Any, Results]) -> Results:
    """Run ``main``, cancelled by SIGTERM or SIGINT, so that its children are killed.

    (A background job ignores SIGINT, and SIGTERM would end Python at once.)
    """
    task = asyncio.ensure_future(main)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    return await task


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny numbers: checks it runs")
    parser.add_argument("--repetitions", type=int, help="interleaved repetitions (default 5)")
    baselines = ["chatrelay-websocket@baseline", "chatrelay-socketio@baseline"]
    parser.add_argument("--servers", nargs="+", choices=[*SERVERS, *baselines], help="default: all")
    parser.add_argument(
        "--compression", nargs="+", choices=["off", "on"], help="default: off, then on"
    )
    parser.add_argument(
        "--scenarios",
        nargs="+",
        choices=["fanout", "rooms"],
        help="default: all with compression off, fanout with it on",
    )
    parser.add_argument("--idle-seconds", type=float, help="the idle window (default 25)")
    parser.add_argument("--json", type=Path, help="write every sample and figure here")
    parser.add_argument("--markdown", type=Path, help="write the tables here")
    parser.add_argument("--plot", type=Path, help="write a PNG of the figures (matplotlib)")
    parser.add_argument("--logs", type=Path, default=HERE / "logs", help="servers' logs")
    parser.add_argument(
        "--profile", type=Path, help="sample the Python servers with py-spy, into this folder"
    )
    parser.add_argument(
        "--from-json", type=Path, help="measure nothing: report the results in this file"
    )
    parser.add_argument("--seed", type=int, default=0, help="of the interleaving order")
    parser.add_argument(
        "--ws", help="uvicorn's WebSocket implementation (default websockets-sansio)"
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="DIR",
        help="also run chatrelay's servers from this checkout (its src/), as NAME@baseline:"
        " a before/after comparison in the same run (e.g. a git worktree of the base)",
    )
    parser.add_argument(
        "--loop", choices=["asyncio", "uvloop"], help="the Python servers' event loop"
    )
    args = parser.parse_args(argv)

    if args.baseline:
        add_baseline(args.baseline.resolve() / "src")
    profile = SMOKE if args.smoke else Profile()
    if args.repetitions:
        profile = replace(profile, repetitions=args.repetitions)
    if args.servers:
        profile = replace(profile, servers=tuple(args.servers))
    elif args.baseline:
        profile = replace(profile, servers=tuple(SERVERS))
    if any(name.endswith("@baseline") for name in profile.servers) and not args.baseline:
        parser.error("the @baseline servers need --baseline DIR")
    if args.compression:
        profile = replace(profile, compression=tuple(args.compression))
    if args.scenarios:
        profile = replace(profile, scenarios=tuple(args.scenarios))
    if args.idle_seconds:
        profile = replace(profile, idle_seconds=args.idle_seconds)
    if args.ws:
        profile = replace(profile, ws=args.ws)
    if args.loop:
        profile = replace(profile, loop=args.loop)

    if "chatrelay-websocket-redis" in profile.servers and not shutil.which("redis-server"):
        print("no redis-server: scenario (d) is left out", file=sys.stderr)
        servers = tuple(s for s in profile.servers if s != "chatrelay-websocket-redis")
        profile = replace(profile, servers=servers)
    if args.from_json:
        results = Results.from_json(json.loads(args.from_json.read_text()))
    else:
        raise_fd_limit()
        install_node_packages()
        args.logs.mkdir(parents=True, exist_ok=True)
        command = shlex.join(["python", "benchmarks/run.py", *(argv or sys.argv[1:])])
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
        results = asyncio.run(
            stoppable(run(profile, args.logs, command, seed=args.seed, profile_dir=args.profile))
        )

    text = markdown(results)
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    if args.json:
        args.json.write_text(json.dumps(results.to_json(), indent=2) + "\n")
    if args.plot:
        plot(results, args.plot)
    print(f"done in {results.seconds:.0f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
