"""Three relay processes sharing one Redis: what users must not be able to tell apart.

Each node is ``tests/cluster_node.py`` in its own process, with the Redis backplane
and short timers (heartbeat 0.25 s, node timeout 1 s, presence grace 0.3 s, backoff
at most 0.25 s). Clients are the nodes' in-memory clients, driven over stdin and
stdout, or real WebSocket clients of the Starlette adapter under uvicorn. The tests
that kill Redis run their own ``redis-server``; the others share a private server
per module, so that node processes never see another test's keys.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack
from datetime import UTC, datetime

import anyio
import pytest

from chatrelay import Emitter, Message, MessageStatus, RelayConfig
from chatrelay.backplanes.redis import RedisBackplane
from cluster_support import NodeProcess, cluster, cluster_node
from redis_support import RedisServer, free_port, new_prefix, redis_server
from waiting import eventually
from ws_support import ws_client

pytestmark = pytest.mark.anyio

NODE_TIMEOUT = 1.0
GRACE = 0.3
CONFIG = RelayConfig(heartbeat_interval=0.25, node_timeout=NODE_TIMEOUT, presence_grace=GRACE)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # redis.asyncio; the nodes are separate processes anyway


@pytest.fixture(scope="module")
def shared_server() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


@pytest.fixture
def own_server() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


def message_ids(node: NodeProcess, client: str) -> list[str]:
    return [e["data"]["message"]["id"] for e in node.received(client, "message:received")]


def events(node: NodeProcess, client: str, name: str, user: str) -> list[dict[str, object]]:
    return [e for e in node.received(client, name) if e["data"]["userId"] == user]


def saw(node: NodeProcess, client: str, name: str, user: str) -> Callable[[], bool]:
    """Whether ``client`` on ``node`` received a ``name`` event about ``user``."""
    return lambda: bool(events(node, client, name, user))


def has_messages(node: NodeProcess, client: str, count: int) -> Callable[[], bool]:
    """Whether ``client`` on ``node`` received at least ``count`` messages."""
    return lambda: len(message_ids(node, client)) >= count


def stored(message_id: str, sender: str = "bob") -> Message:
    return Message(
        id=message_id,
        conversation_id="c1",
        sender_id=sender,
        type="text",
        content={"text": message_id},
        status=MessageStatus.SENT,
        created_at=datetime.now(UTC),
    )


async def test_room_events_reach_other_nodes_once(shared_server: RedisServer) -> None:
    prefix = new_prefix()
    async with cluster(shared_server.url, prefix, 3) as (a, b, c):
        await a.connect("alice", "alice", "c1")
        await c.connect("carol", "carol", "c1")
        await b.connect("bob", "bob", "c2")  # B serves another room only
        async with Emitter(RedisBackplane(shared_server.url, prefix=prefix), config=CONFIG) as em:
            await b.request("emit", message="m1", conversation="c1", sender="bob", text="hi")
            await em.message_received(stored("m2"))
            await em.message_status("c1", "m1", "read", user_id="carol")
            await em.message_received(stored("m3"))
            await b.request("emit", message="m4", conversation="c1", sender="bob", text="end")
            for node, client in ((a, "alice"), (c, "carol")):
                await node.wait_for(has_messages(node, client, 4), what=f"4 messages at {client}")
                got = message_ids(node, client)
                # Exactly once; in order per publisher (B, the emitter), not across them.
                assert sorted(got) == ["m1", "m2", "m3", "m4"]
                assert got.index("m1") < got.index("m4")
                assert got.index("m2") < got.index("m3")
                statuses = node.received(client, "message:status")
                assert [s["data"]["messageId"] for s in statuses] == ["m1"]
            assert message_ids(b, "bob") == []  # not in the room
            # The emitter answers presence for the whole cluster.
            await eventually(lambda: em.is_online("carol") and em.members("c1") >= {"alice"})


async def test_typing_and_membership_cross_nodes(shared_server: RedisServer) -> None:
    async with cluster(shared_server.url, new_prefix(), 2) as (a, b):
        await a.connect("alice", "alice", "c1")
        # Membership crosses nodes asynchronously: B's join reply lists what B knows.
        await b.wait_answer(["alice"], "members", conversation="c1")
        await b.request("connect", client="bob", user="bob")
        reply = await b.request("join", client="bob", conversation="c1")
        assert reply["members"] == ["alice", "bob"]
        await a.wait_answer(["alice", "bob"], "members", conversation="c1")
        await b.request("typing:start", client="bob", conversation="c1")
        await a.wait_for(lambda: len(a.received("alice", "typing:start")) == 1, what="typing")
        await b.request("typing:stop", client="bob", conversation="c1")
        await a.wait_for(lambda: len(a.received("alice", "typing:stop")) == 1, what="stop")


async def test_tabs_on_two_nodes_are_online_once_and_offline_once(
    shared_server: RedisServer,
) -> None:
    async with cluster(shared_server.url, new_prefix(), 3) as (a, b, c):
        await b.connect("observer", "olga")
        await a.connect("tab1", "dave")
        await c.connect("tab2", "dave")
        await b.wait_for(lambda: bool(events(b, "observer", "user:online", "dave")), what="online")
        await a.request("disconnect", client="tab1")
        await c.request("disconnect", client="tab2")
        await b.wait_for(lambda: bool(events(b, "observer", "user:offline", "dave")), what="off")
        # Settle: a later event from the same nodes arrives after any stray duplicate.
        await a.connect("tab3", "erin")
        await b.wait_for(lambda: bool(events(b, "observer", "user:online", "erin")), what="erin")
        assert len(events(b, "observer", "user:online", "dave")) == 1
        assert len(events(b, "observer", "user:offline", "dave")) == 1
        await a.wait_answer(False, "is_online", user="dave")


async def test_sigterm_takes_users_offline_after_the_grace_period(
    shared_server: RedisServer,
) -> None:
    # The nodes here would need 30 s to find a crashed peer; carol going offline
    # within 10 s can only come from c saying goodbye, whatever the machine's load.
    crash_bound = 30.0
    options = ("--node-timeout", str(crash_bound))
    async with cluster(shared_server.url, new_prefix(), 3, *options) as (a, b, c):
        await a.connect("observer", "olga")
        await b.connect("observer", "oscar")
        await c.connect("carol", "carol")
        await a.wait_for(lambda: bool(events(a, "observer", "user:online", "carol")), what="on")
        c.signal(signal.SIGTERM)
        assert await c.wait_exit() == 0
        for node in (a, b):
            await node.wait_for(
                saw(node, "observer", "user:offline", "carol"),
                within=GRACE + 10,
                what="carol offline after SIGTERM, before any crash could be found",
            )
        assert c.node_id not in await a.request("nodes")


async def test_sigkill_is_detected_within_the_bound_and_leaves_no_ghosts(
    shared_server: RedisServer,
) -> None:
    import redis

    prefix = new_prefix()
    async with cluster(shared_server.url, prefix, 3) as (a, b, c):
        await a.connect("observer", "olga")
        await b.connect("observer", "oscar")
        await c.connect("carol", "carol", "c1")
        await a.wait_for(lambda: bool(events(a, "observer", "user:online", "carol")), what="on")
        assert c.node_id in await a.request("nodes")
        start = anyio.current_time()
        c.signal(signal.SIGKILL)
        await c.wait_exit()
        bound = NODE_TIMEOUT + 0.5  # the node timeout, plus timer and delivery slack
        for node in (a, b):
            await node.wait_for(
                saw(node, "observer", "user:offline", "carol"),
                within=bound,
                what="carol offline after SIGKILL",
            )
        assert anyio.current_time() - start <= bound
        assert not await a.request("is_online", user="carol")
        assert await b.request("members", conversation="c1") == []
        # No ghosts after twice the timeout: not in any node's view, not in Redis.
        await anyio.sleep(max(0.0, start + 2 * NODE_TIMEOUT - anyio.current_time()))
        for node in (a, b):
            assert c.node_id not in await node.request("nodes")
            assert "carol" not in await node.request("online_users")
        client = redis.Redis.from_url(shared_server.url)
        try:
            keys = [k.decode() for k in client.scan_iter(match=f"{prefix}*")]
        finally:
            client.close()
        assert [k for k in keys if c.node_id in k] == []


@pytest.mark.parametrize("outage", [2.0, 10.0])
async def test_redis_outage_loses_and_duplicates_nothing(
    own_server: RedisServer, outage: float
) -> None:
    rate = 50  # messages a second, from node B, during the whole test
    before, after = 1.0, 1.0
    count = int((before + outage + after) * rate)
    # After Redis returns, each node hears the others again within a heartbeat or two;
    # on a loaded CI machine that took more than this module's 1 s node timeout, and a
    # node taken for dead makes its users flap offline. 3 s is still half the default
    # (6 s): what is tested is the outage, not the machine's speed.
    async with cluster(own_server.url, new_prefix(), 3, "--node-timeout", "3.0") as (a, b, c):
        await a.connect("alice", "alice", "c1")
        await c.connect("carol", "carol", "c1")
        await b.connect("bob", "bob", "c1")
        await b.request(
            "stream", conversation="c1", sender="bob", prefix="s", count=count, interval=1 / rate
        )
        await a.wait_for(lambda: len(message_ids(a, "alice")) >= 10, what="the stream to start")
        own_server.kill()
        await anyio.sleep(outage / 2)  # the outage itself: Redis is down this long
        for node in (a, b, c):
            statistics = await node.request("statistics")
            assert statistics["healthy"] is False, "a node does not report the outage"
        await anyio.sleep(outage / 2)
        # Bob is on B: he got every message so far, Redis or not.
        backlog = len(message_ids(b, "bob"))
        await anyio.to_thread.run_sync(own_server.start)
        # Everything published while Redis was down arrives within 2 s of its return.
        for node, client in ((a, "alice"), (c, "carol")):
            await node.wait_for(
                has_messages(node, client, backlog),
                within=2.0,
                what=f"the outage's backlog at {client}",
            )
        # The whole stream, exactly once and in order, everywhere.
        expected = [f"s{i}" for i in range(count)]
        for node, client in ((a, "alice"), (c, "carol"), (b, "bob")):
            await node.wait_for(
                has_messages(node, client, count),
                within=after + 5,
                what=f"the whole stream at {client}",
            )
            assert message_ids(node, client) == expected
            assert node.received(client, "sync:required") == []
            flaps = node.received(client, "user:offline")
            assert flaps == [], f"{client} saw users go offline: {flaps}"
        for node in (a, b, c):
            statistics = await node.request("statistics")
            assert statistics["healthy"] is True
            assert statistics["backplane"]["dropped"] == 0
            assert statistics["backplane"]["lost"] == 0
            assert node.process.returncode is None


async def test_websocket_clients_on_two_nodes_share_a_conversation(
    shared_server: RedisServer,
) -> None:
    prefix = new_prefix()
    port_a, port_c = free_port(), free_port()
    url = shared_server.url
    async with (
        cluster_node(url, prefix, "--ws-port", str(port_a)) as a,
        cluster_node(url, prefix) as b,
        cluster_node(url, prefix, "--ws-port", str(port_c)) as c,
        ws_client(f"ws://127.0.0.1:{port_a}/ws?userId=alice") as alice,
        ws_client(f"ws://127.0.0.1:{port_c}/ws?userId=carol") as carol,
    ):
        assert (await alice.request("conversation:join", {"conversationId": "c1"}))["ok"]
        await c.wait_answer(["alice"], "members", conversation="c1")
        reply = await carol.request("conversation:join", {"conversationId": "c1"})
        assert reply["members"] == ["alice", "carol"]
        await b.request("emit", message="m1", conversation="c1", sender="bob", text="hi")
        for client in (alice, carol):
            frame = await client.receive("message:received")
            assert frame["data"]["message"]["id"] == "m1"
            assert "id" in frame  # the server asks for an ack, across nodes too
        await alice.request("typing:start", {"conversationId": "c1"})
        typing = await carol.receive("typing:start")
        assert typing["data"]["userId"] == "alice"
        await b.request("emit", message="m2", conversation="c1", sender="bob", text="end")
        for client in (alice, carol):
            await client.receive("message:received")
            ids = [f["data"]["message"]["id"] for f in client.received if "message" in f["data"]]
            assert ids == ["m1", "m2"]
        assert a.node_id != c.node_id


async def test_an_emitters_disconnect_user_closes_the_users_tabs_everywhere_within_1s(
    shared_server: RedisServer,
) -> None:
    # A worker (a write-only Emitter) blocks an account: alice's WebSocket tabs on
    # three server processes are closed within 1 s, told why; bob's stay.
    url, prefix = shared_server.url, new_prefix()
    ports = [free_port() for _ in range(3)]
    async with AsyncExitStack() as stack:
        for port in ports:
            await stack.enter_async_context(cluster_node(url, prefix, "--ws-port", str(port)))
        alices = [
            await stack.enter_async_context(ws_client(f"ws://127.0.0.1:{port}/ws?userId=alice"))
            for port in ports
        ]
        bobs = [
            await stack.enter_async_context(ws_client(f"ws://127.0.0.1:{port}/ws?userId=bob"))
            for port in ports
        ]
        for client in (*alices, *bobs):  # each connection is serving by now
            assert (await client.request("conversation:join", {"conversationId": "c1"}))["ok"]
        emitter = await stack.enter_async_context(
            Emitter(RedisBackplane(url, prefix=prefix), config=CONFIG)
        )
        started = anyio.current_time()
        await emitter.disconnect_user("alice", "account_blocked")
        with anyio.fail_after(1):
            closes = [await alice.closed() for alice in alices]
        assert anyio.current_time() - started <= 1
        assert closes == [(1000, "account_blocked")] * 3  # an application's own reason
        for bob in bobs:
            assert (await bob.request("typing:start", {"conversationId": "c1"}))["ok"]
