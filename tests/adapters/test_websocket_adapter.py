"""The WebSocket adapter in process, through Starlette's TestClient, on asyncio and trio."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from unittest.mock import ANY

import anyio
import anyio.lowlevel
import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

import chatrelay._outbound
import chatrelay.codec
from chatrelay import Delivery, Limits, Message, MessageStatus, Relay, RelayConfig, allow_all
from chatrelay.adapters.starlette import WebSocketAdapter
from ws_support import (
    BrokenAuthenticator,
    TokenAuthenticator,
    call,
    closed,
    frames,
    in_process,
    join,
    next_frame,
    request,
    send,
    stop_relay,
    until,
)

FAST = RelayConfig(typing_timeout=0.05, presence_grace=0.05)
PRODUCTION = RelayConfig(production=True, typing_timeout=0.05, presence_grace=0.05)


@pytest.fixture(params=["asyncio", "trio"])
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def relay() -> Relay:
    """A development-mode relay: ``?userId=`` says who connects."""
    return Relay(config=FAST)


@pytest.fixture
def client(backend: str, relay: Relay) -> Iterator[TestClient]:
    """The relay behind the adapter, in a TestClient."""
    with in_process(WebSocketAdapter(relay), backend) as client:
        yield client


async def _connections(relay: Relay, expected: int) -> None:
    """Wait until the relay has ``expected`` connections (bounded by ``call``)."""
    while relay.statistics().connections != expected:
        await anyio.lowlevel.checkpoint()


async def _members(relay: Relay) -> list[str]:
    return sorted(relay.members("c1"))


def production_adapter(**options: Any) -> WebSocketAdapter:
    relay = Relay(config=PRODUCTION, authenticator=TokenAuthenticator(), authorize_join=allow_all)
    options.setdefault("allowed_origins", ["https://chat.example.com"])
    return WebSocketAdapter(relay, **options)


def message(sender: str = "bob", conversation: str = "c1") -> Message:
    return Message(
        id="m1",
        conversation_id=conversation,
        sender_id=sender,
        type="text",
        content={"text": "hi"},
        status=MessageStatus.SENT,
        created_at=datetime(2024, 5, 1, 12, 30, tzinfo=UTC),
    )


def test_serve_from_an_endpoint_of_the_app(backend: str, relay: Relay) -> None:
    # As a FastAPI @app.websocket endpoint would: the app's own route calls serve().
    adapter = WebSocketAdapter(relay)
    with (
        in_process(adapter, backend, endpoint=True) as client,
        client.websocket_connect("/ws?userId=alice") as alice,
        client.websocket_connect("/ws?userId=bob") as bob,
    ):
        join(alice)
        assert join(bob)["members"] == ["alice", "bob"]
        call(client, relay.message_received, message())
        for ws in (alice, bob):
            event, _ = until(ws, "message:received")
            assert event["data"]["message"]["id"] == "m1"


# --- authentication ---------------------------------------------------------------------


def test_development_mode_takes_the_user_from_the_query(client: TestClient) -> None:
    with client.websocket_connect("/ws?userId=alice") as alice:
        ack = join(alice)
        assert ack == {
            "ok": True,
            "conversationId": "c1",
            "members": ["alice"],
            "typing": [],
            "position": {"offset": 0, "epoch": ANY},
        }


@pytest.mark.parametrize(
    "how",
    [
        {"headers": {"authorization": "Bearer tok-alice"}},
        {"headers": {"authorization": "bearer   tok-alice "}},
        {"query": "?token=tok-alice"},
    ],
)
def test_handshake_token(backend: str, how: dict[str, Any]) -> None:
    adapter = production_adapter()
    with (
        in_process(adapter, backend) as client,
        client.websocket_connect(
            "/ws" + how.get("query", ""), headers=how.get("headers", {})
        ) as ws,
    ):
        assert join(ws)["members"] == ["alice"]
    authenticator = adapter.relay._authenticator
    assert isinstance(authenticator, TokenAuthenticator)
    (seen,) = authenticator.seen
    assert seen.token == "tok-alice"
    assert seen.transport == "websocket"
    assert "token" not in seen.query  # the token is never in what may be logged


@pytest.mark.parametrize(
    ("url", "headers"),
    [
        ("/ws?token=forged", {}),
        ("/ws", {"authorization": "Bearer forged"}),
        ("/ws?token=tok-alice", {"authorization": "Bearer forged"}),  # the header wins
    ],
)
def test_refused_handshake_token_closes_1008_before_accept(
    backend: str, url: str, headers: dict[str, str]
) -> None:
    adapter = production_adapter()
    with in_process(adapter, backend) as client:
        with (
            pytest.raises(WebSocketDisconnect) as refused,
            client.websocket_connect(url, headers=headers),
        ):
            pass  # pragma: no cover
        assert refused.value.code == 1008
        assert refused.value.reason == "unauthorized: unknown token"
        assert adapter.relay.statistics().connections == 0
        assert adapter.relay.online_users() == frozenset()


def test_failing_authenticator_closes_1011(backend: str) -> None:
    relay = Relay(config=PRODUCTION, authenticator=BrokenAuthenticator(), authorize_join=allow_all)
    adapter = WebSocketAdapter(relay, allowed_origins=["*"])
    with in_process(adapter, backend) as client:
        with pytest.raises(WebSocketDisconnect) as refused, client.websocket_connect("/ws?token=x"):
            pass  # pragma: no cover
        assert refused.value.code == 1011
        assert refused.value.reason.startswith("internal_error")


def test_first_frame_auth(backend: str) -> None:
    with in_process(production_adapter(), backend) as client, client.websocket_connect("/ws") as ws:
        ack = request(ws, "auth", {"token": "tok-bob"}, frame_id=7)
        assert ack == {"ok": True, "userId": "bob"}
        assert join(ws)["members"] == ["bob"]


def test_first_frame_auth_without_id_gets_no_ack(backend: str) -> None:
    with in_process(production_adapter(), backend) as client, client.websocket_connect("/ws") as ws:
        send(ws, "auth", {"token": "tok-bob"})
        # The next frame answers the join: nothing answered the auth frame.
        assert join(ws)["members"] == ["bob"]


def test_nothing_but_auth_before_authenticating(backend: str) -> None:
    adapter = production_adapter()
    with in_process(adapter, backend) as client, client.websocket_connect("/ws") as ws:
        send(ws, "conversation:join", {"conversationId": "c1"}, frame_id=1)
        error, ack = frames(ws, 2)
        refusal = {
            "status": 401,
            "code": "unauthorized",
            "message": "authenticate first: send an 'auth' frame with your token",
            "event": "conversation:join",
        }
        assert error == {"event": "error", "data": refusal}
        assert ack == {"event": "ack", "id": 1, "data": {"ok": False, "error": refusal}}
        ws.send_text("not json")
        assert next_frame(ws)["data"]["code"] == "invalid_payload"
        ws.send_bytes(b"{}")
        assert next_frame(ws)["data"]["code"] == "invalid_payload"
        send(ws, "auth", {"token": 42}, frame_id=2)
        error, ack = frames(ws, 2)
        assert error["data"]["code"] == "invalid_payload"
        assert error["data"]["event"] == "auth"
        assert ack["data"]["ok"] is False
        assert adapter.relay.statistics().connections == 0
        # Still there, and it can authenticate.
        assert request(ws, "auth", {"token": "tok-alice"}, frame_id=3)["ok"] is True
        call(client, _connections, adapter.relay, 1)


def test_refused_auth_frame_closes_1008(backend: str) -> None:
    adapter = production_adapter()
    with in_process(adapter, backend) as client, client.websocket_connect("/ws") as ws:
        send(ws, "auth", {"token": "forged"}, frame_id=1)
        error, ack = frames(ws, 2)
        assert error["data"] == {
            "status": 401,
            "code": "unauthorized",
            "message": "unknown token",
            "event": "auth",
        }
        assert ack == {"event": "ack", "id": 1, "data": {"ok": False, "error": error["data"]}}
        assert closed(ws) == (1008, "unauthorized: unknown token")
        assert adapter.relay.online_users() == frozenset()


def test_auth_timeout_closes_1008(backend: str) -> None:
    adapter = production_adapter(auth_timeout=0.05)
    with in_process(adapter, backend) as client, client.websocket_connect("/ws") as ws:
        assert closed(ws) == (1008, "auth_timeout")
        assert adapter.relay.statistics().connections == 0


def test_development_mode_without_user_falls_back_to_the_auth_frame(backend: str) -> None:
    adapter = WebSocketAdapter(Relay(config=FAST, authenticator=TokenAuthenticator()))
    with in_process(adapter, backend) as client, client.websocket_connect("/ws") as ws:
        assert request(ws, "auth", {"token": "tok-carol"})["userId"] == "carol"


def test_auth_after_authenticating_is_an_error(client: TestClient) -> None:
    with client.websocket_connect("/ws?userId=alice") as ws:
        ack = request(ws, "auth", {"token": "x"}, frame_id=4)
        assert ack["error"]["code"] == "invalid_payload"
        assert ack["error"]["message"] == "already authenticated"
        assert join(ws)["ok"] is True


# --- origins ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example",
        "null",
        "http://chat.example.com",  # scheme mismatch
        "https://chat.example.com:8443",  # port mismatch
        "https://chat.example.com.evil.example",
        "not an origin",
    ],
)
def test_foreign_origin_is_refused_before_accept(backend: str, origin: str) -> None:
    adapter = production_adapter()
    with in_process(adapter, backend) as client:
        headers = {"origin": origin, "authorization": "Bearer tok-alice"}
        with (
            pytest.raises(WebSocketDisconnect) as refused,
            client.websocket_connect("/ws", headers=headers),
        ):
            pass  # pragma: no cover
        assert (refused.value.code, refused.value.reason) == (1008, "origin_not_allowed")
    authenticator = adapter.relay._authenticator
    assert isinstance(authenticator, TokenAuthenticator)
    assert authenticator.seen == []  # refused before anything else


@pytest.mark.parametrize(
    "origin", ["https://chat.example.com", "https://CHAT.example.com:443", None]
)
def test_allowed_origin_and_missing_origin_connect(backend: str, origin: str | None) -> None:
    headers = {"authorization": "Bearer tok-alice"}
    if origin is not None:
        headers["origin"] = origin
    with (
        in_process(production_adapter(), backend) as client,
        client.websocket_connect("/ws", headers=headers) as ws,
    ):
        assert join(ws)["ok"] is True


def test_missing_origin_can_be_refused(backend: str) -> None:
    adapter = production_adapter(allow_missing_origin=False)
    with in_process(adapter, backend) as client:
        headers = {"authorization": "Bearer tok-alice"}
        with (
            pytest.raises(WebSocketDisconnect) as refused,
            client.websocket_connect("/ws", headers=headers),
        ):
            pass  # pragma: no cover
        assert refused.value.code == 1008


def test_null_origin_when_explicitly_allowed(backend: str) -> None:
    adapter = production_adapter(allowed_origins=["null"])
    headers = {"authorization": "Bearer tok-alice", "origin": "null"}
    with (
        in_process(adapter, backend) as client,
        client.websocket_connect("/ws", headers=headers) as ws,
    ):
        assert join(ws)["ok"] is True


# --- requests, events, acks -------------------------------------------------------------


def test_join_typing_leave_with_acks(client: TestClient, relay: Relay) -> None:
    with (
        client.websocket_connect("/ws?userId=alice") as alice,
        client.websocket_connect("/ws?userId=bob") as bob,
    ):
        join(alice)
        assert join(bob)["members"] == ["alice", "bob"]
        assert request(bob, "typing:start", {"conversationId": "c1"}, frame_id=2) == {"ok": True}
        typing, _ = until(alice, "typing:start")
        assert typing == {
            "event": "typing:start",
            "data": {
                "conversationId": "c1",
                "userId": "bob",
                "isTyping": True,
                "user": {"id": "bob"},
            },
        }
        assert request(bob, "typing:stop", {"conversationId": "c1", "userId": "bob"}, 3) == {
            "ok": True
        }
        assert until(alice, "typing:stop")[0]["data"]["isTyping"] is False
        leave = request(bob, "conversation:leave", {"conversationId": "c1"}, frame_id=4)
        assert leave == {"ok": True, "conversationId": "c1"}
        assert call(client, _members, relay) == ["alice"]


def test_typing_times_out(client: TestClient) -> None:
    with (
        client.websocket_connect("/ws?userId=alice") as alice,
        client.websocket_connect("/ws?userId=bob") as bob,
    ):
        join(alice)
        join(bob)
        send(bob, "typing:start", {"conversationId": "c1"})
        until(alice, "typing:start")
        stop, _ = until(alice, "typing:stop")  # typing_timeout=0.05
        assert stop["data"]["userId"] == "bob"


def test_presence_online_and_offline(client: TestClient) -> None:
    with client.websocket_connect("/ws?userId=alice") as alice:
        join(alice)
        with client.websocket_connect("/ws?userId=bob") as bob:
            join(bob)
            assert until(alice, "user:online")[0]["data"] == {"userId": "bob"}
        offline, _ = until(alice, "user:offline")
        assert offline["data"]["userId"] == "bob"
        assert offline["data"]["lastSeen"].endswith("Z")


def test_room_delivery_asks_each_recipient_for_an_ack(backend: str) -> None:
    delivered: list[str] = []

    async def on_delivered(delivery: Delivery) -> None:
        delivered.append(delivery.user_id)

    relay = Relay(config=FAST, on_delivered=on_delivered)
    with (
        in_process(WebSocketAdapter(relay), backend) as client,
        client.websocket_connect("/ws?userId=alice") as alice,
        client.websocket_connect("/ws?userId=bob") as bob,
        client.websocket_connect("/ws?userId=carol") as carol,
    ):
        for ws in (alice, bob, carol):
            join(ws)
        call(client, relay.message_received, message(sender="bob"))
        got = {ws: until(ws, "message:received")[0] for ws in (alice, bob, carol)}
        for frame in got.values():
            assert isinstance(frame["id"], str)
            assert list(frame) == ["event", "id", "data"]
            assert frame["data"]["message"]["content"] == {"text": "hi"}
        assert got[alice]["data"] == got[carol]["data"] == got[bob]["data"]
        alice.send_text(json.dumps({"event": "ack", "id": got[alice]["id"]}))  # no data: fine
        send(bob, "ack", {}, frame_id=got[bob]["id"])  # the sender's: not a delivery
        send(carol, "ack", {}, frame_id="no-such-id")  # ignored
        send(carol, "ack", {}, frame_id=got[carol]["id"])
        send(carol, "ack", {}, frame_id=got[carol]["id"])  # twice: one delivery
        # A connection's frames are handled in order: once these acks arrive, so did those.
        for ws in (alice, bob, carol):
            join(ws)
        assert sorted(delivered) == ["alice", "carol"]


def test_broadcast_is_encoded_once(
    client: TestClient, relay: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoded: list[object] = []
    real_dumps = chatrelay.codec.dumps

    def counting_dumps(value: object) -> str:
        encoded.append(value)
        return real_dumps(value)

    monkeypatch.setattr(chatrelay._outbound, "dumps", counting_dumps)
    sessions = [client.websocket_connect(f"/ws?userId=u{i}") for i in range(4)]
    for ws in sessions:
        ws.__enter__()
    try:
        for ws in sessions:
            join(ws)
        encoded.clear()
        call(client, relay.message_received, message(sender="someone"))
        received = [until(ws, "message:received")[0] for ws in sessions]
        assert all(isinstance(frame["id"], str) for frame in received)  # each asks for an ack
        assert all(frame["data"] == received[0]["data"] for frame in received)
        payloads = [value for value in encoded if isinstance(value, dict) and "message" in value]
        assert len(payloads) == 1  # the payload was serialized once for four recipients
    finally:
        for ws in reversed(sessions):
            ws.__exit__(None, None, None)


# --- bad frames -------------------------------------------------------------------------

BAD_FRAMES = [
    ("not json", "invalid_payload", None),
    ('{"event": "typing:start", "data": NaN}', "invalid_payload", None),
    ('["conversation:join", {}]', "invalid_payload", None),
    ('"conversation:join"', "invalid_payload", None),
    ("[" * 50_000, "invalid_payload", None),
    ('{"data": {"conversationId": "c1"}}', "invalid_payload", None),
    ('{"event": 7, "data": {}}', "invalid_payload", None),
    ('{"event": "conversation:join"}', "invalid_payload", "conversation:join"),
    ('{"event": "no:such", "data": {}}', "unknown_event", "no:such"),
    ('{"event": "conversation:join", "data": {"conversationId": 1}}', "invalid_payload", None),
    ('{"event": "conversation:join", "data": []}', "invalid_payload", None),
    ('{"event": "conversation:join", "data": {"conversationId": "c1", "x": 1}}', None, None),
    ('{"event": "conversation:join", "data": {"conversationId": "c1"}, "id": "1"}', None, None),
    ('{"event": "conversation:join", "data": {"conversationId": "c1"}, "id": 1.5}', None, None),
    ('{"event": "conversation:join", "data": {"conversationId": "c1"}, "id": true}', None, None),
    ('{"event": "conversation:join", "data": {"conversationId": "c1"}, "extra": 1}', None, None),
    ('{"event": "conversation:join", "data": {"conversationId": "\\ud800"}}', None, None),
    ('{"event": "ack", "id": 3, "data": {}}', "invalid_payload", "ack"),
]


@pytest.mark.parametrize(("text", "code", "event"), BAD_FRAMES)
def test_bad_frame_gets_an_error_and_the_connection_stays(
    client: TestClient, text: str, code: str | None, event: str | None
) -> None:
    with client.websocket_connect("/ws?userId=alice") as ws:
        ws.send_text(text)
        error = next_frame(ws)
        assert error["event"] == "error"
        assert error["data"]["status"] == 400
        assert error["data"]["code"] == (code or "invalid_payload")
        if event is not None:
            assert error["data"]["event"] == event
        assert join(ws)["ok"] is True  # still connected


def test_binary_frame_gets_an_error(client: TestClient) -> None:
    with client.websocket_connect("/ws?userId=alice") as ws:
        ws.send_bytes(json.dumps({"event": "conversation:join", "data": {}}).encode())
        assert next_frame(ws)["data"]["message"].startswith("binary frames are not supported")
        assert join(ws)["ok"] is True


def test_bad_frame_with_an_id_is_acknowledged_with_the_error(client: TestClient) -> None:
    with client.websocket_connect("/ws?userId=alice") as ws:
        send(ws, "no:such", {}, frame_id=9)
        received = {frame["event"]: frame for frame in frames(ws, 2)}
        assert received["ack"]["id"] == 9
        assert received["ack"]["data"] == {"ok": False, "error": received["error"]["data"]}


def test_payload_above_the_relay_limit_is_refused_and_kept(backend: str) -> None:
    relay = Relay(config=RelayConfig(limits=Limits(max_payload_bytes=1024)))
    with (
        in_process(WebSocketAdapter(relay), backend) as client,
        client.websocket_connect("/ws?userId=alice") as ws,
    ):
        ack = request(ws, "conversation:join", {"conversationId": "x" * 2000}, frame_id=1)
        assert ack["error"]["code"] == "payload_too_large"
        assert ack["error"]["status"] == 413
        assert join(ws)["ok"] is True


@pytest.mark.parametrize("binary", [False, True])
def test_frame_above_the_hard_limit_closes_1009(backend: str, binary: bool) -> None:
    relay = Relay(config=RelayConfig(limits=Limits(max_payload_bytes=1024)))
    adapter = WebSocketAdapter(relay, max_frame_bytes=4096)
    with in_process(adapter, backend) as client, client.websocket_connect("/ws?userId=a") as ws:
        join(ws)
        big = json.dumps({"event": "typing:start", "data": {"conversationId": "x" * 5000}})
        if binary:
            ws.send_bytes(big.encode())
        else:
            ws.send_text(big)
        assert closed(ws) == (1009, "message_too_big")
        call(client, _connections, relay, 0)


def test_frame_above_the_hard_limit_before_auth_closes_1009(backend: str) -> None:
    adapter = production_adapter(max_frame_bytes=20_000)
    with in_process(adapter, backend) as client, client.websocket_connect("/ws") as ws:
        ws.send_text("x" * 20_001)
        assert closed(ws) == (1009, "message_too_big")


def test_oversized_auth_frame_is_refused(backend: str) -> None:
    with in_process(production_adapter(), backend) as client, client.websocket_connect("/ws") as ws:
        send(ws, "auth", {"token": "t" * 20_000})
        assert next_frame(ws)["data"]["code"] == "payload_too_large"


# --- the relay closes -------------------------------------------------------------------


def test_server_shutdown_closes_1001(client: TestClient) -> None:
    with client.websocket_connect("/ws?userId=alice") as ws:
        join(ws)
        stop_relay(client)
        assert closed(ws) == (1001, "server_shutdown")


# Trio only: on asyncio the adapter sends each event from the fan-out as it happens,
# and the test client never makes a send wait, so its queue never fills. A client
# whose sends wait, on both backends: test_websocket_asgi.py (FakeServer.gate).
@pytest.mark.parametrize("backend", ["trio"])
def test_slow_consumer_closes_1013(backend: str) -> None:
    relay = Relay(config=RelayConfig(limits=Limits(outgoing_queue=1)))
    with (
        in_process(WebSocketAdapter(relay), backend) as client,
        client.websocket_connect("/ws?userId=alice") as ws,
    ):
        join(ws)

        async def flood() -> None:
            # No checkpoint between the pushes: the writer cannot drain the queue.
            for _ in range(3):
                await relay.message_status("c1", "m1", "read", user_id="bob")

        call(client, flood)
        assert closed(ws) == (1013, "slow_consumer")
        assert relay.statistics().slow_consumers == 1
