"""The demo as a cluster: two servers on one Redis serve one chat.

Each server is a whole demo app (`create_app(redis_url=...)`) under uvicorn, with its
own relay and Redis backplane, in this test's process; clients connect to one server
or the other, the REST API is called on either. Redis is ``CHATRELAY_REDIS_URL``
(database 15 in CI) with a key prefix of the test's own, deleted afterwards, or a
private ``redis-server`` without it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import anyio
import attrs
import httpx
import pytest

from chatrelay import Message, MessageStatus, RelayConfig
from chatrelay.demo import Conversation, DemoService, create_app
from chatrelay.demo._redis_store import RedisStore
from redis_support import RedisTarget, fresh_target, redis_server, shared_or_private_redis
from socketio_support import connect, serve_app
from ws_support import ws_client

pytestmark = pytest.mark.anyio

CONFIG = RelayConfig(presence_grace=0.05, heartbeat_interval=0.25, node_timeout=1.0)
WAIT = 10.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # redis.asyncio and the Socket.IO client


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with shared_or_private_redis() as url:
        yield url


@pytest.fixture
def target(redis_url: str) -> Iterator[RedisTarget]:
    with fresh_target(redis_url) as target:
        yield target


@asynccontextmanager
async def node(url: str, prefix: str) -> AsyncIterator[httpx.AsyncClient]:
    """Serve one demo server; yield a REST client of it once it has started."""
    demo = create_app(config=CONFIG, redis_url=url, redis_prefix=prefix)
    async with (
        serve_app(demo.asgi, lifespan=True) as base,
        httpx.AsyncClient(base_url=base, timeout=WAIT) as api,
    ):
        # uvicorn answers only once the app has started: the data is seeded by now.
        assert (await api.get("/healthz")).status_code == 200
        yield api


def ws_url(api: httpx.AsyncClient, user: str) -> str:
    return str(api.base_url).rstrip("/").replace("http://", "ws://") + f"/ws?userId={user}"


async def answers(
    api: httpx.AsyncClient, path: str, check: Callable[[Any], bool], what: str
) -> httpx.Response:
    """GET ``path`` until ``check(json)`` holds, for state no client event announces."""
    response = None
    try:
        with anyio.fail_after(WAIT):
            # Polling, with a bound: another server's view, or Redis's state, announces
            # nothing to a REST client.
            while not check((response := await api.get(path)).json()):  # noqa: ASYNC110
                await anyio.sleep(0.02)
    except TimeoutError:
        got = None if response is None else response.text
        raise AssertionError(f"{what}: still {got} after {WAIT} s") from None
    assert response is not None
    return response


async def test_two_servers_share_conversations_messages_and_events(target: RedisTarget) -> None:
    async with (
        node(target.url, target.prefix) as api_a,
        node(target.url, target.prefix) as api_b,
        ws_client(ws_url(api_a, "alice")) as alice,
        connect("python", str(api_b.base_url).rstrip("/"), user="bob") as bob,
    ):
        # Seeded once, by whichever started first.
        for api in (api_a, api_b):
            mine = (await api.get("/api/conversations", params={"userId": "alice"})).json()
            assert [c["id"] for c in mine] == ["c1", "c2"]
        assert (await alice.request("conversation:join", {"conversationId": "c1"}))["ok"]
        joined = await bob.request("conversation:join", {"conversationId": "c1"})
        assert joined["ok"], joined
        assert (await alice.receive("user:online"))["data"] == {"userId": "bob"}

        # Stored through B, emitted by B: both transports, both servers.
        response = await api_b.post(
            "/api/conversations/c1/messages",
            json={"senderId": "alice", "type": "text", "content": {"text": "Lunch?"}},
        )
        assert response.status_code == 201, response.text
        message = response.json()
        on_a = await alice.receive("message:received")
        on_b = await bob.receive("message:received")
        assert on_a["data"]["message"] == message
        assert on_b.data == on_a["data"]

        # bob's client acked on B: B marks it delivered, alice hears it on A.
        delivered = (await alice.receive("message:status"))["data"]
        assert (delivered["status"], delivered["userId"]) == ("delivered", "bob")
        listed = (await api_a.get("/api/conversations/c1/messages")).json()
        assert listed == [{**message, "status": "delivered"}]

        # Read through A: the client on B hears it.
        response = await api_a.post("/api/conversations/c1/read", json={"userId": "bob"})
        assert response.json() == {"updated": [message["id"]]}
        assert (await bob.receive("message:status")).data["status"] == "delivered"
        read = (await bob.receive("message:status")).data
        assert (read["messageId"], read["status"], read["userId"]) == (message["id"], "read", "bob")
        listed = (await api_b.get("/api/conversations/c1/messages")).json()
        assert [m["status"] for m in listed] == ["read"]
        # Neither server moves it back.
        for api in (api_a, api_b):
            response = await api.patch(
                f"/api/messages/{message['id']}/status",
                json={"status": "delivered", "userId": "bob"},
            )
            assert response.status_code == 409

        for api in (api_a, api_b):
            await answers(
                api,
                "/api/users/online",
                lambda body: body == {"userIds": ["alice", "bob"]},
                f"online users on {api.base_url}",
            )
            health = (await api.get("/healthz")).json()
            assert health["status"] == "ok"
            assert health["backplane"]["kind"] == "redis"
            assert health["backplane"]["healthy"] is True


async def test_ids_never_collide_and_reads_count_once(target: RedisTarget) -> None:
    async with node(target.url, target.prefix) as api_a, node(target.url, target.prefix) as api_b:
        created: list[str] = []

        async def create(api: httpx.AsyncClient) -> None:
            body = {"participantIds": ["alice", "carol"]}
            created.append((await api.post("/api/conversations", json=body)).json()["id"])

        async with anyio.create_task_group() as tg:
            for api in (api_a, api_b) * 3:
                tg.start_soon(create, api)
        assert len(set(created)) == 6
        listed = (await api_b.get("/api/conversations", params={"userId": "carol"})).json()
        assert {c["id"] for c in listed} >= set(created)

        sent = []
        for api in (api_a, api_b) * 2:
            response = await api.post(
                "/api/conversations/c1/messages",
                json={"senderId": "alice", "content": {"text": "hi"}},
            )
            sent.append(response.json()["id"])
        assert len(set(sent)) == 4

        # bob reads on both servers at once: each message turns read exactly once.
        updated: list[str] = []

        async def read(api: httpx.AsyncClient) -> None:
            response = await api.post("/api/conversations/c1/read", json={"userId": "bob"})
            assert response.status_code == 200, response.text
            updated.extend(response.json()["updated"])

        async with anyio.create_task_group() as tg:
            tg.start_soon(read, api_a)
            tg.start_soon(read, api_b)
        assert sorted(updated) == sorted(sent)


async def test_two_stores_seed_once_and_compare_and_set_statuses(target: RedisTarget) -> None:
    prefix = target.prefix + "chatrelay-demo:"
    async with (
        RedisStore(target.url, prefix=prefix) as one,
        RedisStore(target.url, prefix=prefix) as two,
    ):
        seeded: list[list[Conversation]] = []

        async def seed(store: RedisStore) -> None:
            seeded.append(await DemoService(store=store).seed())

        async with anyio.create_task_group() as tg:  # both at once: one seeds, once
            tg.start_soon(seed, one)
            tg.start_soon(seed, two)
        assert sorted(len(created) for created in seeded) == [0, 3]
        assert [c.id for c in await two.conversations()] == ["c1", "c2", "c3"]

        message = Message(
            id=await one.new_id("m"),
            conversation_id="c1",
            sender_id="alice",
            type="text",
            content={"text": "hi"},
            status=MessageStatus.SENT,
            created_at=datetime.now(UTC),
        )
        await one.add_message(message)
        assert await two.messages("c1") == [message]
        read = await two.set_status(message.id, MessageStatus.SENT, MessageStatus.READ)
        assert read == attrs.evolve(message, status=MessageStatus.READ)
        # Whoever still thinks it is "sent" writes nothing.
        assert await one.set_status(message.id, MessageStatus.SENT, MessageStatus.DELIVERED) is None
        assert await one.message(message.id) == read
        assert await one.set_status("m404", MessageStatus.SENT, MessageStatus.READ) is None


async def test_healthz_is_degraded_while_redis_is_down() -> None:
    with redis_server() as server:
        async with node(server.url, "") as api:
            server.kill()
            response = await answers(
                api, "/healthz", lambda body: body["status"] == "degraded", "health, Redis down"
            )
            assert response.status_code == 503
            assert response.json()["backplane"]["healthy"] is False
            # The REST API says so too, rather than failing with a 500.
            response = await api.get("/api/conversations/c1/messages")
            assert response.status_code == 503
            assert response.json()["code"] == "unavailable"
            server.start()
            response = await answers(
                api, "/healthz", lambda body: body["status"] == "ok", "health, Redis back"
            )
            assert response.status_code == 200
