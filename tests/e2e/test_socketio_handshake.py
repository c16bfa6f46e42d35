"""The Socket.IO handshake is bounded: a client joins the chat's namespace in time, or goes.

An engine.io connection that joins no namespace within the auth timeout (the
relay's ``Limits.auth_timeout``, which the WebSocket binding uses too) is closed for
real; a ``CONNECT`` to a namespace nobody serves is refused with a connect error.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
import socketio

from chatrelay import Limits, Relay, RelayConfig
from chatrelay.adapters.socketio import SocketIOAdapter
from chatrelay.adapters.starlette import WebSocketAdapter
from sio_raw import raw_socket
from socketio_support import (
    CLIENT_KINDS,
    NAMESPACE,
    ClientKind,
    Refused,
    connect,
    polling_client,
    serve_app,
    serving,
)
from waiting import eventually

pytestmark = pytest.mark.anyio

TIMEOUT = 0.5
QUICK = RelayConfig(limits=Limits(auth_timeout=TIMEOUT), presence_grace=0.05)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=CLIENT_KINDS)
def kind(request: pytest.FixtureRequest) -> ClientKind:
    value: ClientKind = request.param
    return value


def test_both_bindings_take_the_auth_timeout_from_the_relays_limits() -> None:
    relay = Relay(config=QUICK)
    assert SocketIOAdapter(relay)._guard.handshake_timeout == TIMEOUT
    assert WebSocketAdapter(relay).auth_timeout == TIMEOUT
    assert SocketIOAdapter(relay, auth_timeout=3)._guard.handshake_timeout == 3
    assert Limits().auth_timeout == 10.0
    with pytest.raises(ValueError, match="auth_timeout"):
        SocketIOAdapter(relay, auth_timeout=0)


async def test_a_websocket_that_never_connects_a_namespace_is_closed(kind: ClientKind) -> None:
    async with (
        serving(config=QUICK) as served,
        connect(kind, served.url, user="alice") as alice,
        raw_socket(served.url) as raw,
    ):
        started = anyio.current_time()
        seen = await raw.closed(within=TIMEOUT + 5)
        assert anyio.current_time() - started >= TIMEOUT * 0.9
        assert seen == ["1"]  # engine.io CLOSE, then the WebSocket closes
        await eventually(lambda: len(served.adapter.server.eio.sockets) == 1)
        assert served.adapter._guard.pending == 1
        # alice, admitted in time, outlives the deadline (shown only by waiting past it).
        await anyio.sleep(TIMEOUT)
        reply = await alice.request("conversation:join", {"conversationId": "c1"})
        assert reply["ok"] is True
        assert alice.disconnect_reason is None


async def test_a_polling_session_that_never_connects_a_namespace_is_closed() -> None:
    async with serving(config=QUICK) as served, polling_client(served.url) as client:
        with anyio.fail_after(TIMEOUT + 5):
            packets = await client.poll()  # waits until the server has something
        assert packets == ["1"]
        assert client.sid not in served.adapter.server.eio.sockets


async def test_a_connect_to_the_main_namespace_is_refused(kind: ClientKind) -> None:
    async with serving(config=QUICK) as served:
        with pytest.raises(Refused) as refused:
            async with connect(kind, served.url, user="alice", namespace="/"):
                pass
        assert refused.value.message == "Invalid namespace"
        assert refused.value.data["status"] == 404
        assert refused.value.data["code"] == "unknown_namespace"
        assert served.relay.statistics().connections == 0


async def test_a_raw_connect_to_an_unknown_namespace_gets_a_connect_error_then_a_close() -> None:
    async with serving(config=QUICK) as served, raw_socket(served.url, user="alice") as raw:
        for namespace, head in (("/", "44"), ("/random", "44/random,")):
            await raw.send("40" if namespace == "/" else f"40{namespace},")
            packet = await raw.text(head)
            error = json.loads(packet[len(head) :])
            assert error["message"] == "Invalid namespace"
            assert error["data"]["code"] == "unknown_namespace"
        assert await raw.closed(within=TIMEOUT + 5) == ["1"]
        assert served.adapter.server.manager.rooms.get("/", {}) == {}


async def test_a_client_that_leaves_the_namespace_but_stays_connected_is_closed() -> None:
    async with serving(config=QUICK) as served, raw_socket(served.url, user="alice") as raw:
        await raw.join("alice")
        await eventually(lambda: served.relay.statistics().connections == 1)
        await raw.send(f"41{NAMESPACE},")
        await eventually(lambda: served.relay.statistics().connections == 0)
        assert await raw.closed(within=TIMEOUT + 5) == ["1"]


async def test_a_refused_client_may_retry_within_the_deadline_then_is_closed() -> None:
    async with serving(config=QUICK) as served, raw_socket(served.url) as raw:
        await raw.send(f"40{NAMESPACE},")  # no userId: refused
        packet = await raw.text(f"44{NAMESPACE},")
        assert json.loads(packet[len(f"44{NAMESPACE},") :])["data"]["code"] == "unauthorized"
        assert await raw.closed(within=TIMEOUT + 5) == ["1"]


async def test_a_server_of_your_own_keeps_clients_of_its_other_namespaces() -> None:
    server = socketio.AsyncServer(async_mode="asgi")

    async def on_connect(sid: str, environ: Any, auth: Any = None) -> bool:
        return True

    server.on("connect", on_connect, namespace="/admin")
    relay = Relay(config=QUICK)
    adapter = SocketIOAdapter(relay, server=server)
    async with (
        relay,
        adapter,
        serve_app(adapter.asgi_app()) as url,
        raw_socket(url) as admin,
        raw_socket(url) as idle,
    ):
        await admin.send("40/admin,")
        await admin.text("40/admin,")
        await idle.send("40/nobody,")  # served by no handler
        await idle.text("44/nobody,")
        assert await idle.closed(within=TIMEOUT + 5) == ["1"]
        # The admin client outlived the deadline in a namespace of the server's own.
        assert admin.sid in server.eio.sockets
        assert not server.eio.sockets[admin.sid].closed
