"""One client factory for every transport: the shape `chatrelay.testing.check_transport` takes.

`transport_factory(kind)` returns ``factory(relay)``: a context that serves a relay it
did not make (the check makes its own, with its own settings) and yields
``connect(user)``. The kinds:

- ``memory``: `MemoryTransport`, in the test's process (asyncio and trio);
- ``websocket``: the Starlette adapter under uvicorn, the `websockets` client;
- ``socketio-<client>-<transport>``: the Socket.IO adapter under uvicorn, with
  python-socketio's client or the official JavaScript one (Node), held to one
  engine.io transport (`SOCKETIO_KINDS`).

`ws_support.make_app()` and `socketio_support.serving()` enter a relay of their own;
the servers here only serve the one they are given.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Final
from urllib.parse import urlsplit

import anyio
import attrs
from starlette.applications import Starlette
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed as WebSocketClosed

from chatrelay import Relay
from chatrelay.adapters.socketio import SocketIOAdapter
from chatrelay.adapters.starlette import WebSocketAdapter
from chatrelay.exceptions import ConnectionClosed
from chatrelay.testing import Connect, MemoryTransport, TransportFactory
from socketio_support import Client as SocketIOTestClient
from socketio_support import ClientKind, serve_app
from socketio_support import connect as socketio_connect
from ws_support import serving as serve_websocket

WAIT: Final = 5.0

# python-socketio's client on long-polling alone leaves aiohttp connections unclosed:
# python-engineio 4.15 never reads the responses to its POSTs (reading them ends the
# warnings), and `filterwarnings = error` fails the test. The JavaScript client
# covers long-polling.
SOCKETIO_KINDS: Final = [
    "socketio-python-websocket",
    "socketio-js-polling",
    "socketio-js-websocket",
]
WIRE_KINDS: Final = ["websocket", *SOCKETIO_KINDS]
"""The kinds that run real servers (and, for ``js``, Node): asyncio only."""


def transport_factory(kind: str) -> TransportFactory:
    """The factory that serves a relay over ``kind`` and connects clients to it."""
    if kind == "memory":
        return _serve_memory
    if kind == "websocket":
        return _serve_websocket
    _, client, transport = kind.split("-")
    assert client in ("python", "js"), kind
    assert transport in ("polling", "websocket"), kind

    def factory(relay: Relay) -> AbstractAsyncContextManager[Connect]:
        return _serve_socketio(relay, client, transport)  # type: ignore[arg-type]

    return factory


# --- memory -----------------------------------------------------------------------------


@asynccontextmanager
async def _serve_memory(relay: Relay) -> AsyncIterator[Connect]:
    transport = MemoryTransport(relay)
    yield lambda user: transport.connect(user)


# --- WebSocket ----------------------------------------------------------------------------


@attrs.frozen
class Frame:
    """An event frame the server sent; ``id`` when it asks for an ack."""

    event: str
    data: Any
    id: int | str | None = None


class WebSocketClient:
    """A `websockets` client keeping the check's client protocol, able to pause.

    Its socket has a small receive buffer and its library a short queue, so that
    while paused the server soon finds nothing more fits (a stalled client).
    """

    def __init__(self, connection: ClientConnection) -> None:
        self._connection = connection
        self.received: list[Frame] = []
        self._pending: list[Frame] = []
        self._acks: dict[int, dict[str, Any]] = {}
        self._ids = itertools.count(1)
        self._changed = anyio.Event()
        self._reading = anyio.Event()
        self._reading.set()
        self.close_reason: str | None = None

    def _notify(self) -> None:
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    async def _pump(self) -> None:
        try:
            async for text in self._connection:
                await self._reading.wait()
                frame = json.loads(text)
                if frame["event"] == "ack":
                    self._acks[frame["id"]] = frame["data"]
                else:
                    event = Frame(frame["event"], frame.get("data"), frame.get("id"))
                    self.received.append(event)
                    self._pending.append(event)
                self._notify()
        except WebSocketClosed:
            pass
        self.close_reason = f"{self._connection.close_code} {self._connection.close_reason}"
        self._notify()

    async def _send(self, frame: dict[str, Any]) -> None:
        try:
            await self._connection.send(json.dumps(frame))
        except WebSocketClosed:
            raise ConnectionClosed(self.close_reason or "closed") from None

    async def request(self, event: str, data: Any) -> dict[str, Any]:
        frame_id = next(self._ids)
        await self._send({"event": event, "data": data, "id": frame_id})
        with anyio.fail_after(WAIT):
            while frame_id not in self._acks:
                if self.close_reason is not None:
                    raise ConnectionClosed(self.close_reason)
                await self._changed.wait()
        return self._acks.pop(frame_id)

    async def receive(self, event: str, *, timeout: float) -> Frame:  # noqa: ASYNC109
        with anyio.fail_after(timeout):
            while True:
                for index, frame in enumerate(self._pending):
                    if frame.event == event:
                        del self._pending[index]
                        return frame
                if self.close_reason is not None:
                    raise ConnectionClosed(self.close_reason)
                await self._changed.wait()

    async def ack(self, received: Frame) -> None:
        assert received.id is not None, f"{received.event} did not ask for an ack"
        await self._send({"event": "ack", "id": received.id, "data": {}})

    def pause(self) -> None:
        self._reading = anyio.Event()

    def resume(self) -> None:
        self._reading.set()


@asynccontextmanager
async def _websocket_client(url: str, user: str) -> AsyncIterator[WebSocketClient]:
    address = urlsplit(url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    sock.setblocking(False)
    with anyio.fail_after(WAIT):
        await asyncio.get_running_loop().sock_connect(sock, (address.hostname, address.port))
        connection = await connect(
            f"{url}/ws?userId={user}",
            sock=sock,
            compression=None,
            max_size=None,
            max_queue=4,
            open_timeout=WAIT,
            close_timeout=WAIT,
        )
    client = WebSocketClient(connection)
    async with connection, anyio.create_task_group() as tg:
        tg.start_soon(client._pump)
        try:
            yield client
        finally:
            client.resume()
            await connection.close()


@asynccontextmanager
async def _serve_websocket(relay: Relay) -> AsyncIterator[Connect]:
    adapter = WebSocketAdapter(relay)
    app = Starlette(routes=[adapter.route("/ws")])
    async with serve_websocket(app, ws_max_size=adapter.max_frame_bytes) as url:
        yield lambda user: _websocket_client(url, user)


# --- Socket.IO ----------------------------------------------------------------------------


class SocketIOClient:
    """`socketio_support`'s clients (Python or JS) in the check's client protocol.

    Neither can stop reading on demand, so the check reports the slow consumer as
    not checked here (tests/e2e/test_slow_consumer_close.py covers it with raw sockets).
    """

    def __init__(self, client: SocketIOTestClient) -> None:
        self._client = client

    @property
    def received(self) -> list[Any]:
        return self._client.received

    async def request(self, event: str, data: Any) -> dict[str, Any]:
        if self._client.disconnect_reason is not None:
            raise ConnectionClosed(self._client.disconnect_reason)
        reply: dict[str, Any] = await self._client.request(event, data)
        return reply

    async def receive(self, event: str, *, timeout: float) -> Any:  # noqa: ASYNC109
        with anyio.fail_after(timeout):
            try:
                return await self._client.receive(event)
            except AssertionError:
                reason = self._client.disconnect_reason
                if reason is None:
                    raise
                raise ConnectionClosed(reason) from None

    async def ack(self, received: Any) -> None:
        await self._client.ack(received)


@asynccontextmanager
async def _serve_socketio(
    relay: Relay, client: ClientKind, transport: str
) -> AsyncIterator[Connect]:
    adapter = SocketIOAdapter(relay)

    @asynccontextmanager
    async def connect_user(user: str) -> AsyncIterator[SocketIOClient]:
        async with socketio_connect(
            client, url, user=user, auto_ack=False, transports=[transport]
        ) as connected:
            yield SocketIOClient(connected)

    async with adapter, serve_app(adapter.asgi_app()) as url:
        yield connect_user
