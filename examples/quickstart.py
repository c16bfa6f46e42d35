"""The README example: an app service emits, a client in the room receives."""

from datetime import UTC, datetime

import anyio

from chatrelay import Message, MessageStatus, Relay
from chatrelay.testing import MemoryTransport


async def main() -> None:
    async with Relay() as relay:  # development mode: identity from ?userId=
        transport = MemoryTransport(relay)  # or the Socket.IO / WebSocket adapters
        async with transport.connect("bob") as bob:
            await bob.request("conversation:join", {"conversationId": "c1"})
            # What a REST handler does after storing a message:
            await relay.message_received(
                Message(
                    id="m1",
                    conversation_id="c1",
                    sender_id="alice",
                    type="text",
                    content={"text": "Hi Bob!"},
                    status=MessageStatus.SENT,
                    created_at=datetime.now(UTC),
                )
            )
            event = await bob.receive("message:received")
            print(event.event, event.data["message"]["content"])


anyio.run(main)
