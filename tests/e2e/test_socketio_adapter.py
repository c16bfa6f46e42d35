"""The Socket.IO adapter, end to end: uvicorn on loopback, real clients of both kinds.

Every scenario runs with python-socketio's AsyncClient and with the official JavaScript
socket.io-client v4 under Node (tests/js/client.mjs). python-socketio is asyncio-only,
so these tests are too (but for the one that checks trio is refused).
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import aiohttp
import anyio
import anyio.lowlevel
import pytest
import socketio

import chatrelay.adapters._sio_wire
from chatrelay import (
    Delivery,
    Limits,
    Message,
    MessageStatus,
    Relay,
    RelayConfig,
    Sender,
    allow_all,
)
from chatrelay.adapters.socketio import SocketIOAdapter
from chatrelay.auth.jwt import JWTAuthenticator
from chatrelay.lowlevel import Connection, Outbound
from jwt_support import AUDIENCE, ISSUER, claims, public_pem, rs256, rsa_key, unsigned
from socketio_support import (
    CLIENT_KINDS,
    TIMEOUT,
    ClientKind,
    JsClient,
    PyClient,
    Refused,
    Served,
    connect,
    polling_client,
    serve_app,
    serving,
)

pytestmark = pytest.mark.anyio

FAST = RelayConfig(presence_grace=0.05)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=CLIENT_KINDS)
def kind(request: pytest.FixtureRequest) -> ClientKind:
    value: ClientKind = request.param
    return value


def message(conversation: str = "c1", *, id: str = "m1", sender: str = "alice") -> Message:
    return Message(
        id=id,
        conversation_id=conversation,
        sender_id=sender,
        type="text",
        content={"text": "hello"},
        status=MessageStatus.SENT,
        created_at=datetime(2024, 5, 1, 12, 30, tzinfo=UTC),
    )


def jwt_authenticator() -> JWTAuthenticator:
    return JWTAuthenticator(
        public_pem(rsa_key()),
        algorithms=["RS256"],
        audience=AUDIENCE,
        issuer=ISSUER,
        name_claim="name",
    )


@asynccontextmanager
async def serving_jwt(**options: Any) -> AsyncIterator[Served]:
    """A production-mode relay that only JWTs get into."""
    config = RelayConfig(production=True, presence_grace=0.05)
    options.setdefault("allowed_origins", ["*"])  # production mode has no default
    async with serving(
        config=config, authenticator=jwt_authenticator(), authorize_join=allow_all, **options
    ) as served:
        yield served


class Deliveries:
    """An ``on_delivered`` hook that records what it is told."""

    def __init__(self) -> None:
        self.seen: list[Delivery] = []
        self._changed = anyio.Event()

    async def __call__(self, delivery: Delivery) -> None:
        self.seen.append(delivery)
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    async def wait_for(self, count: int) -> list[Delivery]:
        with anyio.fail_after(TIMEOUT):
            while len(self.seen) < count:
                await self._changed.wait()
        return self.seen


# --- authentication ---------------------------------------------------------------------


async def test_development_auth_takes_the_user_from_the_query(kind: ClientKind) -> None:
    async with serving() as served, connect(kind, served.url, user="alice") as alice:
        reply = await alice.request("conversation:join", {"conversationId": "c1"})
        assert reply == {
            "ok": True,
            "conversationId": "c1",
            "members": ["alice"],
            "typing": [],
            "position": {"offset": 0, "epoch": ANY},
        }
        assert served.relay.online_users() == {"alice"}


async def test_jwt_auth_takes_the_user_and_name_from_the_token(kind: ClientKind) -> None:
    async with serving_jwt() as served:
        alice_token = rs256(claims("alice", name="Alice"))
        async with (
            connect(kind, served.url, token=alice_token) as alice,
            connect(kind, served.url, token=rs256(claims("bob"))) as bob,
        ):
            await alice.request("conversation:join", {"conversationId": "c1"})
            reply = await bob.request("conversation:join", {"conversationId": "c1"})
            assert reply["members"] == ["alice", "bob"]
            await alice.emit("typing:start", {"conversationId": "c1"})
            typing = await bob.receive("typing:start")
            assert typing.data == {
                "conversationId": "c1",
                "userId": "alice",
                "isTyping": True,
                "user": {"id": "alice", "name": "Alice"},
            }


async def test_jwt_auth_ignores_the_development_query_parameter(kind: ClientKind) -> None:
    async with serving_jwt() as served:
        with pytest.raises(Refused) as refused:
            async with connect(kind, served.url, user="alice"):
                pass
        assert refused.value.data["code"] == "unauthorized"


async def test_an_oversized_auth_payload_is_refused_before_authentication(
    kind: ClientKind,
) -> None:
    """The payload limit holds before authentication, as for a WebSocket auth frame."""
    config = RelayConfig(limits=Limits(max_payload_bytes=1000))
    async with serving(config=config) as served:
        with pytest.raises(Refused) as refused:
            async with connect(kind, served.url, token="x" * 2000, query={"userId": "alice"}):
                pass
        data = refused.value.data
        assert (data["status"], data["code"]) == (413, "payload_too_large")
        assert data["message"].startswith("auth payload of 2012 bytes exceeds the limit of 1000")
        assert served.relay.online_users() == set()
        async with connect(kind, served.url, token="t" * 900, query={"userId": "alice"}) as ok:
            assert (await ok.request("conversation:join", {"conversationId": "c1"}))["ok"]


REFUSED_TOKENS: dict[str, Callable[[], str | None]] = {
    "no credentials": lambda: None,
    "bad signature": lambda: rs256(claims())[:-4] + "AAAA",
    "expired": lambda: rs256(claims(exp=1_000_000_000, iat=999_999_000)),
    "wrong audience": lambda: rs256(claims(aud="billing")),
    "alg none": lambda: unsigned(claims()),
}


@pytest.mark.parametrize("case", list(REFUSED_TOKENS))
async def test_refused_connect_gets_a_401_connect_error(
    kind: ClientKind, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = REFUSED_TOKENS[case]()
    async with serving_jwt() as served:
        with pytest.raises(Refused) as refused:
            async with connect(kind, served.url, token=token, query={"userId": "alice"}):
                pass
        data = refused.value.data
        assert data["status"] == 401
        assert data["code"] == "unauthorized"
        assert isinstance(data["message"], str)
        assert data["message"]
        assert refused.value.message == data["message"]
        # Nothing of the refused connection reached the relay.
        stats = served.relay.statistics()
        assert (stats.connections, stats.online_users, stats.rooms) == (0, 0, 0)
    refusals = [r for r in caplog.records if "connection refused" in r.getMessage()]
    assert len(refusals) == 1, caplog.text
    if token:
        assert token not in caplog.text


async def test_development_auth_refuses_a_connect_without_user(kind: ClientKind) -> None:
    async with serving() as served:
        with pytest.raises(Refused) as refused:
            async with connect(kind, served.url):
                pass
        assert refused.value.data == {
            "status": 401,
            "code": "unauthorized",
            "message": "missing the 'userId' query parameter",
        }
        assert served.relay.statistics().connections == 0


# --- requests ---------------------------------------------------------------------------


async def test_join_and_leave_are_acknowledged(kind: ClientKind) -> None:
    async with (
        serving() as served,
        connect(kind, served.url, user="alice") as alice,
        connect(kind, served.url, user="bob") as bob,
    ):
        await bob.request("conversation:join", {"conversationId": "c1"})
        await bob.request("typing:start", {"conversationId": "c1"})
        joined = await alice.request("conversation:join", {"conversationId": "c1"})
        assert joined == {
            "ok": True,
            "conversationId": "c1",
            "members": ["alice", "bob"],
            "typing": ["bob"],
            "position": {"offset": 0, "epoch": ANY},
        }
        left = await alice.request("conversation:leave", {"conversationId": "c1"})
        assert left == {"ok": True, "conversationId": "c1"}
        assert served.relay.members("c1") == {"bob"}


async def test_room_events_reach_exactly_the_rooms_members(kind: ClientKind) -> None:
    async with (
        serving() as served,
        connect(kind, served.url, user="alice") as alice,
        connect(kind, served.url, user="bob") as bob,
        connect(kind, served.url, user="carol") as carol,
    ):
        relay = served.relay
        await alice.request("conversation:join", {"conversationId": "c1"})
        await bob.request("conversation:join", {"conversationId": "c1"})
        await carol.request("conversation:join", {"conversationId": "c2"})

        await relay.message_received(message("c1"), sender=Sender(id="alice", name="Alice"))
        await relay.message_status("c1", "m1", "read", user_id="bob")
        for member in (alice, bob):
            received = await member.receive("message:received")
            assert received.data["conversationId"] == "c1"
            assert received.data["message"]["id"] == "m1"
            assert received.data["message"]["createdAt"] == "2024-05-01T12:30:00.000Z"
            assert received.data["sender"] == {"id": "alice", "name": "Alice"}
            assert received.wants_ack in (True, None)  # None: the Python client cannot tell
            status = await member.receive("message:status")
            assert status.data["messageId"] == "m1"
            assert status.data["status"] == "read"
            assert status.data["userId"] == "bob"
            assert status.wants_ack in (False, None)

        # A later event in carol's room is the first of its kind she gets.
        await relay.message_received(message("c2", id="m2", sender="carol"))
        received = await carol.receive("message:received")
        assert received.data["message"]["id"] == "m2"
        assert carol.events("message:received") == [received.data]
        assert carol.events("message:status") == []
        assert [e["message"]["id"] for e in bob.events("message:received")] == ["m1"]


async def test_typing_carries_the_authenticated_identity(kind: ClientKind) -> None:
    async with (
        serving() as served,
        connect(kind, served.url, user="alice") as alice,
        connect(kind, served.url, user="bob") as bob,
    ):
        await alice.request("conversation:join", {"conversationId": "c1"})
        await bob.request("conversation:join", {"conversationId": "c1"})

        reply = await alice.request("typing:start", {"conversationId": "c1", "isTyping": True})
        assert reply == {"ok": True}
        start = await bob.receive("typing:start")
        assert start.data == {
            "conversationId": "c1",
            "userId": "alice",
            "isTyping": True,
            "user": {"id": "alice"},
        }
        await alice.request("typing:stop", {"conversationId": "c1", "userId": "alice"})
        stop = await bob.receive("typing:stop")
        assert stop.data["userId"] == "alice"
        assert stop.data["isTyping"] is False

        # Speaking for someone else is refused; the typing stays alice's own business.
        forged = await alice.request("typing:start", {"conversationId": "c1", "userId": "bob"})
        assert forged["ok"] is False
        assert forged["error"]["status"] == 403
        assert forged["error"]["code"] == "forbidden"
        error = await alice.receive("error")
        assert error.data == {**forged["error"]}
        assert alice.events("typing:start") == []


async def test_presence_follows_connections(kind: ClientKind) -> None:
    async with serving(config=FAST) as served, connect(kind, served.url, user="alice") as alice:
        async with connect(kind, served.url, user="bob"):
            online = await alice.receive("user:online")
            assert online.data == {"userId": "bob"}
            assert served.relay.is_online("bob")
        offline = await alice.receive("user:offline")
        assert offline.data["userId"] == "bob"
        assert offline.data["lastSeen"].endswith("Z")
        assert not served.relay.is_online("bob")
        assert served.relay.online_users() == {"alice"}


async def test_a_malformed_request_gets_an_error_and_keeps_the_connection(
    kind: ClientKind, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with serving() as served, connect(kind, served.url, user="alice") as alice:
        reply = await alice.request("conversation:join", "c1")
        assert reply["ok"] is False
        assert reply["error"]["status"] == 400
        assert reply["error"]["code"] == "invalid_payload"
        assert reply["error"]["event"] == "conversation:join"
        assert (await alice.receive("error")).data == reply["error"]

        reply = await alice.request("conversation:join", {"conversationId": "c1", "x": 1})
        assert reply["error"]["code"] == "invalid_payload"
        await alice.receive("error")

        reply = await alice.request("conversation:join")
        assert reply["error"]["code"] == "invalid_payload"
        await alice.receive("error")

        reply = await alice.request("conversation:archive", {"conversationId": "c1"})
        assert reply["error"]["code"] == "unknown_event"
        await alice.receive("error")

        # Without an ack callback, the error event alone answers.
        await alice.emit("typing:start", {"conversationId": 7})
        error = await alice.receive("error")
        assert error.data["code"] == "invalid_payload"
        assert error.data["event"] == "typing:start"

        # The connection is still there and works.
        reply = await alice.request("conversation:join", {"conversationId": "c1"})
        assert reply["ok"] is True
        assert alice.disconnect_reason is None
    failures = [r for r in caplog.records if r.getMessage().startswith("request failed")]
    assert len(failures) == 5
    assert all("Traceback" not in str(e) for e in alice.events("error"))
    assert [r for r in caplog.records if r.name == "chatrelay.socketio"] == []


async def test_a_client_ack_of_a_message_is_a_delivery(kind: ClientKind) -> None:
    deliveries = Deliveries()
    async with (
        serving(on_delivered=deliveries) as served,
        connect(kind, served.url, user="alice") as alice,
        connect(kind, served.url, user="bob", auto_ack=False) as bob,
    ):
        await alice.request("conversation:join", {"conversationId": "c1"})
        await bob.request("conversation:join", {"conversationId": "c1"})
        await served.relay.message_received(message("c1", sender="alice"))

        received = await bob.receive("message:received")
        await alice.receive("message:received")  # alice acks too: the sender's is no delivery
        assert received.wants_ack in (True, None)
        assert deliveries.seen == []  # bob's client has not acknowledged yet
        await bob.ack(received)
        [delivery] = await deliveries.wait_for(1)
        assert delivery.user_id == "bob"
        assert delivery.conversation_id == "c1"
        assert delivery.message_id == "m1"

        # A status event asks for no ack: acking nothing more, nothing more is delivered.
        await served.relay.message_status("c1", "m1", "delivered", user_id="bob")
        status = await bob.receive("message:status")
        if isinstance(bob, JsClient):
            assert status.wants_ack is False
        await served.relay.message_received(message("c1", id="m2", sender="bob"))
        await alice.receive("message:received")
        assert [d.message_id for d in await deliveries.wait_for(2)] == ["m1", "m2"]
        assert deliveries.seen[1].user_id == "alice"


async def test_python_and_javascript_clients_share_a_room() -> None:
    async with (
        serving() as served,
        connect("python", served.url, user="alice") as alice,
        connect("js", served.url, user="bob") as bob,
    ):
        await alice.request("conversation:join", {"conversationId": "c1"})
        await bob.request("conversation:join", {"conversationId": "c1"})
        await bob.request("typing:start", {"conversationId": "c1"})
        assert (await alice.receive("typing:start")).data["userId"] == "bob"
        await served.relay.message_received(message("c1", sender="bob"))
        for client in (alice, bob):
            assert (await client.receive("message:received")).data["message"]["id"] == "m1"
        # The message ended bob's typing episode, for both.
        assert (await alice.receive("typing:stop")).data["userId"] == "bob"


# --- encoding, lifecycle, limits ---------------------------------------------------------


async def test_a_broadcast_is_encoded_once_for_all_recipients(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    deliveries = Deliveries()
    async with serving(on_delivered=deliveries) as served:
        encoded: list[Outbound] = []
        encode = chatrelay.adapters._sio_wire.encoded

        def counting(item: Outbound, head: str) -> Any:
            encoded.append(item)
            return encode(item, head)

        monkeypatch.setattr(chatrelay.adapters._sio_wire, "encoded", counting)
        async with (
            connect("python", served.url, user="alice") as alice,
            connect("python", served.url, user="bob") as bob,
            connect("js", served.url, user="carol") as carol,
            connect("js", served.url, user="dave") as dave,
        ):
            clients = (alice, bob, carol, dave)
            for client in clients:
                await client.request("conversation:join", {"conversationId": "c1"})
            await served.relay.message_received(message("c1", sender="alice"))
            await served.relay.message_status("c1", "m1", "read", user_id="bob")
            for client in clients:
                await client.receive("message:received")
                await client.receive("message:status")
            # One encoding per event, though each recipient got its own ack id: all
            # three who are not the sender acknowledged, each one a delivery.
            assert [item.event for item in encoded if item.event.startswith("message:")] == [
                "message:received",
                "message:status",
            ]
            users = {d.user_id for d in await deliveries.wait_for(3)}
            assert users == {"bob", "carol", "dave"}


async def test_leaving_the_adapter_disconnects_its_clients() -> None:
    relay = Relay(config=FAST)
    adapter = SocketIOAdapter(relay)
    alice = PyClient(auto_ack=True)
    async with relay, serve_app(adapter.asgi_app()) as url:
        try:
            async with adapter:
                await alice.open(f"{url}?userId=alice", auth=None, transports=None)
                await alice.request("conversation:join", {"conversationId": "c1"})
            assert "server" in await alice.disconnected()
            assert relay.statistics().connections == 0
            assert relay.members("c1") == frozenset()
        finally:
            await alice.close()


async def test_connects_are_refused_while_the_adapter_is_not_running(kind: ClientKind) -> None:
    relay = Relay()
    adapter = SocketIOAdapter(relay)
    async with relay, serve_app(adapter.asgi_app()) as url:
        with pytest.raises(Refused) as refused:
            async with connect(kind, url, user="alice"):
                pass
        assert refused.value.data["status"] == 503
        assert refused.value.data["code"] == "unavailable"
        assert relay.statistics().connections == 0


async def test_a_slow_consumer_is_disconnected_and_delays_no_one() -> None:
    config = RelayConfig(limits=Limits(outgoing_queue=8, rate=1000.0, burst=1000))
    async with (
        serving(config=config) as served,
        connect("python", served.url, user="alice") as alice,
        polling_client(served.url, userId="bob") as bob,
    ):
        # bob connects to the namespace and joins, then stops reading.
        await bob.send("40/messages,")
        assert (await bob.poll())[0].startswith("40/messages,")
        await bob.send('42/messages,1["conversation:join",{"conversationId":"c1"}]')
        assert (await bob.poll())[0].startswith("43/messages,1[")
        await alice.request("conversation:join", {"conversationId": "c1"})

        for n in range(200):
            await served.relay.message_received(message("c1", id=f"m{n}", sender="carol"))
            await anyio.lowlevel.checkpoint()  # let the pumps run, as between requests
        # What bob finds when it reads again soon: a bounded backlog, the error that
        # says why, then engine.io's CLOSE (not a Socket.IO DISCONNECT, after which
        # the official client would not reconnect).
        packets: list[str] = []
        with anyio.fail_after(TIMEOUT):
            while "1" not in packets:
                packets += await bob.poll()
        assert "41/messages," not in packets
        events = [p for p in packets if '["message:received",' in p]
        assert 0 < len(events) <= 64 + 8
        errors = [p for p in packets if p.startswith('42/messages,["error"')]
        assert len(errors) == 1
        assert '"code":"slow_consumer"' in errors[0]
        for n in range(200):
            assert (await alice.receive("message:received")).data["message"]["id"] == f"m{n}"
        stats = served.relay.statistics()
        assert stats.slow_consumers == 1
        assert stats.connections == 1


async def test_a_client_that_leaves_during_authentication_never_connects() -> None:
    entered = anyio.Event()
    release = anyio.Event()

    class Slow(JWTAuthenticator):
        async def authenticate(self, credentials: Any) -> Any:
            entered.set()
            await release.wait()
            return await super().authenticate(credentials)

    authenticator = Slow(public_pem(rsa_key()), algorithms=["RS256"], audience=AUDIENCE)
    async with (
        serving(authenticator=authenticator) as served,
        polling_client(served.url) as client,
    ):
        async with anyio.create_task_group() as tg:
            # The connect handler runs inside this POST, so it returns only afterwards.
            tg.start_soon(client.send, f'40/messages,{{"token":"{rs256(claims())}"}}')
            with anyio.fail_after(TIMEOUT):
                await entered.wait()
            await client.send("1")  # engine.io close
            release.set()
        await anyio.wait_all_tasks_blocked()
        assert served.adapter._sessions == {}
        assert served.relay.statistics().connections == 0
        assert served.relay.online_users() == frozenset()


async def test_an_unexpected_failure_is_answered_and_logged_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def boom(self: Connection, event: object, data: object, **_: Any) -> Any:
        raise RuntimeError("bug")

    async with serving() as served, connect("python", served.url, user="alice") as alice:
        monkeypatch.setattr(Connection, "handle", boom)
        reply = await alice.request("conversation:join", {"conversationId": "c1"})
        assert reply == {
            "ok": False,
            "error": {
                "status": 500,
                "code": "internal_error",
                "message": "the server failed",
                "event": "conversation:join",
            },
        }
        assert alice.disconnect_reason is None
    [record] = [r for r in caplog.records if r.name == "chatrelay.socketio"]
    assert record.exc_info is not None


async def test_unacknowledged_events_are_forgotten_beyond_a_bound(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    deliveries = Deliveries()
    config = RelayConfig(limits=Limits(pending_acks=3))
    async with (
        serving(config=config, on_delivered=deliveries) as served,
        connect("js", served.url, user="bob", auto_ack=False) as bob,
    ):
        await bob.request("conversation:join", {"conversationId": "c1"})
        for n in range(5):
            await served.relay.message_received(message("c1", id=f"m{n}"))
        received = [await bob.receive("message:received") for _ in range(5)]
        [callbacks] = served.adapter.server.manager.callbacks.values()
        assert len([key for key in callbacks if key != 0]) == 3  # 0 holds the id counter
        # The oldest two were forgotten: their acks are ignored, the others count.
        for event in received:
            await bob.ack(event)
        delivered = await deliveries.wait_for(3)
        assert [d.message_id for d in delivered] == ["m2", "m3", "m4"]

        # A failing hook or relay never reaches python-socketio: one log line.
        async def broken(self: Connection, item: Outbound) -> None:
            raise RuntimeError("bug")

        monkeypatch.setattr(Connection, "acknowledge", broken)
        await served.relay.message_received(message("c1", id="m5"))
        await bob.ack(await bob.receive("message:received"))
        # python-socketio runs an ack's callback before it reads the client's next
        # packet, so once this request is answered, the ack has been handled.
        await bob.request("conversation:join", {"conversationId": "c1"})
        [record] = [r for r in caplog.records if r.name == "chatrelay.socketio"]
        assert "ack failed" in record.getMessage()


async def test_a_connect_the_server_fails_to_accept_gets_a_500(
    kind: ClientKind, caplog: pytest.LogCaptureFixture
) -> None:
    relay = Relay()  # never entered: it cannot take connections
    adapter = SocketIOAdapter(relay)
    async with adapter, serve_app(adapter.asgi_app()) as url:
        with pytest.raises(Refused) as refused:
            async with connect(kind, url, user="alice"):
                pass
        assert refused.value.data["status"] == 500
        assert refused.value.data["code"] == "internal_error"
    [record] = [r for r in caplog.records if r.name == "chatrelay.socketio"]
    assert record.exc_info is not None
    assert "Traceback" not in refused.value.data["message"]


async def test_the_adapter_is_entered_once() -> None:
    adapter = SocketIOAdapter(Relay())
    await adapter.aclose()  # never entered: nothing to do
    async with adapter:
        with pytest.raises(RuntimeError, match="only once"):
            await adapter.__aenter__()
    await adapter.aclose()  # already closed: nothing to do


async def test_reserved_event_names_from_a_client_are_plain_requests() -> None:
    async with serving() as served, connect("python", served.url, user="alice") as alice:
        for name in ("connect", "disconnect"):
            reply = await alice.request(name, {"conversationId": "c1"})
            assert reply["error"]["code"] == "unknown_event"
        reply = await alice.request("conversation:join", {"conversationId": "c1"})
        assert reply["ok"] is True
        assert served.relay.statistics().connections == 1


# --- the documentation, origins, configuration -----------------------------------------------

HOWTO = Path(__file__).resolve().parents[2] / "docs" / "howto" / "socketio.md"


async def test_the_howto_server_serves_clients(
    kind: ClientKind, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The how-to's first program, as a user would copy it, served with its lifespan.
    program = re.search(r"```python\n(.*?)```", HOWTO.read_text(), re.DOTALL)
    assert program is not None
    monkeypatch.setenv("CHAT_JWT_PUBLIC_KEY", public_pem(rsa_key()))
    module: dict[str, Any] = {"__name__": "server"}
    exec(compile(program.group(1), str(HOWTO), "exec"), module)
    token = rs256(claims("alice", iss="https://auth.chat.example", name="Alice"))
    async with (
        serve_app(module["app"], lifespan=True) as url,
        connect(kind, url, token=token) as alice,
        aiohttp.ClientSession() as http,
    ):
        reply = await alice.request("conversation:join", {"conversationId": "c1"})
        assert reply["members"] == ["alice"]
        async with http.get(f"{url}/online") as response:
            assert await response.json() == {"online": ["alice"]}
        with pytest.raises(Refused):
            async with connect(kind, url, user="alice"):
                pass


async def test_allowed_origins_are_checked_on_the_handshake() -> None:
    async with serving(allowed_origins=["http://chat.example"]) as served:
        async with connect(
            "python", served.url, user="alice", headers={"Origin": "http://chat.example"}
        ) as alice:
            assert (await alice.request("conversation:join", {"conversationId": "c1"}))["ok"]
        with pytest.raises(Refused):
            async with connect(
                "python", served.url, user="mallory", headers={"Origin": "http://evil.example"}
            ):
                pass
        # No Origin header at all (a native app, a script): not a browser, not checked.
        async with connect("js", served.url, user="bob") as bob:
            assert (await bob.request("conversation:join", {"conversationId": "c1"}))["ok"]


async def test_any_web_origin_connects_by_default_outside_production() -> None:
    """The default is the WebSocket adapter's: any http/https origin, never ``null``."""
    async with serving() as served:
        async with connect(
            "python", served.url, user="alice", headers={"Origin": "http://elsewhere.example"}
        ) as alice:
            assert (await alice.request("conversation:join", {"conversationId": "c1"}))["ok"]
        with pytest.raises(Refused):
            async with connect("python", served.url, user="mallory", headers={"Origin": "null"}):
                pass


async def test_the_adapter_attaches_to_an_existing_server_and_namespace() -> None:
    server = socketio.AsyncServer(async_mode="asgi")

    @server.on("ping", namespace="/")  # type: ignore[untyped-decorator]
    async def ping(sid: str, data: Any) -> str:
        return "pong"

    relay = Relay()
    adapter = SocketIOAdapter(relay, server=server, namespace="/chat")
    async with relay, adapter, serve_app(socketio.ASGIApp(server)) as url:
        async with connect("python", url, user="alice", namespace="/chat") as alice:
            reply = await alice.request("conversation:join", {"conversationId": "c1"})
            assert reply["members"] == ["alice"]
        async with connect("js", url, user="bob", namespace="/chat") as bob:
            assert (await bob.request("conversation:join", {"conversationId": "c1"}))["ok"]


def test_the_adapter_checks_its_arguments() -> None:
    relay = Relay()
    with pytest.raises(ValueError, match="namespace"):
        SocketIOAdapter(relay, namespace="messages")
    with pytest.raises(ValueError, match="cors_allowed_origins"):
        SocketIOAdapter(relay, server=socketio.AsyncServer(), allowed_origins="*")
    with pytest.raises(ValueError, match="always_connect"):
        SocketIOAdapter(relay, server=socketio.AsyncServer(always_connect=True))
    with pytest.raises(TypeError, match="AsyncServer"):
        SocketIOAdapter(relay, server=socketio.Server())


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_the_adapter_refuses_to_run_on_trio() -> None:
    adapter = SocketIOAdapter(Relay())
    with pytest.raises(RuntimeError, match="asyncio only"):
        async with adapter:
            pass
