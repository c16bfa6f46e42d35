"""Real servers and real clients for the Socket.IO adapter's tests (asyncio only).

`serving()` runs a relay, the adapter and uvicorn on a loopback port; `connect()` opens
a client of one kind on it: python-socketio's `AsyncClient`, or the official JavaScript
`socket.io-client` run by Node (tests/js/client.mjs). Both kinds offer one interface, so
a scenario is written once and run with each.
"""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlencode

import aiohttp
import anyio
import attrs
import socketio
import uvicorn
from anyio.abc import Process, TaskGroup
from anyio.streams.buffered import BufferedByteReceiveStream

from chatrelay import Authenticator, Relay, RelayConfig
from chatrelay.adapters.socketio import ASGIApp, SocketIOAdapter

NAMESPACE: Final = "/messages"
TIMEOUT: Final = 10.0
JS_DIR: Final = Path(__file__).parent / "js"

RECONNECTION_DELAY_MAX: Final = 0.5
"""The official client's ``reconnectionDelayMax`` in tests (client.mjs), in seconds."""

ClientKind = Literal["python", "js"]
CLIENT_KINDS: Final[list[ClientKind]] = ["python", "js"]


@contextmanager
def _single_errors() -> Iterator[None]:
    """Raise a task group's only error as itself, so tests can expect it as usual."""
    try:
        yield
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


@asynccontextmanager
async def serve_app(
    app: ASGIApp, *, lifespan: bool = False, keepalive: float = 20.0
) -> AsyncIterator[str]:
    """Serve an ASGI app with uvicorn on 127.0.0.1 and yield its base URL.

    The listening socket is bound before uvicorn starts, so clients may connect at
    once: the kernel queues them until uvicorn accepts (after the app's startup, with
    ``lifespan``). ``keepalive`` is uvicorn's WebSocket ping interval and timeout
    (its default, 20 s).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="on" if lifespan else "off",
        ws="websockets-sansio",
        ws_ping_interval=keepalive,
        ws_ping_timeout=keepalive,
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    with sock, _single_errors():
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            try:
                yield f"http://127.0.0.1:{port}"
            finally:
                # serve() checks should_exit when it starts, too; bound its shutdown.
                server.should_exit = True
                tg.cancel_scope.deadline = anyio.current_time() + TIMEOUT
        if tg.cancel_scope.cancelled_caught:
            raise TimeoutError("uvicorn did not stop in time")


@attrs.define
class Served:
    """A running relay, its Socket.IO adapter, and the URL of the server."""

    relay: Relay
    adapter: SocketIOAdapter
    url: str


@asynccontextmanager
async def serving(
    *,
    config: RelayConfig | None = None,
    authenticator: Authenticator | None = None,
    allowed_origins: str | Sequence[str] | None = None,
    keepalive: float | None = None,
    **relay_options: Any,
) -> AsyncIterator[Served]:
    """Run a relay behind a Socket.IO adapter behind uvicorn; leaving stops all three.

    ``keepalive`` (seconds), when given, replaces both heartbeats' defaults: engine.io's
    ping interval and timeout (25 s, 20 s) and uvicorn's WebSocket ping (20 s). A
    client that far behind in reading is closed by them whatever the relay does.
    """
    relay = Relay(config=config, authenticator=authenticator, **relay_options)
    adapter = SocketIOAdapter(relay, allowed_origins=allowed_origins)
    if keepalive is not None:
        adapter.server.eio.ping_interval = adapter.server.eio.ping_timeout = keepalive
    uvicorn_keepalive = 20.0 if keepalive is None else keepalive
    async with relay, adapter, serve_app(adapter.asgi_app(), keepalive=uvicorn_keepalive) as url:
        yield Served(relay, adapter, url)


class Refused(Exception):
    """The server refused the connection; `data` is the connect error's `data`."""

    def __init__(self, message: str, data: Any) -> None:
        super().__init__(message)
        self.message = message
        self.data = data


@attrs.define(eq=False)
class Received:
    """An event a client received.

    `wants_ack` is None for the Python client, which cannot tell: it acks every
    event that asks, when its handler returns (see `PyClient`).
    """

    event: str
    data: Any
    wants_ack: bool | None
    seq: int = 0
    gate: anyio.Event = attrs.Factory(anyio.Event)


class Client:
    """What both kinds of client offer a test."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self._pending: list[Received] = []
        self._changed = anyio.Event()
        self.disconnect_reason: str | None = None

    def _record(self, received: Received) -> None:
        self.received.append(received)
        self._pending.append(received)
        self._notify()

    def _notify(self) -> None:
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    async def receive(self, event: str) -> Received:
        """Return the next event of that name not returned yet (others stay)."""
        with anyio.fail_after(TIMEOUT):
            while True:
                for index, candidate in enumerate(self._pending):
                    if candidate.event == event:
                        del self._pending[index]
                        return candidate
                if self.disconnect_reason is not None:
                    raise AssertionError(
                        f"disconnected ({self.disconnect_reason}) before {event!r} arrived"
                    )
                await self._changed.wait()

    def events(self, event: str) -> list[Any]:
        """The payloads of every event of that name received so far."""
        return [r.data for r in self.received if r.event == event]

    async def disconnected(self) -> str:
        """Wait until the server disconnects this client; return the reason."""
        with anyio.fail_after(TIMEOUT):
            while self.disconnect_reason is None:
                await self._changed.wait()
        return self.disconnect_reason

    async def request(self, event: str, *args: Any) -> Any:
        """Emit an event with an ack callback and return what the server acked."""
        raise NotImplementedError

    async def emit(self, event: str, *args: Any) -> None:
        """Emit an event without asking for an ack."""
        raise NotImplementedError

    async def ack(self, received: Received) -> None:
        """Call the ack callback of an event (the client's app acknowledging it)."""
        raise NotImplementedError


class PyClient(Client):
    """python-socketio's AsyncClient.

    It answers an event that asks for an ack when the handler returns; without
    `auto_ack` the handler waits for `ack()`, so the test decides when.
    """

    def __init__(self, *, auto_ack: bool, namespace: str = NAMESPACE) -> None:
        super().__init__()
        self._auto_ack = auto_ack
        self.namespace = namespace
        self.sio = socketio.AsyncClient(reconnection=False)
        self.sio.on("*", self._on_event, namespace=namespace)
        self.sio.on("disconnect", self._on_disconnect, namespace=namespace)
        self.sio.on("connect_error", self._on_connect_error, namespace=namespace)
        self._refusal: Any = None

    async def _on_event(self, event: str, *args: Any) -> None:
        received = Received(event, args[0] if len(args) == 1 else list(args), None)
        self._record(received)
        if not self._auto_ack:
            await received.gate.wait()

    async def _on_disconnect(self, reason: str = "") -> None:
        self.disconnect_reason = reason or "disconnected"
        for received in self.received:
            received.gate.set()
        self._notify()

    async def _on_connect_error(self, data: Any = None) -> None:
        self._refusal = data

    async def open(
        self,
        url: str,
        *,
        auth: Mapping[str, Any] | None,
        transports: list[str] | None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        try:
            with anyio.fail_after(TIMEOUT):
                await self.sio.connect(
                    url,
                    headers=dict(headers or {}),
                    namespaces=[self.namespace],
                    auth=dict(auth) if auth is not None else None,
                    transports=transports,
                    wait_timeout=TIMEOUT,
                )
        except socketio.exceptions.ConnectionError as exc:
            refusal = self._refusal if isinstance(self._refusal, dict) else {}
            raise Refused(refusal.get("message", str(exc)), refusal.get("data")) from None

    async def close(self) -> None:
        with anyio.fail_after(TIMEOUT, shield=True):
            await self.sio.disconnect()
            for received in self.received:
                received.gate.set()

    async def request(self, event: str, *args: Any) -> Any:
        data = args[0] if len(args) == 1 else tuple(args)
        with anyio.fail_after(TIMEOUT):
            return await self.sio.call(event, data, namespace=self.namespace, timeout=TIMEOUT)

    async def emit(self, event: str, *args: Any) -> None:
        data = args[0] if len(args) == 1 else tuple(args)
        await self.sio.emit(event, data, namespace=self.namespace)

    async def ack(self, received: Received) -> None:
        received.gate.set()


class JsClient(Client):
    """The official socket.io-client v4 in a Node process (tests/js/client.mjs)."""

    def __init__(self, process: Process, tg: TaskGroup) -> None:
        super().__init__()
        self._process = process
        self._replies: dict[int, dict[str, Any]] = {}
        self._refs = 0
        self._first: dict[str, Any] | None = None
        self.stderr = b""
        # What arrived, in order: ("event", name), ("reply", ref), ("connect", transport)…
        self.log: list[tuple[str, Any]] = []
        self.connects = 0
        self.upgraded_to: str | None = None
        # When each kind of line happened, by the client's clock (seconds).
        self.times: dict[str, list[float]] = {}
        tg.start_soon(self._read_stdout)
        tg.start_soon(self._read_stderr)

    async def _read_stdout(self) -> None:
        assert self._process.stdout is not None
        lines = BufferedByteReceiveStream(self._process.stdout)
        while True:
            try:
                line = await lines.receive_until(b"\n", 1 << 20)
            except (anyio.EndOfStream, anyio.IncompleteRead):
                break
            self._dispatch(json.loads(line))
        if self.disconnect_reason is None:
            self.disconnect_reason = "node exited"
        self._notify()

    async def _read_stderr(self) -> None:
        assert self._process.stderr is not None
        async for chunk in self._process.stderr:
            self.stderr += chunk

    def _dispatch(self, line: dict[str, Any]) -> None:
        kind = line["type"]
        self.log.append((kind, line.get("event", line.get("ref", line.get("transport")))))
        self.times.setdefault(kind, []).append(line["t"] / 1000)
        if kind == "connect":
            self.connects += 1
            self.disconnect_reason = None  # reconnected
        elif kind == "upgrade":
            self.upgraded_to = line["transport"]
        if kind in ("connect", "connect_error", "timeout") and self._first is None:
            self._first = line
        elif kind == "event":
            args = line["args"]
            data = args[0] if len(args) == 1 else args
            self._record(Received(line["event"], data, line["wantsAck"], seq=line["seq"]))
            return
        elif kind == "reply":
            self._replies[line["ref"]] = line
        elif kind == "disconnect":
            self.disconnect_reason = line["reason"]
        self._notify()

    async def _send(self, command: Mapping[str, Any]) -> None:
        assert self._process.stdin is not None
        await self._process.stdin.send(json.dumps(command).encode() + b"\n")

    async def opened(self) -> None:
        with anyio.fail_after(TIMEOUT):
            while self._first is None:
                if self.disconnect_reason is not None:
                    raise AssertionError(f"node failed: {self.stderr.decode(errors='replace')}")
                await self._changed.wait()
        if self._first["type"] == "connect_error":
            raise Refused(self._first["message"], self._first["data"])
        assert self._first["type"] == "connect", self._first

    async def close(self) -> None:
        with anyio.CancelScope(shield=True):
            assert self._process.stdin is not None
            await self._process.stdin.aclose()
            with anyio.move_on_after(TIMEOUT):
                await self._process.wait()
            if self._process.returncode is None:
                self._process.kill()
                await self._process.wait()

    async def request(self, event: str, *args: Any) -> Any:
        return await self.reply(await self.send_request(event, *args))

    async def send_request(self, event: str, *args: Any) -> int:
        """Emit an event with an ack callback; return its ref for `reply`."""
        self._refs += 1
        ref = self._refs
        await self._send({"op": "emit", "ref": ref, "event": event, "args": args, "ack": True})
        return ref

    async def reply(self, ref: int) -> Any:
        """Wait for the server's ack of the request ``ref``; return what it acked."""
        with anyio.fail_after(TIMEOUT):
            while ref not in self._replies:
                await self._changed.wait()
        reply = self._replies.pop(ref)
        if "error" in reply:
            raise AssertionError(f"no ack for request {ref}: {reply['error']}")
        replied = reply["args"]
        return replied[0] if len(replied) == 1 else replied or None

    async def emit(self, event: str, *args: Any) -> None:
        await self._send({"op": "emit", "event": event, "args": args, "ack": False})

    async def ack(self, received: Received) -> None:
        assert received.wants_ack, f"{received.event} did not ask for an ack"
        await self._send({"op": "ack", "seq": received.seq, "args": []})

    async def disconnect(self) -> None:
        """Disconnect from the client side, as `socket.disconnect()` does."""
        await self._send({"op": "disconnect"})


def _node() -> str:
    node = shutil.which("node")
    if node is None or not (JS_DIR / "node_modules" / "socket.io-client").is_dir():
        raise AssertionError(
            "the JavaScript client needs Node and `npm ci --prefix tests/js`"
            " (./scripts/test runs it)"
        )
    return node


@asynccontextmanager
async def connect(
    kind: ClientKind,
    url: str,
    *,
    user: str | None = None,
    token: str | None = None,
    auth: Mapping[str, Any] | None = None,
    query: Mapping[str, str] | None = None,
    auto_ack: bool = True,
    transports: list[str] | None = None,
    namespace: str = NAMESPACE,
    headers: Mapping[str, str] | None = None,
    reconnection: bool = False,
) -> AsyncIterator[Client]:
    """Connect a client of that kind to the namespace; leaving the block disconnects it.

    `user` is the development `userId` query parameter, `token` the `auth.token`;
    `headers` are sent by the Python client only.

    Raises:
        Refused: If the server refused the connection.
    """
    params = dict(query or {})
    if user is not None:
        params["userId"] = user
    credentials = dict(auth or {})
    if token is not None:
        credentials["token"] = token
    if kind == "python":
        client = PyClient(auto_ack=auto_ack, namespace=namespace)
        target = url + (f"?{urlencode(params)}" if params else "")
        try:
            await client.open(
                target, auth=credentials or None, transports=transports, headers=headers
            )
            yield client
        finally:
            await client.close()
        return
    config = {
        "url": url + namespace,
        "auth": credentials,
        "query": params,
        "transports": transports,
        "autoAck": auto_ack,
        "reconnection": reconnection,
        "timeout": 60_000,
    }
    command = [_node(), str(JS_DIR / "client.mjs"), json.dumps(config)]
    process = await anyio.open_process(command)
    with _single_errors():
        async with anyio.create_task_group() as tg:
            js = JsClient(process, tg)
            try:
                await js.opened()
                yield js
            finally:
                await js.close()


class PollingClient:
    """A bare Engine.IO long-polling client: it polls only when told to.

    For what the real clients never do on purpose, such as not reading for a while.
    """

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self._http = session
        self._url = url
        self.sid = ""

    async def open(self, query: Mapping[str, str]) -> None:
        """Open an Engine.IO session (the handshake)."""
        packets = await self._get({**query, "EIO": "4", "transport": "polling"})
        assert packets[0].startswith("0"), packets
        self.sid = json.loads(packets[0][1:])["sid"]

    async def send(self, *packets: str) -> None:
        """POST Engine.IO packets, such as ``'40/messages,{}'``."""
        params = {"EIO": "4", "transport": "polling", "sid": self.sid}
        with anyio.fail_after(TIMEOUT):
            async with self._http.post(self._url, params=params, data="\x1e".join(packets)) as r:
                assert r.status == 200, await r.text()

    async def poll(self) -> list[str]:
        """GET the packets waiting for this client (waits for one if there are none)."""
        return await self._get({"EIO": "4", "transport": "polling", "sid": self.sid})

    async def _get(self, params: Mapping[str, str]) -> list[str]:
        with anyio.fail_after(TIMEOUT):
            async with self._http.get(self._url, params=dict(params)) as response:
                body = await response.text()
                assert response.status == 200, body
        return body.split("\x1e")


@asynccontextmanager
async def polling_client(url: str, **query: str) -> AsyncIterator[PollingClient]:
    """Open a bare long-polling Engine.IO session on the server at ``url``."""
    async with aiohttp.ClientSession() as http:
        client = PollingClient(http, f"{url}/socket.io/")
        await client.open(query)
        yield client
