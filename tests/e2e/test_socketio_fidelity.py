"""What the official socket.io-client sees on every engine.io transport, under load.

Each scenario runs on long-polling, on WebSocket from the start, and on the default
(long-polling, then an upgrade to WebSocket): acks never overtake earlier events, a
burst the server makes never cuts a client that reads, a long-polling client's acks
and requests all arrive, and a client the server closes reconnects by itself.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any
from urllib.parse import urlsplit

import anyio
import anyio.lowlevel
import pytest

from chatrelay import Delivery, Limits, MessageStatus, Relay, RelayConfig
from chatrelay.adapters.starlette import WebSocketAdapter
from raw_ws_support import StalledClient
from relay_helpers import message
from socketio_support import (
    RECONNECTION_DELAY_MAX,
    Client,
    ClientKind,
    JsClient,
    Served,
    connect,
    serving,
)
from waiting import eventually
from ws_support import make_app
from ws_support import serving as serving_websocket

pytestmark = pytest.mark.anyio

TRANSPORTS: dict[str, list[str] | None] = {
    "polling": ["polling"],
    "websocket": ["websocket"],
    "default": None,  # long-polling, then upgraded to WebSocket
}


# The official client on every transport; python-socketio's client on WebSocket, from
# the start and after an upgrade (on long-polling alone, its disconnect leaves an
# aiohttp connection unclosed, which the warnings filter turns into another test's
# failure).
CLIENTS: list[tuple[str, ClientKind]] = [
    *((transport, "js") for transport in TRANSPORTS),
    ("websocket", "python"),
    ("default", "python"),
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=list(TRANSPORTS))
def transport(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def open_js(served: Served, user: str, transport: str, **options: Any) -> Any:
    """`connect()` for the JavaScript client on one transport (an async context manager)."""
    return connect("js", served.url, user=user, transports=TRANSPORTS[transport], **options)


async def typing_start(client: Client) -> None:
    reply = await client.request("typing:start", {"conversationId": "c1"})
    assert reply["ok"] is True, reply


async def joined(client: Client, conversation: str = "c1") -> None:
    reply = await client.request("conversation:join", {"conversationId": conversation})
    assert reply["ok"] is True, reply


async def burst_of_statuses(served: Served, count: int) -> None:
    """Hand ``count`` status events of c1 to the relay, as fast as it takes them.

    What a "mark the conversation read" of ``count`` messages does: the events reach
    each connection faster than any client can read them.
    """
    for n in range(count):
        await served.relay.message_status("c1", f"m{n}", MessageStatus.READ, user_id="bob")


async def test_an_ack_never_overtakes_events_sent_before_it(transport: str) -> None:
    # 3,000 events reach alice's connection before she asks to leave: the leave's ack
    # must come after all of them, on every transport (DESIGN.md, "Ordering rule").
    async with serving() as served, open_js(served, "alice", transport) as alice:
        assert isinstance(alice, JsClient)
        await joined(alice)
        await burst_of_statuses(served, 3000)
        ref = await alice.send_request("conversation:leave", {"conversationId": "c1"})
        assert (await alice.reply(ref))["ok"] is True
        arrived = [(kind, name) for kind, name in alice.log if kind in ("event", "reply")]
        statuses = [i for i, entry in enumerate(arrived) if entry == ("event", "message:status")]
        assert len(statuses) == 3000
        assert arrived.index(("reply", ref)) > statuses[-1]
        ids = [data["messageId"] for data in alice.events("message:status")]
        assert ids == [f"m{n}" for n in range(3000)]
        assert alice.disconnect_reason is None
        assert served.relay.statistics().slow_consumers == 0


@pytest.mark.parametrize(("transport", "kind"), CLIENTS)
async def test_a_burst_the_server_makes_never_cuts_a_reading_client(
    transport: str, kind: ClientKind
) -> None:
    # 10,000 messages at once: about what the backplane replays after a Redis outage of
    # 10 s at 1,000 messages a second. A client that reads gets them all, in order.
    count = 10_000
    # Under coverage on a busy machine, python-socketio's client (in this process) can
    # fall more than the heartbeats' 20 s behind; what is tested is the relay's rule.
    async with (
        serving(keepalive=300) as served,
        connect(kind, served.url, user="bob", transports=TRANSPORTS[transport]) as bob,
    ):
        await joined(bob)
        for n in range(count):
            await served.relay.message_received(message(f"m{n}", sender="carol"))
        with anyio.fail_after(120):
            while len(bob.events("message:received")) < count:
                assert bob.disconnect_reason is None, bob.disconnect_reason
                await bob.receive("message:received")
        ids = [data["message"]["id"] for data in bob.events("message:received")]
        assert ids == [f"m{n}" for n in range(count)]
        assert served.relay.statistics().slow_consumers == 0
        if transport == "default" and isinstance(bob, JsClient):
            assert bob.upgraded_to == "websocket"


@pytest.mark.parametrize(("transport", "kind"), CLIENTS)
async def test_every_ack_and_request_of_a_busy_client_arrives(
    transport: str, kind: ClientKind
) -> None:
    # The client acks each message:received; on long-polling it sends what piled up
    # while a POST was under way in one POST (python-engineio drops one of more than
    # 16 packets whole by default), together with requests of its own.
    delivered: list[Delivery] = []

    async def on_delivered(delivery: Delivery) -> None:
        delivered.append(delivery)

    config = RelayConfig(limits=Limits(rate=1000.0, burst=1000))
    async with (
        serving(config=config, on_delivered=on_delivered) as served,
        connect(kind, served.url, user="bob", transports=TRANSPORTS[transport]) as bob,
    ):
        await joined(bob)
        async with anyio.create_task_group() as tg:
            for n in range(900):
                await served.relay.message_received(message(f"m{n}", sender="carol"))
                if n % 60 == 0:  # requests sent while the acks pile up, answered
                    tg.start_soon(typing_start, bob)
        await eventually(lambda: len(delivered) == 900, within=30)
        assert sorted(d.message_id for d in delivered) == sorted(f"m{n}" for n in range(900))


@pytest.mark.parametrize("transport", ["polling", "default"])
async def test_a_closed_slow_consumer_is_told_why_and_reconnects_by_itself(
    transport: str,
) -> None:
    # Events beyond what engine.io holds for a long-polling client wait in the relay's
    # queue; a small bound makes a burst overflow it. The client hears why (an error
    # event), then engine.io closes: the official client reconnects by itself, which
    # it never does after a Socket.IO DISCONNECT ("io server disconnect").
    config = RelayConfig(limits=Limits(outgoing_bytes=2_000))
    async with (
        serving(config=config) as served,
        open_js(served, "bob", transport, reconnection=True) as bob,
    ):
        assert isinstance(bob, JsClient)
        await joined(bob)
        await burst_of_statuses(served, 500)
        # (socket.io-client hands events over on the next tick, but acts on engine.io's
        # CLOSE at once: it reports the disconnect before the events that preceded it.)
        await eventually(lambda: bool(bob.events("error")), within=10)
        [error] = bob.events("error")
        assert error["code"] == "slow_consumer"
        assert error["status"] == 503
        await eventually(lambda: bob.connects == 2, within=10)
        # By itself and soon: within its reconnectionDelayMax + 1 s (the client's clock).
        [closed] = bob.times["disconnect"]
        assert bob.times["connect"][1] - closed <= RECONNECTION_DELAY_MAX + 1
        assert served.relay.statistics().slow_consumers == 1
        await joined(bob)  # the new connection works


PADDING = "x" * 20_000


def read_past(client: StalledClient, marker: bytes, event: bytes) -> int:
    """Read until ``marker``; how many times ``event`` occurred before it."""
    return client.read_until(marker).count(event)


@pytest.mark.parametrize("binding", ["socketio", "websocket"])
async def test_an_ack_never_overtakes_events_a_paused_reader_owes(binding: str) -> None:
    # A client that paused reading: the server's writes back up (the kernel holds at
    # most 4 MiB), and events wait in the relay's queue. Its request's ack must still
    # come after all of them.
    count = 400
    limits = Limits(rate=1000.0, burst=1000, outgoing_bytes=32 * 1024 * 1024)
    config = RelayConfig(limits=limits)
    async with AsyncExitStack() as stack:
        if binding == "socketio":
            served = await stack.enter_async_context(serving(config=config))
            relay, url = served.relay, served.url
        else:
            relay = Relay(config=config)
            url = await stack.enter_async_context(
                serving_websocket(make_app(WebSocketAdapter(relay)))
            )
        port = urlsplit(url).port
        assert port is not None
        client = StalledClient(port)
        stack.enter_context(client.sock)
        if binding == "socketio":
            join = ('42/messages,1["conversation:join",{"conversationId":"c1"}]', b"43/messages,1[")
            leave = (
                '42/messages,2["conversation:leave",{"conversationId":"c1"}]',
                b"43/messages,2[",
            )
            target = "/socket.io/?EIO=4&transport=websocket&userId=alice"
        else:
            join = (
                '{"event":"conversation:join","data":{"conversationId":"c1"},"id":1}',
                b'"id":1,',
            )
            leave = (
                '{"event":"conversation:leave","data":{"conversationId":"c1"},"id":2}',
                b'"id":2,',
            )
            target = "/ws?userId=alice"

        def joined() -> None:
            client.handshake(target)
            if binding == "socketio":
                client.read_until(b'0{"sid"')
                client.send_text("40/messages,")
                client.read_until(b"40/messages,{")
            client.send_text(join[0])
            client.read_until(join[1])

        await client.run(joined)
        for n in range(count):  # 8 MB in all
            await relay.message_received(message(f"m{n}", sender="bob", text=PADDING))
        await client.run(lambda: client.send_text(leave[0]))
        before: list[int] = []
        await client.run(lambda: before.append(read_past(client, leave[1], b'"message:received"')))
        assert before == [count]
        assert relay.statistics().slow_consumers == 0


@pytest.mark.parametrize("transport", ["polling", "default"])
async def test_a_disconnected_user_is_told_why_and_reconnects_by_itself(transport: str) -> None:
    async with serving() as served, open_js(served, "bob", transport, reconnection=True) as bob:
        assert isinstance(bob, JsClient)
        await joined(bob)
        await served.relay.disconnect_user("bob")
        await eventually(lambda: bool(bob.events("error")), within=10)
        [error] = bob.events("error")
        assert (error["status"], error["code"]) == (401, "disconnected")
        # The development authenticator lets it back in: it reconnects by itself.
        await eventually(lambda: bob.connects == 2, within=10)
        await joined(bob)


@pytest.mark.parametrize("transport", ["polling", "default"])
async def test_a_drained_client_is_told_why_and_keeps_trying_to_reconnect(transport: str) -> None:
    async with serving() as served, open_js(served, "bob", transport, reconnection=True) as bob:
        assert isinstance(bob, JsClient)
        await joined(bob)
        await served.relay.drain(0.1)
        if transport != "polling":
            # Over long-polling, socket.io-client acts on engine.io's CLOSE before it
            # hands over the events of the same response, and keeps them for after it
            # reconnects: here, to a server that refuses it, so never.
            await eventually(lambda: bool(bob.events("error")), within=10)
            [error] = bob.events("error")
            assert (error["status"], error["code"]) == (503, "server_restart")
            [told] = bob.events("server:draining")
            assert told["reconnectAfterMs"] == 100  # its slot: the whole window, alone

        # Its reconnection attempts meet HTTP 503 (a transport error, retried with
        # backoff), not a Socket.IO connect error, after which it would give up.
        def attempts() -> int:
            return sum(1 for kind, _ in bob.log if kind == "connect_error")

        await eventually(lambda: attempts() >= 2, within=15)
        # The first attempt within its reconnectionDelayMax + 1 s (the client's clock).
        [closed] = bob.times["disconnect"]
        assert bob.times["connect_error"][0] - closed <= RECONNECTION_DELAY_MAX + 1
        assert bob.disconnect_reason != "io server disconnect"
        assert bob.connects == 1
