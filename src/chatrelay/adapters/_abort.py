"""Abort the TCP connection behind an ASGI ``send``, where the server lets us reach it.

ASGI can close a WebSocket but not abort its connection. A close is polite: the
server writes a close frame behind what its buffers hold and then waits for them to
drain, so a client that stopped reading keeps the connection, and the server's
buffers, for as long as it likes. When the relay closes such a client (a slow
consumer), the adapter first closes as usual and, if the client does not answer in
time, aborts the connection here.

This is the one place that reaches into the ASGI server: uvicorn's protocol objects
own ``send`` as a bound method and keep their asyncio transport as ``transport``;
Starlette and middleware wrap ``send`` in closures. The search is bounded and
returns ``False`` where nothing is found (another server); the connection is then
left to the server's own timeouts.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Callable
from typing import Any, Final

__all__ = ["abort_transport"]

# SO_LINGER on, with a timeout of 0: closing the socket resets the connection.
_LINGER_RESET: Final = struct.pack("ii", 1, 0)
# How many callables (bound methods, closures) the search looks into at most.
_SEARCH_LIMIT: Final = 16


def abort_transport(send: Callable[..., Any]) -> bool:
    """Abort the connection that ``send`` writes to; whether one was found.

    Args:
        send: An ASGI ``send`` callable, or a Starlette ``WebSocket.send``, possibly
            wrapped by middleware.

    Returns:
        ``True`` if a transport was found and aborted (the peer gets a reset).
    """
    todo: list[object] = [send]
    seen: set[int] = set()
    for _ in range(_SEARCH_LIMIT):
        if not todo:
            break
        candidate = todo.pop(0)
        if id(candidate) in seen:
            continue
        seen.add(id(candidate))
        owner = getattr(candidate, "__self__", None)
        transport = getattr(owner, "transport", None)
        abort = getattr(transport, "abort", None)
        if callable(abort):
            _reset_on_close(transport)
            abort()
            return True
        inner = getattr(owner, "_send", None)  # a Starlette WebSocket's ASGI send
        if callable(inner):
            todo.append(inner)
        for cell in getattr(candidate, "__closure__", None) or ():
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            if callable(value):
                todo.append(value)
    return False


def _reset_on_close(transport: Any) -> None:
    """Make the transport's close reset the connection rather than linger.

    A socket closed with unsent data (what a client that stopped reading leaves)
    stays in the kernel, which keeps trying to send it, for minutes; with a zero
    linger the close sends a reset and frees the buffers at once.
    """
    get_extra_info = getattr(transport, "get_extra_info", None)
    sock = get_extra_info("socket") if callable(get_extra_info) else None
    if sock is not None:
        # A socket closed meanwhile: asyncio's raises OSError, uvloop's ValueError
        # ("negative file descriptor"). Either way there is nothing left to reset.
        with contextlib.suppress(OSError, ValueError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
