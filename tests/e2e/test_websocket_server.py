"""The WebSocket adapter end to end: uvicorn on 127.0.0.1, the `websockets` client.

uvicorn and the `websockets` client run on asyncio only; the adapter's trio runs are in
test_websocket_adapter.py, through Starlette's TestClient.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import anyio
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from chatrelay import Delivery, Limits, Message, MessageStatus, Relay, RelayConfig, allow_all
from chatrelay.adapters.starlette import WebSocketAdapter
from ws_support import TokenAuthenticator, WsClient, make_app, serving, ws_client

pytestmark = pytest.mark.anyio

FAST = RelayConfig(typing_timeout=0.05, presence_grace=0.05)
ORIGIN = "https://chat.example.com"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def server(
    *, production: bool = True, limits: Limits | None = None, **options: Any
) -> AsyncIterator[str]:
    """A relay (token auth in production mode) behind the adapter behind uvicorn."""
    config = RelayConfig(
        production=production,
        typing_timeout=0.05,
        presence_grace=0.05,
        limits=limits or Limits(),
    )
    relay = Relay(config=config, authenticator=TokenAuthenticator(), authorize_join=allow_all)
    uvicorn_options = options.pop("uvicorn", {})
    options.setdefault("allowed_origins", [ORIGIN])
    adapter = WebSocketAdapter(relay, **options)
    uvicorn_options.setdefault("ws_max_size", adapter.max_frame_bytes)
    async with serving(make_app(adapter), **uvicorn_options) as url:
        yield url + "/ws"


async def join(client: WsClient, conversation: str = "c1") -> dict[str, Any]:
    ack = await client.request("conversation:join", {"conversationId": conversation})
    assert ack["ok"] is True, ack
    return ack


# --- authentication ---------------------------------------------------------------------


async def test_header_and_query_tokens() -> None:
    async with (
        server() as url,
        ws_client(url, headers={"Authorization": "Bearer tok-alice"}, origin=ORIGIN) as alice,
        ws_client(url + "?token=tok-bob") as bob,
    ):
        await join(alice)
        assert (await join(bob))["members"] == ["alice", "bob"]


async def test_first_frame_auth() -> None:
    async with server() as url, ws_client(url, origin=ORIGIN) as client:
        ack = await client.request("auth", {"token": "tok-carol"})
        assert ack == {"ok": True, "userId": "carol"}
        assert (await join(client))["members"] == ["carol"]


@pytest.mark.parametrize(
    ("suffix", "headers"),
    [("?token=forged", {}), ("", {"Authorization": "Bearer forged"})],
)
async def test_refused_handshake_token_is_refused_before_accept(
    suffix: str, headers: dict[str, str]
) -> None:
    # Closing before accepting is an HTTP 403 on the wire: the handshake fails.
    async with server() as url:
        with anyio.fail_after(5), pytest.raises(InvalidStatus) as refused:
            await connect(url + suffix, additional_headers=headers)
        assert refused.value.response.status_code == 403


async def test_refused_auth_frame_closes_1008() -> None:
    async with server() as url, ws_client(url) as client:
        await client.send("auth", {"token": "forged"})
        error = await client.receive("error")
        assert error["data"]["code"] == "unauthorized"
        assert await client.closed() == (1008, "unauthorized: unknown token")


async def test_auth_timeout_closes_1008() -> None:
    async with server(auth_timeout=0.05) as url, ws_client(url) as client:
        assert await client.closed() == (1008, "auth_timeout")


async def test_only_auth_before_authenticating() -> None:
    async with server() as url, ws_client(url) as client:
        ack = await client.request("typing:start", {"conversationId": "c1"})
        assert ack["error"]["status"] == 401
        assert ack["error"]["code"] == "unauthorized"
        assert (await client.request("auth", {"token": "tok-alice"}))["ok"] is True


# --- origins ----------------------------------------------------------------------------


@pytest.mark.parametrize("origin", ["https://evil.example", "null", "http://chat.example.com"])
async def test_foreign_origin_is_refused_before_accept(origin: str) -> None:
    async with server() as url:
        with anyio.fail_after(5), pytest.raises(InvalidStatus) as refused:
            await connect(
                url + "?token=tok-alice",
                origin=origin,  # type: ignore[arg-type]
            )
        assert refused.value.response.status_code == 403


# --- a conversation ---------------------------------------------------------------------


async def test_conversation() -> None:
    async with server() as url, ws_client(url + "?token=tok-alice") as alice:
        await join(alice)
        async with ws_client(url + "?token=tok-bob") as bob:
            assert (await alice.receive("user:online"))["data"] == {"userId": "bob"}
            await join(bob)
            assert await bob.request("typing:start", {"conversationId": "c1"}) == {"ok": True}
            typing = await alice.receive("typing:start")
            assert typing["data"]["userId"] == "bob"
            assert typing["data"]["user"] == {"id": "bob", "name": "Bob"}
            await bob.request("typing:start", {"conversationId": "c1"})  # a keystroke
            stop = await alice.receive("typing:stop")  # after typing_timeout
            assert stop["data"]["isTyping"] is False
            assert [f["event"] for f in alice.received].count("typing:start") == 1
            left = await bob.request("conversation:leave", {"conversationId": "c1"})
            assert left == {"ok": True, "conversationId": "c1"}
        offline = await alice.receive("user:offline")
        assert offline["data"]["userId"] == "bob"


async def test_room_delivery_and_acks() -> None:
    delivered: list[str] = []

    async def on_delivered(delivery: Delivery) -> None:
        delivered.append(delivery.user_id)

    relay = Relay(config=FAST, on_delivered=on_delivered)
    adapter = WebSocketAdapter(relay)
    async with (
        serving(make_app(adapter), ws_max_size=adapter.max_frame_bytes) as base,
        ws_client(base + "/ws?userId=alice") as alice,
        ws_client(base + "/ws?userId=bob") as bob,
        ws_client(base + "/ws?userId=dave") as outsider,
    ):
        await join(alice)
        await join(bob)
        await join(outsider, "other")
        await relay.message_received(_message("bob"))
        received = await alice.receive("message:received")
        assert isinstance(received["id"], str)
        assert received["data"]["message"]["content"] == {"text": "hello"}
        await alice.send("ack", {}, frame_id=received["id"])
        await join(alice)  # frames are handled in order: the ack is in
        assert delivered == ["alice"]
        await join(outsider, "other")
        assert "message:received" not in [f["event"] for f in outsider.received]


def _message(sender: str) -> Message:
    return Message(
        id="m1",
        conversation_id="c1",
        sender_id=sender,
        type="text",
        content={"text": "hello"},
        status=MessageStatus.SENT,
        created_at=datetime.now(UTC),
    )


# --- bad frames and limits --------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", "invalid_payload"),
        ('["typing:start"]', "invalid_payload"),
        ('{"data": {}}', "invalid_payload"),
        ('{"event": 1, "data": {}}', "invalid_payload"),
        ('{"event": "no:such", "data": {}}', "unknown_event"),
        ('{"event": "typing:start", "data": {"conversationId": 5}}', "invalid_payload"),
        ('{"event": "typing:start", "data": {"conversationId": "c1"}, "id": "7"}', None),
        (b'{"event": "typing:start", "data": {}}', "invalid_payload"),
        ('{"event": "typing:start", "data": {"conversationId": "' + "x" * 17_000 + '"}}', None),
    ],
)
async def test_bad_frames_keep_the_connection(frame: str | bytes, code: str | None) -> None:
    async with server() as url, ws_client(url + "?token=tok-alice") as client:
        await client.connection.send(frame)
        error = await client.receive("error")
        assert error["data"]["status"] in (400, 413)
        if code is not None:
            assert error["data"]["code"] == code
        assert (await join(client))["ok"] is True


async def test_payload_too_large_between_the_limits() -> None:
    async with server() as url, ws_client(url + "?token=tok-alice") as client:
        ack = await client.request("conversation:join", {"conversationId": "x" * 20_000})
        assert ack["error"]["code"] == "payload_too_large"
        assert (await join(client))["ok"] is True


@pytest.mark.parametrize("server_limit", [True, False])
async def test_frame_above_the_hard_limit_closes_1009(server_limit: bool) -> None:
    # With ws_max_size, uvicorn refuses the frame while reading it; without, the
    # adapter's own max_frame_bytes check closes with the same code.
    options: dict[str, Any] = {"max_frame_bytes": 70_000}
    if not server_limit:
        options["uvicorn"] = {"ws_max_size": 16 * 1024 * 1024}
    async with server(**options) as url, ws_client(url + "?token=tok-alice") as client:
        await join(client)
        big = json.dumps({"event": "typing:start", "data": {"conversationId": "x" * 80_000}})
        await client.connection.send(big)
        code, _ = await client.closed()
        assert code == 1009
