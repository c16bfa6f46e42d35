"""The demo as users run it: REST calls drive events to both transports at once."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from chatrelay import RelayConfig
from chatrelay.demo import create_app
from socketio_support import Refused, connect, serve_app
from ws_support import ws_client

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the Socket.IO side is asyncio-only


@pytest.fixture
async def demo_url() -> AsyncIterator[str]:
    demo = create_app(config=RelayConfig(presence_grace=0.05))
    async with serve_app(demo.asgi, lifespan=True) as url:
        yield url


def ws_url(base: str, user: str) -> str:
    return base.replace("http://", "ws://") + f"/ws?userId={user}"


async def test_a_message_reaches_both_transports_and_moves_to_read(demo_url: str) -> None:
    async with (
        httpx.AsyncClient(base_url=demo_url, timeout=5) as api,
        connect("python", demo_url, user="bob", auto_ack=False) as bob_sio,
        ws_client(ws_url(demo_url, "bob")) as bob_ws,
        ws_client(ws_url(demo_url, "alice")) as alice_ws,
    ):
        assert (await bob_sio.request("conversation:join", {"conversationId": "c1"}))["ok"]
        assert (await bob_ws.request("conversation:join", {"conversationId": "c1"}))["ok"]
        joined = await alice_ws.request("conversation:join", {"conversationId": "c1"})
        assert joined["members"] == ["alice", "bob"]

        response = await api.post(
            "/api/conversations/c1/messages",
            json={"senderId": "alice", "type": "text", "content": {"text": "Lunch?"}},
        )
        assert response.status_code == 201
        message = response.json()
        assert message["status"] == "sent"

        on_sio = await bob_sio.receive("message:received")
        on_ws = await bob_ws.receive("message:received")
        assert on_sio.data == on_ws["data"]
        assert on_ws["data"]["message"] == message
        assert on_ws["data"]["sender"] == {"id": "alice", "name": "Alice"}

        # bob's WebSocket tab acknowledges: on_delivered marks it delivered.
        await bob_ws.send("ack", {}, frame_id=on_ws["id"])
        delivered = await alice_ws.receive("message:status")
        assert (delivered["data"]["status"], delivered["data"]["userId"]) == ("delivered", "bob")

        response = await api.post("/api/conversations/c1/read", json={"userId": "bob"})
        assert response.json() == {"updated": [message["id"]]}
        read = await alice_ws.receive("message:status")
        assert read["data"]["status"] == "read"
        assert (await bob_sio.receive("message:status")).data["status"] == "delivered"
        assert (await bob_sio.receive("message:status")).data["status"] == "read"

        messages = (await api.get("/api/conversations/c1/messages")).json()
        assert [m["status"] for m in messages] == ["read"]
        # Backward moves are refused.
        response = await api.patch(
            f"/api/messages/{message['id']}/status", json={"status": "delivered", "userId": "bob"}
        )
        assert response.status_code == 409
        assert response.json()["code"] == "conflict"


async def test_only_participants_may_join(demo_url: str) -> None:
    async with ws_client(ws_url(demo_url, "carol")) as carol_ws:
        reply = await carol_ws.request("conversation:join", {"conversationId": "c1"})
        assert reply["ok"] is False
        assert reply["error"]["code"] == "forbidden"
        assert (await carol_ws.request("conversation:join", {"conversationId": "c2"}))["ok"]
    async with connect("python", demo_url, user="carol") as carol_sio:
        reply = await carol_sio.request("conversation:join", {"conversationId": "c1"})
        assert reply["error"]["status"] == 403


async def test_presence_and_online_users(demo_url: str) -> None:
    async with httpx.AsyncClient(base_url=demo_url, timeout=5) as api:
        assert (await api.get("/api/users/online")).json() == {"userIds": []}
        async with ws_client(ws_url(demo_url, "alice")) as alice_ws:
            async with connect("python", demo_url, user="bob"):
                assert (await alice_ws.receive("user:online"))["data"] == {"userId": "bob"}
                online = (await api.get("/api/users/online")).json()
                assert online == {"userIds": ["alice", "bob"]}
            offline = await alice_ws.receive("user:offline")
            assert offline["data"]["userId"] == "bob"
        assert (await api.get("/healthz")).json()["status"] == "ok"


async def test_rest_validation_errors(demo_url: str) -> None:
    async with httpx.AsyncClient(base_url=demo_url, timeout=5) as api:
        cases = [
            ("POST", "/api/conversations", {"participantIds": ["alice"]}, 400),
            ("POST", "/api/conversations", {"participantIds": ["alice", "nobody"]}, 404),
            ("POST", "/api/conversations", {"participantIds": "alice"}, 400),
            ("POST", "/api/conversations", {"participantIds": ["a", "b"], "x": 1}, 400),
            (
                "POST",
                "/api/conversations/c404/messages",
                {"senderId": "alice", "content": {"text": "x"}},
                404,
            ),
            (
                "POST",
                "/api/conversations/c1/messages",
                {"senderId": "carol", "content": {"text": "x"}},
                403,
            ),
            (
                "POST",
                "/api/conversations/c1/messages",
                {"senderId": "alice", "content": {"img": "x"}},
                400,
            ),
            ("PATCH", "/api/messages/m404/status", {"status": "read", "userId": "bob"}, 404),
            ("GET", "/api/conversations", None, 400),
        ]
        for method, path, body, status in cases:
            response = await api.request(method, path, json=body)
            assert response.status_code == status, (method, path, body, response.text)
            error = response.json()
            assert error["status"] == status
            assert isinstance(error["code"], str)
            assert isinstance(error["message"], str)
        created = await api.post(
            "/api/conversations", json={"participantIds": ["alice", "carol"], "name": "Plans"}
        )
        assert created.status_code == 201
        assert created.json()["participantIds"] == ["alice", "carol"]
        mine = (await api.get("/api/conversations", params={"userId": "carol"})).json()
        assert created.json() in mine


async def test_refused_socketio_connect_without_user(demo_url: str) -> None:
    with pytest.raises(Refused) as refused:
        async with connect("python", demo_url):
            pass
    assert refused.value.data["code"] == "unauthorized"


async def test_the_demo_serves_prometheus_metrics(demo_url: str) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    async def connections(http: httpx.AsyncClient) -> dict[str, float]:
        response = await http.get(f"{demo_url}/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        families = {f.name: f for f in text_string_to_metric_families(response.text)}
        return {s.labels["transport"]: s.value for s in families["chatrelay_connections"].samples}

    async with httpx.AsyncClient(timeout=5) as http:
        assert await connections(http) == {}
        async with (
            ws_client(ws_url(demo_url, "alice")),
            connect("python", demo_url, user="bob"),
        ):
            assert await connections(http) == {"websocket": 1, "socketio": 1}


async def test_liveness_and_readiness_are_two_endpoints(demo_url: str) -> None:
    async with httpx.AsyncClient(timeout=5) as http:
        live = await http.get(f"{demo_url}/livez")
        ready = await http.get(f"{demo_url}/readyz")
    assert (live.status_code, live.json()["status"]) == (200, "alive")
    assert (ready.status_code, ready.json()["status"]) == (200, "ok")
