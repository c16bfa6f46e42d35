"""Raw engine.io / Socket.IO packets over a WebSocket, for what real clients never send.

`raw_socket()` opens ``/socket.io/?EIO=4&transport=websocket`` with the `websockets`
client and reads the engine.io handshake; the test then sends packets as text (or
bytes) and reads what comes back, every wait bounded.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from socketio_support import NAMESPACE, TIMEOUT


class RawSocket:
    """One engine.io connection over a WebSocket, driven packet by packet."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.sid = ""

    async def send(self, packet: str | bytes) -> None:
        """Send one engine.io packet (text such as ``'42/messages,[…]'``, or bytes)."""
        await self.ws.send(packet)

    async def receive(self) -> str | bytes:
        """The next packet from the server, pings answered and skipped."""
        with anyio.fail_after(TIMEOUT):
            while True:
                packet = await self.ws.recv()
                if packet == "2":
                    await self.ws.send("3")
                    continue
                return packet

    async def text(self, prefix: str = "") -> str:
        """The next packet, which must be text that starts with ``prefix``."""
        packet = await self.receive()
        assert isinstance(packet, str), packet
        assert packet.startswith(prefix), packet
        return packet

    async def event(self) -> tuple[str, Any]:
        """The next Socket.IO event of the chat's namespace: ``(name, payload)``."""
        head = f"42{NAMESPACE},"
        while True:
            packet = await self.receive()
            if isinstance(packet, str) and packet.startswith(head):
                name, *args = json.loads(packet[len(head) :])
                return name, args[0] if args else None

    async def ack(self, ack_id: int) -> Any:
        """The next ack of the chat's namespace, which must be for ``ack_id``."""
        head = f"43{NAMESPACE},{ack_id}"
        while True:
            packet = await self.receive()
            if isinstance(packet, str) and packet.startswith(f"43{NAMESPACE},"):
                assert packet.startswith(head), packet
                return json.loads(packet[len(head) :])[0]

    async def join(self, user: str) -> None:
        """Connect to the chat's namespace (development auth, ``userId`` in the URL)."""
        await self.send(f"40{NAMESPACE},")
        await self.text(f"40{NAMESPACE},")

    async def closed(self, within: float = TIMEOUT) -> list[str | bytes]:
        """Wait until the server closes the connection; return what came before."""
        seen: list[str | bytes] = []
        with anyio.fail_after(within):
            try:
                while True:
                    packet = await self.ws.recv()
                    if packet == "2":
                        await self.ws.send("3")
                    else:
                        seen.append(packet)
            except ConnectionClosed:
                return seen


@asynccontextmanager
async def raw_socket(url: str, *, user: str | None = None) -> AsyncIterator[RawSocket]:
    """Open a raw engine.io WebSocket on the server at ``url`` (``http://…``)."""
    query = "EIO=4&transport=websocket" + (f"&userId={user}" if user else "")
    target = url.replace("http://", "ws://", 1) + f"/socket.io/?{query}"
    with anyio.fail_after(TIMEOUT):
        ws = await ws_connect(target, max_size=None, open_timeout=TIMEOUT)
    try:
        raw = RawSocket(ws)
        opening = await raw.text("0")
        raw.sid = json.loads(opening[1:])["sid"]
        yield raw
    finally:
        with anyio.fail_after(TIMEOUT, shield=True):
            await ws.close()
