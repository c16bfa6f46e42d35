"""Serve chatrelay to plain WebSocket clients from a Starlette app.

Run it with ``python examples/starlette_app.py``, then connect a client to
``ws://127.0.0.1:8000/ws?userId=alice`` (development mode: the query names the user).
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from starlette.applications import Starlette

from chatrelay import Relay
from chatrelay.adapters.starlette import WebSocketAdapter

relay = Relay()
ws = WebSocketAdapter(
    relay,
    # The pages that may connect; CORS does not protect WebSockets.
    allowed_origins=["http://localhost:8000", "http://127.0.0.1:8000"],
)


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    # The relay runs as long as the app: its timers, presence and backplane.
    async with relay:
        yield


app = Starlette(routes=[ws.route("/ws")], lifespan=lifespan)


if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=8000,
        # Refuse oversized frames while reading them, not after buffering them whole.
        ws_max_size=ws.max_frame_bytes,
        # Chat frames are small; compression would cost memory on every connection.
        ws_per_message_deflate=False,
    )
