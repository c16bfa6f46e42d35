"""A WebSocket client on a raw socket, for what real clients never do on purpose.

`StalledClient` reads its handshake and what a test waits for, then stops reading
(a small receive buffer makes the server's writes back up after a few kilobytes);
`server_side_open` tells from ``/proc/net/tcp`` whether the server still holds its
end of a connection.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path

import anyio.to_thread


class StalledClient:
    """A WebSocket client on a raw socket that stops reading when told to."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # A small window: the server's writes back up after a few kilobytes.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(5.0)
        self.sock.connect(("127.0.0.1", port))
        self.port: int = self.sock.getsockname()[1]
        self._seen = b""

    def handshake(self, target: str) -> None:
        self.sock.sendall(
            f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = self.read_until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head[:200]

    def send_text(self, text: str) -> None:
        payload = text.encode()
        mask = os.urandom(4)
        length = len(payload)
        assert length < 126
        masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
        self.sock.sendall(bytes([0x81, 0x80 | length]) + mask + masked)

    def read_until(self, marker: bytes) -> bytes:
        """Read (bounded by the socket's timeout) until ``marker``; return what preceded it."""
        for _ in range(100_000):  # 400 MB at most, in chunks of the small window
            if marker in self._seen:
                before, _, self._seen = self._seen.partition(marker)
                return before
            chunk = self.sock.recv(65536)
            assert chunk, f"closed before {marker!r}"
            self._seen += chunk
        raise AssertionError(f"{marker!r} did not arrive")

    async def run(self, step: Callable[[], None]) -> None:
        await anyio.to_thread.run_sync(step)


def server_side_open(server_port: int, client_port: int) -> bool:
    """Whether the server still holds its end of this client's TCP connection."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, remote, state = line.split()[1:4]
        if (
            int(local.split(":")[1], 16) == server_port
            and int(remote.split(":")[1], 16) == client_port
            and state != "0A"  # LISTEN
        ):
            return True
    return False
