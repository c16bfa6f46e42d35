"""Helpers for the WebSocket adapter's tests: apps, bounded receives, real servers.

Two ways in, one app:

- `in_process()` runs the app in Starlette's `TestClient` (asyncio or trio) and
  `frames()` / `next_frame()` read its sessions with a bound on every wait.
- `serving()` runs it under uvicorn on a loopback port and `WsClient` talks to it with
  the `websockets` client library (asyncio only, as both are).

No helper sleeps: each waits for a frame or a close, and gives up after `WAIT`.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Final

import anyio
import uvicorn
from anyio.abc import TaskStatus
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.testclient import TestClient, WebSocketTestSession
from starlette.types import ASGIApp, Message
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from chatrelay import Authenticator, Credentials, Identity
from chatrelay.adapters.starlette import WebSocketAdapter
from chatrelay.exceptions import Unauthorized

WAIT: Final = 5.0
"""The bound on every wait: far above what the server needs, far below a hang."""

TOKENS: Final = {"tok-alice": "alice", "tok-bob": "bob", "tok-carol": "carol"}


class TokenAuthenticator(Authenticator):
    """Knows a few fixed tokens; records what it was shown, to check what it was given."""

    def __init__(self) -> None:
        self.seen: list[Credentials] = []

    async def authenticate(self, credentials: Credentials) -> Identity:
        self.seen.append(credentials)
        user = TOKENS.get(credentials.token or "")
        if user is None:
            raise Unauthorized("unknown token")
        return Identity(user_id=user, name=user.title())


class BrokenAuthenticator(Authenticator):
    """Fails as a buggy authenticator (or its database) does."""

    async def authenticate(self, credentials: Credentials) -> Identity:
        raise RuntimeError("the user database is down")


def make_app(adapter: WebSocketAdapter, *, path: str = "/ws", endpoint: bool = False) -> Starlette:
    """A Starlette app that runs the adapter's relay while it runs.

    The relay runs in a task of the lifespan's task group, so that a test can stop it
    while clients are connected (`stop_relay`), as a server that shuts its relay down.
    With ``endpoint``, the route is a function that calls `WebSocketAdapter.serve`,
    as a FastAPI ``@app.websocket`` endpoint does, instead of `WebSocketAdapter.route`.
    """

    async def run_relay(stop: anyio.Event, *, task_status: TaskStatus[None]) -> None:
        async with adapter.relay:
            task_status.started()
            await stop.wait()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        stop = app.state.stop_relay = anyio.Event()
        async with anyio.create_task_group() as tg:
            await tg.start(run_relay, stop)
            yield
            stop.set()

    async def serve(websocket: WebSocket) -> None:
        await adapter.serve(websocket)

    route = WebSocketRoute(path, serve) if endpoint else adapter.route(path)
    return Starlette(routes=[route], lifespan=lifespan)


# --- in process: Starlette's TestClient ------------------------------------------------


@contextmanager
def in_process(
    adapter: WebSocketAdapter, backend: str, *, endpoint: bool = False
) -> Iterator[TestClient]:
    """Run the adapter's app in a `TestClient` on ``backend``; the relay runs meanwhile."""
    app = make_app(adapter, endpoint=endpoint)
    with TestClient(app, backend=backend) as client:  # type: ignore[arg-type]
        yield client


def call(client: TestClient, func: Any, *args: Any) -> Any:
    """Run ``await func(*args)`` on the app's event loop (the relay's), bounded."""

    async def bounded() -> Any:
        with anyio.fail_after(WAIT):
            return await func(*args)

    assert client.portal is not None
    return client.portal.call(bounded)


def stop_relay(client: TestClient) -> None:
    """Stop the app's relay (as a server shutting down) while clients stay connected."""
    app = client.app
    assert isinstance(app, Starlette)
    stop: anyio.Event = app.state.stop_relay
    call(client, _set, stop)


async def _set(event: anyio.Event) -> None:
    event.set()


def _message(session: WebSocketTestSession) -> Message:
    async def receive() -> Message:
        with anyio.fail_after(WAIT):
            # TestClient's own receive() has no bound; its stream is what it reads.
            return await session._send_rx.receive()

    return session.portal.call(receive)


def next_frame(session: WebSocketTestSession) -> dict[str, Any]:
    """The next frame the server sent, decoded.

    Raises:
        WebSocketDisconnect: If the server closed instead (with its code and reason).
    """
    message = _message(session)
    if message["type"] == "websocket.close":
        raise WebSocketDisconnect(message.get("code", 1000), message.get("reason"))
    assert message["type"] == "websocket.send", message
    frame: dict[str, Any] = json.loads(message["text"])
    return frame


def frames(session: WebSocketTestSession, count: int) -> list[dict[str, Any]]:
    """The next ``count`` frames."""
    return [next_frame(session) for _ in range(count)]


def until(session: WebSocketTestSession, event: str) -> tuple[dict[str, Any], list[str]]:
    """Skip to the next frame of ``event``; return it and the events skipped."""
    skipped: list[str] = []
    while True:
        frame = next_frame(session)
        if frame["event"] == event:
            return frame, skipped
        skipped.append(frame["event"])


def closed(session: WebSocketTestSession) -> tuple[int, str]:
    """Wait for the server's close, skipping frames; return its code and reason."""
    while True:
        try:
            next_frame(session)
        except WebSocketDisconnect as exc:
            return exc.code, exc.reason


def send(
    session: WebSocketTestSession, event: str, data: Any, frame_id: int | str | None = None
) -> None:
    """Send one request frame."""
    frame: dict[str, Any] = {"event": event, "data": data}
    if frame_id is not None:
        frame["id"] = frame_id
    session.send_text(json.dumps(frame))


def request(
    session: WebSocketTestSession, event: str, data: Any, frame_id: int = 1
) -> dict[str, Any]:
    """Send a request with an id and return its ack's data (skipping other frames)."""
    send(session, event, data, frame_id)
    while True:
        frame = next_frame(session)
        if frame["event"] == "ack" and frame["id"] == frame_id:
            ack: dict[str, Any] = frame["data"]
            return ack


def join(session: WebSocketTestSession, conversation: str = "c1") -> dict[str, Any]:
    """Join a conversation; return the ack."""
    ack = request(session, "conversation:join", {"conversationId": conversation})
    assert ack["ok"] is True, ack
    return ack


# --- a real server: uvicorn and the websockets client ----------------------------------


@asynccontextmanager
async def serving(app: ASGIApp, **options: Any) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1 (a free port); yield its ``ws://`` URL.

    The socket is bound before uvicorn starts, so clients may connect at once.
    ``options`` go to `uvicorn.Config` (``ws_max_size``, say).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    options.setdefault("ws_per_message_deflate", False)
    config = uvicorn.Config(
        app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2, **options
    )
    server = uvicorn.Server(config)
    with sock:
        async with anyio.create_task_group() as tg:
            # Clients may connect at once: the kernel queues them until uvicorn has run
            # the lifespan (the relay starts) and accepts.
            tg.start_soon(server.serve, [sock])
            try:
                yield f"ws://127.0.0.1:{port}"
            finally:
                server.should_exit = True
                tg.cancel_scope.deadline = anyio.current_time() + WAIT


class WsClient:
    """A `websockets` client that keeps what it received, for bounded waits."""

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self.received: list[dict[str, Any]] = []
        self._pending: list[dict[str, Any]] = []
        self._changed = anyio.Event()
        self._ids = iter(range(1, 1_000_000))
        self.close_code: int | None = None
        self.close_reason: str | None = None

    async def _pump(self) -> None:
        try:
            async for text in self.connection:
                frame = json.loads(text)
                self.received.append(frame)
                self._pending.append(frame)
                self._notify()
        except ConnectionClosed:
            pass
        rcvd = self.connection.close_code
        self.close_code = rcvd if rcvd is not None else 1006
        self.close_reason = self.connection.close_reason or ""
        self._notify()

    def _notify(self) -> None:
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    async def send(
        self, event: str, data: Any = None, *, frame_id: int | str | None = None
    ) -> None:
        """Send one frame (``data=None`` leaves it out)."""
        frame: dict[str, Any] = {"event": event}
        if data is not None:
            frame["data"] = data
        if frame_id is not None:
            frame["id"] = frame_id
        await self.connection.send(json.dumps(frame))

    async def request(self, event: str, data: Any) -> dict[str, Any]:
        """Send a request with a fresh id and return its ack's data."""
        frame_id = next(self._ids)
        await self.send(event, data, frame_id=frame_id)
        ack = await self.receive("ack", lambda f: f.get("id") == frame_id)
        reply: dict[str, Any] = ack["data"]
        return reply

    async def receive(self, event: str, match: Any = None) -> dict[str, Any]:
        """Return the next frame of ``event`` (that ``match`` accepts) not returned yet."""
        with anyio.fail_after(WAIT):
            while True:
                for index, frame in enumerate(self._pending):
                    if frame["event"] == event and (match is None or match(frame)):
                        del self._pending[index]
                        return frame
                if self.close_code is not None:
                    raise AssertionError(
                        f"closed ({self.close_code} {self.close_reason}) before {event!r}"
                    )
                await self._changed.wait()

    async def closed(self) -> tuple[int, str]:
        """Wait for the connection to close; return the close code and reason."""
        with anyio.fail_after(WAIT):
            while self.close_code is None:
                await self._changed.wait()
        assert self.close_reason is not None
        return self.close_code, self.close_reason


@asynccontextmanager
async def ws_client(
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    origin: str | None = None,
    subprotocols: list[str] | None = None,
) -> AsyncIterator[WsClient]:
    """Open a `WsClient` (its reader runs in the background); leaving closes it."""
    with anyio.fail_after(WAIT):
        connection = await connect(
            url,
            additional_headers=dict(headers or {}),
            origin=origin,  # type: ignore[arg-type]
            subprotocols=subprotocols,  # type: ignore[arg-type]
            compression=None,
            max_size=None,
            open_timeout=WAIT,
            close_timeout=WAIT,
        )
    client = WsClient(connection)
    async with connection, anyio.create_task_group() as tg:
        tg.start_soon(client._pump)
        try:
            yield client
        finally:
            await connection.close()
