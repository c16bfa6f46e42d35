"""Aborting the connection behind an ASGI ``send`` whose socket is already gone."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from chatrelay.adapters._abort import abort_transport


class ClosedPseudoSocket:
    """What uvloop's transport gives for a socket closed meanwhile."""

    def setsockopt(self, *args: Any) -> None:
        raise ValueError("negative file descriptor")


class Transport:
    def __init__(self, sock: object) -> None:
        self.sock = sock
        self.aborted = False

    def get_extra_info(self, name: str) -> object:
        return self.sock if name == "socket" else None

    def abort(self) -> None:
        self.aborted = True


class Protocol:
    """An ASGI server's protocol object: ``send`` is its bound method."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    async def send(self, message: Any) -> None:
        pass


def closed_socket() -> socket.socket:
    sock = socket.socket()
    sock.close()  # setsockopt now raises OSError (asyncio's transports)
    return sock


@pytest.mark.parametrize("sock", [ClosedPseudoSocket(), closed_socket()], ids=["uvloop", "asyncio"])
def test_a_socket_closed_meanwhile_is_still_aborted_without_an_error(sock: object) -> None:
    transport = Transport(sock)
    assert abort_transport(Protocol(transport).send) is True
    assert transport.aborted
