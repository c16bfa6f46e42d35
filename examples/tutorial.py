"""The tutorial's program (docs/tutorial.md shows it step by step).

Two users, one conversation, in memory: join, type, receive a message, go offline.
"""

from datetime import UTC, datetime

import anyio

# --8<-- [start:imports]
from chatrelay import Message, MessageStatus, Relay, RelayConfig
from chatrelay.testing import MemoryTransport

# --8<-- [end:imports]


async def main() -> list[str]:
    seen: list[str] = []
    # --8<-- [start:relay]
    config = RelayConfig(typing_timeout=0.5, presence_grace=0.5)
    async with Relay(config=config) as relay:
        transport = MemoryTransport(relay)
        # --8<-- [end:relay]
        # --8<-- [start:connect]
        async with transport.connect("bob") as bob:
            async with transport.connect("alice") as alice:
                online = await bob.receive("user:online")
                print(online.data)  # {'userId': 'alice'}
                # --8<-- [end:connect]
                seen.append(online.event)
                # --8<-- [start:join]
                reply = await alice.request("conversation:join", {"conversationId": "c1"})
                print(reply)  # {'ok': True, 'conversationId': 'c1', 'members': ['alice'], ...}
                reply = await bob.request("conversation:join", {"conversationId": "c1"})
                print(reply["members"])  # ['alice', 'bob']
                # --8<-- [end:join]
                seen.append(f"members={','.join(reply['members'])}")
                # --8<-- [start:typing]
                for _ in range(3):  # three keystrokes...
                    await alice.emit("typing:start", {"conversationId": "c1"})
                started = await bob.receive("typing:start")  # ...one start
                stopped = await bob.receive("typing:stop", timeout=2)  # by itself, after 0.5 s
                print(started.data["userId"], stopped.data["isTyping"])  # alice False
                # --8<-- [end:typing]
                seen += [started.event, stopped.event]
                # --8<-- [start:message]
                message = Message(
                    id="m1",
                    conversation_id="c1",
                    sender_id="alice",
                    type="text",
                    content={"text": "Lunch at noon?"},
                    status=MessageStatus.SENT,
                    created_at=datetime.now(UTC),
                )
                await relay.message_received(message)  # after your app stored it
                received = await bob.receive("message:received")
                print(received.data["message"]["content"])  # {'text': 'Lunch at noon?'}
                # --8<-- [end:message]
                seen.append(received.event)
                # --8<-- [start:errors]
                reply = await bob.request("typing:start", {"conversationId": 42})
                print(reply["error"]["code"])  # invalid_payload
                error = await bob.receive("error")
                print(
                    error.data["message"]
                )  # ... expected a string, got a number @ $.conversationId
                # --8<-- [end:errors]
                seen.append(error.data["code"])
            # --8<-- [start:offline]
            offline = await bob.receive("user:offline", timeout=2)  # after the grace period
            print(offline.data)  # {'userId': 'alice', 'lastSeen': '2026-...Z'}
            # --8<-- [end:offline]
            seen.append(offline.event)
    return seen


if __name__ == "__main__":
    anyio.run(main)
