"""The ``chatrelay`` command, run as users run it: a separate process."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from contextlib import AsyncExitStack
from unittest.mock import ANY

import anyio
import httpx
import pytest

from chatrelay import __version__
from demo_support import demo_process, free_port, wait_healthy
from redis_support import redis_server
from ws_support import ws_client

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chatrelay", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_help_documents_every_option() -> None:
    result = run("demo", "--help")
    assert result.returncode == 0
    for option in (
        "--host",
        "--port",
        "--auth",
        "--jwt-secret",
        "--allowed-origins",
        "--redis-url",
        "--drain-window",
        "--log-level",
    ):
        assert option in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("demo", "--port", "70000"), "--port must be between 0 and 65535"),
        (("demo", "--auth", "basic"), "invalid choice: 'basic'"),
        (("demo", "--auth", "jwt"), "--auth jwt needs --jwt-secret"),
        (("demo", "--jwt-secret", "s"), "--jwt-secret goes with --auth jwt"),
        (("demo", "--auth", "jwt", "--jwt-secret", "short"), "too weak for HS256"),
        (("demo", "--allowed-origins", "example.com"), "origin"),
        (("demo", "--log-level", "loud"), "invalid choice: 'loud'"),
        (("demo", "--drain-window", "-1"), "--drain-window must be 0 or more"),
        (("demo", "--redis-url", "http://127.0.0.1:6379/0"), "--redis-url: invalid Redis URL"),
        (("demo", "--redis-url", "redis://:pw@127.0.0.1:x/0"), "redis://:***@127.0.0.1:x/0"),
        (("demo", "--redis-url", "redis://127.0.0.1:6379/zero"), "database must be a number"),
        (("no-such-command",), "invalid choice: 'no-such-command'"),
        ((), "the following arguments are required: COMMAND"),
    ],
)
def test_bad_options_exit_with_status_2(args: tuple[str, ...], message: str) -> None:
    result = run(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_redis_exits_with_status_1() -> None:
    result = run("demo", "--redis-url", f"redis://:secret@127.0.0.1:{free_port()}/0")
    assert result.returncode == 1
    assert "cannot reach Redis at redis://127.0.0.1:" in result.stderr
    assert "secret" not in result.stderr
    assert "Traceback" not in result.stderr


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"chatrelay {__version__}"


async def test_sigint_shuts_down_cleanly_and_closes_clients_normally() -> None:
    with demo_process("--drain-window", "0.2") as demo:
        process, address = demo.process, demo.address
        await wait_healthy(address)
        async with ws_client(f"ws://{address}/ws?userId=alice") as alice:
            reply = await alice.request("conversation:join", {"conversationId": "c1"})
            assert reply["ok"] is True
            process.send_signal(signal.SIGINT)
            code, reason = await alice.closed()
        # uvicorn closes WebSockets with 1012 (service restart) as it shuts down:
        # a normal close, after which clients reconnect, not an abnormal 1006.
        assert code in (1001, 1012), (code, reason)
        stdout, stderr = demo.finish()
        assert process.returncode == 0, stderr
        assert "Traceback" not in stderr
        assert "Application shutdown complete" in stderr
        assert f"http://{address}/?user=alice" in stdout


async def test_sigterm_drains_the_connections_before_stopping() -> None:
    window = 1.5
    with demo_process("--drain-window", str(window)) as demo:
        process, address = demo.process, demo.address
        await wait_healthy(address)
        async with AsyncExitStack() as stack:
            clients = [
                await stack.enter_async_context(ws_client(f"ws://{address}/ws?userId=u{n}"))
                for n in range(5)
            ]
            stopped_at = anyio.current_time()
            process.send_signal(signal.SIGTERM)
            slots = [
                (await c.receive("server:draining"))["data"]["reconnectAfterMs"] for c in clients
            ]
            async with httpx.AsyncClient(timeout=2) as http:
                health = await http.get(f"http://{address}/healthz")
                live = await http.get(f"http://{address}/livez")
            assert health.status_code == 503
            assert health.json()["status"] == "draining"
            assert live.status_code == 200  # draining, not dead: no restart wanted
            closes = [await c.closed() for c in clients]
        assert sorted(slots) == slots
        assert max(slots) <= window * 1000
        assert len(set(slots)) == len(slots)  # spread over the window
        assert closes == [(1012, "server_restart")] * len(clients)
        with anyio.fail_after(window + 10):
            while process.poll() is None:  # noqa: ASYNC110 (a process signals nothing)
                await anyio.sleep(0.05)
        assert anyio.current_time() - stopped_at <= window + 2
        _, stderr = demo.finish()
        # uvicorn raises the signal again once it has shut down: the exit says why.
        assert process.returncode == -signal.SIGTERM, stderr
        assert "Traceback" not in stderr
        assert "draining 5 connections over 1.5 s" in stderr


async def test_jwt_mode_refuses_query_identity_and_accepts_tokens() -> None:
    secret = "a demo secret that is long enough for HS256"
    with demo_process("--auth", "jwt", "--jwt-secret", secret) as demo:
        process, address = demo.process, demo.address
        await wait_healthy(address)
        async with httpx.AsyncClient(base_url=f"http://{address}", timeout=5) as api:
            assert (await api.get("/api/config")).json() == {"auth": "jwt"}
            token = (await api.post("/api/login", json={"userId": "bob"})).json()["token"]
        async with ws_client(f"ws://{address}/ws?userId=bob") as spoof:
            # No token: the only thing this connection may do is authenticate.
            await spoof.send("auth", {"token": token[:-4] + "AAAA"})
            code, _ = await spoof.closed()
            assert code == 1008
        async with ws_client(f"ws://{address}/ws?token={token}&userId=alice") as bob:
            reply = await bob.request("conversation:join", {"conversationId": "c1"})
            assert reply == {
                "ok": True,
                "conversationId": "c1",
                "members": ["bob"],
                "typing": [],
                "position": {"offset": 0, "epoch": ANY},
            }
        process.send_signal(signal.SIGINT)
        _, stderr = demo.finish()
        assert process.returncode == 0
        assert token not in stderr
        assert json.dumps(token) not in stderr


async def test_two_demo_servers_on_one_redis_serve_one_chat() -> None:
    message = {"senderId": "bob", "type": "text", "content": {"text": "Hi from B"}}
    with (
        redis_server() as redis,
        demo_process("--redis-url", redis.url) as node_a,
        demo_process("--redis-url", redis.url) as node_b,
    ):
        address_a, address_b = node_a.address, node_b.address
        await wait_healthy(address_a)
        await wait_healthy(address_b)
        async with (
            httpx.AsyncClient(timeout=5) as api,
            ws_client(f"ws://{address_a}/ws?userId=alice") as alice,
        ):
            reply = await alice.request("conversation:join", {"conversationId": "c1"})
            assert reply["ok"] is True
            posted = await api.post(
                f"http://{address_b}/api/conversations/c1/messages", json=message
            )
            assert posted.status_code == 201, posted.text
            received = await alice.receive("message:received")
            assert received["data"]["message"] == posted.json()
            listed = await api.get(f"http://{address_a}/api/conversations/c1/messages")
            assert listed.json() == [posted.json()]
            # Seeded once: the second server did not add its own copies.
            mine = await api.get(f"http://{address_a}/api/conversations?userId=alice")
            assert [c["id"] for c in mine.json()] == ["c1", "c2"]
            health = (await api.get(f"http://{address_b}/healthz")).json()
            assert (health["status"], health["backplane"]["kind"]) == ("ok", "redis")
        for node in (node_a, node_b):
            node.process.send_signal(signal.SIGINT)
        for node in (node_a, node_b):
            _, stderr = node.finish()
            assert node.process.returncode == 0, stderr
            assert "Traceback" not in stderr
            assert "Application shutdown complete" in stderr
