"""Hostile and malformed input on the Socket.IO binding, over raw packets.

A well-formed packet that carries a bad request gets what the WebSocket binding gives
it: exactly one ``error`` event (coalesced under a flood, by the rate limit) and a
failed ack when one was asked. A malformed packet closes its connection, as the
Socket.IO protocol's test suite expects of a server. Neither disturbs the other
clients, and neither puts a traceback in the log.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import aiohttp
import anyio
import pytest
from websockets.exceptions import ConnectionClosed

from chatrelay import Limits, RelayConfig
from chatrelay.adapters._sio_guard import QuietLibraryLog
from sio_raw import RawSocket, raw_socket
from socketio_support import NAMESPACE, TIMEOUT, Client, Served, connect, serving
from waiting import eventually

pytestmark = pytest.mark.anyio

# Generous rates, so that the battery meets each request's own error, not rate_limited.
ROOMY = RelayConfig(limits=Limits(rate=1000, burst=1000), presence_grace=0.05)
EVENT = f"42{NAMESPACE},"
CLIENT_LOGGERS = ("websockets.client", "socketio.client", "engineio.client", "aiohttp")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@contextmanager
def all_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Capture every log record, uvicorn's too (its loggers do not reach the root)."""
    caplog.set_level(logging.DEBUG)
    uvicorn = logging.getLogger("uvicorn")
    uvicorn.addHandler(caplog.handler)
    try:
        yield
    finally:
        uvicorn.removeHandler(caplog.handler)


def server_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """What the server logged (the test's clients log too, at DEBUG)."""
    return [r for r in caplog.records if not r.name.startswith(CLIENT_LOGGERS)]


def log_size(caplog: pytest.LogCaptureFixture) -> int:
    return sum(len(caplog.handler.format(record)) for record in server_records(caplog))


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        caplog.handler.format(r)
        for r in caplog.records
        if r.exc_info is not None or r.exc_text or "Traceback" in r.getMessage()
    ]


@asynccontextmanager
async def with_bystander(served: Served) -> AsyncIterator[Client]:
    """bob, on another connection in conversation c1, who must notice nothing."""
    async with connect("python", served.url, user="bob") as bob:
        reply = await bob.request("conversation:join", {"conversationId": "c1"})
        assert reply["ok"] is True
        yield bob


async def bystander_unaffected(bob: Client) -> None:
    reply = await bob.request("conversation:join", {"conversationId": "c1"})
    assert reply["ok"] is True
    assert bob.disconnect_reason is None
    assert bob.events("error") == []


async def answer(raw: RawSocket, ack_id: int | None) -> tuple[list[Any], Any]:
    """The ``error`` events up to the ack of ``ack_id`` (or up to one error, without one)."""
    errors: list[Any] = []
    while True:
        packet = await raw.text()
        if packet.startswith(EVENT):
            name, *args = json.loads(packet[len(EVENT) :])
            if name == "error":
                errors.append(args[0])
                if ack_id is None:
                    return errors, None
        elif packet.startswith(f"43{NAMESPACE},"):
            head = f"43{NAMESPACE},{ack_id}["
            assert packet.startswith(head), packet
            return errors, json.loads(packet[len(head) - 1 :])[0]


async def answer_all(raw: RawSocket, ack_id: int) -> tuple[list[Any], Any]:
    """Every ``error`` event up to the ack of ``ack_id``, and that ack."""
    errors: list[Any] = []
    while True:
        more, ack = await answer(raw, ack_id)
        errors += more
        if ack is not None:
            return errors, ack


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


# (what is sent after 42/messages,<id>, the expected status and code, the event named)
BAD_REQUESTS: list[tuple[str, int, str, str | None]] = [
    ('[5,{"conversationId":"c1"}]', 400, "unknown_event", None),
    ('["conversation:join"]', 400, "invalid_payload", "conversation:join"),
    ('["conversation:join",{"conversationId":"c1"},2]', 400, "invalid_payload", None),
    ('["conversation:join",null]', 400, "invalid_payload", "conversation:join"),
    ('["conversation:join",[]]', 400, "invalid_payload", "conversation:join"),
    ('["conversation:join",7]', 400, "invalid_payload", "conversation:join"),
    ('["conversation:join","c1"]', 400, "invalid_payload", "conversation:join"),
    ('["conversation:join",true]', 400, "invalid_payload", "conversation:join"),
    ('["conversation:join",{"conversationId":"c1","x":1}]', 400, "invalid_payload", None),
    ('["conversation:join",{"conversationId":{"a":[1]}}]', 400, "invalid_payload", None),
    (
        '["conversation:join",{"conversationId":"' + "x" * 20_000 + '"}]',
        413,
        "payload_too_large",
        "conversation:join",
    ),
    ('["conversation:join",' + nested(30) + "]", 400, "invalid_payload", None),
    ('["*",{"conversationId":"c1"}]', 400, "unknown_event", "*"),
    ('["*"]', 400, "unknown_event", "*"),
    ('["conversation:archive",{"conversationId":"c1"}]', 400, "unknown_event", None),
    ('["connect",{"conversationId":"c1"}]', 400, "unknown_event", "connect"),
    ('["error",{"conversationId":"c1"}]', 400, "unknown_event", "error"),
    ('["typing:start",{"conversationId":"nowhere"}]', 409, "not_in_conversation", None),
    ('["conversation:leave",{"conversationId":"c1","userId":"x"}]', 400, "invalid_payload", None),
]


async def test_each_bad_request_gets_exactly_one_error_and_a_failed_ack(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with all_logs(caplog):
        async with (
            serving(config=ROOMY) as served,
            with_bystander(served) as bob,
            raw_socket(served.url, user="alice") as alice,
        ):
            await alice.join("alice")
            for ack_id, (body, status, code, event) in enumerate(BAD_REQUESTS, start=1):
                await alice.send(f"{EVENT}{ack_id}{body}")
                errors, ack = await answer(alice, ack_id)
                assert len(errors) == 1, (body[:80], errors)
                [error] = errors
                assert ack == {"ok": False, "error": error}, body[:80]
                assert (error["status"], error["code"]) == (status, code), body[:80]
                assert set(error) <= {"status", "code", "message", "event"}
                if event is not None:
                    assert error["event"] == event
                # Without an ack id, the error event alone answers.
                await alice.send(f"{EVENT}{body}")
                errors, _ = await answer(alice, None)
                assert errors[0]["code"] == code
            # Odd but valid ack ids are echoed as numbers.
            for sent, echoed in (("0", 0), ("0007", 7), ("9" * 30, int("9" * 30))):
                await alice.send(f'{EVENT}{sent}["conversation:join",null]')
                errors, ack = await answer(alice, echoed)
                assert len(errors) == 1
                assert ack["ok"] is False
            # Binary arguments: not JSON, so not a request.
            await alice.send(
                f'451-{NAMESPACE},99["conversation:join",{{"_placeholder":true,"num":0}}]'
            )
            await alice.send(b"\x00\x01")
            errors, ack = await answer(alice, 99)
            assert [e["code"] for e in errors] == ["invalid_payload"]
            assert ack["ok"] is False
            # Still connected, and nothing else was queued for it: the next ack is clean.
            await alice.send(f'{EVENT}500["conversation:join",{{"conversationId":"c1"}}]')
            errors, ack = await answer(alice, 500)
            assert errors == []
            assert ack["ok"] is True
            await bystander_unaffected(bob)
    assert tracebacks(caplog) == []


MALFORMED: list[str | bytes | list[str | bytes]] = [
    "4abc",  # an unknown Socket.IO packet type
    f"{EVENT}{{}}",  # a payload that is not a list
    f'{EVENT}abc["conversation:join",{{}}]',  # an invalid ack id
    f"{EVENT}[",  # not JSON
    f"{EVENT}[]",  # no event name
    f"{EVENT}[{{}}]",
    f"{EVENT}[null]",
    f"{EVENT}[true]",
    f"42{NAMESPACE}",  # no comma, no payload
    f'{EVENT}["conversation:join",{nested(500)}]',  # deeper than any request
    f"{EVENT}" + nested(100_000),  # too deep for the JSON decoder
    f"43{NAMESPACE},[]",  # an ack without an id
    f"43{NAMESPACE},5{{}}",  # an ack that is not a list
    f"44{NAMESPACE},{{}}",  # CONNECT_ERROR is the server's
    f"47{NAMESPACE},[]",  # no such packet type
    "49",
    f'40{NAMESPACE},"token"',  # CONNECT data that is not an object
    b"\x01\x02",  # an attachment nobody announced
    f'45{NAMESPACE},["conversation:join",{{"_placeholder":true,"num":0}}]',  # 0 attachments
    f'450-{NAMESPACE},["conversation:join"]',
    f'4599-{NAMESPACE},["conversation:join",{{"_placeholder":true,"num":0}}]',
    # A placeholder for an attachment that does not exist.
    [f'451-{NAMESPACE},["conversation:join",{{"_placeholder":true,"num":99}}]', b"\x00"],
    [f'451-{NAMESPACE},["conversation:join",{{"_placeholder":true,"num":"0"}}]', b"\x00"],
    # Announced, never sent: the next text packet is not taken for the attachment.
    [
        f'451-{NAMESPACE},["conversation:join",{{"_placeholder":true,"num":0}}]',
        f'{EVENT}1["conversation:join",{{"conversationId":"c1"}}]',
    ],
    "",  # engine.io: an empty packet
    "x",  # engine.io: no packet type
    "9",  # engine.io: an unknown packet type
    "b!!!",  # engine.io: a binary message that is not base64
]


@pytest.mark.parametrize("packets", MALFORMED, ids=lambda p: repr(p)[:40])
async def test_a_malformed_packet_closes_its_connection_and_no_other(
    packets: str | bytes | list[str | bytes], caplog: pytest.LogCaptureFixture
) -> None:
    with all_logs(caplog):
        async with serving(config=ROOMY) as served, with_bystander(served) as bob:
            async with raw_socket(served.url, user="alice") as alice:
                await alice.join("alice")
                await eventually(lambda: served.relay.statistics().connections == 2)
                for packet in packets if isinstance(packets, list) else [packets]:
                    await alice.send(packet)
                seen = await alice.closed()
            # Garbage below Socket.IO ends the WebSocket at once; a malformed Socket.IO
            # packet gets an error event that says why, then engine.io's CLOSE.
            if seen:
                error, close = seen
                assert isinstance(error, str), seen
                assert error.startswith(f'{EVENT}["error",{{"status":400,'), seen
                assert close == "1"
            await eventually(lambda: served.relay.statistics().connections == 1)
            await eventually(lambda: len(served.adapter.server.eio.sockets) == 1)
            await bystander_unaffected(bob)
    assert tracebacks(caplog) == []
    assert len(server_records(caplog)) < 20, [r.getMessage() for r in server_records(caplog)]


@pytest.mark.parametrize("garbage", ["4abc", "x", "9", f"{EVENT}[]"], ids=repr)
async def test_a_malformed_packet_on_long_polling_ends_the_session(
    garbage: str, caplog: pytest.LogCaptureFixture
) -> None:
    with all_logs(caplog):
        await long_polling_session_ended_by(garbage)
    assert tracebacks(caplog) == []


async def long_polling_session_ended_by(garbage: str) -> None:
    async with (
        serving(config=ROOMY) as served,
        with_bystander(served) as bob,
        aiohttp.ClientSession() as http,
    ):
        url = f"{served.url}/socket.io/"
        async with http.get(url, params={"EIO": "4", "transport": "polling"}) as response:
            sid = json.loads((await response.text())[1:])["sid"]
        params = {"EIO": "4", "transport": "polling", "sid": sid, "userId": "alice"}
        for body in (f"40{NAMESPACE},", garbage):
            with anyio.fail_after(TIMEOUT):
                async with http.post(url, params=params, data=body) as response:
                    assert response.status in (200, 400)
        await eventually(lambda: sid not in served.adapter.server.eio.sockets)
        with anyio.fail_after(TIMEOUT):
            async with http.get(url, params=params) as response:
                assert response.status == 400
        await bystander_unaffected(bob)


@pytest.mark.parametrize("garbage", [f"{EVENT}[", "4abc", "", "9", b"\x00"], ids=repr)
async def test_3000_garbage_packets_log_a_few_lines(
    garbage: str | bytes, caplog: pytest.LogCaptureFixture
) -> None:
    with all_logs(caplog):
        async with serving() as served, with_bystander(served) as bob:
            async with raw_socket(served.url, user="alice") as alice:
                await alice.join("alice")
                with anyio.fail_after(TIMEOUT * 3):
                    for _ in range(3000):
                        try:
                            await alice.send(garbage)
                        except ConnectionClosed:
                            break  # closed by the server
                await alice.closed()
            await bystander_unaffected(bob)
    assert tracebacks(caplog) == []
    assert len(server_records(caplog)) < 20, [r.getMessage() for r in server_records(caplog)]
    assert log_size(caplog) < 5_000


async def test_3000_bad_requests_get_coalesced_errors_and_log_a_few_lines(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with all_logs(caplog):
        async with serving() as served, with_bystander(served) as bob:
            async with raw_socket(served.url, user="alice") as alice:
                await alice.join("alice")
                started = anyio.current_time()
                with anyio.fail_after(TIMEOUT * 3):
                    for _ in range(3000):
                        await alice.send(f'{EVENT}["x",1]')
                # The connection stays; its next request is answered after the errors.
                await alice.send(f'{EVENT}1["conversation:join",{{"conversationId":"c1"}}]')
                errors, ack = await answer_all(alice, 1)
                elapsed = anyio.current_time() - started
                assert ack["ok"] is False  # rate-limited: the flood used the tokens up
                # The burst's 20 unknown_event errors, one more for each token refilled
                # (10 a second) while the flood lasted, and one rate_limited a second:
                # a few dozen errors for 3,000 requests, however slow the machine is.
                limits = Limits()
                most = limits.burst + (limits.rate + 1 / limits.rate_error_interval) * elapsed + 1
                assert limits.burst < len(errors) <= most, (len(errors), elapsed)
                assert {e["code"] for e in errors} == {"unknown_event", "rate_limited"}
            await bystander_unaffected(bob)
    assert tracebacks(caplog) == []
    # A line per error event and a few more (the development-mode warnings), not 3,000.
    records = server_records(caplog)
    assert len(records) <= most + 5, [r.getMessage() for r in records]
    assert log_size(caplog) < 300 * (most + 5)


def test_the_libraries_errors_are_logged_once_then_coalesced(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    log = QuietLibraryLog("chatrelay.socketio.library", interval=3600)
    error = ValueError("garbage")
    for _ in range(3000):
        log.error("message async handler error", exc_info=error)
        log.info("%s: Received packet MESSAGE data %s", "sid", '40{"token":"secret"}')
        log.warning("not connected")
    [record] = caplog.records
    assert record.exc_info is not None  # the first one keeps its traceback, once
    assert not log.isEnabledFor(logging.INFO)


def test_messages_of_many_kinds_share_one_budget_past_a_bound(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    log = QuietLibraryLog("chatrelay.socketio.library", interval=3600)
    for n in range(3000):
        log.error(f"session {n} failed")
    assert len(caplog.records) == 257
