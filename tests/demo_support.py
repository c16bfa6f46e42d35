"""The ``chatrelay demo`` command as users run it: a separate process on a loopback port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import IO

import anyio
import attrs
import httpx

__all__ = ["Demo", "demo_process", "free_port", "wait_healthy"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@attrs.define(eq=False)
class Demo:
    """A running ``chatrelay demo``: its process, its address, and what it printed.

    Its output goes to files, not pipes: a pipe nobody reads fills up (64 KiB of log
    lines: a few hundred connections), and then the server blocks on its next log
    line, which looks like a server that hangs.
    """

    process: subprocess.Popen[bytes]
    address: str
    _stdout: IO[bytes]
    _stderr: IO[bytes]

    def output(self) -> tuple[str, str]:
        """What the process printed so far: (stdout, stderr)."""
        return _read(self._stdout), _read(self._stderr)

    def finish(self, timeout: float = 20) -> tuple[str, str]:
        """Wait (at most ``timeout`` s) for the process to exit; return its output."""
        self.process.wait(timeout=timeout)
        return self.output()


def _read(file: IO[bytes]) -> str:
    file.seek(0)
    return file.read().decode(errors="replace")


@contextmanager
def demo_process(*args: str, port: int | None = None) -> Iterator[Demo]:
    """Run ``chatrelay demo`` on 127.0.0.1 (a free port unless given); kill it on leaving."""
    port = free_port() if port is None else port
    with ExitStack() as stack:
        stdout = stack.enter_context(tempfile.TemporaryFile())
        stderr = stack.enter_context(tempfile.TemporaryFile())
        process = subprocess.Popen(
            [sys.executable, "-m", "chatrelay", "demo", "--port", str(port), *args],
            stdout=stdout,
            stderr=stderr,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            yield Demo(process, f"127.0.0.1:{port}", stdout, stderr)
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)


async def wait_healthy(address: str, within: float = 20) -> None:
    """Return once the demo at ``address`` answers ``/healthz`` with 200."""
    async with httpx.AsyncClient(timeout=1) as client:
        with anyio.fail_after(within):
            while True:
                try:
                    if (await client.get(f"http://{address}/healthz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await anyio.sleep(0.05)  # polling a process that is starting up
