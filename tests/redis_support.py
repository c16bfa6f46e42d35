"""Redis for the tests: private servers the tests may kill, and keys that clean up.

A test that kills Redis starts its own ``redis-server`` on a free port of 127.0.0.1,
without persistence, as a child process it controls; the shared Redis (port 6379)
is never touched. Other tests use ``CHATRELAY_REDIS_URL`` (database 15 in CI) with a
key prefix of their own, or a private server when that variable is not set.

In CI (``CI`` set), a missing ``redis-server`` fails the tests instead of skipping
them.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import attrs
import pytest

from chatrelay.backplanes.redis import RedisBackplane

REDIS_SERVER = shutil.which("redis-server")
START_TIMEOUT = 10.0


def require_redis_server() -> str:
    """Return the path of ``redis-server``; skip the test without it (fail in CI)."""
    if REDIS_SERVER is None:
        message = "redis-server is not installed"
        if os.environ.get("CI"):
            pytest.fail(f"{message}, and CI must run the Redis tests")
        pytest.skip(message)
    return REDIS_SERVER


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """A ``redis-server`` child process on a private port, to stop and start at will."""

    def __init__(self, executable: str) -> None:
        self.executable = executable
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server and return once it answers PING (bounded)."""
        if self._process is not None:
            raise RuntimeError("already running")
        self._process = subprocess.Popen(
            [
                self.executable,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not _answers(self.port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.01)

    def kill(self) -> None:
        """Kill the server at once (SIGKILL): nothing is saved, its data is gone."""
        if self._process is not None:
            self._process.kill()
            self._process.wait(timeout=START_TIMEOUT)
            self._process = None

    def pause(self) -> None:
        """Stop the server answering (SIGSTOP): connections stay open, replies never come."""
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Let a paused server answer again (SIGCONT), with its data."""
        assert self._process is not None
        self._process.send_signal(signal.SIGCONT)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    """A private Redis server for the duration of the block."""
    server = RedisServer(require_redis_server())
    server.start()
    try:
        yield server
    finally:
        server.kill()


@attrs.frozen
class RedisTarget:
    """Where a test's backplanes go: a URL and a key prefix of the test's own."""

    url: str
    prefix: str

    def backplane(self, **options: Any) -> RedisBackplane:
        return RedisBackplane(self.url, prefix=self.prefix, **options)


def new_prefix() -> str:
    return f"test-{secrets.token_hex(4)}:"


def delete_keys(url: str, prefix: str) -> None:
    """Delete the keys under ``prefix`` (synchronously, at teardown)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@contextmanager
def shared_or_private_redis() -> Iterator[str]:
    """The shared test Redis (``CHATRELAY_REDIS_URL``), or a private one without it."""
    url = os.environ.get("CHATRELAY_REDIS_URL")
    if url:
        yield url
        return
    with redis_server() as server:
        yield server.url


@contextmanager
def fresh_target(url: str) -> Iterator[RedisTarget]:
    """A key prefix of its own on ``url``, whose keys are deleted afterwards."""
    target = RedisTarget(url, new_prefix())
    try:
        yield target
    finally:
        delete_keys(target.url, target.prefix)
