"""How an application tests its chatrelay integration: no server, no network.

Run with ``pytest examples/test_chat_service.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from chat_service import ChatService

from chatrelay import MessageStatus
from chatrelay.testing import MemoryTransport

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def service() -> AsyncIterator[ChatService]:
    service = ChatService()
    async with service.relay:
        yield service


async def test_message_reaches_the_other_participant_and_is_delivered(
    service: ChatService,
) -> None:
    conversation = service.create_conversation("alice", "bob")
    transport = MemoryTransport(service.relay)
    async with transport.connect("alice") as alice, transport.connect("bob") as bob:
        for client in (alice, bob):
            reply = await client.request("conversation:join", {"conversationId": conversation.id})
            assert reply["ok"] is True

        message = await service.send_message(conversation.id, "alice", "Hi Bob!")

        received = await bob.receive("message:received")
        assert received.data["message"]["content"] == {"text": "Hi Bob!"}
        await bob.ack(received)  # what the client's ack callback does

        # The ack reached on_delivered, which emitted message:status to the room.
        status = await alice.receive("message:status")
        assert status.data["status"] == "delivered"
        assert status.data["userId"] == "bob"
        assert service.messages[message.id].status is MessageStatus.DELIVERED


async def test_outsiders_cannot_join(service: ChatService) -> None:
    conversation = service.create_conversation("alice", "bob")
    async with MemoryTransport(service.relay).connect("mallory") as mallory:
        reply = await mallory.request("conversation:join", {"conversationId": conversation.id})
        assert reply["ok"] is False
        assert reply["error"]["code"] == "forbidden"
        error = await mallory.receive("error")
        assert error.data["status"] == 403
