"""Adapters: each one serves a relay over one wire protocol.

Every adapter lives in its own submodule behind an extra, so that ``import chatrelay``
imports none of their dependencies:

- `chatrelay.adapters.socketio`: Socket.IO, for the official ``socket.io-client``
  (``pip install 'chatrelay[socketio]'``; asyncio only).
- `chatrelay.adapters.starlette`: plain WebSockets with JSON text frames, as a
  route of a Starlette or FastAPI app (``pip install 'chatrelay[starlette]'``;
  asyncio and trio).

Adapters are thin: they translate their protocol into calls on a
`chatrelay.lowlevel.Connection` and hold no rule of their own.
"""

__all__: list[str] = []
