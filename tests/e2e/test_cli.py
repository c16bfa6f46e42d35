"""The ``chatrelay`` command, run as users run it: a separate process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import anyio
import httpx
import pytest

from chatrelay import __version__
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def demo_process(*args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "chatrelay", "demo", "--port", str(port), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        yield process, f"127.0.0.1:{port}"
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)


async def wait_healthy(address: str) -> None:
    async with httpx.AsyncClient(timeout=1) as client:
        with anyio.fail_after(20):
            while True:
                try:
                    if (await client.get(f"http://{address}/healthz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await anyio.sleep(0.05)  # polling a process that is starting up


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
    with demo_process() as (process, address):
        await wait_healthy(address)
        async with ws_client(f"ws://{address}/ws?userId=alice") as alice:
            reply = await alice.request("conversation:join", {"conversationId": "c1"})
            assert reply["ok"] is True
            process.send_signal(signal.SIGINT)
            code, reason = await alice.closed()
        # uvicorn closes WebSockets with 1012 (service restart) as it shuts down:
        # a normal close, after which clients reconnect, not an abnormal 1006.
        assert code in (1001, 1012), (code, reason)
        stdout, stderr = process.communicate(timeout=20)
        assert process.returncode == 0, stderr
        assert "Traceback" not in stderr
        assert "Application shutdown complete" in stderr
        assert f"http://{address}/?user=alice" in stdout


async def test_jwt_mode_refuses_query_identity_and_accepts_tokens() -> None:
    secret = "a demo secret that is long enough for HS256"
    with demo_process("--auth", "jwt", "--jwt-secret", secret) as (process, address):
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
            assert reply == {"ok": True, "conversationId": "c1", "members": ["bob"], "typing": []}
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=20)
        assert process.returncode == 0
        assert token not in stderr
        assert json.dumps(token) not in stderr


async def test_two_demo_servers_on_one_redis_serve_one_chat() -> None:
    message = {"senderId": "bob", "type": "text", "content": {"text": "Hi from B"}}
    with (
        redis_server() as redis,
        demo_process("--redis-url", redis.url) as (node_a, address_a),
        demo_process("--redis-url", redis.url) as (node_b, address_b),
    ):
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
            node.send_signal(signal.SIGINT)
        for node in (node_a, node_b):
            _, stderr = node.communicate(timeout=20)
            assert node.returncode == 0, stderr
            assert "Traceback" not in stderr
            assert "Application shutdown complete" in stderr
