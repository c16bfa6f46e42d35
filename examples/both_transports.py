"""One relay, two transports, one port: Socket.IO and plain WebSocket clients together.

Run it with ``python examples/both_transports.py``. Socket.IO clients connect to
``http://127.0.0.1:8000`` (namespace ``/messages``), WebSocket clients to
``ws://127.0.0.1:8000/ws``; in development mode ``?userId=`` says who they are. Both
kinds see each other's typing, presence and messages in a shared conversation.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount

from chatrelay import Relay
from chatrelay.adapters.socketio import SocketIOAdapter
from chatrelay.adapters.starlette import WebSocketAdapter

ORIGINS = ["http://localhost:8000", "http://127.0.0.1:8000"]

relay = Relay()
sio = SocketIOAdapter(relay, allowed_origins=ORIGINS)
ws = WebSocketAdapter(relay, allowed_origins=ORIGINS)


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    # The relay first, then the Socket.IO adapter inside it (it owns a task per client).
    async with relay, sio:
        yield


app = Starlette(
    routes=[
        ws.route("/ws"),
        # Socket.IO's clients ask for /socket.io/ by default.
        Mount("/socket.io", app=sio.asgi_app()),
    ],
    lifespan=lifespan,
)


if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=8000,
        ws_max_size=ws.max_frame_bytes,
        ws_per_message_deflate=False,
    )
