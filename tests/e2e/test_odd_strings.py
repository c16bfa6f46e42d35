"""Odd strings in messages reach every client intact, and nobody is disconnected.

A lone UTF-16 surrogate (``"\\ud800"``) is valid JSON: any conversation member can
post one, and JavaScript strings hold one fine. UTF-8 cannot encode it, so the server
must write it as a JSON escape, on every transport, in the REST API's answers and on
the backplane. Requests that carry one where an identifier belongs are refused with
an ``error``, like any bad request. Every client here is a real one: the `websockets`
library on ``/ws``, python-socketio's client and the official socket.io-client (Node)
on each Engine.IO transport, all on the demo's single port.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import anyio
import httpx
import pytest
from starlette.types import Message as ASGIMessage
from starlette.types import Receive, Scope, Send

from chatrelay import Message, MessageStatus, Relay, RelayConfig, Sender
from chatrelay.adapters import _sio_wire
from chatrelay.adapters.starlette import WebSocketAdapter
from chatrelay.backplanes import MemoryBus
from chatrelay.demo import create_app
from chatrelay.lowlevel import Outbound
from chatrelay.testing import MemoryTransport
from redis_support import fresh_target, shared_or_private_redis
from socketio_support import TIMEOUT, Client, ClientKind, connect, serve_app
from socketio_support import serving as sio_serving
from ws_support import WsClient, make_app, ws_client
from ws_support import serving as ws_serving

pytestmark = pytest.mark.anyio

ODD_STRINGS = [
    "\ud800",  # a lone high surrogate
    "\udfff",  # a lone low surrogate
    "a\ud83d",  # half an emoji, at the end
    "\udc00 then text",  # a lone low surrogate followed by text
    "line\u2028paragraph\u2029",  # JavaScript's line terminators in JSON strings
    "nul\x00byte",
    "astral \U0001f600\U0001f1eb\U0001f1f7",
]

# (kind, transports) of the Socket.IO clients: each Engine.IO transport, both clients.
SOCKETIO_CLIENTS: list[tuple[str, list[str] | None]] = [
    ("python", ["websocket"]),
    ("python", ["polling"]),
    ("js", ["polling"]),
    ("js", ["websocket"]),
    ("js", None),  # the default: long-polling, then the upgrade to WebSocket
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the Socket.IO side is asyncio-only


@asynccontextmanager
async def demo_with_clients() -> AsyncIterator[
    tuple[str, Relay, WsClient, list[tuple[str, Client]]]
]:
    """The demo on a loopback port, with a member of c1 on every kind of client.

    All are bob's but python-socketio's long-polling client, which is alice's: the
    server closes it at the end (python-engineio's client, closing by itself, would
    wait for the answer to its pending poll until the server's next ping).
    """
    demo = create_app(config=RelayConfig(presence_grace=0.05))
    async with AsyncExitStack() as stack:
        url = await stack.enter_async_context(serve_app(demo.asgi, lifespan=True))
        raw = await stack.enter_async_context(
            ws_client(url.replace("http://", "ws://") + "/ws?userId=bob")
        )
        clients: list[tuple[str, Client]] = []
        for kind, transports in SOCKETIO_CLIENTS:
            user = "alice" if (kind, transports) == ("python", ["polling"]) else "bob"
            client = await stack.enter_async_context(
                connect(kind, url, user=user, transports=transports)  # type: ignore[arg-type]
            )
            clients.append((f"{kind} {transports or 'default'}", client))
        yield url, demo.relay, raw, clients
        for conn in list(demo.relay._connections.values()):
            if conn.user_id == "alice":
                conn.close("test_over")
        await clients[1][1].disconnected()


async def join_all(raw: WsClient, clients: list[tuple[str, Client]], conversation: str) -> None:
    assert (await raw.request("conversation:join", {"conversationId": conversation}))["ok"]
    for name, client in clients:
        reply = await client.request("conversation:join", {"conversationId": conversation})
        assert reply["ok"] is True, (name, reply)


async def all_received(
    raw: WsClient, clients: list[tuple[str, Client]]
) -> list[tuple[str, dict[str, Any]]]:
    """The next ``message:received`` of each client, by the client's name."""
    got = [("websockets /ws", (await raw.receive("message:received"))["data"])]
    for name, client in clients:
        got.append((name, (await client.receive("message:received")).data))
    return got


async def still_connected(raw: WsClient, clients: list[tuple[str, Client]]) -> None:
    """Every client is connected and answered: a request gets its ack."""
    reply = await raw.request("conversation:join", {"conversationId": "c1"})
    assert reply["ok"] is True
    assert raw.close_code is None
    for name, client in clients:
        reply = await client.request("conversation:join", {"conversationId": "c1"})
        assert reply["ok"] is True, name
        assert client.disconnect_reason is None, (name, client.disconnect_reason)


async def test_a_member_posts_odd_strings_through_the_demo_api() -> None:
    async with (
        demo_with_clients() as (url, _, raw, clients),
        httpx.AsyncClient(base_url=url, timeout=TIMEOUT) as api,
    ):
        await join_all(raw, clients, "c1")
        for text in ODD_STRINGS:
            # What a browser's JSON.stringify sends: lone surrogates as escapes
            # (httpx's json= writes them raw, and cannot encode them).
            body = {"senderId": "alice", "type": "text", "content": {"text": text}}
            response = await api.post(
                "/api/conversations/c1/messages",
                content=json.dumps(body),
                headers={"content-type": "application/json"},
            )
            assert response.status_code == 201, (text, response.text)
            stored = response.json()
            assert stored["content"] == {"text": text}
            for name, data in await all_received(raw, clients):
                assert data["message"] == stored, name
                assert data["message"]["content"]["text"] == text, name
        listed = (await api.get("/api/conversations/c1/messages")).json()
        assert [m["content"]["text"] for m in listed] == ODD_STRINGS
        await still_connected(raw, clients)


async def test_the_emitter_sends_odd_strings_to_every_client() -> None:
    async with demo_with_clients() as (_, relay, raw, clients):
        await join_all(raw, clients, "c1")
        for index, text in enumerate(ODD_STRINGS):
            message = Message(
                id=f"odd-{index}",
                conversation_id="c1",
                sender_id="alice",
                type="text",
                content={"text": text, text: [text]},
                status=MessageStatus.SENT,
                created_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
                extra={"note": text},
            )
            with anyio.fail_after(TIMEOUT):
                await relay.message_received(message, sender=Sender(id="alice", name=text))
            for name, data in await all_received(raw, clients):
                assert data["message"]["content"] == {"text": text, text: [text]}, name
                assert data["message"]["note"] == text, name
                assert data["sender"] == {"id": "alice", "name": text}, name
        await still_connected(raw, clients)


async def test_a_request_with_a_lone_surrogate_gets_an_error_not_a_disconnect() -> None:
    async with demo_with_clients() as (_, _, raw, clients):
        ack = await raw.request("conversation:join", {"conversationId": "\ud800"})
        assert ack["ok"] is False
        assert (ack["error"]["status"], ack["error"]["code"]) == (400, "invalid_payload")
        error = (await raw.receive("error"))["data"]
        assert error["event"] == "conversation:join"
        for name, client in clients:
            for payload in ({"conversationId": "\ud800"}, {"conversationId": "c\udc00"}):
                ack = await client.request("conversation:join", payload)
                assert ack["ok"] is False, name
                assert (ack["error"]["status"], ack["error"]["code"]) == (400, "invalid_payload")
                error = (await client.receive("error")).data
                assert error["code"] == "invalid_payload", name
            # An event name that is no text is an unknown event, named as it was sent.
            ack = await client.request("\udfffvent", {})
            assert ack["error"]["code"] == "unknown_event", name
            assert ack["error"]["event"] == "\udfffvent", name
        await still_connected(raw, clients)


@pytest.mark.parametrize("shared", [False, True])
async def test_memory_transport_with_odd_strings(shared: bool) -> None:
    backplane = MemoryBus().backplane() if shared else None
    async with (
        Relay(backplane=backplane) as relay,
        MemoryTransport(relay).connect("bob", auto_ack=True) as bob,
    ):
        assert (await bob.request("conversation:join", {"conversationId": "c1"}))["ok"]
        for text in ODD_STRINGS:
            message = Message(
                id="m1",
                conversation_id="c1",
                sender_id="alice",
                type="text",
                content={"text": text},
                status=MessageStatus.SENT,
                created_at=datetime(2026, 1, 2, tzinfo=UTC),
            )
            await relay.message_received(message, sender=Sender(id="alice", name=text))
            received = await bob.receive("message:received", timeout=TIMEOUT)
            assert received.data["message"]["content"] == {"text": text}
            assert received.data["sender"]["name"] == text
            await relay.message_status("c1", text, "read", user_id="alice")
            status = await bob.receive("message:status", timeout=TIMEOUT)
            assert status.data["messageId"] == text
        ack = await bob.request("conversation:join", {"conversationId": "\ud800"})
        assert ack["ok"] is False
        assert ack["error"]["code"] == "invalid_payload"
        assert bob.close_reason is None


async def test_the_emitter_refuses_a_conversation_id_with_a_lone_surrogate() -> None:
    backplane = MemoryBus().backplane()
    async with Relay(backplane=backplane) as relay:
        with pytest.raises(ValueError, match="unpaired surrogate"):
            await relay.message_status("c\ud800", "m1", "read", user_id="alice")


async def test_a_send_that_fails_otherwise_is_logged_once_and_the_client_stays(
    caplog: pytest.LogCaptureFixture,
) -> None:
    relay = Relay()
    adapter = WebSocketAdapter(relay)
    inner = make_app(adapter)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        async def failing_send(message: ASGIMessage) -> None:
            # A server that cannot write some frame, and says so otherwise than by
            # "the client is gone" (as uvicorn did for frames UTF-8 cannot encode).
            if message["type"] == "websocket.send" and "boom" in message.get("text", ""):
                raise ValueError("cannot write this frame")
            await send(message)

        await inner(scope, receive, failing_send)

    async with ws_serving(app) as url, ws_client(url + "/ws?userId=bob") as bob:
        assert (await bob.request("conversation:join", {"conversationId": "c1"}))["ok"]
        for text in ("boom", "fine", "boom again", "still fine"):
            message = Message(
                id=text,
                conversation_id="c1",
                sender_id="alice",
                type="text",
                content={"text": text},
                status=MessageStatus.SENT,
                created_at=datetime(2026, 1, 2, tzinfo=UTC),
            )
            with anyio.fail_after(TIMEOUT):
                await relay.message_received(message)
        for text in ("fine", "still fine"):
            received = await bob.receive("message:received")
            assert received["data"]["message"]["content"] == {"text": text}
        assert (await bob.request("conversation:leave", {"conversationId": "c1"}))["ok"]
        assert bob.close_code is None
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage().split(" (")[0] for r in errors] == ["websocket send failed"]


async def test_the_demo_on_redis_stores_and_relays_odd_strings() -> None:
    with shared_or_private_redis() as redis_url, fresh_target(redis_url) as target:
        demo = create_app(
            config=RelayConfig(presence_grace=0.05),
            redis_url=target.url,
            redis_prefix=target.prefix,
        )
        async with (
            serve_app(demo.asgi, lifespan=True) as url,
            httpx.AsyncClient(base_url=url, timeout=TIMEOUT) as api,
            ws_client(url.replace("http://", "ws://") + "/ws?userId=bob") as bob,
        ):
            assert (await bob.request("conversation:join", {"conversationId": "c1"}))["ok"]
            for text in ODD_STRINGS:
                body = {"senderId": "alice", "type": "text", "content": {"text": text}}
                response = await api.post(
                    "/api/conversations/c1/messages",
                    content=json.dumps(body),
                    headers={"content-type": "application/json"},
                )
                assert response.status_code == 201, (text, response.text)
                received = await bob.receive("message:received")
                assert received["data"]["message"]["content"] == {"text": text}
            listed = (await api.get("/api/conversations/c1/messages")).json()
            assert [m["content"]["text"] for m in listed] == ODD_STRINGS
            assert bob.close_code is None


@pytest.mark.parametrize(
    ("kind", "transports"),
    [("python", ["websocket"]), ("js", ["websocket"]), ("js", ["polling"]), ("js", None)],
)
async def test_a_socketio_send_that_fails_is_logged_once_and_the_client_stays(
    kind: ClientKind,
    transports: list[str] | None,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    encode = _sio_wire.encoded

    def failing_encode(item: Outbound, head: str) -> Any:
        # A bug in the encoding of some events (as the raw surrogates were).
        if "boom" in item.json:
            raise ValueError("cannot encode this event")
        return encode(item, head)

    monkeypatch.setattr(_sio_wire, "encoded", failing_encode)
    async with (
        sio_serving() as served,
        connect(kind, served.url, user="bob", transports=transports) as bob,
    ):
        assert (await bob.request("conversation:join", {"conversationId": "c1"}))["ok"]
        for text in ("boom", "fine", "boom again", "still fine"):
            message = Message(
                id=text,
                conversation_id="c1",
                sender_id="alice",
                type="text",
                content={"text": text},
                status=MessageStatus.SENT,
                created_at=datetime(2026, 1, 2, tzinfo=UTC),
            )
            with anyio.fail_after(TIMEOUT):
                await served.relay.message_received(message)
        for text in ("fine", "still fine"):
            received = await bob.receive("message:received")
            assert received.data["message"]["content"] == {"text": text}
        assert (await bob.request("conversation:leave", {"conversationId": "c1"}))["ok"]
        assert bob.disconnect_reason is None
        assert [r.event for r in bob.received] == ["message:received", "message:received"]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage().split(" (")[0] for r in errors] == ["socketio send failed"]
